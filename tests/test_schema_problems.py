"""The OpenAPI description documents what the API answers: its refusals, and parameters by the names it reads.

Members generate clients and validators from `/api/v1/schema/`; an answer the schema does
not list (a 401, a 400 as problem+json) or a parameter it names wrongly breaks them.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.conftest import Caller

METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
def schema(client: Client) -> dict[str, Any]:
    response = client.get("/api/v1/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def problem_statuses(operation: dict[str, Any]) -> set[str]:
    return {
        status
        for status, response in operation["responses"].items()
        if "application/problem+json" in response.get("content", {})
    }


def test_every_operation_documents_its_refusals_as_problem_documents(schema: dict[str, Any]) -> None:
    assert set(schema["components"]["schemas"]["Problem"]["required"]) == {"type", "title", "status", "detail", "code"}
    missing = []
    for path, method, operation in operations(schema):
        expected = set()
        if operation.get("security") and any(operation["security"]):
            expected |= {"401", "403", "429"}
        if "requestBody" in operation:
            expected |= {"400", "413", "415"}
        if any(p["in"] == "path" for p in operation.get("parameters", [])):
            expected.add("404")
        if not expected <= problem_statuses(operation):
            missing.append(f"{method.upper()} {path}: {sorted(expected - problem_statuses(operation))}")
    assert not missing, missing
    assert not problem_statuses(schema["paths"]["/api/v1/server-key"]["get"]), "the server key needs no credentials"


def test_report_parameters_are_documented_by_the_names_the_api_reads(schema: dict[str, Any]) -> None:
    for path in ("/api/v1/reports/programs/{slug}", "/api/v1/reports/members/{slug}"):
        names = {p["name"] for p in schema["paths"][path]["get"]["parameters"] if p["in"] == "query"}
        assert names == {"from", "to", "format"}, path


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/reports/programs/take-it-down?format=csv&from=yesterday",
        "/api/v1/reports/programs/nothing-here?format=csv",
        "/api/v1/reports/members/nobody?format=csv",
    ],
)
def test_a_refused_csv_report_is_a_problem_document(auditor: Caller, path: str) -> None:
    response = auditor.client.get(path)
    assert response.status_code in (400, 404)
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["detail"]


def test_a_csv_report_without_the_scope_is_a_problem_document(platform_a: Caller) -> None:
    response = platform_a.client.get("/api/v1/reports/programs/take-it-down?format=csv")
    assert response.status_code == 403
    assert response["Content-Type"] == "application/problem+json"
    assert "reports" in response.json()["detail"]
