"""The database's own refusal to change rows of an append-only table, for migrations.

PostgreSQL refuses UPDATE and DELETE; TRUNCATE stays possible for the test runner's flush
(operators revoke it from the application role, see docs/deployment.md). SQLite refuses
UPDATE; DELETE stays possible because Django's test flush needs it there.

A module of its own (Django's migration loader skips names that start with `_`), so that
each migration that makes a table append-only writes the same triggers; what it writes
must never change, since migrations already applied wrote it.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations


def triggers(table: str, rows: str) -> migrations.RunPython:
    """The operation that adds (and, reversed, drops) the triggers of `table`; `rows` names
    its rows in the error ("events", "tree hashes")."""
    forward, backward = statements(table, rows)

    def run(sql: dict[str, str]) -> Any:
        def execute(apps: Any, schema_editor: Any) -> None:
            statement = sql.get(schema_editor.connection.vendor)
            if statement:
                schema_editor.execute(statement, params=None)

        return execute

    return migrations.RunPython(run(forward), run(backward))


def statements(table: str, rows: str) -> tuple[dict[str, str], dict[str, str]]:
    """The SQL that adds the triggers and the SQL that drops them, by database vendor."""
    forward = {
        "postgresql": f"""
CREATE OR REPLACE FUNCTION {table}_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '{rows} are append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER {table}_no_update BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION {table}_append_only();
""",
        "sqlite": f"""
CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
BEGIN SELECT RAISE(ABORT, '{rows} are append-only: UPDATE refused'); END;
""",
    }
    backward = {
        "postgresql": f"""
DROP TRIGGER IF EXISTS {table}_no_update ON {table};
DROP FUNCTION IF EXISTS {table}_append_only();
""",
        "sqlite": f"DROP TRIGGER IF EXISTS {table}_no_update;",
    }
    return forward, backward
