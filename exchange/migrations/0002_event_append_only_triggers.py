"""Make the database itself refuse to change events, not only the ORM.

PostgreSQL refuses UPDATE and DELETE; TRUNCATE stays possible for the test runner's
flush (operators revoke it from the application role, see docs/deployment.md).
SQLite refuses UPDATE; DELETE stays possible because Django's test flush needs it there.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

PG_FORWARD = """
CREATE OR REPLACE FUNCTION exchange_event_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER exchange_event_no_update BEFORE UPDATE OR DELETE ON exchange_event
    FOR EACH ROW EXECUTE FUNCTION exchange_event_append_only();
"""
PG_BACKWARD = """
DROP TRIGGER IF EXISTS exchange_event_no_update ON exchange_event;
DROP FUNCTION IF EXISTS exchange_event_append_only();
"""
SQLITE_FORWARD = """
CREATE TRIGGER exchange_event_no_update BEFORE UPDATE ON exchange_event
BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE refused'); END;
"""
SQLITE_BACKWARD = "DROP TRIGGER IF EXISTS exchange_event_no_update;"


def forward(apps: Any, schema_editor: Any) -> None:
    sql = {"postgresql": PG_FORWARD, "sqlite": SQLITE_FORWARD}.get(schema_editor.connection.vendor)
    if sql:
        schema_editor.execute(sql, params=None)


def backward(apps: Any, schema_editor: Any) -> None:
    sql = {"postgresql": PG_BACKWARD, "sqlite": SQLITE_BACKWARD}.get(schema_editor.connection.vendor)
    if sql:
        schema_editor.execute(sql, params=None)


class Migration(migrations.Migration):
    dependencies = [("exchange", "0001_initial")]
    operations = [migrations.RunPython(forward, backward)]
