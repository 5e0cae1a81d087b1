"""Match-rate anomalies: a hash that members match far more often than the program's usual.

Counts come from the match API (hashes.MatchCount, per hash, member and day) and from
`matched` outcomes (per hash, program and day). For each program whose `anomaly_multiple` is
set, `match_anomalies_scan` compares each hash's matches on the day checked with a robust
baseline: the median, over the hashes that matched at all in the window before that day, of
their mean daily matches. A hash at or over max(anomaly_min_matches, multiple x baseline) is
quarantined pending review (hashes/services/floods.py), and members get a tombstone.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict

from django.db.models import Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from hashes import services as hash_services
from hashes.models import Hash, Listing, MatchAnomaly, MatchCount
from members.models import Program

from .models import Outcome


def _daily_matches(program: Program, first: dt.date, last: dt.date) -> dict[tuple[int, dt.date], int]:
    """{(hash id, day): matches} for the hashes actively listed in the program, first..last."""
    listed = Listing.objects.filter(program=program, status=Listing.Status.ACTIVE).values("hash_id")
    counts: dict[tuple[int, dt.date], int] = defaultdict(int)
    api = (
        MatchCount.objects.filter(day__gte=first, day__lte=last, hash_id__in=listed)
        .values("hash_id", "day")
        .annotate(n=Sum("count"))
    )
    for row in api:
        counts[(row["hash_id"], row["day"])] += int(row["n"])
    start = dt.datetime.combine(first, dt.time.min, tzinfo=dt.UTC)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
    reported = (
        Outcome.objects.filter(program=program, kind=Outcome.Kind.MATCHED, occurred_at__gte=start, occurred_at__lt=end)
        .annotate(day=TruncDate("occurred_at", tzinfo=dt.UTC))
        .values("hash_id", "day")
        .annotate(n=Sum("count"))
    )
    for row in reported:
        counts[(row["hash_id"], row["day"])] += int(row["n"])
    return counts


def match_anomalies_scan(*, day: dt.date | None = None) -> list[MatchAnomaly]:
    """Quarantine the hashes whose matches on `day` (today by default) are anomalous, in every
    program with the check on; returns the anomalies opened."""
    day = day or timezone.now().date()
    opened: list[MatchAnomaly] = []
    for program in Program.objects.filter(anomaly_multiple__gt=0):
        window = max(1, program.anomaly_window_days)
        counts = _daily_matches(program, day - dt.timedelta(days=window), day)
        history: dict[int, int] = defaultdict(int)
        for (hash_id, when), n in counts.items():
            if when < day:
                history[hash_id] += n
        baseline = statistics.median(n / window for n in history.values()) if history else 0.0
        limit = max(float(program.anomaly_min_matches), program.anomaly_multiple * baseline)
        over = sorted((hash_id, n) for (hash_id, when), n in counts.items() if when == day and n >= limit)
        if not over:
            continue
        active = set(
            Hash.objects.filter(pk__in=[h for h, _ in over], status=Hash.Status.ACTIVE).values_list("pk", flat=True)
        )
        for hash_id, n in over:
            if hash_id not in active:
                continue
            anomaly = hash_services.anomaly_quarantine(
                hash_id=hash_id, program=program, day=day, matches=n, baseline=baseline, limit=limit
            )
            if anomaly is not None:
                opened.append(anomaly)
    return opened
