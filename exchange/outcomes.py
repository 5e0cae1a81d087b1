"""Members report what they did; what they owe after withdrawals; disputes.

- Outcomes arrive in batches with a result per item, like submissions. They carry counts
  and kinds only: fields that look like content or user identifiers are refused.
- A member may report only on a hash it was sent: the hash was distributed in the
  program (a `hash.added`, or an operator's import) and the member's position in the
  log — its feed cursor, or the cursor of a webhook endpoint that receives additions —
  is at or past that event, or a `POST /api/v1/match` answered it with the hash.
- When a hash is withdrawn in a program, every member that was sent it owes a
  `deleted_after_withdrawal` outcome within the program's deadline. The obligations
  projector reads `hash.withdrawn` events from the log (with its own cursor, so none is
  missed) and creates them; an outcome fulfils them.
- `not_violating` reports from `dispute_threshold` distinct members quarantine the hash
  (a tombstone to members, excluded from matching) until an admin restores or retires it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone
from hashexchange_client import signal_types
from hashexchange_client.payloads import PROGRAM_RE

from core import ledger
from core.ledger import Actor, Event, NewEvent
from core.problems import Problem
from core.sql import BIGINT_MAX
from hashes import services as hash_services
from hashes.models import BenignHash, Hash, Listing, MatchCount, Submission
from members.models import Member, Program
from members.selectors import sent_through_by_program, sent_through_of

from .feed import distribution_seqs
from .models import Dispute, Obligation, Outcome, Projection

MAX_BATCH = 1000
MAX_TAGS = 16
MAX_COUNT = 1_000_000_000
_TAG = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,39}")
_LONG_NUMBER = re.compile(r"\d{6,}")
_CLIENT_REF = re.compile(r"[A-Za-z0-9._:-]{1,100}")
FIELDS = {"hash_id", "signal_type", "value", "program", "kind", "occurred_at", "count", "tags", "client_ref"}
# Names that suggest content or people; refused with a message saying why.
PERSONAL_FIELDS = {
    "user", "user_id", "userid", "uid", "account", "account_id", "username", "email", "phone", "ip", "ip_address",
    "url", "uri", "content", "image", "video", "media", "file", "filename", "name", "device_id", "post_id",
}  # fmt: skip


@dataclass
class OutcomeResult:
    index: int
    status: str = "rejected"
    outcome_id: int | None = None
    hash_id: int | None = None
    error: Problem | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "status": self.status,
            "outcome_id": self.outcome_id,
            "hash_id": self.hash_id,
            "error": {"code": self.error.code, "detail": self.error.detail} if self.error else None,
        }


@dataclass
class _Parsed:
    result: OutcomeResult
    program_slug: str
    kind: str
    occurred_at: dt.datetime
    count: int
    tags: list[str]
    client_ref: str
    hash_id: int | None = None
    signal: tuple[str, str] | None = None
    program: Program | None = None
    hash: Hash | None = None

    def digest(self) -> str:
        body = [self.hash.pk, self.program_slug, self.kind, ledger.format_time(self.occurred_at), self.count, self.tags]
        return hashlib.sha256(json.dumps(body, separators=(",", ":")).encode()).hexdigest()


def _parse(index: int, item: Any, now: dt.datetime) -> _Parsed:
    if not isinstance(item, dict):
        raise Problem("malformed", "each outcome is a JSON object")
    personal = sorted(k for k in item if k.lower() in PERSONAL_FIELDS)
    if personal:
        raise Problem(
            "personal_data_refused",
            f"outcomes carry counts only, no content and no user identifiers: remove {', '.join(personal)}",
        )
    unknown = sorted(set(item) - FIELDS)
    if unknown:
        raise Problem("malformed", f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(FIELDS))}")
    kind = item.get("kind")
    if kind not in Outcome.Kind.values:
        raise Problem("unknown_kind", f"kind must be one of {', '.join(Outcome.Kind.values)}")
    program = item.get("program")
    if not isinstance(program, str) or not PROGRAM_RE.fullmatch(program):
        raise Problem("malformed", "program (a slug) is required: 1-64 characters of a-z A-Z 0-9 _ -")
    client_ref = item.get("client_ref")
    if not isinstance(client_ref, str) or not _CLIENT_REF.fullmatch(client_ref):
        raise Problem("malformed", "client_ref is required: 1-100 characters of A-Z a-z 0-9 . _ : -")
    raw_time = item.get("occurred_at")
    try:
        occurred_at = dt.datetime.fromisoformat(raw_time) if isinstance(raw_time, str) else None
    except ValueError:
        occurred_at = None
    if occurred_at is None or occurred_at.tzinfo is None:
        raise Problem("malformed", "occurred_at must be an RFC 3339 time with a zone")
    if occurred_at > now + dt.timedelta(seconds=settings.SUBMISSION_CLOCK_SKEW_SECONDS):
        raise Problem("future_time", "occurred_at is in the future; report what has happened")
    try:
        occurred_at = occurred_at.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is a time before the year 1 in UTC
        raise Problem("malformed", "occurred_at is before the year 1 in UTC") from None
    count = item.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise Problem("malformed", "count must be a whole number from 1 up")
    tags = item.get("tags", [])
    if not isinstance(tags, list) or len(tags) > MAX_TAGS:
        raise Problem("malformed", f"tags must be a list of at most {MAX_TAGS} short strings")
    for tag in tags:
        if not isinstance(tag, str) or not _TAG.fullmatch(tag):
            raise Problem("malformed", f"tag {tag!r} must be 1-40 characters of a-z 0-9 _ . : -")
        if _LONG_NUMBER.search(tag):
            raise Problem("personal_data_refused", f"tag {tag!r} looks like an identifier; tags are labels")
    parsed = _Parsed(
        result=OutcomeResult(index=index),
        program_slug=program,
        kind=kind,
        occurred_at=occurred_at,
        count=count,
        tags=sorted(set(tags)),
        client_ref=client_ref,
    )
    if "hash_id" in item:
        hash_id = item["hash_id"]
        if isinstance(hash_id, bool) or not isinstance(hash_id, int) or not 1 <= hash_id <= BIGINT_MAX:
            raise Problem("malformed", f"hash_id must be a whole number from 1 to {BIGINT_MAX}")
        parsed.hash_id = hash_id
    else:
        try:
            kind_ = signal_types.get(item.get("signal_type"))
            parsed.signal = (kind_.name, kind_.validate(item.get("value")))
        except signal_types.SignalValueError as exc:
            raise Problem("invalid_hash", f"give hash_id, or signal_type and value: {exc}") from None
    return parsed


# Was the member sent the hash? ------------------------------------------------------------


# Outcomes ---------------------------------------------------------------------------------


def outcomes_create(*, member: Member, items: Sequence[Any], now: dt.datetime | None = None) -> list[OutcomeResult]:
    """Check and store a batch of outcomes; one result per item.

    Steps: parse each item; resolve hashes and programs (a query each); refuse hashes the
    member was not sent; resolve client_ref repeats (same report: duplicate; different:
    refused); then in one transaction, under the ledger lock, resolve repeats again (a
    concurrent retry may have stored them meanwhile), store the outcomes, record
    `outcome.reported`, fulfil obligations, and open disputes that reached their
    program's threshold.
    """
    now = now or timezone.now()
    results = [OutcomeResult(index=i) for i in range(len(items))]
    parsed: list[_Parsed] = []
    for index, item in enumerate(items):
        try:
            parsed.append(_parse(index, item, now))
            parsed[-1].result = results[index]
        except Problem as rejection:
            results[index].error = rejection
    fresh, twins = _drop_repeats(member, _resolve(member, parsed))
    if fresh:
        _store(member, fresh, now)
    for first, twin in twins:
        if first.status == "rejected":  # its client_ref was taken by a concurrent, different report
            twin.error = first.error
        else:
            twin.status, twin.outcome_id = "duplicate", first.outcome_id
    return results


def _reject(item: _Parsed, code: str, detail: str, status: int = 400) -> None:
    item.result.error = Problem(code, detail, status)


def _resolve(member: Member, items: list[_Parsed]) -> list[_Parsed]:
    programs = {p.slug: p for p in Program.objects.filter(slug__in={i.program_slug for i in items})}
    by_id = Hash.objects.in_bulk({i.hash_id for i in items if i.hash_id is not None})
    by_value: dict[tuple[str, str], Hash] = {}
    signals = defaultdict(set)
    for item in items:
        if item.signal:
            signals[item.signal[0]].add(item.signal[1])
    for signal_type, values in signals.items():
        # A long value (vPDQ, TMK+PDQF) is stored under its digest.
        kind_ = signal_types.get(signal_type)
        keys = {kind_.storage_key(value): value for value in values}
        for row in Hash.objects.filter(signal_type=signal_type, value__in=list(keys)):
            by_value[(row.signal_type, keys[row.value])] = row
    kept = []
    for item in items:
        item.program = programs.get(item.program_slug)
        item.hash = by_id.get(item.hash_id) if item.hash_id is not None else by_value.get(item.signal)
        if item.program is None:
            _reject(item, "unknown_program", f"unknown program {item.program_slug!r}")
        elif item.hash is None:
            _reject(item, "unknown_hash", "no such hash", 404)
        else:
            kept.append(item)
    distributed = distribution_seqs((i.hash.pk, i.program.pk) for i in kept)
    # A platform that does not hold the lists asks POST /api/v1/match instead; a hash that
    # a match answered it with was sent to it just the same.
    matched = set(
        MatchCount.objects.filter(member=member, hash_id__in={i.hash.pk for i in kept}).values_list(
            "hash_id", flat=True
        )
    )
    # How far each program's hashes were sent to the member (members/selectors.py): the
    # same rule that decides who is told of a withdrawal and who owes its acknowledgement.
    enrolled = sent_through_of(member=member)
    sent = []
    for item in kept:
        seq = distributed.get((item.hash.pk, item.program.pk))
        through = enrolled.get(item.program.pk)
        if through is None or seq is None or (through < seq and item.hash.pk not in matched):
            _reject(item, "hash_not_sent", f"this hash was not sent to you in {item.program.slug!r}", 403)
            continue
        item.result.hash_id = item.hash.pk
        sent.append(item)
    return sent


def _drop_repeats(
    member: Member, items: list[_Parsed]
) -> tuple[list[_Parsed], list[tuple[OutcomeResult, OutcomeResult]]]:
    """Same client_ref, same report: a duplicate with the first's result; different report: refused.

    Returns the items to store and (first, repeat) pairs for repeats inside the batch.
    """
    stored = {
        o.client_ref: o
        for o in Outcome.objects.filter(member=member, client_ref__in={i.client_ref for i in items}).only(
            "id", "client_ref", "content_digest"
        )
    }
    fresh: list[_Parsed] = []
    twins: list[tuple[OutcomeResult, OutcomeResult]] = []
    first: dict[str, _Parsed] = {}
    for item in items:
        digest = item.digest()
        earlier = stored.get(item.client_ref) or first.get(item.client_ref)
        if earlier is None:
            first[item.client_ref] = item
            fresh.append(item)
        elif (earlier.content_digest if isinstance(earlier, Outcome) else earlier.digest()) != digest:
            _reject(
                item,
                "client_ref_conflict",
                f"client_ref {item.client_ref!r} was already used for a different report",
                409,
            )
        elif isinstance(earlier, Outcome):
            item.result.status, item.result.outcome_id = "duplicate", earlier.pk
        else:
            twins.append((earlier.result, item.result))
    return fresh, twins


@transaction.atomic
def _store(member: Member, items: list[_Parsed], now: dt.datetime) -> None:
    ledger.lock()
    # A request with the same client_refs (a client's retry while this try was running)
    # may have stored them while this one waited for the lock. Every store of outcomes
    # holds the lock, so what is read now stays true until commit: its reports are
    # repeats like any other (duplicate, or client_ref_conflict), not an IntegrityError
    # that fails the whole request.
    items, _ = _drop_repeats(member, items)
    if not items:
        return
    rows = [
        Outcome(
            member=member,
            hash=i.hash,
            program=i.program,
            kind=i.kind,
            occurred_at=i.occurred_at,
            count=i.count,
            tags=i.tags,
            client_ref=i.client_ref,
            content_digest=i.digest(),
            received_at=now,
        )
        for i in items
    ]
    Outcome.objects.bulk_create(rows)
    if any(row.pk is None for row in rows):  # a backend that does not return ids
        ids = dict(
            Outcome.objects.filter(member=member, client_ref__in=[r.client_ref for r in rows]).values_list(
                "client_ref", "pk"
            )
        )
        for row in rows:
            row.pk = ids[row.client_ref]
    events = []
    for item, row in zip(items, rows, strict=True):
        item.result.status, item.result.outcome_id = "accepted", row.pk
        events.append(
            NewEvent(
                "outcome.reported",
                "hash",
                str(row.hash_id),
                program=item.program.slug,
                data={
                    "outcome_id": row.pk,
                    "member": member.slug,
                    "hash_id": row.hash_id,
                    "kind": row.kind,
                    "occurred_at": ledger.format_time(row.occurred_at),
                    "count": row.count,
                    "tags": row.tags,
                },
            )
        )
    ledger.record_many(events, actor=Actor.member(member.slug))
    deletions = [row for row in rows if row.kind == Outcome.Kind.DELETED_AFTER_WITHDRAWAL]
    if deletions:
        _fulfil(member, deletions)
    disputed = {(row.hash_id, row.program_id) for row in rows if row.kind == Outcome.Kind.NOT_VIOLATING}
    if disputed:
        _open_disputes(disputed)


def _fulfil(member: Member, deletions: list[Outcome]) -> None:
    """A deletion report fulfils the member's open obligations for that hash and program."""
    for row in deletions:
        Obligation.objects.filter(
            member=member,
            hash_id=row.hash_id,
            program_id=row.program_id,
            fulfilled_at__isnull=True,
            created_at__lte=row.occurred_at + _skew(),
        ).update(fulfilled_at=row.occurred_at, outcome=row)


def _skew() -> dt.timedelta:
    return dt.timedelta(seconds=settings.SUBMISSION_CLOCK_SKEW_SECONDS)


# Disputes ---------------------------------------------------------------------------------


def _open_disputes(pairs: set[tuple[int, int]]) -> None:
    """Quarantine hashes that enough distinct members in a program said were not violating."""
    counts = (
        Outcome.objects.filter(
            kind=Outcome.Kind.NOT_VIOLATING, hash_id__in={h for h, _ in pairs}, program_id__in={p for _, p in pairs}
        )
        .values("hash_id", "program_id")
        .annotate(reporters=models.Count("member", distinct=True))
    )
    programs = Program.objects.in_bulk({p for _, p in pairs})
    for row in counts:
        program = programs[row["program_id"]]
        if (row["hash_id"], row["program_id"]) not in pairs or row["reporters"] < program.dispute_threshold:
            continue
        hash_row = Hash.objects.select_for_update().get(pk=row["hash_id"])
        if hash_row.status != Hash.Status.ACTIVE:
            continue
        dispute = Dispute.objects.create(hash=hash_row, program=program, reporters=row["reporters"])
        now = timezone.now()
        hash_row.status, hash_row.status_changed_at = Hash.Status.QUARANTINED, now
        hash_row.status_reason = f"disputed by {row['reporters']} members in {program.slug}"
        hash_row.save(update_fields=["status", "status_changed_at", "status_reason"])
        ledger.record_many(
            [
                NewEvent(
                    "hash.quarantined",
                    "hash",
                    str(hash_row.pk),
                    program=listing.program.slug,
                    data={
                        **hash_row.event_data(),
                        "dispute_id": dispute.pk,
                        "reporters": row["reporters"],
                        "reason": hash_row.status_reason,
                    },
                )
                for listing in hash_row.listings.select_related("program").filter(status=Listing.Status.ACTIVE)
            ],
            actor=Actor.system("disputes"),
        )


@transaction.atomic
def dispute_decide(*, dispute: Dispute, decision: str, reason: str, actor: Actor) -> Dispute:
    """An admin ends a dispute: `restored` (members are told the hash is back) or `retired`."""
    dispute = hash_services.decide_open(
        model=Dispute,
        pk=dispute.pk,
        decision=decision,
        choices=(Dispute.Status.RESTORED, Dispute.Status.RETIRED),
        reason=reason,
        actor=actor,
        related=("hash", "program"),
    )
    row = dispute.hash
    if decision == Dispute.Status.RETIRED:
        hash_services.hash_set_status(hash_=row, status=Hash.Status.RETIRED, reason=reason, actor=actor)
        # Not violating, by members' reports and an admin's decision: refuse it from now on.
        hash_services.benign_add_hash(
            hash_=row, program=dispute.program, reason=reason, actor=actor, source=BenignHash.Source.DISPUTE
        )
        return dispute
    hash_services.hash_restore(hash_=row, reason=reason, actor=actor, why={"dispute_id": dispute.pk})
    return dispute


# Obligations ------------------------------------------------------------------------------

OBLIGATIONS = "obligations"


def obligations_project(*, limit: int = 2000) -> int:
    """Create the obligations owed for `hash.withdrawn` events not yet projected.

    Steps, in one transaction holding the projection's row lock:
    1. Read up to `limit` `hash.withdrawn` events after the projection's cursor (and no
       further than the newest committed event, so none can appear behind it later).
    2. For each, the members enrolled in the program (receiving) whose position in the
       log had reached the hash's distribution, except the hash's own submitters there.
    3. Create their obligations (due after the program's deadline), fulfilled at once
       where a deletion was already reported; move the cursor.
    Returns how many obligations were created.
    """
    with transaction.atomic():
        cursor, _ = Projection.objects.select_for_update().get_or_create(name=OBLIGATIONS)
        newest = Event.objects.aggregate(last=models.Max("seq"))["last"] or 0
        events = list(
            Event.objects.filter(seq__gt=cursor.seq, seq__lte=newest, kind="hash.withdrawn").order_by("seq")[:limit]
        )
        created = _project(events) if events else 0
        cursor.seq = events[-1].seq if len(events) == limit else newest
        cursor.updated_at = timezone.now()
        cursor.save(update_fields=["seq", "updated_at"])
    return created


def _project(events: list[Event]) -> int:
    programs = {p.slug: p for p in Program.objects.filter(slug__in={e.program for e in events})}
    pairs = {(e.data["hash_id"], programs[e.program].pk) for e in events if e.program in programs}
    distributed = distribution_seqs(pairs)
    # Whoever was sent the hash owes the acknowledgement, whatever its enrollment now.
    sent = sent_through_by_program(program_ids={p for _, p in pairs}, kinds=Member.ACKNOWLEDGING_KINDS)
    submitters = set(
        Submission.objects.filter(hash_id__in={h for h, _ in pairs}, program_id__in={p for _, p in pairs}).values_list(
            "hash_id", "program_id", "submitter_id"
        )
    )
    rows = []
    for event in events:
        program = programs.get(event.program)
        if program is None:
            continue
        hash_id = event.data["hash_id"]
        seq = distributed.get((hash_id, program.pk))
        if seq is None:
            continue
        due = event.created_at + dt.timedelta(hours=program.removal_deadline_hours)
        for member_id, through in sent.get(program.pk, {}).items():
            if through >= seq and (hash_id, program.pk, member_id) not in submitters:
                rows.append(
                    Obligation(
                        member_id=member_id,
                        hash_id=hash_id,
                        program=program,
                        event_seq=event.seq,
                        created_at=event.created_at,
                        due_at=due,
                    )
                )
    Obligation.objects.bulk_create(rows, ignore_conflicts=True)
    # Deletions reported before the projector ran fulfil the new obligations at once.
    reported = defaultdict(list)
    for outcome in Outcome.objects.filter(
        kind=Outcome.Kind.DELETED_AFTER_WITHDRAWAL,
        member_id__in={r.member_id for r in rows},
        hash_id__in={r.hash_id for r in rows},
        program_id__in={r.program_id for r in rows},
    ).order_by("occurred_at"):
        reported[(outcome.member_id, outcome.hash_id, outcome.program_id)].append(outcome)
    for row in rows:
        done = next(
            (
                o
                for o in reported[(row.member_id, row.hash_id, row.program_id)]
                if o.occurred_at >= row.created_at - _skew()
            ),
            None,
        )
        if done is not None:
            Obligation.objects.filter(member_id=row.member_id, event_seq=row.event_seq).update(
                fulfilled_at=done.occurred_at, outcome=done
            )
    return len(rows)
