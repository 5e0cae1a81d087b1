"""The intake's figures in the auditors' program report and on the admin dashboard:
cases opened, hashes sent and taken back, refusals by reason. Counts only: no code, no
key, no hash value."""

from __future__ import annotations

from typing import Any

from django.test import Client

from members.models import Member, Program
from tests.conftest import make_caller, make_member
from tests.intake.person import Person, open_case, post
from tests.signing import random_pdq


def _traffic(client: Client) -> tuple[Person, list[str]]:
    """Two cases (one item under the quality floor), one hash taken back, one request
    without its proof of work (for take-it-down), one wrong secret (no program yet)."""
    person, other = Person(), Person()
    values = [random_pdq(), random_pdq()]
    opened = open_case(
        client,
        person,
        [
            person.submission(values[0], program="take-it-down"),
            person.submission(values[1], program="take-it-down"),
            person.submission(random_pdq(), program="take-it-down", quality=10),
        ],
    )
    assert [r["status"] for r in opened.json()["results"]] == ["accepted", "accepted", "rejected"]
    assert open_case(client, other, [other.submission(random_pdq(), program="take-it-down")]).status_code == 200
    withdrawn = post(
        client,
        "withdraw",
        {
            "code": person.code,
            "request": person.proof(),
            "envelopes": [person.withdrawal(values[0], program="take-it-down")],
        },
    )
    assert withdrawn.json()["results"][0]["status"] == "accepted"
    unsolved = post(client, "cases", {"age": "minor", "challenge": "x", "work": "1", "envelopes": []})
    assert unsolved.json()["code"] == "work_missing"  # for take-it-down (the age answer says so)
    wrong = post(client, "status", {"code": person.code, "request": Person().proof(person.code)})
    assert wrong.status_code == 404
    return person, values


def test_the_program_report_counts_the_intakes_cases_and_refusals(programs: dict[str, Program], client: Client) -> None:
    _traffic(client)
    auditor = make_caller(make_member("auditor", Member.Kind.AUDITOR))
    report = auditor.client.get("/api/v1/reports/programs/take-it-down").json()
    assert report["intake"] == {
        "cases_opened": 2,
        "cases_withdrawn": 0,
        "hashes_sent": 3,
        "hashes_withdrawn": 1,
        "refused": {"low_quality": 1, "work_missing": 1},
        "refused_before_routing": {"case_not_found": 1},
    }
    # The other program the intake routes to: nothing there yet, but its figures are shown.
    adult = auditor.client.get("/api/v1/reports/programs/ncii").json()["intake"]
    assert (adult["cases_opened"], adult["hashes_sent"], adult["refused"]) == (0, 0, {})
    # A program the intake has nothing to do with has no intake figures.
    from core.ledger import Actor
    from members import services

    services.program_create(slug="other", name="Other", actor=Actor.admin("root"))
    assert "intake" not in auditor.client.get("/api/v1/reports/programs/other").json()


def test_the_dashboard_shows_the_intakes_figures_and_nothing_that_identifies(
    programs: dict[str, Program], client: Client, admin_client: Any
) -> None:
    person, values = _traffic(client)
    page = admin_client.get("/admin/dashboard/?program=take-it-down&days=7")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Intake (people&#x27;s own cases)" in text or "Intake (people's own cases)" in text
    for label, count in [
        ("cases opened", 2),
        ("hashes sent", 3),
        ("hashes withdrawn", 1),
        ("refused: low quality", 1),
        ("refused: work missing", 1),
        ("refused before routing: case not found", 1),
    ]:
        assert f'<th scope="row">{label}</th><td class="hx-num">{count}</td>' in text, label
    assert person.code not in text and not any(value in text for value in values)
