"""Changing append-only rows behind the ORM's and the triggers' backs, as someone rewriting
the log (or a damaged disk) would, for the tests of what the checks then find."""

from __future__ import annotations

import importlib
from typing import Any

from django.db import connection

append_only = importlib.import_module("exchange.migrations._append_only")

# Each append-only table and how its triggers name its rows (as its migration wrote them).
ROWS = {
    "exchange_event": "events",
    "exchange_treehash": "tree hashes",
    "exchange_eventleaf": "stored leaves",
    "exchange_leaftile": "leaf tiles",
}


def rewrite(*statements: tuple[str, list[Any]], table: str) -> None:
    """Run `statements` with the append-only trigger of `table` off, then put it back (a test
    that commits must not leave the database without it for the next one)."""
    trigger = f"{table}_no_update"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")
        else:
            cursor.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        for statement, params in statements:
            cursor.execute(statement, params)
        if connection.vendor == "postgresql":
            cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")
        else:
            cursor.execute(append_only.statements(table, ROWS[table])[0]["sqlite"])
