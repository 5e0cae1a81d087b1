"""Middleware that protects the API before any view runs, and the headers every answer carries."""

from __future__ import annotations

import json
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from core.problems import PROBLEM_CONTENT_TYPE, too_large_body


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
