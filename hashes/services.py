"""Writes to hashes: signed submissions, withdrawals, and admins' decisions.

Submissions arrive in batches of up to SUBMISSION_BATCH_MAX envelopes. Each envelope
gets its own result (accepted, duplicate or rejected with a reason); a rejected item
stores nothing. The batch is checked with a constant number of queries, then written
in one transaction that holds the ledger lock, so "is this the first active support of
the hash in this program?" is decided against the state the events are recorded on.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Model
from django.db.models.expressions import RawSQL
from django.utils import timezone

from exchange import ledger
from exchange.ledger import Actor, NewEvent
from members.models import Enrollment, Member, Program, SigningKey

from . import envelopes, signal_types
from .envelopes import Rejection
from .models import Hash, Listing, Submission, Withdrawal


@dataclass
class ItemResult:
    """The outcome of one envelope of a batch."""

    index: int
    status: str = "rejected"  # accepted | duplicate | rejected
    hash_id: int | None = None
    submission_id: int | None = None
    error: Rejection | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "status": self.status,
            "hash_id": self.hash_id,
            "submission_id": self.submission_id,
            "error": {"code": self.error.code, "detail": self.error.detail} if self.error else None,
        }


@dataclass
class _Checked:
    """An envelope that passed every check that needs no write."""

    result: ItemResult
    envelope: dict[str, Any]
    key: SigningKey
    digest: str
    payload: envelopes.SubmissionPayload
    program: Program


def _clock_skew() -> dt.timedelta:
    return dt.timedelta(seconds=settings.SUBMISSION_CLOCK_SKEW_SECONDS)


def _signing_keys(items: Iterable[Any]) -> dict[str, SigningKey]:
    """Every registered key that any of the envelopes claims, in one query."""
    key_ids: set[str] = set()
    for envelope in items:
        try:
            key_ids.update(envelopes.envelope_key_ids(envelope))
        except Rejection:
            continue
    if not key_ids:
        return {}
    return {key.key_id: key for key in SigningKey.objects.filter(key_id__in=key_ids).select_related("member")}


def verify_signed(
    *, member: Member, envelope: Any, keys: dict[str, SigningKey], payload_type: str, now: dt.datetime
) -> tuple[SigningKey, bytes]:
    """Check that one of the member's own keys signed the envelope and may sign now.

    Steps: find the claimed keys among those registered; keep the member's own (another
    member's key is refused: members sign only for themselves); verify the signature;
    refuse a key revoked by now.
    """
    claimed = envelopes.envelope_key_ids(envelope)
    known = [keys[kid] for kid in claimed if kid in keys]
    if not known:
        raise Rejection(
            "unknown_key",
            "the envelope is not signed by a registered key; register it with POST /api/v1/keys",
            status=403,
        )
    own = {key.key_id: bytes(key.public_key) for key in known if key.member_id == member.pk}
    if not own:
        raise Rejection("key_not_yours", "the envelope is signed by another member's key", status=403)
    verified = envelopes.verify(envelope, own, payload_type)
    key = keys[verified.key_id]
    if key.revoked_at is not None and key.revoked_at <= now:
        raise Rejection("key_revoked", f"signing key {key.key_id} was revoked; sign with a current key", status=403)
    return key, verified.payload


def check_signed_time(*, key: SigningKey, created_at: dt.datetime, now: dt.datetime) -> None:
    """created_at must be near the server's clock, and the key valid at that time.

    A key counts as valid from its registration minus the clock skew, so a member whose
    clock runs a little behind can sign right after registering.
    """
    skew = _clock_skew()
    if created_at < now - skew:
        raise Rejection(
            "stale_timestamp",
            f"created_at {created_at.isoformat()} is more than {skew.seconds} s in the past; sign a fresh envelope",
        )
    if created_at > now + skew:
        raise Rejection(
            "future_timestamp",
            f"created_at {created_at.isoformat()} is more than {skew.seconds} s in the future; check the clock",
        )
    if created_at < key.valid_from - skew or (key.revoked_at is not None and created_at >= key.revoked_at):
        raise Rejection("key_not_valid", f"signing key {key.key_id} was not valid at {created_at.isoformat()}", 403)


def _check_program(*, member: Member, program: Program | None, slug: str, opted_in: set[int]) -> Program:
    if program is None:
        raise Rejection("unknown_program", f"unknown program {slug!r}; see GET /api/v1/programs")
    if program.pk not in opted_in:
        raise Rejection(
            "not_enrolled",
            f"you are not opted in to {slug!r}; opt in with POST /api/v1/enrollments",
            status=403,
        )
    if member.kind not in program.submitter_kinds:
        raise Rejection("not_allowed", f"{member.kind} members may not submit to {slug!r}", status=403)
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
    if payload.signal_type not in program.signal_types:
        raise Rejection(
            "signal_type_not_allowed",
            f"{program.slug!r} accepts {', '.join(program.signal_types)}, not {payload.signal_type}",
        )
    if payload.signal_type == "pdq":
        try:
            signal_types.check_pdq_quality(payload.quality, program.min_pdq_quality)
        except signal_types.SignalValueError as exc:
            raise Rejection("low_quality", str(exc)) from None
    return _Checked(
        result=ItemResult(index=index),
        envelope=envelopes.canonical_envelope(envelope),
        key=key,
        digest=envelopes.payload_digest(payload_bytes),
        payload=payload,
        program=program,
    )


def _programs_and_enrollments(member: Member) -> tuple[dict[str, Program], set[int]]:
    programs = {p.slug: p for p in Program.objects.all()}
    opted_in = set(
        Enrollment.objects.filter(member=member, state=Enrollment.State.OPTED_IN).values_list("program_id", flat=True)
    )
    return programs, opted_in


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
    keys = _signing_keys(items)
    programs, opted_in = _programs_and_enrollments(member)
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
        except Rejection as rejection:
            results[index].error = rejection
            continue
        item.result = results[index]
        checked.append(item)
    fresh, twins = _drop_repeats(checked)
    if fresh:
        _store_submissions(member=member, items=fresh, now=now)
    for first, twin in twins:
        # The same envelope twice in one batch: the later one repeats the first's result.
        twin.status = "duplicate" if first.status == "accepted" else first.status
        twin.hash_id, twin.submission_id, twin.error = first.hash_id, first.submission_id, first.error
    return results


def _strings_in(values: Iterable[str]) -> list[str] | RawSQL:
    """The right-hand side of an `__in` lookup of up to a thousand strings.

    On PostgreSQL one JSON parameter that the server unpacks: psycopg's client-side
    binding parses a query with a thousand placeholders in Python (~5 ms, against ~1 ms).
    """
    if connection.vendor != "postgresql":
        return list(values)
    return RawSQL("SELECT jsonb_array_elements_text(%s::jsonb)", [json.dumps(list(values))])


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
        for s in Submission.objects.filter(payload_sha256__in=_strings_in([item.digest for item in items])).only(
            "id", "hash_id", "payload_sha256"
        )
    }
    used_nonces = {
        (key_id, nonce): digest
        for key_id, nonce, digest in Submission.objects.filter(
            signing_key__in={item.key.pk for item in items},
            nonce__in=_strings_in({item.payload.nonce for item in items}),
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
            item.result.error = Rejection(
                "nonce_reused", "this key already signed another envelope with this nonce; use a fresh nonce", 409
            )
            continue
        used_nonces[nonce_key] = item.digest
        first_of_digest[item.digest] = item
        fresh.append(item)
    return fresh, twins


# Writing a batch ---------------------------------------------------------------------------
#
# The rows of a batch are written with multi-row INSERTs of values adapted once per batch
# rather than with bulk_create: for 1,000 envelopes Django's per-value field preparation,
# the model instances, and (on PostgreSQL) psycopg's pure-Python array dumping behind
# bulk_create's UNNEST cost more than the database does, and all of it ran while the
# ledger lock was held (see docs/benchmarks/submissions.md).

_HASH_COLUMNS = ("signal_type", "value", "status", "status_reason", "created_at", "status_changed_at")
_LISTING_COLUMNS = ("hash_id", "program_id", "status", "created_at", "changed_at")
# Row layout of _submission_row; hash_id (first) is filled in under the lock.
_SUBMISSION_COLUMNS = (
    "hash_id",
    "program_id",
    "submitter_id",
    "signing_key_id",
    "status",
    "envelope",
    "payload_sha256",
    "nonce",
    "signed_at",
    "labels",
    "case_ref",
    "quality",
    "received_at",
)


def _insert(
    model: type[Model], columns: Sequence[str], rows: Sequence[Sequence[Any]], returning: Sequence[str] = ()
) -> list[tuple[Any, ...]] | None:
    """INSERT rows of field values in one statement; the `returning` columns of the new rows.

    Values are what the model fields hold (aware datetimes, dicts and lists for JSON
    fields, which must use the default encoder). Rows come back in no promised order
    (SQLite promises none), so callers ask for a unique column next to the id. None when
    `returning` is asked of a backend that cannot return rows from a multi-row INSERT.
    """
    if returning and not connection.features.can_return_rows_from_bulk_insert:
        _insert(model, columns, rows)
        return None
    if not rows:
        return []
    quote, meta = connection.ops.quote_name, model._meta
    fields = [meta.get_field(column) for column in columns]
    head = f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "  # type: ignore[union-attr]
    tail = f" RETURNING {', '.join(quote(meta.get_field(c).column) for c in returning)}" if returning else ""  # type: ignore[union-attr]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # One JSON parameter that the server takes apart: psycopg's client-side binding
            # would otherwise parse a query of ~13,000 placeholders in Python.
            values = ", ".join(
                f"r.value -> {i}"
                if f.get_internal_type() == "JSONField"
                else f"(r.value ->> {i})::{f.db_type(connection)}"
                for i, f in enumerate(fields)
            )
            cursor.execute(
                f"{head}SELECT {values} FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS r(value, n) "
                f"ORDER BY r.n{tail}",
                [json.dumps(rows, default=_json_default)],
            )
            return cursor.fetchall() if returning else []
        adapters = [_adapter(f) for f in fields]
        group = f"({', '.join(['%s'] * len(fields))})"
        per_statement = max(1, (connection.features.max_query_params or 65_535) // len(fields))
        answer: list[tuple[Any, ...]] = []
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            params = [
                adapt(value) if adapt else value for row in chunk for adapt, value in zip(adapters, row, strict=True)
            ]
            cursor.execute(f"{head}VALUES {', '.join([group] * len(chunk))}{tail}", params)
            if returning:
                answer.extend(cursor.fetchall())
        return answer


def _json_default(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a column value")


def _adapter(field: Any) -> Callable[[Any], Any] | None:
    """How the ORM would adapt this field's values for the connection (None: as they are)."""
    kind = field.get_internal_type()
    if kind == "DateTimeField":
        return connection.ops.adapt_datetimefield_value
    if kind == "JSONField":
        return lambda value: connection.ops.adapt_json_value(value, field.encoder)
    return None


def _hashes_for(
    pairs: Iterable[tuple[str, str]], now: dt.datetime
) -> tuple[dict[tuple[str, str], tuple[int, str]], set[int]]:
    """(id, status) of the Hash rows for (signal type, value) pairs, creating the missing ones.

    Also returns the ids created here. Called under the ledger lock, so no concurrent
    writer can create the same row, and a hash created here has no submission or
    listing yet.
    """
    wanted = list(dict.fromkeys(pairs))  # batch order, so new ids follow the order of the envelopes
    by_type: dict[str, list[str]] = defaultdict(list)
    for signal_type, value in wanted:
        by_type[signal_type].append(value)
    found: dict[tuple[str, str], tuple[int, str]] = {}
    for signal_type, values in by_type.items():
        for chunk_start in range(0, len(values), 500):
            chunk = values[chunk_start : chunk_start + 500]
            rows = Hash.objects.filter(signal_type=signal_type, value__in=_strings_in(chunk)).values_list(
                "id", "value", "status"
            )
            for pk, value, status in rows:
                found[(signal_type, value)] = (pk, status)
    missing = [pair for pair in wanted if pair not in found]
    if not missing:
        return found, set()
    rows = [(signal_type, value, Hash.Status.ACTIVE, "", now, now) for signal_type, value in missing]
    inserted = _insert(Hash, _HASH_COLUMNS, rows, returning=("id", "signal_type", "value"))
    if inserted is None:  # a backend that does not return rows: read the new ones back
        inserted = []
        for signal_type, value in missing:
            pk = Hash.objects.values_list("id", flat=True).get(signal_type=signal_type, value=value)
            inserted.append((pk, signal_type, value))
    created = set()
    for pk, signal_type, value in inserted:
        found[(signal_type, value)] = (pk, Hash.Status.ACTIVE)
        created.add(pk)
    return found, created


def _submission_row(item: _Checked, *, member: Member, now: dt.datetime) -> list[Any]:
    """The Submission row of an item (in _SUBMISSION_COLUMNS order), without its hash id."""
    return [
        None,
        item.program.pk,
        member.pk,
        item.key.pk,
        Submission.Status.ACTIVE,
        item.envelope,
        item.digest,
        item.payload.nonce,
        item.payload.created_at,
        list(item.payload.labels),
        item.payload.case,
        item.payload.quality,
        now,
    ]


def _insert_submissions(rows: list[list[Any]]) -> dict[str, int]:
    """Insert Submission rows; their ids by payload digest."""
    if not rows:
        return {}
    inserted = _insert(Submission, _SUBMISSION_COLUMNS, rows, returning=("id", "payload_sha256"))
    if inserted is None:  # a backend that does not return rows: read the ids back
        digests = [row[6] for row in rows]
        inserted = list(Submission.objects.filter(payload_sha256__in=digests).values_list("id", "payload_sha256"))
    return {digest: pk for pk, digest in inserted}


def _store_submissions(*, member: Member, items: list[_Checked], now: dt.datetime) -> None:
    rows = [_submission_row(item, member=member, now=now) for item in items]  # before the lock
    with transaction.atomic():
        _store_locked(member=member, items=items, rows=rows, now=now)


def _store_locked(*, member: Member, items: list[_Checked], rows: list[list[Any]], now: dt.datetime) -> None:
    ledger.lock()
    hashes, created = _hashes_for(((i.payload.signal_type, i.payload.value) for i in items), now)
    known = {pk for pk, _status in hashes.values()} - created
    program_ids = {i.program.pk for i in items}
    mine: dict[tuple[int, int], int] = {}
    listings: dict[tuple[int, int], tuple[int | None, str]] = {}
    if known:  # hashes created just now have neither submissions nor listings
        mine = {
            (program_id, hash_id): pk
            for pk, program_id, hash_id in Submission.objects.filter(
                submitter=member, status=Submission.Status.ACTIVE, hash_id__in=known, program_id__in=program_ids
            ).values_list("id", "program_id", "hash_id")
        }
        listings = {
            (program_id, hash_id): (pk, status)
            for pk, program_id, hash_id, status in Listing.objects.filter(
                hash_id__in=known, program_id__in=program_ids
            ).values_list("id", "program_id", "hash_id", "status")
        }
    new_rows: list[list[Any]] = []
    accepted: list[_Checked] = []
    for item, row in zip(items, rows, strict=True):
        hash_id, hash_status = hashes[(item.payload.signal_type, item.payload.value)]
        item.result.hash_id = hash_id
        place = (item.program.pk, hash_id)
        if place in mine:
            item.result.status, item.result.submission_id = "duplicate", mine[place]
            continue
        if hash_status in (Hash.Status.QUARANTINED, Hash.Status.RETIRED):
            item.result.error = Rejection(
                f"hash_{hash_status}",
                f"this hash is {hash_status} by the clearinghouse and takes no new submissions",
                status=409,
            )
            item.result.hash_id = None
            continue
        row[0] = hash_id
        mine[place] = -1  # a second envelope for the same place in this batch is a duplicate
        new_rows.append(row)
        accepted.append(item)
    submission_ids = _insert_submissions(new_rows)
    events, new_listings, reactivated, reactivated_hashes = [], [], [], set()
    for item in accepted:
        signal_type, value = item.payload.signal_type, item.payload.value
        hash_id, hash_status = hashes[(signal_type, value)]
        submission_id = submission_ids[item.digest]
        item.result.status, item.result.submission_id = "accepted", submission_id
        place = (item.program.pk, hash_id)
        mine[place] = submission_id
        listing = listings.get(place)
        data = {
            "hash_id": hash_id,
            "signal_type": signal_type,
            "value": value,
            "submission_id": submission_id,
            "submitter": member.slug,
        }
        if listing is None or listing[1] != Listing.Status.ACTIVE:
            if listing is None:
                new_listings.append((hash_id, item.program.pk, Listing.Status.ACTIVE, now, now))
            else:
                reactivated.append(listing[0])
            listings[place] = (listing[0] if listing else None, Listing.Status.ACTIVE)
            if hash_status == Hash.Status.WITHDRAWN:
                reactivated_hashes.add(hash_id)
            events.append(NewEvent("hash.added", "hash", str(hash_id), program=item.program.slug, data=data))
        else:
            events.append(NewEvent("submission.added", "hash", str(hash_id), program=item.program.slug, data=data))
    if new_listings:
        _insert(Listing, _LISTING_COLUMNS, new_listings)
    if reactivated:
        Listing.objects.filter(pk__in=reactivated).update(status=Listing.Status.ACTIVE, changed_at=now)
    if reactivated_hashes:
        Hash.objects.filter(pk__in=reactivated_hashes).update(
            status=Hash.Status.ACTIVE, status_changed_at=now, status_reason=""
        )
    ledger.record_many(events, actor=Actor.member(member.slug))


# Withdrawals ------------------------------------------------------------------------------


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
    keys = _signing_keys([envelope])
    key, payload_bytes = verify_signed(
        member=member, envelope=envelope, keys=keys, payload_type=envelopes.WITHDRAWAL_TYPE, now=now
    )
    digest = envelopes.payload_digest(payload_bytes)
    previous = Withdrawal.objects.select_related("hash").filter(payload_sha256=digest).first()
    if previous is not None:
        listing = Listing.objects.get(hash=previous.hash, program_id=previous.program_id)
        return WithdrawalResult(previous, previous.hash, listing.status, created=False)
    payload = envelopes.parse_withdrawal(payload_bytes)
    check_signed_time(key=key, created_at=payload.created_at, now=now)
    if Withdrawal.objects.filter(signing_key=key, nonce=payload.nonce).exists():
        raise Rejection("nonce_reused", "this key already signed another withdrawal with this nonce", status=409)
    program = Program.objects.filter(slug=payload.program).first()
    if program is None:
        raise Rejection("unknown_program", f"unknown program {payload.program!r}")
    row = Hash.objects.filter(signal_type=payload.signal_type, value=payload.value).first()
    if row is None:
        raise Rejection("unknown_hash", "no such hash has been submitted", status=404)
    return _store_withdrawal(
        member=member, key=key, envelope=envelope, digest=digest, payload=payload, program=program, row=row, now=now
    )


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
) -> WithdrawalResult:
    ledger.lock()
    targets = Submission.objects.select_for_update().filter(
        submitter=member, program=program, hash=row, status=Submission.Status.ACTIVE
    )
    if payload.case:
        targets = targets.filter(case_ref=payload.case)
    targets = list(targets)
    if not targets:
        raise Rejection(
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
    base = {"hash_id": row.pk, "signal_type": row.signal_type, "value": row.value}
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
    if not still_supported:
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


def _refresh_hash_status(row: Hash, *, now: dt.datetime) -> None:
    """An active hash with no active listing left becomes withdrawn."""
    if row.status == Hash.Status.ACTIVE and not row.listings.filter(status=Listing.Status.ACTIVE).exists():
        row.status, row.status_changed_at, row.status_reason = Hash.Status.WITHDRAWN, now, "no active support"
        row.save(update_fields=["status", "status_changed_at", "status_reason"])


# Admin decisions --------------------------------------------------------------------------


@transaction.atomic
def hash_set_status(*, hash_: Hash, status: str, reason: str, actor: Actor) -> Hash:
    """An admin withdraws or retires a hash everywhere, with a reason.

    Members are told by a `hash.withdrawn` event per program it was distributed in;
    `hash.retired` records that it may never come back.
    """
    if status not in (Hash.Status.WITHDRAWN, Hash.Status.RETIRED):
        raise ValidationError({"status": [f"admins set withdrawn or retired, not {status}"]})
    if not reason.strip():
        raise ValidationError({"reason": ["give a reason; it is recorded in the log"]})
    ledger.lock()
    row = Hash.objects.select_for_update().get(pk=hash_.pk)
    if row.status == Hash.Status.RETIRED:
        raise ValidationError({"status": ["this hash is retired; that is final"]})
    now = timezone.now()
    # Nothing supports the hash any more: a later submission starts it afresh.
    row.submissions.filter(status=Submission.Status.ACTIVE).update(status=Submission.Status.WITHDRAWN, withdrawn_at=now)
    base = {"hash_id": row.pk, "signal_type": row.signal_type, "value": row.value, "reason": reason}
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
