"""manage.py ledger_verify, which the backup drill runs on a restored copy."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from core.ledger import Event
from tests.signing import Signer


def test_a_whole_log_passes_and_a_changed_event_is_named(signer_a: Signer) -> None:
    signer_a.submit(signer_a.submission(), signer_a.submission())
    out = io.StringIO()
    call_command("ledger_verify", stdout=out)
    last = Event.objects.order_by("-seq").values_list("seq", flat=True)[0]
    assert out.getvalue().strip() == f"ledger ok: {last} events, last seq {last}, every leaf hash matches"

    # The append-only triggers refuse an UPDATE; a restored copy could still be damaged.
    table = Event._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s", [table])
            triggers = [row[0] for row in cursor.fetchall()]
            for name in triggers:
                cursor.execute(f"DROP TRIGGER {name}")
        cursor.execute(f"UPDATE {table} SET subject_id = 'tampered' WHERE seq = 2")
    with pytest.raises(CommandError, match=r"1 event\(s\) whose leaf hash does not match: 2"):
        call_command("ledger_verify", stdout=io.StringIO())
