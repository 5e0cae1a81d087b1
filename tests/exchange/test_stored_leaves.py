"""Stored leaves (core/ledger.py `EventLeaf`): each event's leaf data kept as it was hashed,
served to auditors (`GET /api/v1/log/entries`, the entry bundles) without encoding every
event again; what an audit still catches; the backfill of events recorded before them."""

from __future__ import annotations

import gzip
import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from hashexchange_client import cli, merkle
from hashexchange_client.auditlog import split_bundle

from core import tlog
from core.ledger import Actor, Event, EventLeaf, NewEvent, record, record_many
from exchange import auditlog
from tests.conftest import Caller
from tests.exchange.rewrite import rewrite

ACTOR = Actor.system("test")
# Data of every shape a leaf holds: keys out of order, nesting, lists, non-ASCII text,
# characters JSON escapes, large and negative integers, booleans and null.
SHAPES: list[dict[str, Any]] = [
    {},
    {"z": 1, "a": {"y": [3, {"b": True, "a": None}], "x": "é✓"}},
    {"text": 'quote " backslash \\ newline \n tab \t control \x01', "n": -(2**53)},
    {"list": [], "obj": {}, "big": 2**62, "flag": False},
]


def grow(count: int, kind: str = "t.e") -> None:
    with transaction.atomic():
        record_many(
            [NewEvent(kind, "t", str(i), data=SHAPES[i % len(SHAPES)]) for i in range(count)], actor=Actor.system("t")
        )


def entries_of_rows() -> list[bytes]:
    return [event.leaf_data() for event in Event.objects.order_by("seq")]


def bundle(leaves: list[bytes]) -> bytes:
    return b"".join(len(leaf).to_bytes(2, "big") + leaf for leaf in leaves)


@pytest.mark.django_db
def test_every_recorded_event_stores_the_leaf_data_its_leaf_hash_is_of() -> None:
    grow(10)
    with transaction.atomic():
        record("t.one", actor=ACTOR, subject_type="t", subject_id="x", data={"b": 2, "a": [{"d": 1, "c": 2}]})
    events = list(Event.objects.order_by("seq"))
    stored = dict(EventLeaf.objects.values_list("seq", "data"))
    assert sorted(stored) == [event.seq for event in events]
    for event in events:
        leaf = bytes(stored[event.seq])
        assert leaf == event.leaf_data()  # the documented encoding of the event as it reads back
        assert merkle.leaf_hash(leaf).hex() == event.leaf_hash
    # The event's data is stored with its keys in the leaf's order (the value is the same).
    assert list(events[-1].data) == ["a", "b"] and events[-1].data == {"a": [{"c": 2, "d": 1}], "b": 2}


@pytest.mark.django_db
def test_the_database_recognises_untouched_stored_leaves_so_serving_needs_no_encoding() -> None:
    with transaction.atomic():  # ASCII data: the database's comparison decides alone
        record_many(
            [NewEvent("t.e", "t", str(i), data={"z": i, "a": {"y": [i, True, None]}}) for i in range(300)], actor=ACTOR
        )
    rows = tlog._rows_checked_by_database(0, 300, tlog._MATCHES[connection.vendor])
    assert rows is not None and len(rows) == 300 and all(ok for _, _, ok in rows)
    assert tlog.read_entry_bundle(merkle.Tile(merkle.ENTRIES, 0, 256)) == bundle(entries_of_rows()[:256])


@pytest.mark.django_db
def test_entries_are_the_bundles_of_the_events_and_only_for_auditors(auditor: Caller, platform_a: Caller) -> None:
    grow(600)
    size = Event.objects.count()
    leaves = entries_of_rows()
    answer = auditor.client.get("/api/v1/log/entries", {"start": 0, "end": size})
    assert answer.status_code == 200 and answer["Content-Type"] == "application/octet-stream"
    body = b"".join(answer.streaming_content)
    assert body == bundle(leaves)
    assert body[: len(bundle(leaves[:256]))] == auditor.client.get("/api/v1/log/tile/entries/000").content
    zipped = auditor.client.get("/api/v1/log/entries", {"start": 5, "end": 300}, HTTP_ACCEPT_ENCODING="gzip")
    assert zipped["Content-Encoding"] == "gzip"
    assert gzip.decompress(b"".join(zipped.streaming_content)) == bundle(leaves[5:300])
    assert platform_a.client.get("/api/v1/log/entries", {"start": 0, "end": 1}).status_code == 403
    for query, parameter in (
        ({"start": 0, "end": size + 1}, "end"),
        ({"start": 3, "end": 3}, "start"),
        ({"start": 0, "end": 70_000}, "end"),
        ({"start": "x", "end": 2}, "start"),
        ({"start": 0}, "end"),
    ):
        bad = auditor.client.get("/api/v1/log/entries", query)
        assert bad.status_code == 400 and parameter in bad.json()["errors"], (query, bad.content)


@pytest.mark.django_db
def test_a_row_or_a_stored_leaf_changed_since_is_served_so_that_it_cannot_hash_to_the_tree() -> None:
    grow(20)
    leaves = entries_of_rows()
    rewrite(("UPDATE exchange_event SET subject_id = %s WHERE seq = 3", ["forged"]), table="exchange_event")
    rewrite(("UPDATE exchange_eventleaf SET data = %s WHERE seq = 7", [leaves[6].replace(b'"t"', b'"u"', 1)]),
        table="exchange_eventleaf")  # fmt: skip
    rewrite(("UPDATE exchange_eventleaf SET data = %s WHERE seq = 9", [b"\xff not json"]), table="exchange_eventleaf")
    served = split_bundle(b"".join(tlog.iter_entries(0, 20)))
    assert served[2] == Event.objects.get(seq=3).leaf_data() and b'"forged"' in served[2]  # the row as it is now
    assert served[6] == leaves[6].replace(b'"t"', b'"u"', 1)  # the stored bytes as they are now
    assert served[8] == b"\xff not json"
    for index in (2, 6, 8):
        assert merkle.leaf_hash(served[index]) != merkle.leaf_hash(leaves[index])
    assert [served[i] for i in range(20) if i not in (2, 6, 8)] == [leaves[i] for i in range(20) if i not in (2, 6, 8)]
    # An inclusion proof reads its leaf and its tile in one statement: the same leaf as served.
    for index in (2, 5, 6, 8):
        leaf, tile, hashes = tlog.leaf_and_tile(index, 20)
        assert leaf == served[index] and hashes == tlog.read_tile(tile)
    with pytest.raises(CommandError, match="stored leaves that do not hash"):
        call_command("auditlog_check", stdout=StringIO())


@pytest.mark.django_db
def test_the_backfill_stores_the_leaves_of_events_recorded_before_them() -> None:
    grow(700)
    before = entries_of_rows()
    # As before the migration that added stored leaves:
    rewrite(("DELETE FROM exchange_eventleaf WHERE seq > %s", [100]), table="exchange_eventleaf")
    rewrite(("UPDATE exchange_event SET data = %s WHERE seq = 500", ['{"n": 99}']), table="exchange_event")
    assert EventLeaf.objects.count() == 100
    # Meanwhile the log is served from the rows, the same bytes.
    served = split_bundle(b"".join(tlog.iter_entries(0, 700)))
    assert served[:499] == before[:499] and served[500:] == before[500:]
    out = StringIO()
    with pytest.raises(CommandError, match="1 events no longer give the leaf hash.*: 500"):
        call_command("auditlog_backfill_leaves", "--batch", "256", stdout=out)
    assert "stored leaves: 599" in out.getvalue()
    stored = dict(EventLeaf.objects.values_list("seq", "data"))
    assert sorted(stored) == [seq for seq in range(1, 701) if seq != 500]  # never the changed row's
    assert all(bytes(stored[seq]) == before[seq - 1] for seq in stored)
    out = StringIO()
    with pytest.raises(CommandError):  # run again: resumes, nothing more to store
        call_command("auditlog_backfill_leaves", stdout=out)
    assert "stored leaves: 0" in out.getvalue()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def audited(live_server: Any, auditor: Caller, monkeypatch: pytest.MonkeyPatch) -> None:
    grow(700)
    auditlog.checkpoint_create()
    monkeypatch.setenv("HASHEXCHANGE_SERVER", live_server.url)
    monkeypatch.setenv("HASHEXCHANGE_API_KEY", auditor.token)
    monkeypatch.setenv("HASHEXCHANGE_LOG_KEY", auditor.client.get("/api/v1/server-key").json()["log_vkey"])


SWAP = [
    ("UPDATE {table} SET seq = -1 WHERE seq = 300", []),
    ("UPDATE {table} SET seq = 300 WHERE seq = 301", []),
    ("UPDATE {table} SET seq = 301 WHERE seq = -1", []),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "change, message",
    [
        ("none", None),
        ("event", "do not hash to the checkpoint's root"),
        ("leaf byte", "do not hash to the checkpoint's root"),
        ("leaf space", "not the canonical encoding"),
        ("removed", "the server sent {missing} entries for leaves 0..{missing}, not {size}"),
        ("reordered", "do not hash to the checkpoint's root"),
    ],
)
def test_log_audit_of_stored_leaves_finds_any_change(
    audited: None, change: str, message: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    size = Event.objects.count()
    leaf = bytes(EventLeaf.objects.get(seq=600).data)
    if change == "event":
        rewrite(("UPDATE exchange_event SET data = %s WHERE seq = 600", ['{"n": 1}']), table="exchange_event")
    elif change == "leaf byte":  # still the canonical encoding of an event: only the root tells
        rewrite(("UPDATE exchange_eventleaf SET data = %s WHERE seq = 600", [leaf.replace(b'"t"', b'"u"', 1)]),
            table="exchange_eventleaf")  # fmt: skip
    elif change == "leaf space":
        rewrite(("UPDATE exchange_eventleaf SET data = %s WHERE seq = 600", [leaf.replace(b":", b": ", 1)]),
            table="exchange_eventleaf")  # fmt: skip
    elif change == "removed":
        for table in ("exchange_event", "exchange_eventleaf"):
            rewrite(("DELETE FROM " + table + " WHERE seq = 600", []), table=table)
    elif change == "reordered":
        for table in ("exchange_event", "exchange_eventleaf"):
            rewrite(*[(statement.format(table=table), params) for statement, params in SWAP], table=table)
    events = tmp_path / "events.jsonl"
    code, out, err = run(capsys, "log", "audit", "--no-progress", "--events", str(events))
    if message is None:
        assert code == 0 and f"audited events 1..{size}" in out, err
        assert [json.loads(line)["seq"] for line in events.read_text().splitlines()] == list(range(1, size + 1))
        return
    assert code == 1 and message.format(size=size, missing=size - 1) in err, err
