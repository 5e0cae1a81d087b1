"""The admin dashboard and the event list at a common laptop width (1400 px), in Chromium."""

from __future__ import annotations

from typing import Any

import pytest

from members.models import Member
from tests.conftest import make_caller, make_member
from tests.signing import Signer, random_pdq

pytestmark = pytest.mark.django_db(transaction=True)


def overflowing(page: Any, selector: str) -> list[str]:
    """Elements matching `selector` whose content is wider than their box, and whether the page scrolls sideways."""
    return page.evaluate(
        """(selector) => {
            const found = [];
            if (document.documentElement.scrollWidth > document.documentElement.clientWidth)
                found.push(`page: ${document.documentElement.scrollWidth} > ${document.documentElement.clientWidth}`);
            for (const el of document.querySelectorAll(selector))
                if (el.scrollWidth > el.clientWidth + 1)
                    found.push(`${el.tagName}: ${el.textContent.trim().slice(0, 40)}`);
            return found;
        }""",
        selector,
    )


def test_the_dashboard_fits_1400_px(admin_page: Any, live_server: Any, signer_a: Signer, program: Any) -> None:
    value = random_pdq()
    assert signer_a.submit(signer_a.submission(value)).json()["accepted"] == 1
    # A match through the match API counts in the "matched" column, beside reported outcomes.
    found = signer_a.client.post("/api/v1/match", {"queries": [{"signal_type": "pdq", "value": value}]}, format="json")
    assert found.json()["matched"] == 1
    for number in range(6):
        caller = make_caller(make_member(f"a-platform-with-a-long-name-{number}", Member.Kind.PLATFORM, program))
        if number % 2:  # half of them read their feed: a time in "feed last read", the rest in "behind since"
            assert caller.client.get("/api/v1/feed?after=0").status_code == 200
    admin_page.goto(f"{live_server.url}/admin/dashboard/?program={program.slug}")
    row = admin_page.locator("table.hx-members tr", has_text="platform-a").filter(has_not_text="long-name")
    assert row.locator("td").nth(5).inner_text() == "0 / 1"
    assert overflowing(admin_page, "#content, #content td, #content th") == []


def test_the_event_list_keeps_key_ids_in_their_column(admin_page: Any, live_server: Any, signer_a: Signer) -> None:
    admin_page.goto(f"{live_server.url}/admin/exchange/event/")
    # The list scrolls inside its box (.results) rather than the page: a 64-hex key id did that.
    assert overflowing(admin_page, "#changelist .results, #result_list td") == []
    assert admin_page.get_by_title(signer_a.key.key_id).count() == 1  # the whole id is still there
