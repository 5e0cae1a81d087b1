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

PG_FORWARD = """
CREATE OR REPLACE FUNCTION exchange_treehash_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'tree hashes are append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER exchange_treehash_no_update BEFORE UPDATE OR DELETE ON exchange_treehash
    FOR EACH ROW EXECUTE FUNCTION exchange_treehash_append_only();
"""
PG_BACKWARD = """
DROP TRIGGER IF EXISTS exchange_treehash_no_update ON exchange_treehash;
DROP FUNCTION IF EXISTS exchange_treehash_append_only();
"""
SQLITE_FORWARD = """
CREATE TRIGGER exchange_treehash_no_update BEFORE UPDATE ON exchange_treehash
BEGIN SELECT RAISE(ABORT, 'tree hashes are append-only: UPDATE refused'); END;
"""
SQLITE_BACKWARD = "DROP TRIGGER IF EXISTS exchange_treehash_no_update;"


def triggers(apps: Any, schema_editor: Any) -> None:
    sql = {"postgresql": PG_FORWARD, "sqlite": SQLITE_FORWARD}.get(schema_editor.connection.vendor)
    if sql:
        schema_editor.execute(sql, params=None)


def drop_triggers(apps: Any, schema_editor: Any) -> None:
    sql = {"postgresql": PG_BACKWARD, "sqlite": SQLITE_BACKWARD}.get(schema_editor.connection.vendor)
    if sql:
        schema_editor.execute(sql, params=None)


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
        migrations.RunPython(triggers, drop_triggers),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
