"""Thin views: submit and withdraw signed envelopes, match hashes.

A hash is looked up at `GET /api/v1/hashes/{id}` in exchange/api.py, which adds what
members reported on it to what hashes.selectors.hash_for_member shows.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import metrics
from core.api import batch_response
from core.problems import Problem, problem_response
from members.models import Scope

from . import matching, services
from .serializers import (
    BatchResultSerializer,
    EnvelopeSerializer,
    ItemResultSerializer,
    MatchRequestSerializer,
    MatchResponseSerializer,
    SubmissionBatchSerializer,
    WithdrawalResultSerializer,
    parse_match_queries,
)


def rejection_response(rejection: Problem) -> Response:
    return problem_response(rejection.status, rejection.detail, code=rejection.code)


def _envelopes_from(body: Any) -> tuple[list[Any], bool]:
    """The envelopes of a request body, and whether it was a batch."""
    if isinstance(body, dict) and "envelopes" in body:
        items = body["envelopes"]
        if not isinstance(items, list) or not items:
            raise exceptions.ValidationError({"envelopes": ["give a non-empty list of DSSE envelopes"]})
        if len(items) > settings.SUBMISSION_BATCH_MAX:
            raise exceptions.ValidationError(
                {
                    "envelopes": [
                        f"at most {settings.SUBMISSION_BATCH_MAX} envelopes per request, got {len(items)}; "
                        "split the batch"
                    ]
                }
            )
        return items, True
    if isinstance(body, dict) and "payloadType" in body:
        return [body], False
    raise exceptions.ValidationError(
        {
            "non_field_errors": [
                f'send one DSSE envelope, or {{"envelopes": [...]}} with up to {settings.SUBMISSION_BATCH_MAX}'
            ]
        }
    )


class SubmissionsView(APIView):
    """Submit signed hashes: one DSSE envelope, or a batch."""

    required_scope = Scope.SUBMIT

    @extend_schema(
        request=PolymorphicProxySerializer(
            component_name="Submission",
            serializers=[EnvelopeSerializer, SubmissionBatchSerializer],
            resource_type_field_name=None,
        ),
        responses={
            200: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="SubmissionAnswer",
                    serializers=[BatchResultSerializer, ItemResultSerializer],
                    resource_type_field_name=None,
                ),
                "A batch: one result per envelope; or a single envelope that was already stored.",
            ),
            201: OpenApiResponse(ItemResultSerializer, "A single envelope, accepted."),
        },
        examples=[
            OpenApiExample(
                "batch",
                value={
                    "envelopes": [
                        {
                            "payloadType": "application/vnd.hashexchange.submission+json",
                            "payload": "eyJ...",
                            "signatures": [{"keyid": "…", "sig": "…"}],
                        }
                    ]
                },
                request_only=True,
            )
        ],
        description="A batch answers 200 with a result per envelope; a single envelope answers 201 when "
        "accepted or held for review (`held`: stored, distributed once an admin releases it), "
        "200 when it was already stored, or a problem document naming why it was refused.",
    )
    def post(self, request: Request) -> Response:
        items, batch = _envelopes_from(request.data)
        results = services.submissions_create(member=request.user, items=items)
        if not batch:
            result = results[0]
            if result.error is not None:
                return rejection_response(result.error)
            return Response(result.as_dict(), status=201 if result.status in ("accepted", "held") else 200)
        return batch_response(results, held=True)


class WithdrawalsView(APIView):
    """Withdraw your own submission of a hash with a signed withdrawal envelope."""

    required_scope = Scope.SUBMIT

    @extend_schema(
        request=EnvelopeSerializer, responses={200: WithdrawalResultSerializer, 201: WithdrawalResultSerializer}
    )
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict) or "payloadType" not in request.data:
            raise exceptions.ValidationError({"non_field_errors": ["send one signed withdrawal envelope"]})
        try:
            result = services.withdrawal_create(member=request.user, envelope=request.data)
        except Problem as rejection:
            return rejection_response(rejection)
        body = {
            "hash_id": result.hash.pk,
            "withdrawal_id": result.withdrawal.pk,
            "status": result.hash.status,
            "listing_status": result.listing_status,
        }
        return Response(body, status=201 if result.created else 200)


class MatchView(APIView):
    """Ask whether hashes match anything in the programs you are opted in to.

    Exact: the same answer as comparing with every hash (PDQ within each program's
    threshold, 31 by default; pHash/dHash 10; exact types by equality). A hash is
    matchable from the request after the one that added it, and a withdrawn,
    quarantined or retired one never matches. Nothing of the query is stored; matches
    are counted per hash.
    """

    required_scope = Scope.MATCH

    @extend_schema(
        request=MatchRequestSerializer,
        responses={200: MatchResponseSerializer},
        examples=[
            OpenApiExample(
                "one PDQ query",
                value={
                    "queries": [
                        {
                            "signal_type": "pdq",
                            "value": "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
                        }
                    ]
                },
                request_only=True,
            )
        ],
    )
    def post(self, request: Request) -> Response:
        queries = parse_match_queries(request.data, limit=settings.MATCH_QUERIES_MAX)
        with metrics.MATCH_SECONDS.time():
            results = matching.match(member=request.user, queries=queries)
        matched = sum(1 for r in results if r.matches)
        metrics.MATCH_QUERIES.labels(matched="yes").inc(matched)
        metrics.MATCH_QUERIES.labels(matched="no").inc(len(results) - matched)
        return Response({"results": [r.as_dict() for r in results], "matched": matched})
