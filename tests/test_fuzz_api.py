"""Property-based fuzzing of every operation of the published OpenAPI schema, as every kind of caller.

schemathesis loads `GET /api/v1/schema/` from the app itself (WSGI, in this process, on
the test database) and tests each operation: its coverage phase sends boundary and
invalid values of every parameter and body field (and methods the path does not allow),
its fuzzing phase random valid and invalid requests. Each request is sent as a platform,
an intake service, a peer, an auditor and a caller with no key of ours (for whom
schemathesis draws an Authorization header of its own; in the normal suite the coverage
phase's cases go to the platform and the auditor only), and each answer is checked:

- `not_a_server_error`: no 5xx, whatever the input;
- `status_code_conformance`: the status is one the schema documents for the operation;
- `content_type_conformance`, `response_schema_conformance`: the body is what the
  schema says for that status (refusals are application/problem+json documents).

FUZZ_EXAMPLES sets the examples per operation of the fuzzing phase (default
DEFAULT_EXAMPLES, for the normal suite; the coverage phase adds its fixed cases). A
long run, for the reliability target, on one database:

    FUZZ_EXAMPLES=1000 TEST_DATABASES=postgres python -m dev.testrun tests/test_fuzz_api.py

FUZZ_EXAMPLES scales the edge-value properties of tests/test_edge_values.py too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from core.api import CredentialRateThrottle
from tests.conftest import Caller

DEFAULT_EXAMPLES = 3
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES") or DEFAULT_EXAMPLES)
# The coverage phase's many fixed cases go, in the normal suite, to the two callers that
# pass every permission check between them (a platform writes, an auditor reads reports);
# the other kinds stop earlier at the same checks. A long run sends every case as everyone.
COVERAGE_CALLERS = None if os.environ.get("FUZZ_EXAMPLES") else {"platform", "auditor"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

schema = schemathesis.openapi.from_wsgi(
    "/api/v1/schema/",
    application,
    config=schemathesis.Config.from_dict(
        {"generation": {"max-examples": EXAMPLES}, "phases": {"stateful": {"enabled": False}}}
    ),
)


@pytest.fixture(autouse=True)
def _one_connection() -> Iterator[None]:
    """Requests run on the test's own connection, inside its transaction, as Django's test
    client does: Django would otherwise close that connection after each request."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def _no_rate_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long run sends thousands of requests per key; the rate limit has tests of its own."""
    monkeypatch.setattr(CredentialRateThrottle, "rate", "1000000/s", raising=False)


@pytest.fixture
def callers(platform_a: Caller, intake: Caller, peer: Caller, auditor: Caller) -> dict[str, dict[str, str] | None]:
    """The Authorization header of each kind of caller (none: schemathesis's own)."""
    keys = {"platform": platform_a, "intake": intake, "peer": peer, "auditor": auditor}
    return {**{name: {"Authorization": f"Bearer {c.token}"} for name, c in keys.items()}, "none": None}


@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_operation_as_every_caller(case: Any, callers: dict[str, dict[str, str] | None]) -> None:
    coverage = case.meta is not None and case.meta.phase.name.value == "coverage"
    for name, headers in callers.items():
        if coverage and COVERAGE_CALLERS is not None and name not in COVERAGE_CALLERS:
            continue
        try:
            case.call_and_validate(headers=headers, checks=CHECKS)
        except BaseException as exc:
            exc.add_note(f"Sent as the {name} caller.")
            raise
