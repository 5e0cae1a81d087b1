"""The ledger: gap-free sequence in commit order, append-only, deterministic leaf hashes."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading

import pytest
from django.db import DatabaseError, connection, transaction
from hypothesis import given
from hypothesis import strategies as st

from core.ledger import (
    Actor,
    Event,
    LedgerError,
    NewEvent,
    canonical_json,
    leaf_bytes,
    leaf_hash,
    record,
    record_many,
    verify_chain,
)
from tests.exchange.rewrite import rewrite

ACTOR = Actor.system("test")

# --- the encoding, without a database ----------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
times = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(dt.UTC))
event_fields = st.fixed_dictionaries(
    {
        "seq": st.integers(min_value=1, max_value=2**62),
        "kind": st.text(min_size=1, max_size=20),
        "program": st.text(max_size=20),
        "subject_type": st.text(max_size=10),
        "subject_id": st.text(max_size=20),
        "actor_type": st.text(max_size=10),
        "actor_id": st.text(max_size=20),
        "data": st.dictionaries(st.text(max_size=8), json_values, max_size=5),
        "created_at": times,
    }
)


@given(event_fields)
def test_leaf_bytes_decode_back_to_exactly_the_event(fields: dict) -> None:
    """Decoding gives back every field, so two different events never share leaf bytes."""
    decoded = json.loads(leaf_bytes(**fields))
    assert decoded == {
        "v": 1,
        "seq": fields["seq"],
        "kind": fields["kind"],
        "program": fields["program"],
        "subject": {"type": fields["subject_type"], "id": fields["subject_id"]},
        "actor": {"type": fields["actor_type"], "id": fields["actor_id"]},
        "data": fields["data"],
        "at": fields["created_at"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


@given(event_fields, st.randoms())
def test_leaf_bytes_do_not_depend_on_key_order(fields: dict, rnd) -> None:  # noqa: ANN001
    items = list(fields["data"].items())
    rnd.shuffle(items)
    assert leaf_bytes(**{**fields, "data": dict(items)}) == leaf_bytes(**fields)


@given(event_fields)
def test_leaf_time_is_the_same_instant_in_any_zone(fields: dict) -> None:
    other_zone = fields["created_at"].astimezone(dt.timezone(dt.timedelta(hours=-7)))
    assert leaf_bytes(**{**fields, "created_at": other_zone}) == leaf_bytes(**fields)


@given(st.binary(max_size=200))
def test_leaf_hash_is_rfc6962(leaf: bytes) -> None:
    assert leaf_hash(leaf) == hashlib.sha256(b"\x00" + leaf).hexdigest()


@pytest.mark.parametrize("bad", [1.5, float("nan"), b"bytes", {1: "int key"}, object()])
def test_values_without_one_encoding_are_refused(bad: object) -> None:
    with pytest.raises(LedgerError):
        canonical_json({"x": bad})


def test_worked_example_in_docs_matches_byte_for_byte() -> None:
    """docs/ledger.md shows one event's leaf bytes and hash; both must stay true."""
    doc = (pytest.importorskip("pathlib").Path(__file__).parents[2] / "docs" / "ledger.md").read_text()
    leaf = leaf_bytes(
        seq=1,
        kind="member.created",
        program="",
        subject_type="member",
        subject_id="acme",
        actor_type="operator",
        actor_id="member_create",
        data={"slug": "acme", "kind": "platform", "status": "active"},
        created_at=dt.datetime(2026, 11, 21, 6, 0, 0, 123456, tzinfo=dt.UTC),
    )
    assert leaf.decode() in doc
    assert leaf_hash(leaf) in doc


# --- the log in the database -------------------------------------------------------------


@pytest.mark.django_db
def test_record_outside_a_transaction_is_refused() -> None:
    # pytest-django wraps the test in a transaction; step outside it on a fresh connection check.
    with pytest.raises(LedgerError):
        connection.in_atomic_block = False
        try:
            record("x.y", actor=ACTOR, subject_type="t", subject_id="1")
        finally:
            connection.in_atomic_block = True


@pytest.mark.django_db
def test_sequence_starts_at_one_and_has_no_gaps_even_after_a_rollback() -> None:
    with transaction.atomic():
        first = record("a.one", actor=ACTOR, subject_type="t", subject_id="1", data={"n": 1})
    with pytest.raises(RuntimeError), transaction.atomic():
        record("a.lost", actor=ACTOR, subject_type="t", subject_id="2")
        raise RuntimeError("the change failed, so its event must vanish with it")
    with transaction.atomic():
        batch = record_many(
            [NewEvent("a.two", "t", "3"), NewEvent("a.three", "t", "4", program="p", data={"k": ["v", 2]})], actor=ACTOR
        )
    assert [first.seq, *(e.seq for e in batch)] == [1, 2, 3]
    assert list(Event.objects.values_list("kind", flat=True)) == ["a.one", "a.two", "a.three"]
    stored = Event.objects.get(seq=3)
    assert stored.leaf_hash == stored.compute_leaf_hash()
    assert verify_chain() == []


@pytest.mark.django_db
def test_events_cannot_be_changed_or_deleted_through_the_orm() -> None:
    with transaction.atomic():
        event = record("a.one", actor=ACTOR, subject_type="t", subject_id="1")
    event.kind = "a.forged"
    with pytest.raises(LedgerError):
        event.save()
    with pytest.raises(LedgerError):
        event.delete()
    with pytest.raises(LedgerError):
        Event.objects.filter(seq=event.seq).update(kind="a.forged")
    with pytest.raises(LedgerError):
        Event.objects.all().delete()
    assert Event.objects.get(seq=event.seq).kind == "a.one"


@pytest.mark.django_db
def test_the_database_refuses_updates_behind_the_orms_back() -> None:
    with transaction.atomic():
        event = record("a.one", actor=ACTOR, subject_type="t", subject_id="1")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE exchange_event SET kind = %s WHERE seq = %s", ["a.forged", event.seq])
    if connection.vendor == "postgresql":
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("DELETE FROM exchange_event WHERE seq = %s", [event.seq])
    assert Event.objects.get(seq=event.seq).kind == "a.one"


@pytest.mark.django_db
def test_tampering_is_found_by_recomputing_leaf_hashes() -> None:
    with transaction.atomic():
        record("a.one", actor=ACTOR, subject_type="t", subject_id="1", data={"n": 1})
        record("a.two", actor=ACTOR, subject_type="t", subject_id="2", data={"n": 2})
    # Simulate an attacker with raw database access who also drops the trigger.
    rewrite(("UPDATE exchange_event SET data = %s WHERE seq = 2", ['{"n": 3}']), table="exchange_event")
    assert verify_chain() == [2]


@pytest.mark.django_db(transaction=True)
def test_sequence_numbers_follow_commit_order_under_concurrency() -> None:
    """A transaction that records later commits later, so a feed reader never skips an event.

    Writer 1 records and holds its transaction open; writer 2 starts and records while
    writer 1 is still open. Writer 2 must not get a number until writer 1 commits.
    """
    seqs: dict[str, int] = {}
    first_recorded = threading.Event()
    release_first = threading.Event()

    def writer(name: str, hold: bool) -> None:
        try:
            with transaction.atomic():
                event = record(f"w.{name}", actor=ACTOR, subject_type="t", subject_id=name)
                if hold:
                    first_recorded.set()
                    release_first.wait(timeout=10)
            seqs[name] = event.seq
        finally:
            connection.close()

    one = threading.Thread(target=writer, args=("one", True))
    one.start()
    assert first_recorded.wait(timeout=10)
    two = threading.Thread(target=writer, args=("two", False))
    two.start()
    two.join(timeout=0.5)
    assert "two" not in seqs, "writer 2 committed while writer 1, which recorded first, was still open"
    release_first.set()
    one.join(timeout=20)
    two.join(timeout=20)
    assert seqs == {"one": 1, "two": 2}

    many = [threading.Thread(target=writer, args=(f"m{i}", False)) for i in range(8)]
    for thread in many:
        thread.start()
    for thread in many:
        thread.join(timeout=30)
    assert sorted(seqs.values()) == list(range(1, 11))
    assert list(Event.objects.values_list("seq", flat=True)) == list(range(1, 11))
