"""Rows written by `core.sql.insert_rows` read back as the ORM would have stored them, whether
PostgreSQL was sent them by COPY (a large batch: a peer's bootstrap, a big import) or by an
INSERT (a small one); and the ids it returns are the rows' ids."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.db import connection
from django.forms.models import model_to_dict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import sql
from hashes.models import Hash, Submission
from hashes.services.store import SUBMISSION_COLUMNS
from members.models import Member, Program

# Text as members and peers send it: any character PostgreSQL stores (no NUL), the
# characters COPY's text format escapes among them.
TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from("\\\t\n\r\x08\x0c\x0b N.|,\"'é中😀"),
        # (no NUL, which PostgreSQL's text refuses, nor lone surrogates, which the API refuses)
        st.characters(exclude_characters="\x00", exclude_categories=("Cs",)),
    ),
    max_size=40,
)
LABELS = st.lists(TEXT, max_size=3)
NOW = dt.datetime(2026, 12, 2, 15, 4, 5, 123456, tzinfo=dt.UTC)


def _rows(program: Program, member: Member, hashes: list[Hash], texts: list[tuple[str, list[str]]]) -> list[list]:
    rows = []
    for number, (hash_, (text, labels)) in enumerate(zip(hashes, texts, strict=True)):
        envelope = {"payloadType": "application/vnd.test", "payload": text, "signatures": [{"keyid": "k", "sig": "s"}]}
        rows.append(
            [
                hash_.pk,
                program.pk,
                member.pk,
                None,
                Submission.Status.ACTIVE,
                number % 2 == 0,
                text[:64],
                json.dumps(envelope) if number % 3 else None,
                f"{hash_.pk:064x}",
                None if number % 2 else text,
                NOW - dt.timedelta(days=number, microseconds=number) if number % 2 else None,
                labels,
                text,
                number % 4 or None,
                NOW,
                None,
                number if number % 5 else None,
            ]
        )
    return rows


@pytest.mark.django_db
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.tuples(TEXT, LABELS), min_size=6, max_size=6))
def test_rows_copied_and_rows_inserted_read_back_the_same(
    program: Program, platform_a: object, monkeypatch: pytest.MonkeyPatch, texts: list[tuple[str, list[str]]]
) -> None:
    member = platform_a.member  # type: ignore[attr-defined]
    Submission.objects.all().delete()
    Hash.objects.all().delete()
    hashes = [Hash.objects.create(signal_type="pdq", value=f"{n:064x}") for n in range(12)]
    stored = {}
    for how, threshold, part in (("copied", 1, hashes[:6]), ("inserted", 10**9, hashes[6:])):
        monkeypatch.setattr(sql, "COPY_ROWS", threshold)
        rows = _rows(program, member, part, texts)
        returned = sql.insert_rows(
            Submission, SUBMISSION_COLUMNS, rows, returning=("id", "hash_id", "program_id"), json_text=("envelope",)
        )
        if returned is None:  # (a backend that returns no rows from a multi-row INSERT)
            continue
        by_hash = {hash_id: pk for pk, hash_id, _program in returned}
        assert {(hash_id, program_id) for _pk, hash_id, program_id in returned} == {(h.pk, program.pk) for h in part}
        found = Submission.objects.in_bulk(list(by_hash.values()))
        assert {found[pk].hash_id for pk in found} == set(by_hash), f"{how}: the returned ids are the rows' ids"
        stored[how] = [
            {k: v for k, v in model_to_dict(found[by_hash[h.pk]]).items() if k not in ("id", "hash", "payload_sha256")}
            for h in part
        ]
    if "copied" in stored:
        assert stored["copied"] == stored["inserted"]
    second = Submission.objects.get(hash=hashes[1])
    assert (second.envelope["payload"], second.labels, second.case_ref) == (texts[1][0], texts[1][1], texts[1][0])


@pytest.mark.django_db
def test_copy_returns_only_what_it_wrote(program: Program, monkeypatch: pytest.MonkeyPatch) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("COPY is PostgreSQL's")
    monkeypatch.setattr(sql, "COPY_ROWS", 1)
    with pytest.raises(ValueError, match="only the primary key and the inserted columns"):
        sql.insert_rows(Hash, ("signal_type", "value"), [("pdq", "0" * 64)], returning=("id", "status"))
    assert not Hash.objects.exists()
