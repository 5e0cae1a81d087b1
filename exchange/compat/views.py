"""Thin views of the StopNCII facade: parse, call a selector or service, answer JSON.

Every answer has a JSON body, errors included (problem documents), because the client
calls `response.json()` on whatever it gets. Successes of the POST endpoints are 200
with one result per item even when some items were refused: the client raises on any
4xx and never retries a POST, so a whole-request error would lose the good items too.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.problems import PROBLEM_CONTENT_TYPE, Problem, problem, problem_response
from members.models import Member, Program, Scope

from .. import services as exchange_services
from . import selectors, services, stopncii
from .auth import StopNCIIKeyAuthentication


class CompatView(APIView):
    """Base of the facades' views: our permissions and rate limits, JSON problem errors, and
    the programs a request is about. Each facade adds its own authentication."""

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, Problem):
            return problem_response(exc.status, exc.detail, code=exc.code)
        return super().handle_exception(exc)

    def programs(self, member: Member, slug: str | None) -> list[Program]:
        """The programs this request is about: those the caller receives, or the one in the URL."""
        return selectors.requested_programs(member=member, slug=slug)


@extend_schema(exclude=True)  # a foreign API shape, documented in docs/platforms.md
class StopNCIIView(CompatView):
    """Base: StopNCII's two-header authentication, our permissions and rate limits, JSON errors."""

    authentication_classes = [StopNCIIKeyAuthentication]


class FetchHashesView(StopNCIIView):
    """`GET FetchHashes?startTimestamp=&pageSize=&nextPageToken=`: the caller's records since a checkpoint."""

    required_scope = Scope.READ

    def get(self, request: Request, program: str | None = None) -> Response:
        params = request.query_params
        start = stopncii.parse_int(
            params.get("startTimestamp"), name="startTimestamp", default=0, minimum=0, maximum=stopncii.MAX_TIMESTAMP
        )
        page_size = stopncii.parse_int(
            params.get("pageSize"), name="pageSize", default=selectors.DEFAULT_PAGE_SIZE, minimum=1, maximum=10**9
        )
        member = request.user
        programs = self.programs(member, program)
        page = selectors.fetch_page(
            member=member,
            programs=programs,
            start=start,
            page_size=min(page_size, selectors.MAX_PAGE_SIZE),
            token=params.get("nextPageToken") or None,
        )
        # A read like the pull feed's: it counts as participation and as what was sent.
        exchange_services.feed_cursor_record(
            member=member, after=page.after, last_seq=page.last_seq, programs=[p.slug for p in programs]
        )
        return Response(page.as_json())


class SubmitFeedbackView(StopNCIIView):
    """`POST SubmitFeedback`: feedback on hashes, by value, recorded as outcomes."""

    required_scope = Scope.OUTCOMES

    def post(self, request: Request, program: str | None = None) -> Response:
        member = request.user
        results = services.feedback_submit(member=member, programs=self.programs(member, program), body=request.data)
        return Response(services.summary(results))


class SubmitHashesView(StopNCIIView):
    """`POST SubmitHashes`: unsigned submissions, where a program accepts them from the caller."""

    required_scope = Scope.SUBMIT

    def post(self, request: Request, program: str | None = None) -> Response:
        member = request.user
        target = services.submit_program(
            member=member, programs=self.programs(member, program), named=program is not None
        )
        results = services.hashes_submit(member=member, program=target, body=request.data)
        return Response(services.summary(results))


def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Any other path under the facade: a JSON 404 naming the three endpoints."""
    body = problem(
        404,
        "No such StopNCII endpoint; the base URL ends in /v1 and the endpoints are "
        "FetchHashes, SubmitFeedback and SubmitHashes.",
        code="not_found",
    )
    return JsonResponse(body, status=404, content_type=PROBLEM_CONTENT_TYPE)
