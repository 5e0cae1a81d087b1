"""Leaf tiles (core/tlog.py `LeafTile`): each full tile of leaf hashes as one row, so that a
proof reads one row instead of 256 event rows; append-only by trigger like tree hashes.

No backfill here: a tile not stored is read from the events as before, and `manage.py
auditlog_check --repair` stores the tiles of events recorded before this table (a
migration would hold one transaction over the whole events table).
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

PG_FORWARD = """
CREATE OR REPLACE FUNCTION exchange_leaftile_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'leaf tiles are append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER exchange_leaftile_no_update BEFORE UPDATE OR DELETE ON exchange_leaftile
    FOR EACH ROW EXECUTE FUNCTION exchange_leaftile_append_only();
"""
PG_BACKWARD = """
DROP TRIGGER IF EXISTS exchange_leaftile_no_update ON exchange_leaftile;
DROP FUNCTION IF EXISTS exchange_leaftile_append_only();
"""
SQLITE_FORWARD = """
CREATE TRIGGER exchange_leaftile_no_update BEFORE UPDATE ON exchange_leaftile
BEGIN SELECT RAISE(ABORT, 'leaf tiles are append-only: UPDATE refused'); END;
"""
SQLITE_BACKWARD = "DROP TRIGGER IF EXISTS exchange_leaftile_no_update;"


def triggers(apps: Any, schema_editor: Any) -> None:
    sql = {"postgresql": PG_FORWARD, "sqlite": SQLITE_FORWARD}.get(schema_editor.connection.vendor)
    if sql:
        schema_editor.execute(sql, params=None)


def drop_triggers(apps: Any, schema_editor: Any) -> None:
    sql = {"postgresql": PG_BACKWARD, "sqlite": SQLITE_BACKWARD}.get(schema_editor.connection.vendor)
    if sql:
        schema_editor.execute(sql, params=None)


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
        migrations.RunPython(triggers, drop_triggers),
    ]
