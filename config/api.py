"""API plumbing shared by every app: one error shape, pagination, rate limits.

Errors are RFC 9457 problem documents (`application/problem+json`) with a `detail` a
person can act on and, for validation errors, per-field `errors`.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle

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
    if isinstance(exc, RequestDataTooBig):
        return problem_response(413, "The request body is larger than the server accepts.", code="request_too_large")
    if isinstance(exc, IntegrityError):
        # Services check what they can; a race between two requests ends here, not in a 500.
        logger.warning("integrity error answered as 409: %s", exc)
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


class Pagination(LimitOffsetPagination):
    """`?limit=&offset=` on list endpoints; the feed uses its own sequence cursor."""

    default_limit = 100
    max_limit = 1000


class CredentialRateThrottle(SimpleRateThrottle):
    """A rate limit per API credential, kept in Redis.

    It fails open: when Redis is unreachable, requests go through rather than the
    exchange refusing submissions (nothing is lost by a Redis outage).
    """

    scope = "credential"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        credential = getattr(request, "auth", None)
        if credential is None or not hasattr(credential, "pk"):
            return None
        return self.cache_format % {"scope": self.scope, "ident": credential.pk}

    def allow_request(self, request: Any, view: Any) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # noqa: BLE001 - any cache failure must not block the API
            logger.warning("rate limit skipped, cache unavailable: %s", exc)
            return True


def too_large_body() -> dict[str, Any]:
    return problem(
        status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        "The request body is larger than the server accepts; send smaller batches.",
        code="request_too_large",
    )
