"""The one error shape: RFC 9457 problem documents (`application/problem+json`).

Every refusal in every app is a `Problem` (a stable `code`, a `detail` a person can act
on, an HTTP status, per-field `errors` when a field is at fault), and the one exception
handler below renders it, DRF's own errors and the database's races as problem+json.
Where a batch answers per item, the item's result carries the same `code` and `detail`.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"

TITLES = {
    400: "Invalid request",
    401: "Not authenticated",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    429: "Too many requests",
    503: "Service unavailable",
}


class Problem(ValueError):
    """A refusal: a stable machine-readable `code`, a `detail` that says what to fix, a status.

    `errors` names the fields at fault ({field: [message, ...]}); `Problem.field()` builds
    that case. Raised by services, envelope checks and facades alike; the exception handler
    answers it as problem+json, and batch endpoints put `code` and `detail` in the item.
    (A ValueError, because it is one: parsers up the stack catch bad values as such.)
    """

    def __init__(
        self, code: str, detail: str, status: int = 400, *, errors: dict[str, list[str]] | None = None
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status
        self.errors = errors

    @classmethod
    def field(cls, name: str, message: str, *, code: str = "invalid", status: int = 400) -> Problem:
        """A refusal of one field's value; the detail reads `name: message`."""
        return cls(code, f"{name}: {message}", status, errors={name: [message]})

    @classmethod
    def fields(cls, errors: dict[str, list[str]], *, code: str = "invalid") -> Problem:
        """A refusal of several fields' values at once."""
        detail = "; ".join(f"{name}: {message}" for name, messages in errors.items() for message in messages)
        return cls(code, detail, 400, errors=errors)

    @property
    def messages(self) -> list[str]:
        """One line per fault, for admin messages and operator commands."""
        if self.errors:
            return [message for messages in self.errors.values() for message in messages]
        return [self.detail]

    def response(self) -> Response:
        return problem_response(self.status, self.detail, code=self.code, errors=self.errors)


def problem(status_code: int, detail: str, *, code: str, errors: Any = None, **extra: Any) -> dict[str, Any]:
    """Build a problem document; `code` is a stable machine-readable reason."""
    body: dict[str, Any] = {
        "type": f"urn:hashexchange:problem:{code}",
        "title": TITLES.get(status_code, "Error"),
        "status": status_code,
        "detail": detail,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    body.update(extra)
    return body


def problem_response(status_code: int, detail: str, *, code: str, errors: Any = None, **extra: Any) -> Response:
    return Response(
        problem(status_code, detail, code=code, errors=errors, **extra),
        status=status_code,
        content_type=PROBLEM_CONTENT_TYPE,
    )


def _flatten(errors: Any, prefix: str = "") -> list[str]:
    """Turn DRF's nested error structure into 'field: message' lines."""
    if isinstance(errors, dict):
        lines: list[str] = []
        for key, value in errors.items():
            name = key if key != "non_field_errors" else ""
            lines += _flatten(value, f"{prefix}.{name}" if prefix and name else (name or prefix))
        return lines
    if isinstance(errors, list):
        if all(not isinstance(item, (dict, list)) for item in errors):
            return [f"{prefix}: {item}" if prefix else str(item) for item in errors]
        lines = []
        for index, item in enumerate(errors):
            if item:
                lines += _flatten(item, f"{prefix}[{index}]" if prefix else f"[{index}]")
        return lines
    return [f"{prefix}: {errors}" if prefix else str(errors)]


def _first_code(detail: Any) -> str:
    if isinstance(detail, dict):
        for value in detail.values():
            return _first_code(value)
    if isinstance(detail, list) and detail:
        return _first_code(detail[0])
    return getattr(detail, "code", None) or "invalid"


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler that answers every error as a problem document."""
    if isinstance(exc, Problem):
        return exc.response()
    if isinstance(exc, RequestDataTooBig):
        return problem_response(413, "The request body is larger than the server accepts.", code="request_too_large")
    if isinstance(exc, IntegrityError):
        # Services check what they can; a race between two requests ends here, not in a 500.
        # Not the message: PostgreSQL's names the conflicting values (hash values among them).
        constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None)
        logger.warning("integrity error answered as 409 (constraint %s)", constraint or "unknown")
        return problem_response(409, "The request conflicts with a concurrent change; retry it.", code="conflict")
    if isinstance(exc, DjangoValidationError):
        # Services raise Django's ValidationError keyed by field; answer it like DRF's.
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    # Imported here: rest_framework.views reads the settings that name this module.
    from rest_framework.views import exception_handler

    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        lines = _flatten(exc.detail)
        detail = "; ".join(lines) if lines else "The request is invalid."
        errors = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        body = problem(400, detail, code=_first_code(exc.detail), errors=errors)
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        text = str(detail)
        if isinstance(exc, exceptions.UnsupportedMediaType):
            text += " Send a JSON body with `Content-Type: application/json`."
        elif isinstance(exc, exceptions.ParseError):
            text += " The body must be one JSON document."
        body = problem(response.status_code, text, code=code)
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            body["retry_after"] = int(exc.wait)
    response.data = body
    response.content_type = PROBLEM_CONTENT_TYPE
    return response


def too_large_body() -> dict[str, Any]:
    return problem(
        status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        "The request body is larger than the server accepts; send smaller batches.",
        code="request_too_large",
    )
