"""The intake's pages and the small JSON API their script calls. Views parse and answer;
the work is in services and selectors.

The pages carry a stricter Content-Security-Policy than the rest of the site (no inline
style either; images only from this origin and from the person's own files, as blob:
URLs), and set no cookie but Django's CSRF cookie.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.templatetags.static import static
from django.utils import translation
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext as _
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_POST

from core.problems import PROBLEM_CONTENT_TYPE, Problem, problem

from . import abuse, selectors, services
from .words import WORDS

INTAKE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
MAX_BODY = 2 * 1024 * 1024


def _client_address(request: HttpRequest) -> str:
    if settings.BEHIND_TLS_PROXY:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
        if hops:
            return hops[-1]
    return request.META.get("REMOTE_ADDR", "")


def _refusal(exc: Problem) -> JsonResponse:
    body = problem(exc.status, exc.detail, code=exc.code, errors=exc.errors)
    return JsonResponse(body, status=exc.status, content_type=PROBLEM_CONTENT_TYPE)


def _in_their_language(view: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """Answer in the language the person's browser asks for, among settings.LANGUAGES.

    Only the intake's pages and API do this (the rest of the site is for operators and
    stays in LANGUAGE_CODE), so no middleware; no cookie is set or needed.
    """

    @functools.wraps(view)
    def wrapped(request: HttpRequest) -> HttpResponse:
        language = translation.get_language_from_request(request)
        with translation.override(language):
            response = view(request)
        response["Content-Language"] = language
        patch_vary_headers(response, ("Accept-Language",))
        return response

    return wrapped


def _json_api(view: Callable[[HttpRequest, dict[str, Any]], dict[str, Any]]) -> Callable[[HttpRequest], JsonResponse]:
    """Read a JSON object body, call the view, answer JSON or problem+json (never a 500 for bad input)."""

    def wrapped(request: HttpRequest) -> JsonResponse:
        body: Any = None
        try:
            if len(request.body) > MAX_BODY:
                raise Problem("request_too_large", _("Too much at once. Send fewer files."), status=413)
            try:
                body = json.loads(request.body or b"null")
            except (ValueError, UnicodeDecodeError):
                raise Problem("bad_json", _("The request could not be read.")) from None
            if not isinstance(body, dict):
                raise Problem("bad_json", _("The request could not be read."))
            return JsonResponse(view(request, body))
        except Problem as exc:
            services.refusals_count(
                [exc.code], program=services.routed_program(body.get("age")) if isinstance(body, dict) else ""
            )
            return _refusal(exc)
        except IntegrityError:
            return _refusal(Problem("conflict", _("Something changed at the same time. Please try again."), status=409))

    wrapped.__name__ = view.__name__
    return wrapped


def _page(request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
    response = render(request, template, context)
    response["Content-Security-Policy"] = INTAKE_CSP
    response["Cache-Control"] = "no-store"
    return response


@_in_their_language
@require_GET
@ensure_csrf_cookie
def intake_page(request: HttpRequest) -> HttpResponse:
    config = {
        "minor": selectors.program_info(slug=settings.INTAKE_PROGRAM_MINOR),
        "adult": selectors.program_info(slug=settings.INTAKE_PROGRAM_ADULT),
        "words": list(WORDS),
        "max_files": settings.INTAKE_MAX_HASHES_PER_CASE // 3,
        "scripts": {name: static(f"intake/{name}.js") for name in ("hasher", "digests", "pdq")},
    }
    return _page(request, "intake/intake.html", {"config": config})


@_in_their_language
@require_GET
@ensure_csrf_cookie
def status_page(request: HttpRequest) -> HttpResponse:
    return _page(request, "intake/status.html", {"config": {"words": list(WORDS)}})


@require_GET
def challenge(request: HttpRequest) -> JsonResponse:
    response = JsonResponse(abuse.challenge_issue())
    response["Cache-Control"] = "no-store"
    return response


@_in_their_language
@require_POST
@_json_api
def cases(request: HttpRequest, body: dict[str, Any]) -> dict[str, Any]:
    abuse.challenge_check(challenge=body.get("challenge"), nonce=body.get("work"))
    abuse.case_budget_spend(_client_address(request))
    opened = services.case_open(
        age=body.get("age"),
        public_key=body.get("public_key"),
        hash_keys=body.get("hash_keys"),
        items=body.get("envelopes"),
    )
    services.refusals_count(
        [r.error.code for r in opened.results if r.error is not None], program=opened.case.program.slug
    )
    return {"code": opened.case.code, "results": [r.as_dict() for r in opened.results]}


def _authenticated(request: HttpRequest, body: dict[str, Any]) -> Any:
    address = _client_address(request)
    abuse.tries_check(address)
    try:
        return services.case_authenticate(code=body.get("code"), request=body.get("request"))
    except Problem:
        abuse.tries_spend(address)
        raise


@_in_their_language
@require_POST
@_json_api
def status(request: HttpRequest, body: dict[str, Any]) -> dict[str, Any]:
    return selectors.case_status(case=_authenticated(request, body))


@_in_their_language
@require_POST
@_json_api
def withdraw(request: HttpRequest, body: dict[str, Any]) -> dict[str, Any]:
    case = _authenticated(request, body)
    items = body.get("envelopes")
    if not isinstance(items, list) or not items or len(items) > settings.INTAKE_MAX_HASHES_PER_CASE:
        raise Problem.field("envelopes", "choose what to withdraw")
    outcomes = services.case_withdraw(case=case, items=items)
    services.refusals_count([o.error.code for o in outcomes if o.error is not None], program=case.program.slug)
    return {
        "results": [
            {
                "index": o.index,
                "status": o.status,
                "error": {"code": o.error.code, "detail": o.error.detail} if o.error else None,
            }
            for o in outcomes
        ],
        "case": selectors.case_status(case=case),
    }
