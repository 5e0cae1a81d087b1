"""Withdrawals signed by a submitter, and admins' decisions to withdraw or retire a hash.

Both end a hash's distribution in a program by a `hash.withdrawn` event (a tombstone
for members, and an obligation to acknowledge for those that were sent it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone
from hashexchange_client import signal_types

from core import ledger
from core.ledger import Actor, NewEvent
from core.problems import Problem
from members.models import Member, Program, SigningKey

from .. import envelopes
from ..models import Hash, Listing, Submission, Withdrawal
from .signed import check_signed_time, signing_keys, verify_signed


@dataclass
class WithdrawalResult:
    withdrawal: Withdrawal
    hash: Hash
    listing_status: str
    created: bool


def withdrawal_create(*, member: Member, envelope: Any, now: dt.datetime | None = None) -> WithdrawalResult:
    """Withdraw the member's own submission(s) of a hash in a program, by signed envelope.

    The hash stops being distributed in that program when no active submission supports
    it there any more (`hash.withdrawn`); otherwise only `submission.withdrawn` is
    recorded. The same envelope sent again returns the first result.
    """
    now = now or timezone.now()
    keys = signing_keys([envelope], member=member)
    key, payload_bytes = verify_signed(
        member=member, envelope=envelope, keys=keys, payload_type=envelopes.WITHDRAWAL_TYPE, now=now
    )
    digest = envelopes.payload_digest(payload_bytes)
    previous = _previous_result(digest)
    if previous is not None:
        return previous
    payload = envelopes.parse_withdrawal(payload_bytes)
    check_signed_time(key=key, created_at=payload.created_at, now=now)
    if Withdrawal.objects.filter(signing_key=key, nonce=payload.nonce).exists():
        raise Problem("nonce_reused", "this key already signed another withdrawal with this nonce", status=409)
    program = Program.objects.filter(slug=payload.program).first()
    if program is None:
        raise Problem("unknown_program", f"unknown program {payload.program!r}")
    stored_as = signal_types.get(payload.signal_type).storage_key(payload.value)
    row = Hash.objects.filter(signal_type=payload.signal_type, value=stored_as).first()
    if row is None:
        raise Problem("unknown_hash", "no such hash has been submitted", status=404)
    return _store_withdrawal(
        member=member, key=key, envelope=envelope, digest=digest, payload=payload, program=program, row=row, now=now
    )


def withdrawal_store_relayed(
    *,
    member: Member,
    key: SigningKey,
    envelope: Any,
    payload_bytes: bytes,
    program: Program,
    row: Hash,
    event_data: Mapping[str, Any],
    now: dt.datetime,
) -> WithdrawalResult:
    """Store a withdrawal a peer relayed, whose signature federation already checked.

    The same store path as a member's own withdrawal, without the freshness check (it
    was signed at the origin, maybe long ago); `event_data` (its origin) is added to the
    events, so it travels on. The same envelope again returns the first result.
    """
    digest = envelopes.payload_digest(payload_bytes)
    previous = _previous_result(digest)
    if previous is not None:
        return previous
    payload = envelopes.parse_withdrawal(payload_bytes)
    return _store_withdrawal(
        member=member,
        key=key,
        envelope=envelope,
        digest=digest,
        payload=payload,
        program=program,
        row=row,
        now=now,
        event_data=event_data,
    )


def _previous_result(digest: str) -> WithdrawalResult | None:
    """The first result for a withdrawal whose payload was stored before (sent again)."""
    previous = Withdrawal.objects.select_related("hash").filter(payload_sha256=digest).first()
    if previous is None:
        return None
    listing = Listing.objects.get(hash=previous.hash, program_id=previous.program_id)
    return WithdrawalResult(previous, previous.hash, listing.status, created=False)


@transaction.atomic
def _store_withdrawal(
    *,
    member: Member,
    key: SigningKey,
    envelope: Any,
    digest: str,
    payload: envelopes.WithdrawalPayload,
    program: Program,
    row: Hash,
    now: dt.datetime,
    event_data: Mapping[str, Any] | None = None,
) -> WithdrawalResult:
    ledger.lock()
    # A held submission (never distributed) may be withdrawn by its submitter too.
    targets = Submission.objects.select_for_update().filter(
        submitter=member, program=program, hash=row, status__in=[Submission.Status.ACTIVE, Submission.Status.HELD]
    )
    if payload.case:
        targets = targets.filter(case_ref=payload.case)
    targets = list(targets)
    if not targets:
        raise Problem(
            "nothing_to_withdraw",
            f"you have no active submission of this hash in {program.slug!r}"
            + (f" for case {payload.case!r}" if payload.case else ""),
            status=409,
        )
    withdrawal = Withdrawal.objects.create(
        hash=row,
        program=program,
        submitter=member,
        signing_key=key,
        envelope=envelopes.canonical_envelope(envelope),
        payload_sha256=digest,
        nonce=payload.nonce,
        signed_at=payload.created_at,
        case_ref=payload.case,
        reason=payload.reason,
        received_at=now,
    )
    Submission.objects.filter(pk__in=[s.pk for s in targets]).update(
        status=Submission.Status.WITHDRAWN, withdrawn_at=now, withdrawal=withdrawal
    )
    actor = Actor.member(member.slug)
    base = {**row.event_data(), **(event_data or {})}
    events = [
        NewEvent(
            "submission.withdrawn",
            "hash",
            str(row.pk),
            program=program.slug,
            data={**base, "submission_id": s.pk, "withdrawal_id": withdrawal.pk, "submitter": member.slug},
        )
        for s in targets
    ]
    listing = Listing.objects.select_for_update().get(hash=row, program=program)
    still_supported = (
        listing.import_batch_id is not None
        or Submission.objects.filter(hash=row, program=program, status=Submission.Status.ACTIVE).exists()
    )
    if listing.status == Listing.Status.HELD:
        _drop_held_listing(listing, now=now)
    elif not still_supported and listing.status == Listing.Status.ACTIVE:
        listing.status, listing.changed_at = Listing.Status.WITHDRAWN, now
        listing.save(update_fields=["status", "changed_at"])
        events.append(
            NewEvent(
                "hash.withdrawn",
                "hash",
                str(row.pk),
                program=program.slug,
                data={**base, "withdrawal_id": withdrawal.pk, "reason": "withdrawn by its submitters"},
            )
        )
        _refresh_hash_status(row, now=now)
    ledger.record_many(events, actor=actor)
    return WithdrawalResult(withdrawal, row, listing.status, created=True)


def _drop_held_listing(listing: Listing, *, now: dt.datetime) -> None:
    """A held listing (never distributed) that no held submission supports any more goes
    away silently: nobody was sent the hash, so nobody is told. A held hash with nothing
    left at all is withdrawn."""
    if Submission.objects.filter(
        hash_id=listing.hash_id, program_id=listing.program_id, status=Submission.Status.HELD
    ).exists():
        return
    listing.delete()
    Hash.objects.filter(pk=listing.hash_id, status=Hash.Status.HELD).exclude(
        submissions__status=Submission.Status.HELD
    ).update(status=Hash.Status.WITHDRAWN, status_changed_at=now, status_reason="no active support")


def _refresh_hash_status(row: Hash, *, now: dt.datetime) -> None:
    """An active hash with no active listing left becomes withdrawn."""
    if row.status == Hash.Status.ACTIVE and not row.listings.filter(status=Listing.Status.ACTIVE).exists():
        row.status, row.status_changed_at, row.status_reason = Hash.Status.WITHDRAWN, now, "no active support"
        row.save(update_fields=["status", "status_changed_at", "status_reason"])


@transaction.atomic
def hash_set_status(*, hash_: Hash, status: str, reason: str, actor: Actor) -> Hash:
    """An admin withdraws or retires a hash everywhere, with a reason.

    Members are told by a `hash.withdrawn` event per program it was distributed in;
    `hash.retired` records that it may never come back.
    """
    if status not in (Hash.Status.WITHDRAWN, Hash.Status.RETIRED):
        raise Problem.field("status", f"admins set withdrawn or retired, not {status}")
    if not reason.strip():
        raise Problem.field("reason", "give a reason; it is recorded in the log")
    ledger.lock()
    row = Hash.objects.select_for_update().get(pk=hash_.pk)
    if row.status == Hash.Status.RETIRED:
        raise Problem.field("status", "this hash is retired; that is final")
    now = timezone.now()
    # Nothing supports the hash any more: a later submission starts it afresh.
    row.submissions.filter(status__in=[Submission.Status.ACTIVE, Submission.Status.HELD]).update(
        status=Submission.Status.WITHDRAWN, withdrawn_at=now
    )
    row.listings.filter(status=Listing.Status.HELD).delete()  # never distributed: nobody to tell
    base = {**row.event_data(), "reason": reason}
    events = []
    for listing in row.listings.select_related("program").filter(status=Listing.Status.ACTIVE):
        listing.status, listing.changed_at = Listing.Status.WITHDRAWN, now
        listing.save(update_fields=["status", "changed_at"])
        events.append(
            NewEvent("hash.withdrawn", "hash", str(row.pk), program=listing.program.slug, data={**base, "by": "admin"})
        )
    if status == Hash.Status.RETIRED:
        events.append(NewEvent("hash.retired", "hash", str(row.pk), data=base))
    if row.status != status:
        row.status, row.status_changed_at, row.status_reason = status, now, reason
        row.save(update_fields=["status", "status_changed_at", "status_reason"])
    ledger.record_many(events, actor=actor)
    return row


@transaction.atomic
def submissions_withdraw_relayed(
    *, member: Member, hash_: Hash, program: Program, reason: str, event_data: Mapping[str, Any]
) -> int:
    """End a peer's support of a hash in a program because that peer no longer distributes it.

    For tombstones a peer relays without a member's signature (its admin withdrew,
    retired or quarantined the hash): only what that peer itself brought is withdrawn,
    never other members' submissions, so a peer can take back its own word and no more.
    Records `submission.withdrawn`, and `hash.withdrawn` when no support is left.
    Returns how many submissions were withdrawn.
    """
    ledger.lock()
    now = timezone.now()
    targets = list(
        Submission.objects.select_for_update().filter(
            submitter=member, program=program, hash=hash_, status=Submission.Status.ACTIVE
        )
    )
    if not targets:
        return 0
    Submission.objects.filter(pk__in=[s.pk for s in targets]).update(
        status=Submission.Status.WITHDRAWN, withdrawn_at=now
    )
    base = {**hash_.event_data(), **event_data}
    events = [
        NewEvent(
            "submission.withdrawn",
            "hash",
            str(hash_.pk),
            program=program.slug,
            data={**base, "submission_id": s.pk, "submitter": member.slug, "reason": reason},
        )
        for s in targets
    ]
    listing = Listing.objects.select_for_update().get(hash=hash_, program=program)
    still_supported = (
        listing.import_batch_id is not None
        or Submission.objects.filter(hash=hash_, program=program, status=Submission.Status.ACTIVE).exists()
    )
    if not still_supported and listing.status == Listing.Status.ACTIVE:
        listing.status, listing.changed_at = Listing.Status.WITHDRAWN, now
        listing.save(update_fields=["status", "changed_at"])
        events.append(
            NewEvent("hash.withdrawn", "hash", str(hash_.pk), program=program.slug, data={**base, "reason": reason})
        )
        _refresh_hash_status(hash_, now=now)
    ledger.record_many(events, actor=Actor.member(member.slug))
    return len(targets)


def hash_restore(*, hash_: Hash, reason: str, actor: Actor, why: dict[str, Any]) -> None:
    """A quarantined hash is active again (a dispute or a match-rate anomaly decided so):
    members hear `hash.restored` for each program it is listed in, with `why` (which
    decision) and the reason."""
    hash_.status, hash_.status_changed_at, hash_.status_reason = Hash.Status.ACTIVE, timezone.now(), ""
    hash_.save(update_fields=["status", "status_changed_at", "status_reason"])
    data = {**hash_.event_data(), **why, "reason": reason}
    ledger.record_many(
        [
            NewEvent("hash.restored", "hash", str(hash_.pk), program=listing.program.slug, data=data)
            for listing in hash_.listings.select_related("program").filter(status=Listing.Status.ACTIVE)
        ],
        actor=actor,
    )
