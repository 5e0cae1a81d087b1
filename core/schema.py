"""The refusals of every operation in the OpenAPI description: RFC 9457 problem documents.

drf-spectacular describes what a view's serializers return. Refusals come from the one
exception handler (`core.problems`) whatever the view, so they are added here, to each
operation, from what the operation has:

- an API key (`security`): 401 (no, unknown or revoked key), 403 (inactive member, a
  scope the key lacks, an auditor writing), 429 (rate limit);
- a request body: 400 (invalid), 413 (too large), 415 (not JSON);
- query parameters of its own (not only `limit`/`offset`, which are forgiving): 400;
- path parameters: 404 (no such object, or not yours);
- a write: 409 (a concurrent change; the handler answers a database race so).

A view whose refusals these rules cannot see (a 404 with no path parameter: nothing to
show yet) names them with `extend_schema(extensions={"x-problems": [404]})`.
Responses a view documents itself are left as they are.
"""

from __future__ import annotations

from typing import Any

from .problems import PROBLEM_CONTENT_TYPE, TITLES

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem document: a stable `code` and a `detail` that says what to fix.",
    "properties": {
        "type": {"type": "string", "example": "urn:hashexchange:problem:invalid"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "errors": {
            "type": "object",
            "additionalProperties": {},
            "description": "Per field, what is wrong with it (nested for the items of a list).",
        },
        "retry_after": {"type": "integer", "description": "429: seconds to wait."},
    },
    "required": ["type", "title", "status", "detail", "code"],
}
PAGINATION_PARAMETERS = {"limit", "offset"}
WRITES = {"post", "put", "patch", "delete"}


def problem_statuses(operation: dict[str, Any], method: str) -> list[int]:
    """The refusals an operation can answer, from its security, body and parameters."""
    statuses: set[int] = set()
    if any(requirement for requirement in operation.get("security", [])):
        statuses |= {401, 403, 429}
    if "requestBody" in operation:
        statuses |= {400, 413, 415}
    parameters = operation.get("parameters", [])
    if any(p["in"] == "query" and p["name"] not in PAGINATION_PARAMETERS for p in parameters):
        statuses.add(400)
    if any(p["in"] == "path" for p in parameters):
        statuses.add(404)
    if method in WRITES:
        statuses.add(409)
    statuses |= set(operation.pop("x-problems", ()))
    return sorted(statuses)


def add_problem_responses(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: document each operation's problem responses."""
    result.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            for status in problem_statuses(operation, method):
                responses.setdefault(
                    str(status),
                    {
                        "description": TITLES[status],
                        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
                    },
                )
    return result
