"""Fixtures of the intake's tests: the two programs, the intake member, a platform."""

from __future__ import annotations

from typing import Any

import pytest

from members import services
from members.models import Member, Program
from tests.conftest import SETUP, make_member


@pytest.fixture
def programs(db: None) -> dict[str, Program]:
    minor = services.program_create(slug="take-it-down", name="Take It Down", actor=SETUP)
    adult = services.program_create(slug="ncii", name="NCII", actor=SETUP)
    intake = make_member("intake-web", Member.Kind.INTAKE, minor, adult)
    assert intake.slug == "intake-web"
    return {"minor": minor, "adult": adult}


@pytest.fixture
def platform(programs: dict[str, Program]) -> Member:
    return make_member("platform-a", Member.Kind.PLATFORM, programs["minor"], programs["adult"])


@pytest.fixture(autouse=True)
def _cheap_work(settings: Any) -> None:
    settings.INTAKE_POW_BITS = 8
    # The budgets fail open when Redis does not answer in time (as the API's rate limits
    # do); on a loaded test machine give it longer, so these tests see them applied.
    settings.REDIS_TIMEOUT_SECONDS = 10
