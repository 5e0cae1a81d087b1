"""FetchHashes: the caller's hashes as StopNCII records, paged by a cursor that never goes back.

What is served: every hash listed in the programs the caller receives (opted in, paused
or lapsed; or the one program named in the URL), merged into one record per hash, in
the order the event log changed them. A record is a snapshot of the hash as it is now
— status, the caller's pseudonyms of its cases, the feedback the caller may see — so a
record sent twice is harmless: the client replaces what it had.

How the cursor works (docs/platforms.md has the long form):

- The client keeps one integer between runs, `nextSetTimestamp`, and sends it back as
  `startTimestamp`. Inside a run it also sends our `nextPageToken`, which carries the
  exact position in the log (sequence number, and how far into an operator's import
  group), so pages neither skip nor repeat.
- A run without a token starts at the first event that could be newer than what the
  previous run served: after the last relevant event older than `startTimestamp` minus
  CURSOR_OVERLAP. Events are recorded under the ledger lock with their time read under
  that lock, so event times only go backwards by the clock differences between our
  hosts; the overlap (60 s) covers them many times over. Records of the last minute
  before the checkpoint are sent again each run, which is harmless.
- `nextSetTimestamp` is the highest event time (whole seconds) the run has passed, and
  at least `startTimestamp`: it never goes backwards, not even on an empty page, and a
  later page never has a lower one than an earlier page.
- `hasMoreRecords` is true exactly when a `nextPageToken` is given.

Withdrawals: the client (pytx <= 1.2.17) tests `hashValue` instead of `hashStatus`, so a
Withdrawn or Deleted record *adds* the hash to its data set instead of removing it. A
tombstone is therefore sent only for hashes the caller may hold: those distributed to it
before this page (in an earlier page of the run, or at or before the checkpoint of an
earlier run). A fresh client reading from the start gets no tombstones at all.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Max, Min, Q
from django.utils.crypto import salted_hmac

from core.ledger import Event
from core.problems import Problem
from hashes.models import Hash, Listing, Submission
from members.models import Member, Program
from members.selectors import is_receiving, program_by_slug, receiving_programs

from .. import hooks
from ..models import Outcome
from . import stopncii
from .stopncii import Cursor

# Events that change a record (its listing, cases, status or feedback).
LISTING_KINDS = (
    "hash.added",
    "hash.withdrawn",
    "hash.quarantined",
    "hash.restored",
    "submission.added",
    "submission.withdrawn",
    "hashes.imported",
    "hashes.relayed",
)
RELEVANT_KINDS = (*LISTING_KINDS, "hash.retired", "outcome.reported")
IMPORTED = "hashes.imported"
GROUP_KINDS = (IMPORTED, "hashes.relayed")  # events that list hashes by id (exchange/feed.py)
CURSOR_OVERLAP = dt.timedelta(seconds=60)
DEFAULT_PAGE_SIZE = 800  # what the client asks for
MAX_PAGE_SIZE = 2000
EVENT_SLICE = 500
# A page stops after reading this many events even if it has found fewer records (it
# then says hasMoreRecords with a token), so one request does bounded work.
MAX_EVENTS_PER_PAGE = 20_000
OTHER_MEMBER = "other member {n}"


def requested_programs(*, member: Member, slug: str | None) -> list[Program]:
    """The programs a facade request is about: those the caller receives, or the one in the URL."""
    if slug is None:
        return receiving_programs(member=member)
    program = program_by_slug(slug)
    if program is None:
        raise Problem("unknown_program", f"there is no program {slug!r}", status=404)
    if not is_receiving(member=member, program=program):
        raise Problem("not_enrolled", f"you do not receive {slug!r}; opt in with POST /api/v1/enrollments", status=403)
    return [program]


def _key(purpose: str) -> bytes:
    """A key for one purpose, derived from SECRET_KEY (rotating it renames cases, voids tokens)."""
    return salted_hmac(f"hashexchange.compat.stopncii.{purpose}", "key").digest()


def token_key() -> bytes:
    return _key("page-token")


def case_key() -> bytes:
    return _key("case-pseudonym")


@dataclass
class FetchPage:
    """One FetchHashes answer, plus the log positions to record as the caller's feed read."""

    records: list[dict[str, Any]]
    next_set_timestamp: int
    has_more: bool
    token: str | None
    after: int  # the position before the first event served
    last_seq: int  # every event up to here has been served

    def as_json(self) -> dict[str, Any]:
        return {
            "count": len(self.records),
            "nextPageToken": self.token,
            "nextSetTimestamp": self.next_set_timestamp,
            "hasMoreRecords": self.has_more,
            "hashRecords": self.records,
        }


def _seconds(value: dt.datetime) -> int:
    return math.floor(value.timestamp())


def start_seq(start: int) -> int:
    """The first sequence number a run from `startTimestamp` must read (see the module docstring)."""
    if start <= CURSOR_OVERLAP.total_seconds():
        return 1
    cutoff = dt.datetime.fromtimestamp(start, dt.UTC) - CURSOR_OVERLAP
    before = (
        Event.objects.filter(kind__in=RELEVANT_KINDS, created_at__lt=cutoff)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
    )
    return (before or 0) + 1


def _visible_events(member: Member, programs: Sequence[Program]) -> Q:
    slugs = [p.slug for p in programs]
    shared = [p.slug for p in programs if p.share_feedback]
    return (
        Q(kind__in=LISTING_KINDS, program__in=slugs)
        | Q(kind="outcome.reported", program__in=shared)
        | Q(kind="outcome.reported", program__in=slugs, actor_type="member", actor_id=member.slug)
        # Recorded without a program; records of hashes the caller does not see are dropped later.
        | Q(kind="hash.retired")
    )


@dataclass
class _Scan:
    """The hashes a page covers, in the order the log reached them, with their latest event time."""

    times: dict[int, int] = field(default_factory=dict)
    position: tuple[int, int] = (0, 0)
    high: int = 0
    finished: bool = False


def _event_hashes(event: Event) -> list[int]:
    if event.kind in GROUP_KINDS:
        return list(event.data.get("hash_ids", ()))
    hash_id = event.data.get("hash_id")
    return [hash_id] if isinstance(hash_id, int) else []


def _scan(*, member: Member, programs: Sequence[Program], cursor: Cursor, page_size: int, newest: int) -> _Scan:
    """Read events from the cursor until `page_size` distinct hashes, the end, or the work limit."""
    scan = _Scan(position=(cursor.seq, cursor.offset), high=cursor.high)
    query = Event.objects.filter(_visible_events(member, programs), seq__lte=newest).order_by("seq")
    seq, offset = cursor.seq, cursor.offset
    read = 0
    while True:
        batch = list(query.filter(seq__gte=seq).only("seq", "kind", "data", "created_at")[:EVENT_SLICE])
        for event in batch:
            skip = offset if event.seq == seq else 0
            hashes = _event_hashes(event)
            at = _seconds(event.created_at)
            for index in range(skip, len(hashes)):
                hash_id = hashes[index]
                if hash_id not in scan.times and len(scan.times) >= page_size:
                    scan.position = (event.seq, index)
                    return scan
                scan.times[hash_id] = max(scan.times.get(hash_id, 0), at)
            scan.high = max(scan.high, at)
            scan.position = (event.seq + 1, 0)
            read += 1
            if read >= MAX_EVENTS_PER_PAGE:
                return scan
        if len(batch) < EVENT_SLICE:
            scan.position = (newest + 1, 0)
            scan.finished = True
            return scan
        seq, offset = batch[-1].seq + 1, 0


def fetch_page(
    *, member: Member, programs: Sequence[Program], start: int, page_size: int, token: str | None
) -> FetchPage:
    """One page of the caller's records; see the module docstring for the cursor.

    Steps: bound the read by the newest event now committed; find the position (from
    the token, or from `startTimestamp`); read events from there; build one record per
    hash; work out `nextSetTimestamp` and the next token. A constant number of queries
    whatever the page size.
    """
    newest = Event.objects.aggregate(last=Max("seq"))["last"] or 0
    if token:
        cursor = stopncii.decode_cursor(token, token_key(), member_id=member.pk, start=start)
    else:
        cursor = Cursor(member_id=member.pk, start=start, seq=start_seq(start))
    scan = _scan(member=member, programs=programs, cursor=cursor, page_size=page_size, newest=newest)
    high = scan.high
    if scan.finished:
        # Everything relevant up to `newest` has been read, so the checkpoint may move up to
        # the time of the newest relevant event, even one in a program the caller does not see.
        latest = (
            Event.objects.filter(kind__in=RELEVANT_KINDS, seq__lte=newest)
            .order_by("-seq")
            .values_list("created_at", flat=True)
            .first()
        )
        if latest is not None:
            high = max(high, _seconds(latest))
    records = build_records(member=member, programs=programs, times=scan.times, cursor=cursor)
    next_set = max(start, high)
    token_out = None
    if not scan.finished:
        seq, offset = scan.position
        token_out = stopncii.encode_cursor(
            Cursor(member_id=member.pk, start=start, seq=seq, offset=offset, high=high), token_key()
        )
    return FetchPage(
        records=records,
        next_set_timestamp=next_set,
        has_more=not scan.finished,
        token=token_out,
        after=cursor.seq - 1,
        last_seq=scan.position[0] - 1,
    )


# Records -----------------------------------------------------------------------------------


def build_records(
    *, member: Member, programs: Sequence[Program], times: dict[int, int], cursor: Cursor
) -> list[dict[str, Any]]:
    """One record per hash in `times` (hash id → last change, seconds), in that order.

    Dropped: hashes of types StopNCII cannot carry, hashes not listed in the caller's
    programs (a retirement elsewhere), and tombstones the caller cannot need.
    """
    program_ids = [p.pk for p in programs]
    rows = {
        row.pk: row
        for row in Hash.objects.filter(pk__in=list(times), signal_type__in=list(stopncii.SIGNAL_TYPES)).only(
            "id", "signal_type", "value", "status"
        )
    }
    if not rows:
        return []
    listed: dict[int, bool] = {}
    batches: dict[int, set[int]] = defaultdict(set)
    for hash_id, status, batch in Listing.objects.filter(hash_id__in=rows, program_id__in=program_ids).values_list(
        "hash_id", "status", "import_batch_id"
    ):
        listed[hash_id] = listed.get(hash_id, False) or status == Listing.Status.ACTIVE
        if batch is not None:
            batches[hash_id].add(batch)
    statuses = {
        pk: stopncii.hash_status(status=row.status, listed=listed[pk]) for pk, row in rows.items() if pk in listed
    }
    gone = [pk for pk, status in statuses.items() if status != stopncii.ACTIVE]
    if gone:
        may_hold = _may_hold(gone, program_ids=program_ids, batches=batches, cursor=cursor)
        statuses = {pk: s for pk, s in statuses.items() if s == stopncii.ACTIVE or pk in may_hold}
    if not statuses:
        return []
    cases = _cases(member, statuses, rows, program_ids, batches)
    feedback = _feedback(member, statuses, programs)
    return [
        stopncii.hash_record(
            last_modified=times[pk],
            signal_type=rows[pk].signal_type,
            value=rows[pk].value,
            status=statuses[pk],
            cases=cases.get(pk, {}),
            feedbacks=feedback.get(pk, []),
        )
        for pk in times
        if pk in statuses
    ]


def _may_hold(
    hash_ids: Iterable[int], *, program_ids: Sequence[int], batches: dict[int, set[int]], cursor: Cursor
) -> set[int]:
    """The hashes whose first distribution to the caller came before this page.

    Before this page means: an earlier position in this run (the cursor), or a time at
    or before the run's checkpoint (an earlier run may have served it).
    """
    hash_ids = list(hash_ids)
    slugs = list(Program.objects.filter(pk__in=program_ids).values_list("slug", flat=True))
    first: dict[int, tuple[int, dt.datetime]] = {}
    added = (
        Event.objects.filter(
            kind="hash.added", subject_type="hash", subject_id__in=[str(h) for h in hash_ids], program__in=slugs
        )
        .values("subject_id")
        .annotate(seq=Min("seq"), at=Min("created_at"))
    )
    for row in added:
        first[int(row["subject_id"])] = (row["seq"], row["at"])
    # Listed by a peer's grouped event (exchange/feed.py RELAYED): the event its submission names.
    relayed = dict(
        Submission.objects.filter(hash_id__in=hash_ids, program_id__in=program_ids, relayed_in__isnull=False)
        .values("hash_id")
        .annotate(seq=Min("relayed_in"))
        .values_list("hash_id", "seq")
    )
    if relayed:
        times = dict(Event.objects.filter(seq__in=set(relayed.values())).values_list("seq", "created_at"))
        for hash_id, seq in relayed.items():
            known = first.get(hash_id)
            at = times[seq]
            first[hash_id] = (min(seq, known[0]), min(at, known[1])) if known else (seq, at)
    batch_ids = {b for h in hash_ids for b in batches.get(h, ())}
    if batch_ids:
        imported = {
            int(row["subject_id"]): (row["seq"], row["at"])
            for row in Event.objects.filter(
                kind=IMPORTED, subject_type="import", subject_id__in=[str(b) for b in batch_ids]
            )
            .values("subject_id")
            .annotate(seq=Min("seq"), at=Min("created_at"))
        }
        for hash_id in hash_ids:
            for batch in batches.get(hash_id, ()):
                if batch in imported:
                    seq, at = imported[batch]
                    known = first.get(hash_id)
                    first[hash_id] = (min(seq, known[0]), min(at, known[1])) if known else (seq, at)
    # An event at the cursor with an offset was partly served on the page before.
    before = (cursor.seq, cursor.offset)
    return {hash_id for hash_id, (seq, at) in first.items() if (seq, 0) < before or _seconds(at) <= cursor.start}


def _cases(
    member: Member,
    statuses: dict[int, str],
    rows: dict[int, Hash],
    program_ids: Sequence[int],
    batches: dict[int, set[int]],
) -> dict[int, dict[str, str]]:
    """Per hash, the caller's pseudonym of each case behind it and that case's status.

    A case is the one the submission names, or the intake's case behind it (from the
    intake's hook, exchange/hooks.py), else the submission itself; an operator's import
    counts as one case per import.
    """
    key = case_key()
    found: dict[int, dict[str, str]] = defaultdict(dict)
    # Held submissions (and held ones retired) were distributed to nobody: no case of theirs is shown.
    never_sent = [Submission.Status.HELD, Submission.Status.RETIRED]
    rows_ = list(
        Submission.objects.filter(hash_id__in=list(statuses), program_id__in=program_ids)
        .exclude(status__in=never_sent)
        .values_list("hash_id", "status", "case_ref", "id", "submitter__slug")
    )
    # Submitters that keep cases out of the payload (the intake): the case comes from them.
    sources = hooks.case_sources()
    kept: dict[str, Mapping[int, str]] = {
        slug: hooks.case_tokens(slug, {row[0] for row in rows_ if row[4] == slug})
        for slug in {row[4] for row in rows_}
        if slug in sources
    }
    for hash_id, status, case_ref, submission_id, submitter in rows_:
        token = kept.get(submitter, {}).get(hash_id)
        if token is not None:
            name = hooks.case_pseudonym(member=member, token=token)
        else:
            name = stopncii.case_pseudonym(
                key, member_id=member.pk, case=f"case:{case_ref}" if case_ref else f"submission:{submission_id}"
            )
        state = stopncii.case_status(
            submission_active=status == Submission.Status.ACTIVE, hash_retired=rows[hash_id].status == "retired"
        )
        if found[hash_id].get(name) != stopncii.ACTIVE:  # one active submission keeps a shared case active
            found[hash_id][name] = state
    for hash_id in statuses:
        for batch in batches.get(hash_id, ()):
            name = stopncii.case_pseudonym(key, member_id=member.pk, case=f"import:{batch}")
            found[hash_id].setdefault(name, statuses[hash_id])
    return found


def _feedback(member: Member, statuses: dict[int, str], programs: Sequence[Program]) -> dict[int, list[dict[str, Any]]]:
    """Per hash, the latest report of each member the caller may see, as CSPFeedbacks.

    The caller's own reports are shown under its own name, with its tags. Other members'
    are shown only in programs that share feedback (`Program.share_feedback`), and never
    who they are: "other member 1", "other member 2"… numbered per hash in the order they
    first reported, so nothing links a member's reports across hashes; their tags are
    left out, as the program shares counts, not words.
    """
    shared = [p.pk for p in programs if p.share_feedback]
    rows = (
        Outcome.objects.filter(hash_id__in=list(statuses))
        .filter(Q(program_id__in=shared) | Q(member=member, program_id__in=[p.pk for p in programs]))
        .order_by("hash_id", "occurred_at", "id")
        .values_list("hash_id", "member_id", "kind", "tags", "id")
    )
    latest: dict[int, dict[int, tuple[str, list[str]]]] = defaultdict(dict)
    first_report: dict[tuple[int, int], int] = {}
    for hash_id, member_id, kind, tags, outcome_id in rows:
        latest[hash_id][member_id] = (kind, tags)
        first_report.setdefault((hash_id, member_id), outcome_id)
    found: dict[int, list[dict[str, Any]]] = {}
    for hash_id, reports in latest.items():
        entries = []
        others = sorted((m for m in reports if m != member.pk), key=lambda m: first_report[(hash_id, m)])
        if member.pk in reports:
            kind, tags = reports[member.pk]
            entries.append(stopncii.feedback_entry(kind=kind, source=member.slug, tags=tags))
        for number, other in enumerate(others, start=1):
            kind, _tags = reports[other]
            entries.append(stopncii.feedback_entry(kind=kind, source=OTHER_MEMBER.format(n=number), tags=[]))
        found[hash_id] = entries
    return found
