"""A case's hashes pushed by webhook to several members' endpoints drained together: each
member's entries carry its own name for the case, as its pull feed does."""

from __future__ import annotations

from typing import Any

from django.test import Client

from core.ledger import Actor
from exchange import delivery as webhook_delivery
from exchange import services as exchange_services
from exchange.feed import feed_page
from members.models import Member, Program
from tests.conftest import Receiver, make_member
from tests.intake.person import Person, open_case
from tests.signing import random_pdq


def test_endpoints_drained_together_each_get_their_own_members_name_for_a_case(
    programs: dict[str, Program], client: Client, receiver: Receiver, settings: Any
) -> None:
    members = [make_member(f"platform-{x}", Member.Kind.PLATFORM, programs["minor"]) for x in "ab"]
    endpoints = [
        exchange_services.webhook_create(
            member=member,
            url=receiver.url.replace("/hook", f"/{member.slug}"),
            after=0,
            actor=Actor.member(member.slug),
        )[0]
        for member in members
    ]
    person = Person()
    values = [random_pdq(), random_pdq()]
    opened = open_case(client, person, [person.submission(v, program="take-it-down", quality=90) for v in values])
    assert opened.status_code == 200, opened.json()
    result = webhook_delivery.deliver_group([endpoint.pk for endpoint in endpoints])
    assert result.claimed and result.sent >= 2
    names = {}
    for member in members:
        pushed = []
        for got in receiver.received:
            if got.path == f"/{member.slug}":
                message = got.json()
                pushed += message["data"]["entries"] if message["type"] == "events.batch" else [message["data"]]
        case_entries = [e for e in pushed if e.get("hash", {}).get("value") in values]
        assert len(case_entries) == 2
        cases = {e["case"] for e in case_entries}
        assert len(cases) == 1
        names[member.slug] = cases.pop()
        # The same name its pull feed shows.
        feed = feed_page(member=member, after=0, limit=1000).entries
        assert {e["case"] for e in feed if e.get("hash", {}).get("value") in values} == {names[member.slug]}
    assert names["platform-a"] != names["platform-b"]
