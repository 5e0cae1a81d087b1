"""Thin views of the NCMEC facade: parse, call a selector or service, answer XML.

Successes are XML documents in NCMEC's v2 shape (exchange/compat/ncmec.py); refusals
are JSON problem documents like everywhere else here (the client only looks at the
status code of an error).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request

from core.problems import PROBLEM_CONTENT_TYPE, Problem, problem
from members.models import Scope

from .. import services as exchange_services
from . import ncmec, ncmec_selectors, ncmec_services
from .auth import NCMECBasicAuthentication
from .views import CompatView

XML = "application/xml; charset=utf-8"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def xml_response(body: bytes, status: int = 200) -> HttpResponse:
    return HttpResponse(body, status=status, content_type=XML)


@extend_schema(exclude=True)  # a foreign API shape, documented in docs/platforms.md
class NCMECView(CompatView):
    """Base: HTTP Basic with an API key, our permissions and rate limits, JSON problem errors."""

    authentication_classes = [NCMECBasicAuthentication]
    required_scope = Scope.READ


class StatusView(NCMECView):
    """`GET v2/status`: who you are."""

    def get(self, request: Request, program: str | None = None) -> HttpResponse:
        self.programs(request.user, program)
        return xml_response(ncmec.status_document(esp_id=request.user.pk, name=request.user.slug))


class MembersView(NCMECView):
    """`GET v2/members`: the "ESPs" entries come from, i.e. the programs you receive."""

    def get(self, request: Request, program: str | None = None) -> HttpResponse:
        programs = self.programs(request.user, program)
        return xml_response(ncmec.members_document([(p.pk, p.slug) for p in programs]))


class FeedbackReasonsView(NCMECView):
    """`GET v2/feedback/{type}/reasons`: the reasons a downvote may give."""

    def get(self, request: Request, fingerprint_type: str, program: str | None = None) -> HttpResponse:
        self.programs(request.user, program)
        return xml_response(ncmec.reasons_document(ncmec.parse_fingerprint_type(fingerprint_type)))


class EntriesView(NCMECView):
    """`GET v2/entries?from=&to=[&start=&size=&max=]`: entries changed in the range, paged."""

    def get(self, request: Request, program: str | None = None) -> HttpResponse:
        member = request.user
        programs = self.programs(member, program)
        params = request.query_params
        now = timezone.now().replace(microsecond=0)
        start_time = ncmec.parse_time(params.get("from"), name="from", default=EPOCH)
        end_time = ncmec.parse_time(params.get("to"), name="to", default=now)
        if end_time < start_time:
            raise Problem("invalid_parameter", "to is before from")
        start = ncmec.parse_count(params.get("start"), name="start", default=0)
        size = ncmec.parse_count(params.get("size"), name="size", default=ncmec.PAGE_SIZE, maximum=ncmec.PAGE_SIZE)
        window_max = ncmec.parse_count(params.get("max"), name="max", default=0)
        if size < 1:
            raise Problem("invalid_parameter", "size must be at least 1")
        if start and window_max < start - 1:
            raise Problem("invalid_parameter", "start and max come from a next link: max is below start")
        page = ncmec_selectors.entries_page(
            member=member,
            programs=programs,
            start_time=start_time,
            end_time=end_time,
            start=start,
            size=size,
            window_max=window_max,
        )
        if page.last_seq > page.after:  # a read like the pull feed's: participation and what was sent
            exchange_services.feed_cursor_record(
                member=member, after=page.after, last_seq=page.last_seq, programs=[p.slug for p in programs]
            )
        return xml_response(
            ncmec.entries_document(
                entries=page.entries,
                max_time=page.max_time,
                caller=(member.pk, member.slug),
                next_query=page.next_query,
            )
        )


class EntryFeedbackView(NCMECView):
    """`PUT v2/entries/{esp id}/{entry id}/{type}/feedback`: an up- or downvote, recorded as an outcome."""

    required_scope = Scope.OUTCOMES

    def put(
        self, request: Request, esp_id: str, entry_id: str, fingerprint_type: str, program: str | None = None
    ) -> HttpResponse:
        member = request.user
        programs = self.programs(member, program)
        fingerprint_type = ncmec.parse_fingerprint_type(fingerprint_type)
        found = ncmec_selectors.entry_for_feedback(
            programs=programs, esp_id=int(esp_id) if esp_id.isdigit() and len(esp_id) < 18 else -1, entry_id=entry_id
        )
        if found is None:
            raise Problem("unknown_entry", f"no entry {entry_id} of member {esp_id} was sent to you", status=404)
        vote = ncmec.parse_feedback(request.body)
        status = ncmec_services.feedback_submit(
            member=member, program=found[0], hash_=found[1], fingerprint_type=fingerprint_type, vote=vote
        )
        return xml_response(ncmec.feedback_result_document(status=status))


def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Any other path under the facade: a JSON 404 naming the endpoints."""
    body = problem(
        404,
        "No such NCMEC endpoint; the base URL is /compat/ncmec (or /compat/ncmec/programs/<slug>) and the "
        "endpoints are v2/status, v2/members, v2/feedback/{PDQ|MD5}/reasons, v2/entries and "
        "v2/entries/{esp id}/{entry id}/{PDQ|MD5}/feedback.",
        code="not_found",
    )
    return JsonResponse(body, status=404, content_type=PROBLEM_CONTENT_TYPE)
