"""Stored leaves (core/ledger.py `EventLeaf`): each event's leaf data as it was hashed, so
that the audit log serves it instead of encoding every event again.

The table and its append-only triggers only. Events recorded before it existed have no
stored leaf; the audit log encodes those as before until `manage.py
auditlog_backfill_leaves` has filled them (batched, resumable, safe while the exchange
runs): a migration would hold one transaction over the whole events table.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

PG_FORWARD = """
CREATE OR REPLACE FUNCTION exchange_eventleaf_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'stored leaves are append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER exchange_eventleaf_no_update BEFORE UPDATE OR DELETE ON exchange_eventleaf
    FOR EACH ROW EXECUTE FUNCTION exchange_eventleaf_append_only();
"""
PG_BACKWARD = """
DROP TRIGGER IF EXISTS exchange_eventleaf_no_update ON exchange_eventleaf;
DROP FUNCTION IF EXISTS exchange_eventleaf_append_only();
"""
SQLITE_FORWARD = """
CREATE TRIGGER exchange_eventleaf_no_update BEFORE UPDATE ON exchange_eventleaf
BEGIN SELECT RAISE(ABORT, 'stored leaves are append-only: UPDATE refused'); END;
"""
SQLITE_BACKWARD = "DROP TRIGGER IF EXISTS exchange_eventleaf_no_update;"


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
        ("exchange", "0009_checkpoints_and_witnesses"),
    ]

    operations = [
        migrations.CreateModel(
            name="EventLeaf",
            fields=[
                ("seq", models.BigIntegerField(help_text="The event's seq.", primary_key=True, serialize=False)),
                (
                    "data",
                    models.BinaryField(
                        help_text="The event's leaf data (docs/ledger.md); SHA-256(0x00 || data) is its leaf hash."
                    ),
                ),
            ],
            options={
                "verbose_name": "stored leaf",
            },
        ),
        migrations.RunPython(triggers, drop_triggers),
    ]
