"""Signed submissions: check each envelope of a batch, then store it by the one store path.

Submissions arrive in batches of up to SUBMISSION_BATCH_MAX envelopes. Each envelope
gets its own result (accepted, duplicate or rejected with a reason); a rejected item
stores nothing. The batch is checked with a constant number of queries, then handed to
`store.submissions_store`, which writes it in one transaction under the ledger lock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.utils import timezone
from hashexchange_client import signal_types

from core import metrics
from core.problems import Problem
from core.sql import values_in
from members.models import Member, Program, SigningKey
from members.selectors import programs_by_slug, submitting_program_ids

from .. import envelopes
from ..models import Submission
from .signed import check_signed_time, signing_keys, verify_signed
from .store import ItemResult, Pending, submission_row, submissions_store


@dataclass
class _Checked:
    """An envelope that passed every check that needs no write."""

    result: ItemResult
    envelope: dict[str, Any]
    key: SigningKey
    digest: str
    payload: envelopes.SubmissionPayload
    program: Program


def check_submitter(*, member: Member, program: Program, enrolled: bool) -> None:
    """May this member submit to this program? Opted in, and of a kind the program takes."""
    if not enrolled:
        raise Problem(
            "not_enrolled",
            f"you are not opted in to {program.slug!r}; opt in with POST /api/v1/enrollments",
            status=403,
        )
    if member.kind not in program.submitter_kinds:
        raise Problem("not_allowed", f"{member.kind} members may not submit to {program.slug!r}", status=403)


def check_signal_type(*, program: Program, signal_type: str) -> None:
    if signal_type not in program.signal_types:
        raise Problem(
            "signal_type_not_allowed",
            f"{program.slug!r} accepts {', '.join(program.signal_types)}, not {signal_type}",
        )


def _check_program(*, member: Member, program: Program | None, slug: str, opted_in: set[int]) -> Program:
    if program is None:
        raise Problem("unknown_program", f"unknown program {slug!r}; see GET /api/v1/programs")
    check_submitter(member=member, program=program, enrolled=program.pk in opted_in)
    return program


def _check_submission(
    *,
    member: Member,
    index: int,
    envelope: Any,
    keys: dict[str, SigningKey],
    programs: dict[str, Program],
    opted_in: set[int],
    now: dt.datetime,
) -> _Checked:
    key, payload_bytes = verify_signed(
        member=member, envelope=envelope, keys=keys, payload_type=envelopes.SUBMISSION_TYPE, now=now
    )
    payload = envelopes.parse_submission(payload_bytes)
    check_signed_time(key=key, created_at=payload.created_at, now=now)
    program = _check_program(
        member=member, program=programs.get(payload.program), slug=payload.program, opted_in=opted_in
    )
    check_signal_type(program=program, signal_type=payload.signal_type)
    if payload.signal_type == "pdq":
        try:
            signal_types.check_pdq_quality(payload.quality, program.min_pdq_quality)
        except signal_types.SignalValueError as exc:
            raise Problem("low_quality", str(exc)) from None
    return _Checked(
        result=ItemResult(index=index),
        envelope=envelopes.canonical_envelope(envelope),
        key=key,
        digest=envelopes.payload_digest(payload_bytes),
        payload=payload,
        program=program,
    )


def submissions_create(*, member: Member, items: Sequence[Any], now: dt.datetime | None = None) -> list[ItemResult]:
    """Check and store a batch of signed submission envelopes; one result per item.

    Steps:
    1. Look up every claimed key, the programs and the member's enrollments (3 queries).
    2. Check each envelope on its own: signature, payload, time, program, signal type.
    3. Drop repeats: an envelope already stored (same payload bytes) is a duplicate with
       its first result; a nonce already used by the key with other bytes is refused.
    4. In one transaction under the ledger lock: upsert hashes, skip hashes this member
       already supports in the program (duplicate), refuse quarantined or retired ones,
       store submissions, activate listings, and record `hash.added` for the first
       active support of a hash in a program, `submission.added` otherwise.
    """
    now = now or timezone.now()
    keys = signing_keys(items, member=member)
    programs, opted_in = programs_by_slug(), submitting_program_ids(member=member)
    results = [ItemResult(index=i) for i in range(len(items))]
    checked: list[_Checked] = []
    for index, envelope in enumerate(items):
        try:
            item = _check_submission(
                member=member,
                index=index,
                envelope=envelope,
                keys=keys,
                programs=programs,
                opted_in=opted_in,
                now=now,
            )
        except Problem as rejection:
            results[index].error = rejection
            continue
        item.result = results[index]
        checked.append(item)
    fresh, twins = _drop_repeats(checked)
    submissions_store(member=member, items=[_pending(item, member=member, now=now) for item in fresh], now=now)
    for first, twin in twins:
        twin.repeat(first)
    metrics.submission_results((r.status, r.error.code if r.error else "") for r in results)
    return results


def _pending(item: _Checked, *, member: Member, now: dt.datetime) -> Pending:
    payload = item.payload
    row = submission_row(
        program=item.program,
        member=member,
        now=now,
        labels=payload.labels,
        signing_key_id=item.key.pk,
        envelope=item.envelope,
        payload_sha256=item.digest,
        nonce=payload.nonce,
        signed_at=payload.created_at,
        case_ref=payload.case,
        quality=payload.quality,
    )
    return Pending(
        result=item.result, program=item.program, signal_type=payload.signal_type, value=payload.value, row=row
    )


def _drop_repeats(items: list[_Checked]) -> tuple[list[_Checked], list[tuple[ItemResult, ItemResult]]]:
    """Resolve envelopes seen before (same bytes: duplicate) and reused nonces (refused).

    Returns the items still to store, and (first, repeat) result pairs for envelopes
    that occur twice in the batch.
    """
    twins: list[tuple[ItemResult, ItemResult]] = []
    if not items:
        return items, twins
    stored = {
        s.payload_sha256: s
        for s in Submission.objects.filter(payload_sha256__in=values_in([item.digest for item in items])).only(
            "id", "hash_id", "payload_sha256"
        )
    }
    used_nonces = {
        (key_id, nonce): digest
        for key_id, nonce, digest in Submission.objects.filter(
            signing_key__in={item.key.pk for item in items},
            nonce__in=values_in({item.payload.nonce for item in items}),
        ).values_list("signing_key_id", "nonce", "payload_sha256")
    }
    fresh: list[_Checked] = []
    first_of_digest: dict[str, _Checked] = {}
    for item in items:
        previous = stored.get(item.digest)
        if previous is not None:
            item.result.status = "duplicate"
            item.result.hash_id, item.result.submission_id = previous.hash_id, previous.pk
            continue
        if item.digest in first_of_digest:
            twins.append((first_of_digest[item.digest].result, item.result))
            continue
        nonce_key = (item.key.pk, item.payload.nonce)
        if nonce_key in used_nonces and used_nonces[nonce_key] != item.digest:
            item.result.error = Problem(
                "nonce_reused", "this key already signed another envelope with this nonce; use a fresh nonce", 409
            )
            continue
        used_nonces[nonce_key] = item.digest
        first_of_digest[item.digest] = item
        fresh.append(item)
    return fresh, twins
