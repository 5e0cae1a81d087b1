"""Middleware that protects the API before any view runs, and the headers every answer carries."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from core.logs import clean_request_id, request_id
from core.problems import PROBLEM_CONTENT_TYPE, too_large_body

access_log = logging.getLogger("hashexchange.http")


def _route(pattern: str) -> str:
    """A URL pattern as a log shows it: DRF routers' regexes (`(?P<pk>[^/.]+)/test$`) in the
    path-converter style of the rest (`<pk>/test`)."""
    return "/" + re.sub(r"\(\?P<(\w+)>[^)]*\)", r"<\1>", pattern).lstrip("^").rstrip("$")


class RequestIdMiddleware:
    """Give every request an id, log one line per request, and answer with the id.

    The id is the `X-Request-ID` the client or proxy sent, if it is plain (letters,
    digits, `._:-`, up to 128), else a new UUID. It is on every log line written while
    the request runs and in the Celery tasks it causes (config/celery.py), and it comes
    back in the `X-Request-ID` header, so one id finds a request's whole story.

    The access line names the URL pattern (`api/v1/hashes/<int:pk>`), never the path,
    so no identifier or query string reaches the log.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = clean_request_id(request.META.get("HTTP_X_REQUEST_ID"))
        token = request_id.set(rid)
        started = time.monotonic()
        try:
            response = self.get_response(request)
            response.headers["X-Request-ID"] = rid
            match = getattr(request, "resolver_match", None)
            route = _route(match.route) if match is not None and match.route else "(unrouted)"
            duration_ms = round((time.monotonic() - started) * 1000, 1)
            access_log.info(
                "%s %s %s %.1fms",
                request.method,
                route,
                response.status_code,
                duration_ms,
                extra={
                    "method": request.method,
                    "route": route,
                    "status": response.status_code,
                    "duration_ms": duration_ms,
                    "member": getattr(getattr(request, "user", None), "slug", None),
                },
            )
            return response
        finally:
            request_id.reset(token)


class BodySizeLimitMiddleware:
    """Refuse request bodies over API_MAX_BODY_BYTES with 413 before reading them."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > settings.API_MAX_BODY_BYTES:
            body = too_large_body()
            body["detail"] += f" The limit is {settings.API_MAX_BODY_BYTES} bytes."
            return HttpResponse(json.dumps(body), status=413, content_type=PROBLEM_CONTENT_TYPE)
        return self.get_response(request)


class SecurityHeadersMiddleware:
    """Add the Content-Security-Policy and Permissions-Policy headers to every response.

    Django's SecurityMiddleware sets X-Content-Type-Options, Referrer-Policy and (over
    TLS) Strict-Transport-Security; Django 5.2 has no CSP of its own. The policy allows
    this origin's scripts and nothing else: no inline script, no third-party request.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Permissions-Policy", settings.PERMISSIONS_POLICY)
        return response
