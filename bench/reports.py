"""Auditors' program report over a million outcomes: seconds and queries, PostgreSQL and SQLite.

Why: an auditor's report (exchange/reports.py) summarises every outcome the members of a
program reported in a period — counts per kind, time from distribution to removal as
percentiles, the share removed within the program's deadline, withdrawal
acknowledgements, feed and webhook health. The aim (docs/benchmarks/reports.md) is a
program report over 1,000,000 outcomes from 50 members in under 2 seconds on PostgreSQL,
with a number of queries that does not grow with the data. The tests check the figures on
a handful of rows; only a realistic volume shows whether the queries scale.

For each database (a fresh PostgreSQL database on the server given by --postgres-url or on
one started here with dev/services.py, and a fresh SQLite file), in child processes with
DATABASE_URL set:

1. load: migrate; create the program (48 h deadline), 50 platform members enrolled in it
   and an auditor with an API key through members/services.py; then insert, in one
   transaction with COPY (PostgreSQL) or executemany (SQLite), generated data: hashes and
   their listings spread over the 90 days, outcomes from the 50 members (mostly matched
   and removed, some blocked, restricted, not violating, unable to action, and the
   deletions that fulfil withdrawal obligations), removal delays from minutes to 5 days
   with a median per member between 1 and 60 hours, obligations after withdrawals (part
   fulfilled on time, part late, part open or overdue), disputes, feed cursors, webhook
   endpoints, deliveries and attempts, and the events the API would have recorded for all
   of that (hash.added, outcome.reported, hash.withdrawn, hash.quarantined,
   hash.restored) with their leaf hashes. The report reads the log only for the program's
   hash counts and the latest sequence number, but it reads it in a log of realistic size.
   Signed submissions and withdrawals (envelopes) are not created: no report reads them.
   The data depend only on --seed, the sizes and the period's end, so both databases get
   the same rows. Then VACUUM ANALYZE (PostgreSQL) or ANALYZE (SQLite).
2. measure, in-process: `reports.program_report()` for the last 90 days, one warm-up and
   --runs timed runs (median reported); its queries counted with CaptureQueriesContext
   and the slowest listed; the same for `reports.member_report()` of the busiest member.
   With --compare-with REV the exchange/reports.py of git revision REV (or a file) is loaded beside
   the current one, timed the same way, and both reports must be identical (the bench
   fails otherwise). With --explain, EXPLAIN (ANALYZE, BUFFERS) of the slowest queries
   (EXPLAIN QUERY PLAN on SQLite) is written to bench/results/.
3. HTTP: gunicorn (config.wsgi, one sync worker) serves GET
   /api/v1/reports/programs/bench?from=&to= as JSON and as CSV, and the member report;
   each is timed (median of --runs after a warm-up), and the JSON must equal the
   in-process report.

Usage:
    python bench/reports.py                                   # PostgreSQL and SQLite, 1,000,000 outcomes
    python bench/reports.py --database postgres --postgres-url postgres://postgres@127.0.0.1:5432/postgres
    python bench/reports.py --quick                           # 50,000 outcomes, for CI
    python bench/reports.py --database postgres --compare-with HEAD~1 --explain

The PostgreSQL started here keeps PostgreSQL's durable defaults (see bench/submissions.py);
a read-only report does not depend on them. Results are printed as a table and written as
JSON to bench/results/. Reference figures: docs/benchmarks/reports.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlencode

from harness import (
    RESULTS_DIR,
    ROOT,
    BenchError,
    Client,
    PostgresServer,
    django_env,
    gunicorn,
    log,
    machine_busy_seconds,
    machine_info,
    postgres_server,
    print_machine,
    private_redis,
    run_python,
    tree_cpu_seconds,
    write_results,
)

PROGRAM = "bench"
AUDITOR = "bench-auditor"
MEMBERS = 50
DEFAULT_OUTCOMES = 1_000_000
QUICK_OUTCOMES = 50_000
PERIOD_DAYS = 90
DEADLINE_HOURS = 48
DEFAULT_RUNS = 5
DEFAULT_SEED = 20261121
AIM_SECONDS = 2.0
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
# Outcome kinds other than the deletions that fulfil obligations, with their shares.
KIND_SHARES = {
    "matched": 0.46,
    "removed": 0.40,
    "blocked_at_upload": 0.05,
    "restricted": 0.04,
    "not_violating": 0.02,
    "unable_to_action": 0.02,
}
# Kinds whose delay is the member's moderation speed; the rest (uploads matched or
# blocked later) are spread over up to 30 days after listing.
MODERATION_KINDS = {"removed", "restricted", "not_violating", "unable_to_action"}
MIN_DELAY_US = 5 * 60 * 1_000_000
MAX_DELAY_US = 5 * DAY_US
# Kinds of generated events, in the order they sort when simultaneous.
EV_ADDED, EV_WITHDRAWN, EV_QUARANTINED, EV_RESTORED, EV_OUTCOME = range(5)


# What to generate ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """Sizes of the generated data; everything else follows from them and the seed."""

    outcomes: int
    hashes: int
    obligations: int
    disputes: int
    webhook_members: int
    deliveries: int
    members: int = MEMBERS
    seed: int = DEFAULT_SEED
    events: bool = True

    @classmethod
    def for_outcomes(cls, outcomes: int, *, seed: int = DEFAULT_SEED, events: bool = True) -> Spec:
        """200,000 hashes, 20,000 obligations and 50,000 deliveries per million outcomes."""
        withdrawn = max(1, outcomes // 50 // MEMBERS)
        return cls(
            outcomes=outcomes,
            hashes=max(1_000, outcomes // 5),
            obligations=withdrawn * MEMBERS,
            disputes=max(6, outcomes // 20_000),
            webhook_members=20,
            deliveries=max(1_000, outcomes // 20),
            seed=seed,
            events=events,
        )


# Internal steps: run in a child process with DATABASE_URL set ----------------------------------


def _django() -> None:
    import django

    django.setup()


class Sink:
    """Bulk inserts into a model's table: COPY on PostgreSQL, executemany on SQLite.

    Rows are tuples in the order of `fields`; times are aware datetimes and JSON values
    strings. On SQLite values are adapted the way Django stores them, so the ORM reads
    them back exactly.
    """

    def __init__(self) -> None:
        from django.db import connection

        self.connection = connection
        self.postgres = connection.vendor == "postgresql"
        self.counts: dict[str, int] = {}

    def write(self, model: Any, fields: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> int:
        from django.db import models

        meta = model._meta
        columns = [meta.get_field(name).column for name in fields]
        table = meta.db_table
        written = 0
        with self.connection.cursor() as cursor:
            if self.postgres:
                with cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                        written += 1
            else:
                adapt = self.connection.ops.adapt_datetimefield_value
                times = [i for i, name in enumerate(fields) if isinstance(meta.get_field(name), models.DateTimeField)]
                sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
                chunk: list[list[Any]] = []
                for row in rows:
                    values = list(row)
                    for i in times:
                        values[i] = adapt(values[i])
                    chunk.append(values)
                    if len(chunk) >= 50_000:
                        cursor.executemany(sql, chunk)
                        written += len(chunk)
                        chunk = []
                if chunk:
                    cursor.executemany(sql, chunk)
                    written += len(chunk)
        self.counts[table] = self.counts.get(table, 0) + written
        return written


@dataclass
class Generated:
    """What the generator made that later rows and the measurement refer to."""

    member_ids: list[int]
    member_slugs: list[str]
    busiest: str
    outcomes: int = 0
    events: int = 0


def step_load(params: dict[str, Any]) -> None:
    """Migrate, create the program, members and auditor, then generate and insert the data."""
    _django()
    from django.core.management import call_command
    from django.db import connection, transaction

    from core.ledger import Actor
    from members import services
    from members.models import Member

    spec = Spec(**params["spec"])
    end = dt.datetime.fromisoformat(params["end"])
    started = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    actor = Actor.operator("bench")
    program = services.program_create(
        slug=PROGRAM, name="Benchmark", signal_types_=["pdq"], removal_deadline_hours=DEADLINE_HOURS, actor=actor
    )
    members = []
    for i in range(spec.members):
        member = services.member_create(
            slug=f"platform-{i + 1:02d}", kind=Member.Kind.PLATFORM, status=Member.Status.ACTIVE, actor=actor
        )
        state = "paused" if i % 25 == 24 else "opted_in"  # two paused enrollments, for variety
        services.enrollment_set(member=member, program=program, state=state, actor=actor)
        members.append(member)
    auditor = services.member_create(slug=AUDITOR, kind=Member.Kind.AUDITOR, status=Member.Status.ACTIVE, actor=actor)
    _credential, token = services.credential_issue(member=auditor, name="bench", actor=actor)
    setup_seconds = time.perf_counter() - started
    started = time.perf_counter()
    sink = Sink()
    with transaction.atomic():
        generated = generate(spec, end, program, members, sink)
        if sink.postgres:
            _reset_sequences()
    insert_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with connection.cursor() as cursor:
        if sink.postgres:
            cursor.execute("VACUUM ANALYZE")
        else:
            cursor.execute("ANALYZE")
    print(
        json.dumps(
            {
                "token": token,
                "busiest": generated.busiest,
                "rows": sink.counts,
                "setup_seconds": round(setup_seconds, 1),
                "insert_seconds": round(insert_seconds, 1),
                "analyze_seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


def _reset_sequences() -> None:
    """COPY with explicit ids leaves the identity sequences behind; move them past the rows."""
    from django.apps import apps
    from django.core.management.color import no_style
    from django.db import connection

    models_ = [m for m in apps.get_models() if m._meta.app_label in ("exchange", "hashes", "members")]
    with connection.cursor() as cursor:
        for statement in connection.ops.sequence_reset_sql(no_style(), models_):
            cursor.execute(statement)


def _next_id(model: Any) -> int:
    from django.db.models import Max

    return (model.objects.aggregate(last=Max("pk"))["last"] or 0) + 1


def generate(spec: Spec, end: dt.datetime, program: Any, members: list[Any], sink: Sink) -> Generated:
    """Generate every table's rows from `spec.seed` and insert them; see the module docstring.

    Times are integer microseconds after the period's start while generating, so that both
    databases get exactly the same instants.
    """
    from core.ledger import Event, leaf_bytes, leaf_hash
    from exchange.models import Delivery, DeliveryAttempt, Dispute, FeedCursor, Obligation, Outcome, WebhookEndpoint
    from hashes.models import Hash, Listing

    rng = random.Random(spec.seed)
    start = end - dt.timedelta(days=PERIOD_DAYS)
    horizon = PERIOD_DAYS * DAY_US - 60_000_000  # nothing happens in the last minute before the period's end

    def when(us: int) -> dt.datetime:
        return start + dt.timedelta(microseconds=us)

    member_ids = [m.pk for m in members]
    slugs = [m.slug for m in members]
    m_count = len(members)
    # Member i reports with weight 1/(i+1)^0.7 (the busiest about 12 %), and removes with a
    # median delay between 1 and 60 hours (log-spaced, shuffled so volume and speed are unrelated).
    weights = [1 / (i + 1) ** 0.7 for i in range(m_count)]
    medians = [HOUR_US * 60 ** (i / max(1, m_count - 1)) for i in range(m_count)]
    rng.shuffle(medians)

    # Hashes and listings: listed uniformly over the period, up to an hour before its end.
    hash_base, listing_base = _next_id(Hash), _next_id(Listing)
    listed = [rng.randrange(0, horizon - HOUR_US) for _ in range(spec.hashes)]
    values = [f"{rng.getrandbits(256):064x}" for _ in range(spec.hashes)]
    submitter = [rng.randrange(m_count) for _ in range(spec.hashes)]
    withdrawn_count = spec.obligations // m_count
    picked = rng.sample(range(spec.hashes), withdrawn_count + spec.disputes)
    withdrawn = {h: min(horizon, listed[h] + rng.randrange(HOUR_US, 20 * DAY_US)) for h in picked[:withdrawn_count]}
    disputed = picked[withdrawn_count:]
    hash_status: dict[int, str] = dict.fromkeys(withdrawn, "withdrawn")

    # Disputes: a third open (hash quarantined), the rest decided (restored or retired).
    dispute_rows = []
    events: list[tuple[int, int, int]] = []  # (time, kind code, index) sorted into the log below
    for n, h in enumerate(disputed):
        opened = min(horizon - 1, listed[h] + rng.randrange(HOUR_US, 10 * DAY_US))
        status = ("open", "restored", "retired")[n % 3]
        decided = min(horizon, opened + rng.randrange(HOUR_US, 10 * DAY_US)) if status != "open" else None
        if status == "open":
            hash_status[h] = "quarantined"
        elif status == "retired":
            hash_status[h] = "retired"
        dispute_rows.append((h, status, opened, decided))
        events.append((opened, EV_QUARANTINED, n))
        if status == "restored":
            events.append((decided, EV_RESTORED, n))  # type: ignore[arg-type]

    sink.write(
        Hash,
        ["id", "signal_type", "value", "status", "status_reason", "created_at", "status_changed_at"],
        (
            (hash_base + h, "pdq", values[h], hash_status.get(h, "active"), "", when(listed[h]), when(listed[h]))
            for h in range(spec.hashes)
        ),
    )
    sink.write(
        Listing,
        ["id", "hash", "program", "status", "import_batch", "created_at", "changed_at"],
        (
            (
                listing_base + h,
                hash_base + h,
                program.pk,
                "withdrawn" if h in withdrawn else "active",
                None,
                when(listed[h]),
                when(withdrawn.get(h, listed[h])),
            )
            for h in range(spec.hashes)
        ),
    )
    events += [(listed[h], EV_ADDED, h) for h in range(spec.hashes)]
    events += [(t, EV_WITHDRAWN, h) for h, t in withdrawn.items()]

    # Obligations: every member owes a deletion for every withdrawn hash, due 48 h later;
    # 70 % answer, most on time; answers that would come after the period's end have not
    # come yet, so about 62 % are answered and the rest open or overdue. Each answer is a
    # deleted_after_withdrawal outcome that the obligation points to.
    obligations: list[tuple[int, int, int, int | None]] = []  # (member index, hash, created, fulfilled)
    for h, t in sorted(withdrawn.items()):
        for m in range(m_count):
            created = min(horizon, t + rng.randrange(1_000_000, 60_000_000))
            fulfilled = None
            if rng.random() < 0.7:
                answered = created + max(MIN_DELAY_US, int(rng.lognormvariate(math.log(12 * HOUR_US), 1.0)))
                fulfilled = answered if answered < horizon else None
            obligations.append((m, h, created, fulfilled))

    # Outcomes: the deletions above plus the rest drawn by member weight and kind share.
    outcome_base = _next_id(Outcome)
    deletions = [o for o in obligations if o[3] is not None]
    main = max(0, spec.outcomes - len(deletions))
    who = rng.choices(range(m_count), weights=weights, k=main)
    kinds = rng.choices(list(KIND_SHARES), weights=list(KIND_SHARES.values()), k=main)
    outcomes: list[tuple[int, int, str, int, int]] = []  # (member index, hash, kind, occurred, count)
    for m, kind in zip(who, kinds, strict=True):
        h = rng.randrange(spec.hashes)
        room = horizon - listed[h]
        if kind in MODERATION_KINDS:
            delay = int(rng.lognormvariate(math.log(medians[m]), 1.0))
            delay = min(MAX_DELAY_US, max(MIN_DELAY_US, delay))
        else:
            delay = rng.randrange(60_000_000, 30 * DAY_US)
        if delay >= room:  # listed too recently for this delay: it happened sooner
            delay = rng.randrange(min(MIN_DELAY_US, room // 2), room)
        count = 1 if kind in MODERATION_KINDS else 1 + int(rng.expovariate(0.7))
        outcomes.append((m, h, kind, listed[h] + delay, count))
    deletion_ids: dict[int, int] = {}
    for n, (m, h, _created, fulfilled) in enumerate(obligations):
        if fulfilled is not None:
            deletion_ids[n] = outcome_base + len(outcomes)
            outcomes.append((m, h, "deleted_after_withdrawal", fulfilled, 1))
    received = [min(horizon, o[3] + rng.randrange(1_000_000, 600_000_000)) for o in outcomes]
    busiest = slugs[max(range(m_count), key=lambda m: weights[m])]

    def outcome_rows() -> Iterator[tuple[Any, ...]]:
        for n, (m, h, kind, occurred, count) in enumerate(outcomes):
            ref = f"bench-{n}"
            digest = hashlib.sha256(f"{h}:{kind}:{occurred}:{count}".encode()).hexdigest()
            yield (
                outcome_base + n,
                member_ids[m],
                hash_base + h,
                program.pk,
                kind,
                when(occurred),
                count,
                "[]",
                ref,
                digest,
                when(received[n]),
            )

    sink.write(
        Outcome,
        [
            "id", "member", "hash", "program", "kind", "occurred_at", "count", "tags", "client_ref",
            "content_digest", "received_at",
        ],
        outcome_rows(),
    )  # fmt: skip
    events += [(received[n], EV_OUTCOME, n) for n in range(len(outcomes))]

    # The log: every event in time order after the setup events, with its leaf hash.
    events.sort()
    first_seq = (Event.objects.order_by("-seq").values_list("seq", flat=True).first() or 0) + 1
    withdrawn_seq = {index: first_seq + n for n, (_t, code, index) in enumerate(events) if code == EV_WITHDRAWN}

    def event_rows() -> Iterator[tuple[Any, ...]]:
        for n, (t, code, index) in enumerate(events):
            seq = first_seq + n
            if code == EV_OUTCOME:
                m, h, kind, occurred, count = outcomes[index]
                kind_name, actor = "outcome.reported", slugs[m]
                data: dict[str, Any] = {
                    "outcome_id": outcome_base + index,
                    "member": slugs[m],
                    "hash_id": hash_base + h,
                    "kind": kind,
                    "occurred_at": _format(when(occurred)),
                    "count": count,
                    "tags": [],
                }
            elif code == EV_ADDED:
                h, kind_name, actor = index, "hash.added", slugs[submitter[index]]
                data = {
                    "hash_id": hash_base + h,
                    "signal_type": "pdq",
                    "value": values[h],
                    "submission_id": hash_base + h,
                    "submitter": actor,
                }
            elif code == EV_WITHDRAWN:
                h, kind_name, actor = index, "hash.withdrawn", slugs[submitter[index]]
                data = {"hash_id": hash_base + h, "signal_type": "pdq", "value": values[h], "reason": "bench"}
            else:
                h = dispute_rows[index][0]
                kind_name = "hash.quarantined" if code == EV_QUARANTINED else "hash.restored"
                actor = "bench"
                data = {"hash_id": hash_base + h, "signal_type": "pdq", "value": values[h]}
            actor_type = "admin" if actor == "bench" else "member"
            created = when(t)
            leaf = leaf_hash(
                leaf_bytes(
                    seq=seq,
                    kind=kind_name,
                    program=PROGRAM,
                    subject_type="hash",
                    subject_id=str(hash_base + h),
                    actor_type=actor_type,
                    actor_id=actor,
                    data=data,
                    created_at=created,
                )
            )
            yield (seq, kind_name, PROGRAM, "hash", str(hash_base + h), actor_type, actor, _json(data), created, leaf)

    if spec.events:
        sink.write(
            Event,
            [
                "seq", "kind", "program", "subject_type", "subject_id", "actor_type", "actor_id", "data",
                "created_at", "leaf_hash",
            ],
            event_rows(),
        )  # fmt: skip
    last_seq = first_seq + len(events) - 1 if spec.events else first_seq - 1

    obligation_base = _next_id(Obligation)
    sink.write(
        Obligation,
        ["id", "member", "hash", "program", "kind", "event_seq", "created_at", "due_at", "fulfilled_at", "outcome"],
        (
            (
                obligation_base + n,
                member_ids[m],
                hash_base + h,
                program.pk,
                "deleted_after_withdrawal",
                withdrawn_seq.get(h, 10**12 + h),
                when(created),
                when(created) + dt.timedelta(hours=DEADLINE_HOURS),
                when(fulfilled) if fulfilled is not None else None,
                deletion_ids.get(n),
            )
            for n, (m, h, created, fulfilled) in enumerate(obligations)
        ),
    )
    sink.write(
        Dispute,
        ["id", "hash", "program", "status", "reporters", "opened_at", "decided_at", "decided_by", "decision_reason"],
        (
            (
                n + 1,
                hash_base + h,
                program.pk,
                status,
                3,
                when(opened),
                when(decided) if decided is not None else None,
                "bench" if decided is not None else "",
                "bench" if decided is not None else "",
            )
            for n, (h, status, opened, decided) in enumerate(dispute_rows)
        ),
    )

    # Feed cursors: 40 of 50 members read the feed, lagging 0 to 5,000 events, last read up to 3 days ago.
    cursors = []
    for n, m in enumerate(m for m in range(m_count) if m % 5 != 4):
        seq = max(0, last_seq - rng.randrange(0, 5_000))
        read_at = when(horizon - rng.randrange(0, 3 * DAY_US))
        cursors.append((n + 1, member_ids[m], max(0, seq - 1_000), seq, read_at, rng.randrange(100, 100_000)))
    sink.write(FeedCursor, ["id", "member", "last_after", "last_seq", "last_read_at", "reads"], cursors)

    # Webhooks: 20 members have an endpoint; deliveries spread over the period, most
    # answered 2xx at the first attempt, a flaky few fail some attempts (then retried).
    hooked = rng.sample(range(m_count), min(spec.webhook_members, m_count))
    endpoint_base = _next_id(WebhookEndpoint)
    sink.write(
        WebhookEndpoint,
        [
            "id", "member", "url", "description", "event_kinds", "secret_encrypted", "previous_secret_encrypted",
            "is_active", "disabled_reason", "cursor_seq", "wake_requested", "created_at",
        ],
        (
            (
                endpoint_base + n, member_ids[m], f"https://{slugs[m]}.example/hooks", "", "[]",
                "bench-not-a-secret", "", True, "", max(0, last_seq - rng.randrange(0, 2_000)), False, start,
            )
            for n, m in enumerate(hooked)
        ),
    )  # fmt: skip
    failure_rate = {n: (0.3 if n % 7 == 0 else 0.02) for n in range(len(hooked))}
    deliveries, attempts = [], []
    for d in range(spec.deliveries):
        endpoint = rng.randrange(len(hooked))
        at = rng.randrange(0, horizon - HOUR_US)
        tries = 1
        while rng.random() < failure_rate[endpoint] and tries < 5:
            attempts.append((d, at + (tries - 1) * 60_000_000, rng.choice((500, 502, None))))
            tries += 1
        attempts.append((d, at + (tries - 1) * 60_000_000, 200))
        deliveries.append((endpoint, at, tries))
    delivery_base = _next_id(Delivery)
    sink.write(
        Delivery,
        [
            "id", "endpoint", "message_id", "first_seq", "last_seq", "event_count", "body", "status", "attempts",
            "next_attempt_at", "created_at", "delivered_at",
        ],
        (
            (
                delivery_base + d, endpoint_base + e, f"msg_bench_{d}", 1, 1, 1, '{"events":[]}', "delivered",
                tries, when(at), when(at), when(at + (tries - 1) * 60_000_000),
            )
            for d, (e, at, tries) in enumerate(deliveries)
        ),
    )  # fmt: skip
    sink.write(
        DeliveryAttempt,
        ["id", "delivery", "attempted_at", "status_code", "error", "duration_ms", "response_excerpt"],
        (
            (
                n + 1,
                delivery_base + d,
                when(at),
                code,
                "" if code else "timed out",
                rng.randrange(5, 900),
                "",
            )
            for n, (d, at, code) in enumerate(attempts)
        ),
    )
    return Generated(member_ids, slugs, busiest, outcomes=len(outcomes), events=len(events))


def _format(value: dt.datetime) -> str:
    from core.ledger import format_time

    return format_time(value)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def reference_module(revision: str) -> types.ModuleType:
    """exchange/reports.py as of git `revision` (or the file at that path), loaded as a
    sibling module of the current one, so both can run on the same data."""
    if Path(revision).is_file():
        source, origin = Path(revision).read_text(), revision
    else:
        shown = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{revision}:exchange/reports.py"],
            capture_output=True,
            text=True,
            check=False,
        )
        if shown.returncode != 0:
            raise BenchError(f"git show {revision}:exchange/reports.py failed: {shown.stderr.strip()}")
        source, origin = shown.stdout, f"{revision}:exchange/reports.py"
    name = "exchange._reports_reference"
    module = types.ModuleType(name)
    module.__package__ = "exchange"
    module.__file__ = origin
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, origin, "exec"), module.__dict__)  # noqa: S102 - our own file, at a revision
    return module


def differences(a: Any, b: Any, path: str = "", ignore: frozenset[str] = frozenset()) -> list[str]:
    """Where two JSON-like values differ, as paths with both values (empty when equal).

    Key order counts (the CSV's columns follow it); keys named in `ignore` are skipped.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        found = [] if list(a) == list(b) else [f"{path}: keys in another order (CSV columns follow it)"]
        for key in list(a) + [k for k in b if k not in a]:
            if key in ignore:
                continue
            if key not in a or key not in b:
                found.append(f"{path}.{key}: only in {'first' if key in a else 'second'}")
            else:
                found += differences(a[key], b[key], f"{path}.{key}", ignore)
        return found
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)} items"]
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in differences(x, y, f"{path}[{i}]", ignore)]
    return [] if a == b and type(a) is type(b) else [f"{path}: {a!r} != {b!r}"]


def _timed(call: Callable[[], Any], runs: int, postmaster: int | None) -> tuple[dict[str, Any], Any]:
    """One untimed warm-up, then `runs` timed calls: their seconds, the median, and CPU seconds per run.

    The CPU figures say where the time went (this process, PostgreSQL's processes) and
    how many cores other work on the machine took meanwhile (`other_cores`): on a shared
    machine wall times are only comparable between runs that were disturbed alike, and
    app + database CPU seconds are roughly what a run needs on an idle machine.
    """
    result = call()
    seconds = []
    app, db, machine = time.process_time(), tree_cpu_seconds(postmaster), machine_busy_seconds()
    for _ in range(runs):
        started = time.perf_counter()
        result = call()
        seconds.append(round(time.perf_counter() - started, 4))
    app = time.process_time() - app
    db = tree_cpu_seconds(postmaster) - db
    machine = machine_busy_seconds() - machine
    figures = {
        "seconds": seconds,
        "median": statistics.median(seconds),
        "cpu_app": round(app / runs, 3),
        "cpu_db": round(db / runs, 3),
        "other_cores": round(max(0.0, machine - app - db) / sum(seconds), 2),
    }
    return figures, result


def _queries(call: Callable[[], Any]) -> tuple[int, list[dict[str, Any]]]:
    """How many queries one call makes, and the five slowest (milliseconds and SQL)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        call()
    slowest = sorted(captured.captured_queries, key=lambda q: -float(q["time"]))[:5]
    return len(captured), [{"ms": round(float(q["time"]) * 1000, 1), "sql": q["sql"]} for q in slowest]


def _explain(slowest: list[dict[str, Any]], label: str) -> str:
    """EXPLAIN ANALYZE (PostgreSQL) or EXPLAIN QUERY PLAN (SQLite) of the slowest queries, to a file."""
    from django.db import connection

    postgres = connection.vendor == "postgresql"
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN "
    parts = []
    with connection.cursor() as cursor:
        for query in slowest[:4]:
            if not query["sql"].lstrip().upper().startswith("SELECT"):
                continue
            cursor.execute(prefix + query["sql"])
            plan = "\n".join(" | ".join(str(c) for c in row) for row in cursor.fetchall())
            parts.append(f"-- {query['ms']} ms when measured\n{query['sql']}\n\n{plan}\n")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"reports-explain-{label}.txt"
    path.write_text("\n\n".join(parts))
    return str(path.relative_to(ROOT))


def step_measure(params: dict[str, Any]) -> None:
    """Time the reports in-process, count their queries, compare with a reference revision."""
    _django()
    from django.db import connection

    from exchange import reports
    from members.models import Member, Program

    end = dt.datetime.fromisoformat(params["end"])
    start = end - dt.timedelta(days=PERIOD_DAYS)
    runs = params["runs"]
    program = Program.objects.get(slug=PROGRAM)
    member = Member.objects.get(slug=params["busiest"])

    def program_report(module: Any = reports) -> dict[str, Any]:
        return module.program_report(program=program, period=module.Period(start, end))

    def member_report(module: Any = reports) -> dict[str, Any]:
        return module.member_report(member=member, period=module.Period(start, end))

    result: dict[str, Any] = {}
    for name, call in (("program_report", program_report), ("member_report", member_report)):
        figures, report = _timed(call, runs, params.get("postmaster"))
        count, slowest = _queries(call)
        result[name] = {**figures, "queries": count, "slowest": slowest}
        Path(params["report_dir"], f"{name}.json").write_text(json.dumps(report, indent=1))
        if params.get("explain"):
            label = f"{connection.vendor}-{name}"
            result[name]["explain_file"] = _explain(slowest, label)
    rows = json.loads(Path(params["report_dir"], "program_report.json").read_text())["members"]
    result["rows"] = len(rows)
    result["removals"] = sum(r["removals"]["count"] for r in rows)
    result["outcomes_in_period"] = sum(sum(v for k, v in r["outcomes"].items() if k != "items") for r in rows)
    if params.get("compare_with"):
        reference = reference_module(params["compare_with"])
        result["reference"] = {"revision": params["compare_with"]}
        for name, call in (("program_report", program_report), ("member_report", member_report)):
            ref_runs = params.get("reference_runs") or runs
            figures, _report = _timed(lambda call=call: call(reference), ref_runs, params.get("postmaster"))
            count, slowest = _queries(lambda call=call: call(reference))
            # Both at the same instant: open/overdue obligations and feed lags depend on it.
            with mock.patch("django.utils.timezone.now", return_value=dt.datetime.now(dt.UTC)):
                diff = differences(call(reference), call())
            result["reference"][name] = {
                **figures,
                "queries": count,
                "slowest": slowest,
                "identical": not diff,
                "differences": diff[:20],
            }
    print(json.dumps(result))


INTERNAL_STEPS: dict[str, Callable[[dict[str, Any]], None]] = {"_load": step_load, "_measure": step_measure}


# The HTTP part, from the orchestrating process --------------------------------------------------


def http_timings(
    env: dict[str, str], token: str, *, end: dt.datetime, busiest: str, runs: int, report_dir: Path, workdir: Path
) -> dict[str, Any]:
    """The reports through gunicorn: JSON and CSV program reports and the member report."""
    query = urlencode({"from": (end - dt.timedelta(days=PERIOD_DAYS)).isoformat(), "to": end.isoformat()})
    paths = {
        "program_json": f"/api/v1/reports/programs/{PROGRAM}?{query}",
        "program_csv": f"/api/v1/reports/programs/{PROGRAM}?{query}&format=csv",
        "member_json": f"/api/v1/reports/members/{busiest}?{query}",
    }
    result: dict[str, Any] = {}
    with gunicorn(env, workers=1, logfile=workdir / "gunicorn.log") as (port, _pid):
        client = Client(port, token)
        for name, path in paths.items():
            seconds: list[float] = []
            body = b""
            for attempt in range(runs + 1):
                started = time.perf_counter()
                status, body = client.request("GET", path)
                if status != 200:
                    raise BenchError(f"GET {path} answered {status}: {body[:300]!r}")
                if attempt:
                    seconds.append(round(time.perf_counter() - started, 4))
            result[name] = {"seconds": seconds, "median": statistics.median(seconds), "bytes": len(body)}
            if name.endswith("json"):
                expected = json.loads((report_dir / f"{name.split('_')[0]}_report.json").read_text())
                # Feed lags are counted in seconds up to the moment of the request.
                diff = differences(expected, json.loads(body), ignore=frozenset({"lag_seconds"}))
                result[name]["same_as_in_process"] = not diff
                result[name]["differences"] = diff[:10]
        client.close()
    return result


# Orchestration ----------------------------------------------------------------------------------


@dataclass
class DatabaseResult:
    """One database's figures."""

    database: str
    spec: dict[str, Any]
    load: dict[str, Any] = field(default_factory=dict)
    measure: dict[str, Any] = field(default_factory=dict)
    http: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def run_database(
    kind: str, args: argparse.Namespace, spec: Spec, end: dt.datetime, pg: PostgresServer | None, redis_url: str,
    workdir: Path,
) -> DatabaseResult:  # fmt: skip
    """Load a fresh database of `kind`, measure the reports in-process and over HTTP, drop it."""
    result = DatabaseResult(kind, asdict(spec))
    secrets_ = (secrets.token_urlsafe(32), secrets.token_urlsafe(32))
    name = f"hxbench_reports_{os.getpid()}"
    if kind == "postgres":
        assert pg is not None
        url = pg.create_database(name)
    else:
        path = workdir / f"{name}.sqlite3"
        path.unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    env = django_env(url, redis_url, secrets_)
    report_dir = workdir / f"reports-{kind}"
    report_dir.mkdir(exist_ok=True)
    try:
        log(f"{kind}: loading {spec.outcomes:,} outcomes, {spec.hashes:,} hashes (seed {spec.seed})")
        params = {"spec": asdict(spec), "end": end.isoformat()}
        started = time.perf_counter()
        result.load = json.loads(run_python([__file__, "_load", json.dumps(params)], env, what="load").splitlines()[-1])
        result.load["seconds"] = round(time.perf_counter() - started, 1)
        token = result.load.pop("token")
        log(f"{kind}: loaded in {result.load['seconds']} s: {result.load['rows']}")
        measure = {
            "end": end.isoformat(),
            "runs": args.runs,
            "busiest": result.load["busiest"],
            "report_dir": str(report_dir),
            "compare_with": args.compare_with,
            "reference_runs": args.reference_runs,
            "explain": args.explain,
            "postmaster": pg.postmaster_pid() if kind == "postgres" and pg is not None else None,
        }
        log(f"{kind}: timing the reports in-process")
        result.measure = json.loads(
            run_python([__file__, "_measure", json.dumps(measure)], env, what="measure").splitlines()[-1]
        )
        reference = result.measure.get("reference", {})
        for which in ("program_report", "member_report"):
            if which in reference and not reference[which]["identical"]:
                result.problems.append(f"{which} differs from {args.compare_with}: {reference[which]['differences']}")
        if not args.no_http:
            log(f"{kind}: timing the reports through gunicorn")
            result.http = http_timings(
                env, token, end=end, busiest=result.load["busiest"], runs=args.runs, report_dir=report_dir,
                workdir=workdir,
            )  # fmt: skip
            for which, figures in result.http.items():
                if figures.get("same_as_in_process") is False:
                    result.problems.append(f"HTTP {which} differs from in-process: {figures['differences']}")
    finally:
        if kind == "postgres" and pg is not None:
            pg.drop_database(name)
        else:
            with contextlib.suppress(OSError):
                Path(url.removeprefix("sqlite:///")).unlink()
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="postgres,sqlite", help="postgres, sqlite or both (comma-separated)")
    parser.add_argument("--postgres-url", default=None, help="a PostgreSQL superuser URL; default: start one")
    parser.add_argument("--outcomes", type=int, default=None, help=f"default {DEFAULT_OUTCOMES:,}")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_OUTCOMES:,} outcomes, for CI smoke runs")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="timed runs after one warm-up (median shown)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--no-events", action="store_true", help="leave the event log empty (faster load)")
    parser.add_argument("--no-http", action="store_true", help="skip the gunicorn timings")
    parser.add_argument(
        "--compare-with", default=None, help="git revision (or file) whose exchange/reports.py must agree"
    )
    parser.add_argument("--reference-runs", type=int, default=None, help="timed runs of the reference (default --runs)")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN the slowest queries into bench/results/")
    args = parser.parse_args(argv)
    args.databases = [d.strip() for d in args.database.split(",") if d.strip()]
    if not args.databases or not set(args.databases) <= {"sqlite", "postgres"}:
        parser.error("--database takes postgres, sqlite or postgres,sqlite")
    args.outcomes = args.outcomes or (QUICK_OUTCOMES if args.quick else DEFAULT_OUTCOMES)
    return args


def print_table(results: list[DatabaseResult]) -> None:
    """Seconds (median of the runs) and queries per report, per database."""
    header = f"{'database':9} {'outcomes':>9} {'report':28} {'median s':>8} {'min s':>6} {'max s':>6} {'queries':>7}"
    print(header)
    print("-" * len(header))
    for r in results:
        lines: list[tuple[str, dict[str, Any]]] = [
            ("program_report (in-process)", r.measure.get("program_report", {})),
            ("member_report (in-process)", r.measure.get("member_report", {})),
        ]
        reference = r.measure.get("reference", {})
        for which in ("program_report", "member_report"):
            if which in reference:
                lines.append((f"{which} @{reference['revision']}", reference[which]))
        for which, figures in r.http.items():
            lines.append((f"HTTP {which.replace('_', ' ')}", figures))
        for label, figures in lines:
            if not figures:
                continue
            seconds = figures["seconds"]
            queries = str(figures.get("queries", ""))
            print(
                f"{r.database:9} {r.spec['outcomes']:>9,} {label:28} {figures['median']:>8.3f} "
                f"{min(seconds):>6.3f} {max(seconds):>6.3f} {queries:>7}"
            )
    for r in results:
        program = r.measure.get("program_report")
        if program and r.database == "postgres":
            verdict = "meets" if program["median"] < AIM_SECONDS else "misses"
            print(f"\n{r.database}: program report {program['median']:.3f} s — {verdict} the {AIM_SECONDS:.0f} s aim")


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] in INTERNAL_STEPS:
        INTERNAL_STEPS[sys.argv[1]](json.loads(sys.argv[2]))
        return 0
    args = parse_args(argv)
    print_machine()
    spec = Spec.for_outcomes(args.outcomes, seed=args.seed, events=not args.no_events)
    end = dt.datetime.now(dt.UTC).replace(microsecond=0)
    info = machine_info()
    results: list[DatabaseResult] = []
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hxbench-reports-")))
        redis_url = stack.enter_context(private_redis(workdir))
        pg = None
        if "postgres" in args.databases:
            pg = stack.enter_context(postgres_server(args.postgres_url))
            info["postgres"] = pg.settings
            log(f"PostgreSQL settings: {pg.settings}")
        for kind in args.databases:
            results.append(run_database(kind, args, spec, end, pg, redis_url, workdir))
    print_table(results)
    path = write_results(
        "reports",
        {
            "machine": info,
            "args": vars(args),
            "period": {"from": (end - dt.timedelta(days=PERIOD_DAYS)).isoformat(), "to": end.isoformat()},
            "results": [asdict(r) for r in results],
        },
    )
    print(f"\nwritten to {path.relative_to(ROOT)}")
    problems = [(r.database, p) for r in results for p in r.problems]
    for database, problem in problems:
        print(f"PROBLEM ({database}): {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(str(exc))
        sys.exit(1)
