"""The audit log's tree hashes (core/tlog.py): the table, its append-only triggers, and the
hashes of the events recorded before it existed.

The backfill reads the leaf hashes in seq order and stores the tile-level-1-and-up hash
of every full tile, one row per 256 events: a few seconds for ten million events. From
then on `record_many()` stores them as events are recorded.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models
from hashexchange_client.merkle import tile_hashes

from . import _append_only as append_only


def backfill(apps: Any, schema_editor: Any) -> None:
    Event = apps.get_model("exchange", "Event")
    TreeHash = apps.get_model("exchange", "TreeHash")
    leaves = (
        bytes.fromhex(value)
        for value in Event.objects.order_by("seq").values_list("leaf_hash", flat=True).iterator(chunk_size=5000)
    )
    batch = []
    for level, index, value in tile_hashes(leaves):
        batch.append(TreeHash(level=level, position=index, hash=value))
        if len(batch) == 1000:
            TreeHash.objects.bulk_create(batch)
            batch = []
    TreeHash.objects.bulk_create(batch)


class Migration(migrations.Migration):
    dependencies = [
        ("exchange", "0007_backfill_enrollment_sent_through"),
    ]

    operations = [
        migrations.CreateModel(
            name="TreeHash",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "level",
                    models.PositiveSmallIntegerField(
                        help_text="Tile level, 1 and up (level 0 is the events' leaf hashes)."
                    ),
                ),
                ("position", models.BigIntegerField(help_text="Position within the level (the entry's index).")),
                ("hash", models.BinaryField(max_length=32)),
            ],
            options={
                "verbose_name": "tree hash",
                "constraints": [
                    models.UniqueConstraint(fields=("level", "position"), name="treehash_unique_level_position")
                ],
            },
        ),
        append_only.triggers("exchange_treehash", "tree hashes"),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
