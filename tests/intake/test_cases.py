"""Anonymous cases through the intake's JSON API, with a person's keys made in Python the
way the page makes them (tests/intake/person.py). The browser itself is driven in
tests/pages/test_intake_page.py."""

from __future__ import annotations

import json
import secrets
from typing import Any

from django.test import Client

from core.ledger import Event
from exchange.outcomes import outcomes_create
from hashes.models import Listing, Submission
from intake.models import Case, CaseHash
from members import services
from members.models import Member, SigningKey
from tests.intake.person import Person, open_case, post, solve
from tests.signing import random_pdq


def test_a_case_is_opened_with_its_hashes_and_nothing_that_names_the_person(programs: dict, client: Client) -> None:
    person = Person()
    pdq, md5 = random_pdq(), secrets.token_hex(16)
    response = open_case(
        client,
        person,
        [
            person.submission(pdq, program="take-it-down"),
            person.submission(md5, program="take-it-down", signal_type="md5"),
        ],
    )
    assert response.status_code == 200, response.json()
    answer = response.json()
    assert [r["status"] for r in answer["results"]] == ["accepted", "accepted"]
    case = Case.objects.get(code=answer["code"])
    assert case.program.slug == "take-it-down"
    assert sorted(h.hash.value for h in case.hashes.all()) == sorted([pdq, md5])
    # The envelopes are the members' kind: submitted by the intake member, each signed by
    # its own hash key; the case key (status only) is registered nowhere.
    subs = Submission.objects.filter(hash__value__in=[pdq, md5])
    assert {s.submitter.slug for s in subs} == {"intake-web"}
    assert len({s.signing_key_id for s in subs}) == 2
    assert {s.signing_key_id for s in subs} == set(case.hashes.values_list("signing_key", flat=True))
    assert not SigningKey.objects.filter(public_key=bytes(case.public_key)).exists()
    assert all(s.case_ref == "" for s in subs)
    # Nothing in the log carries the case's code.
    assert not any(answer["code"] in json.dumps(e.data) for e in Event.objects.all())
    assert Event.objects.filter(kind="case.opened", subject_id=str(case.pk)).exists()


def test_the_age_answer_routes_to_the_adult_program(programs: dict, client: Client) -> None:
    person = Person()
    response = open_case(client, person, [person.submission(random_pdq(), program="ncii")], age="adult")
    assert response.status_code == 200, response.json()
    assert Case.objects.get(code=response.json()["code"]).program.slug == "ncii"


def test_envelopes_for_the_wrong_program_or_key_or_naming_a_case_are_refused_item_by_item(
    programs: dict, client: Client
) -> None:
    person, stranger = Person(), Person()
    good = random_pdq()
    response = open_case(
        client,
        person,
        [
            person.submission(good, program="take-it-down"),
            person.submission(random_pdq(), program="ncii"),
            stranger.submission(random_pdq(), program="take-it-down"),
            person.submission(random_pdq(), program="take-it-down", case="my-case-1"),
            person.submission(random_pdq(), program="take-it-down", quality=10),
        ],
    )
    assert response.status_code == 200, response.json()
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "rejected", "rejected", "rejected"]
    assert [r["error"]["code"] for r in results[1:]] == [
        "wrong_program",
        "not_case_key",
        "case_in_payload",
        "low_quality",
    ]
    assert [h.hash.value for h in Case.objects.get().hashes.all()] == [good]


def test_a_case_with_nothing_acceptable_is_not_opened_and_leaves_no_key(programs: dict, client: Client) -> None:
    person = Person()
    response = open_case(client, person, [person.submission(random_pdq(), program="take-it-down", quality=5)])
    assert response.status_code == 400
    assert response.json()["code"] == "low_quality"
    assert not Case.objects.exists()
    assert not SigningKey.objects.exists()


def test_opening_a_case_costs_work_that_is_good_once(programs: dict, client: Client, settings: Any) -> None:
    person = Person()
    challenge = client.get("/intake/api/challenge").json()
    body = {
        "age": "minor",
        "public_key": person.public_key,
        "challenge": challenge["challenge"],
        "work": "not-solved",
        "envelopes": [person.submission(random_pdq(), program="take-it-down")],
    }
    body["hash_keys"] = person.hash_keys
    assert post(client, "cases", body).json()["code"] == "work_missing"
    body["work"] = solve(challenge["challenge"], challenge["bits"])
    assert post(client, "cases", body).status_code == 200
    body["envelopes"] = [person.submission(random_pdq(), program="take-it-down")]
    assert post(client, "cases", body).json()["code"] == "work_missing"
    forged = challenge["challenge"][:-4] + "0000"
    body["challenge"], body["work"] = forged, solve(forged, challenge["bits"])
    assert post(client, "cases", body).json()["code"] == "work_missing"


def test_an_address_has_a_budget_of_cases(programs: dict, client: Client, settings: Any) -> None:
    settings.INTAKE_CASES_PER_ADDRESS = 2
    for _ in range(2):
        person = Person()
        assert open_case(client, person, [person.submission(random_pdq(), program="take-it-down")]).status_code == 200
    person = Person()
    refused = open_case(client, person, [person.submission(random_pdq(), program="take-it-down")])
    assert refused.status_code == 429
    assert "wait" in refused.json()["detail"]
    # Another address still may.
    assert (
        open_case(client, person, [person.submission(random_pdq(), program="take-it-down")], REMOTE_ADDR="10.0.0.9")
    ).status_code == 200


def test_the_status_shows_counts_and_a_wrong_code_or_secret_gets_one_message(
    programs: dict, platform: Member, client: Client
) -> None:
    person = Person()
    pdq = random_pdq()
    assert open_case(client, person, [person.submission(pdq, program="take-it-down")]).status_code == 200
    before = post(client, "status", {"code": person.code, "request": person.proof()}).json()["hashes"][0]
    assert (before["received"], before["removed"]) == (0, 0)
    # The platform reads the feed past the hash, then reports a removal.
    services.enrollments_mark_sent(member=platform, through={"take-it-down": Event.objects.latest("seq").seq})
    (result,) = outcomes_create(
        member=platform,
        items=[
            {
                "signal_type": "pdq",
                "value": pdq,
                "program": "take-it-down",
                "kind": "removed",
                "client_ref": "r1",
                "occurred_at": "2026-01-01T00:00:00Z",
            },
        ],
    )
    assert result.error is None, result.error
    status = post(client, "status", {"code": person.code, "request": person.proof()})
    assert status.status_code == 200, status.json()
    (entry,) = status.json()["hashes"]
    assert (entry["value"], entry["status"], entry["received"], entry["removed"], entry["matched"]) == (
        pdq,
        "active",
        1,
        1,
        0,
    )
    wrong_secret = post(client, "status", {"code": person.code, "request": Person().proof(person.code)})
    wrong_code = post(client, "status", {"code": "0000-0000-0000", "request": person.proof("000000000000")})
    assert wrong_secret.status_code == wrong_code.status_code == 404
    assert wrong_secret.json()["detail"] == wrong_code.json()["detail"]
    # Typed with dashes and in lower case, the code still opens the case.
    typed = "-".join([person.code[:4], person.code[4:8], person.code[8:]]).lower()
    assert post(client, "status", {"code": typed, "request": person.proof()}).status_code == 200


def test_wrong_tries_are_limited_per_address(programs: dict, client: Client, settings: Any) -> None:
    settings.INTAKE_STATUS_TRIES_PER_ADDRESS = 3
    person = Person()
    assert open_case(client, person, [person.submission(random_pdq(), program="take-it-down")]).status_code == 200
    for _ in range(3):
        assert post(client, "status", {"code": person.code, "request": Person().proof(person.code)}).status_code == 404
    limited = post(client, "status", {"code": person.code, "request": person.proof()})
    assert limited.status_code == 429


def test_withdrawing_ends_distribution_unless_another_case_still_holds_the_hash(programs: dict, client: Client) -> None:
    first, second = Person(), Person()
    shared, own = random_pdq(), random_pdq()
    assert open_case(client, first, [first.submission(shared, program="take-it-down")]).status_code == 200
    opened = open_case(
        client,
        second,
        [second.submission(shared, program="take-it-down"), second.submission(own, program="take-it-down")],
    )
    assert [r["status"] for r in opened.json()["results"]] == ["duplicate", "accepted"]
    listing = Listing.objects.get(hash__value=shared)

    answer = post(
        client,
        "withdraw",
        {"code": first.code, "request": first.proof(), "envelopes": [first.withdrawal(shared, program="take-it-down")]},
    )
    assert answer.status_code == 200, answer.json()
    assert answer.json()["case"]["hashes"][0]["status"] == "withdrawn"
    listing.refresh_from_db()
    assert listing.status == "active"  # the second person still wants it
    assert not Event.objects.filter(kind="hash.withdrawn").exists()

    answer = post(
        client,
        "withdraw",
        {
            "code": second.code,
            "request": second.proof(),
            "envelopes": [
                second.withdrawal(shared, program="take-it-down"),
                second.withdrawal(own, program="take-it-down"),
            ],
        },
    )
    assert [r["status"] for r in answer.json()["results"]] == ["accepted", "accepted"]
    assert set(Event.objects.filter(kind="hash.withdrawn").values_list("data__value", flat=True)) == {shared, own}
    assert Case.objects.get(code=second.code).status == "withdrawn"
    assert Case.objects.get(code=first.code).status == "withdrawn"
    # A replayed withdrawal changes nothing; one signed by another key is refused.
    again = post(
        client,
        "withdraw",
        {
            "code": second.code,
            "request": second.proof(),
            "envelopes": [first.withdrawal(shared, program="take-it-down")],
        },
    )
    assert again.json()["results"][0]["error"]["code"] == "not_case_key"
    assert CaseHash.objects.filter(status="active").count() == 0


def test_bad_bodies_get_problems_not_errors(programs: dict, client: Client) -> None:
    assert client.post("/intake/api/cases", "{", content_type="application/json").status_code == 400
    assert post(client, "status", {"code": None, "request": "x"}).status_code == 404
    assert post(client, "withdraw", {"code": 5}).status_code == 404
    person = Person()
    refused = open_case(client, person, [], age="minor")
    assert refused.status_code == 400
    refused = open_case(client, person, [{"payload": 1}], age="teen")
    assert refused.status_code == 400 and refused.json()["errors"] == {"age": [refused.json()["errors"]["age"][0]]}


def test_a_hash_an_admin_already_withdrew_can_still_be_taken_back(programs: dict, client: Client) -> None:
    from core.ledger import Actor
    from hashes.models import Hash
    from hashes.services import hash_set_status

    person = Person()
    value = random_pdq()
    assert open_case(client, person, [person.submission(value, program="take-it-down")]).status_code == 200
    hash_set_status(hash_=Hash.objects.get(value=value), status="withdrawn", reason="test", actor=Actor.admin("root"))
    answer = post(
        client,
        "withdraw",
        {
            "code": person.code,
            "request": person.proof(),
            "envelopes": [person.withdrawal(value, program="take-it-down")],
        },
    )
    assert answer.json()["results"][0]["status"] == "accepted", answer.json()
    assert Case.objects.get(code=person.code).status == "withdrawn"


def test_intake_setup_is_idempotent_and_the_admin_lists_cases_with_counts_only(
    db: None, client: Client, admin_client: Any
) -> None:
    from django.core.management import call_command

    call_command("intake_setup")
    call_command("intake_setup")
    intake = Member.objects.get(slug="intake-web")
    assert sorted(intake.enrollments.values_list("program__slug", flat=True)) == ["ncii", "take-it-down"]
    person = Person()
    open_case(client, person, [person.submission(random_pdq(), program="ncii")], age="adult")
    page = admin_client.get("/admin/intake/case/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "Cases: 1 active, 0 withdrawn." in text
    assert person.code not in text and person.public_key not in text
