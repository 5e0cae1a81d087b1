"""Leaf tiles (core/tlog.py `LeafTile`): each full tile of leaf hashes as one row, so that a
proof reads one row instead of 256 event rows; append-only by trigger like tree hashes.

No backfill here: a tile not stored is read from the events as before, and `manage.py
auditlog_check --repair` stores the tiles of events recorded before this table (a
migration would hold one transaction over the whole events table).
"""

from __future__ import annotations

from django.db import migrations, models

from . import _append_only as append_only


class Migration(migrations.Migration):
    dependencies = [
        ("exchange", "0011_delivery_body_lz4"),
    ]

    operations = [
        migrations.CreateModel(
            name="LeafTile",
            fields=[
                (
                    "position",
                    models.BigIntegerField(
                        help_text="The tile's index (tile 0/position).", primary_key=True, serialize=False
                    ),
                ),
                ("hashes", models.BinaryField(max_length=8192)),
            ],
            options={
                "verbose_name": "leaf tile",
            },
        ),
        migrations.AlterModelOptions(
            name="treehash",
            options={"verbose_name": "tree hash", "verbose_name_plural": "tree hashes"},
        ),
        append_only.triggers("exchange_leaftile", "leaf tiles"),
    ]
