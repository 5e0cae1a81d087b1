"""Thin views of the exchange: the pull feed, webhooks, the server's key, outcomes, obligations,
reports, the event log and a hash's details.

Each view parses its input with a serializer and calls a selector (reads) or a service (writes).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from defusedcsv import csv
from django.http import FileResponse, StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.generics import ListAPIView
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import batch_response
from core.problems import PROBLEM_CONTENT_TYPE, Problem
from members.api import member_actor
from members.models import Scope
from members.selectors import member_by_slug, program_by_slug

from . import auditlog, crypto, outcomes, selectors, services
from .models import WebhookEndpoint
from .reports import Period, flatten
from .serializers import (
    ConsistencyProofSerializer,
    ConsistencyQuerySerializer,
    EntriesQuerySerializer,
    EventPageSerializer,
    FeedPageSerializer,
    FeedQuerySerializer,
    HashDetailSerializer,
    InclusionProofSerializer,
    InclusionQuerySerializer,
    MemberReportSerializer,
    ObligationQuerySerializer,
    ObligationSerializer,
    OutcomeBatchResultSerializer,
    OutcomeBatchSerializer,
    PeriodSerializer,
    ProgramReportSerializer,
    RotateSecretSerializer,
    ServerKeySerializer,
    SnapshotSerializer,
    TestResultSerializer,
    WebhookCreateSerializer,
    WebhookSerializer,
    WebhookWithSecretSerializer,
)


class FeedView(APIView):
    """The member's events in sequence order; resume from any point with `after`."""

    required_scope = Scope.READ

    @extend_schema(
        parameters=[FeedQuerySerializer],
        responses=FeedPageSerializer,
        description="`after=0` pages through everything (bootstrap). A cursor is a sequence number: it never "
        "expires and never skips. Store `next` once you have processed a page.",
    )
    def get(self, request: Request) -> Response:
        query = FeedQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        after, limit = query.validated_data["after"], query.validated_data["limit"]
        page = selectors.feed_for(member=request.user, after=after, limit=limit)
        services.feed_cursor_record(member=request.user, after=after, last_seq=page.next, programs=page.programs)
        return Response({"entries": page.entries, "next": page.next, "has_more": page.has_more})


class SnapshotView(APIView):
    """A program's signed snapshot at a sequence number: its manifest (exchange/snapshots.py).

    Download the file it names, check the manifest's signature with the server key and the
    file's SHA-256, then read the feed with `after=seq`.
    """

    required_scope = Scope.READ

    @extend_schema(
        responses=SnapshotSerializer,
        extensions={"x-problems": [403, 404]},
        description="The newest snapshot of a program you receive: its signed manifest (a DSSE envelope "
        "signed with the server key, see GET /api/v1/server-key) and where to download its gzip-compressed "
        "NDJSON entries. 404 `snapshot_not_ready` when none is built yet (one is then queued): read the "
        "feed from 0 meanwhile.",
    )
    def get(self, request: Request, slug: str) -> Response:
        program, snapshot = selectors.snapshot_for(member=request.user, slug=slug)
        if snapshot is None:
            services.snapshot_request_build(program=program)
            raise Problem("snapshot_not_ready", f"no snapshot of {slug!r} is built yet; one is queued", 404)
        etag = f'"{snapshot.sha256}"'
        headers = {"ETag": etag, "Cache-Control": "private, max-age=60"}
        if etag in request.headers.get("If-None-Match", ""):
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers=headers)
        return Response(
            {
                "program": snapshot.program,
                "seq": snapshot.seq,
                "entries": snapshot.entries,
                "bytes": snapshot.size,
                "sha256": snapshot.sha256,
                "created_at": snapshot.created_at,
                "file": snapshot.name,
                "url": f"/api/v1/programs/{snapshot.program}/snapshot/{snapshot.name}",
                "manifest": snapshot.manifest,
            },
            headers=headers,
        )


class GzipRenderer(BaseRenderer):
    """A snapshot's file as the gzip bytes its manifest signs; a problem document as its JSON."""

    media_type = "application/gzip"
    format = "gz"
    charset = None

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if isinstance(data, bytes):
            return data
        return JSONRenderer().render(data)


class SnapshotFileView(APIView):
    """A snapshot's entries: gzip-compressed NDJSON, one feed entry per line. Immutable."""

    required_scope = Scope.READ
    renderer_classes = [GzipRenderer, JSONRenderer]

    @extend_schema(
        operation_id="programs_snapshot_file_retrieve",
        responses={(200, "application/gzip"): bytes},
        extensions={"x-problems": [403, 404]},
    )
    def get(self, request: Request, slug: str, name: str) -> Any:
        snapshot = selectors.snapshot_file_for(member=request.user, slug=slug, name=name)
        if snapshot is None:
            raise Problem(
                "snapshot_gone", "no such snapshot is kept any more: ask for the program's snapshot again", 404
            )
        etag = f'"{snapshot.sha256}"'
        headers = {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable"}
        if etag in request.headers.get("If-None-Match", ""):
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers=headers)
        response = FileResponse(open(snapshot.data_path, "rb"), content_type="application/gzip")  # noqa: SIM115
        response["Content-Length"] = str(snapshot.size)
        for name_, value in headers.items():
            response[name_] = value
        return response


class ServerKeyView(APIView):
    """The clearinghouse's Ed25519 public key: verifies `v1a` webhook signatures."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(responses=ServerKeySerializer, auth=[])
    def get(self, request: Request) -> Response:
        return Response(
            {
                "algorithm": "ed25519",
                "public_key": crypto.server_public_key_b64(),
                "whpk": crypto.server_public_key_whpk(),
                "key_id": crypto.server_key_id(),
                "log_origin": auditlog.origin(),
                "log_vkey": auditlog.verifier().vkey(),
            }
        )


class WebhookViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """Webhook endpoints: create (the secret is returned once), list, update, delete, rotate, test."""

    required_scope = Scope.WEBHOOKS
    serializer_class = WebhookSerializer

    def get_queryset(self) -> Any:
        return selectors.webhooks_of(member=self.request.user)

    @extend_schema(request=WebhookCreateSerializer, responses={201: WebhookWithSecretSerializer})
    def create(self, request: Request) -> Response:
        params = WebhookCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        endpoint, secret = services.webhook_create(
            member=request.user,
            url=params.validated_data["url"],
            event_kinds=params.validated_data.get("event_kinds"),
            description=params.validated_data.get("description", ""),
            after=params.validated_data.get("after"),
            actor=member_actor(request),
        )
        endpoint.secret = secret
        return Response(WebhookWithSecretSerializer(endpoint).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=WebhookSerializer, responses=WebhookSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        params = WebhookSerializer(data=request.data, partial=True)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        endpoint = services.webhook_update(
            endpoint=self.get_object(),
            actor=member_actor(request),
            url=data.get("url"),
            event_kinds=data.get("event_kinds"),
            description=data.get("description"),
            is_active=data.get("is_active"),
        )
        return Response(WebhookSerializer(endpoint).data)

    def perform_destroy(self, instance: WebhookEndpoint) -> None:
        services.webhook_delete(endpoint=instance, actor=member_actor(self.request))

    @extend_schema(request=RotateSecretSerializer, responses=WebhookWithSecretSerializer)
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, pk: str) -> Response:
        params = RotateSecretSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        endpoint, secret = services.webhook_rotate_secret(
            endpoint=self.get_object(), grace_hours=params.validated_data["grace_hours"], actor=member_actor(request)
        )
        endpoint.secret = secret
        return Response(WebhookWithSecretSerializer(endpoint).data)

    @extend_schema(
        request=None, responses=TestResultSerializer, parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH)]
    )
    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str) -> Response:
        result = services.webhook_send_test(endpoint=self.get_object())
        return Response(
            {
                "ok": result.ok,
                "status_code": result.status_code,
                "error": result.error,
                "duration_ms": result.duration_ms,
                "response_excerpt": result.excerpt,
            }
        )


class OutcomesView(APIView):
    """Report what you did with hashes you were sent: counts only, no content, no user ids."""

    required_scope = Scope.OUTCOMES

    @extend_schema(request=OutcomeBatchSerializer, responses=OutcomeBatchResultSerializer)
    def post(self, request: Request) -> Response:
        items = request.data.get("outcomes") if isinstance(request.data, dict) else None
        if not isinstance(items, list) or not items:
            raise exceptions.ValidationError({"outcomes": ['give {"outcomes": [...]} with at least one outcome']})
        if len(items) > outcomes.MAX_BATCH:
            raise exceptions.ValidationError(
                {"outcomes": [f"at most {outcomes.MAX_BATCH} outcomes per request, got {len(items)}"]}
            )
        results = outcomes.outcomes_create(member=request.user, items=items)
        return batch_response(results)


class ObligationListView(ListAPIView):
    """What you owe: a `deleted_after_withdrawal` outcome for each withdrawn hash you were sent."""

    required_scope = Scope.READ
    serializer_class = ObligationSerializer

    @extend_schema(parameters=[ObligationQuerySerializer])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        query = ObligationQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        return selectors.obligations_of(
            member=self.request.user,
            status=query.validated_data["status"],
            program=query.validated_data.get("program"),
        )


class ReportCSVRenderer(BaseRenderer):
    """`?format=csv`: one line per (member, program) row of a report."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        rows = data.get("members") or data.get("programs") or [] if isinstance(data, dict) else []
        flat = [flatten(row) for row in rows]
        out = io.StringIO()
        # defusedcsv escapes cells that a spreadsheet would run as a formula (=, +, -, @ ...):
        # members write some of these values (an enrollment's reason, for one).
        writer = csv.DictWriter(out, fieldnames=list(flat[0]) if flat else ["member", "program"])
        writer.writeheader()
        writer.writerows(flat)
        return out.getvalue().encode()


# The period's query parameters as the API reads them (`from`, `to`; PeriodSerializer renames them).
REPORT_PARAMETERS = [
    OpenApiParameter(
        "from", str, description="Start of the period (inclusive): a date or an RFC 3339 time; default `to` - 30 days."
    ),
    OpenApiParameter("to", str, description="End of the period (exclusive): a date or an RFC 3339 time; default now."),
    OpenApiParameter("format", str, enum=["json", "csv"], default="json"),
]


class ReportView(APIView):
    required_scope = Scope.REPORTS
    renderer_classes = [JSONRenderer, ReportCSVRenderer]

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        # A refusal is a problem document whatever format the report was asked in: its
        # Content-Type says application/problem+json, so its body must be JSON too.
        if response.status_code >= 400:
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), PROBLEM_CONTENT_TYPE
        return super().finalize_response(request, response, *args, **kwargs)

    def period(self, request: Request) -> Period:
        params = PeriodSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        return Period(params.validated_data["start"], params.validated_data["end"])

    def attested(self, request: Request, report: dict[str, Any]) -> dict[str, Any]:
        """JSON reports name the audit log's checkpoint and carry the server's signature
        over both (docs/auditlog.md); CSV has no place for either."""
        if request.accepted_renderer.format == "csv":
            return report
        return auditlog.attest_report(report)

    def answer(
        self, request: Request, kind: str, slug: str, subject: object, build: Callable[[Period], dict[str, Any]]
    ) -> Response:
        """The report `build` makes for the asked period on `subject` (a program or member; None: `slug` names none)."""
        if subject is None:
            raise exceptions.NotFound(f"No {kind} {slug!r}.")
        period = self.period(request)
        return Response(
            self.attested(request, build(period)),
            headers=self.csv_name(request, f"{kind}-{slug}", period),
        )

    def csv_name(self, request: Request, name: str, period: Period) -> dict[str, str]:
        if request.accepted_renderer.format != "csv":
            return {}
        return {"Content-Disposition": f'attachment; filename="{name}-{period.start:%Y%m%d}-{period.end:%Y%m%d}.csv"'}


class ProgramReportView(ReportView):
    """Auditors: for a program and period, each member's feed lag, webhook success, outcomes, time to removal
    against the deadline, withdrawal acknowledgements; and the program's disputes."""

    @extend_schema(
        parameters=REPORT_PARAMETERS,
        responses={(200, "application/json"): ProgramReportSerializer, (200, "text/csv"): str},
    )
    def get(self, request: Request, slug: str) -> Response:
        program = program_by_slug(slug)
        return self.answer(
            request, "program", slug, program, lambda period: selectors.program_report(program=program, period=period)
        )


class MemberReportView(ReportView):
    """Auditors: one member's figures in each of its programs for a period."""

    @extend_schema(
        parameters=REPORT_PARAMETERS,
        responses={(200, "application/json"): MemberReportSerializer, (200, "text/csv"): str},
    )
    def get(self, request: Request, slug: str) -> Response:
        member = member_by_slug(slug)
        return self.answer(
            request, "member", slug, member, lambda period: selectors.member_report(member=member, period=period)
        )


class EventLogView(APIView):
    """Auditors: the whole event log in order, with each event's leaf hash (docs/ledger.md)."""

    required_scope = Scope.REPORTS

    @extend_schema(parameters=[FeedQuerySerializer], responses=EventPageSerializer)
    def get(self, request: Request) -> Response:
        query = FeedQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        after, limit = query.validated_data["after"], query.validated_data["limit"]
        page = selectors.event_log_page(after=after, limit=limit)
        return Response({"events": page.events, "next": page.next, "has_more": page.has_more})


class HashDetailView(APIView):
    """A hash, where it is listed, the envelopes that support it, what members reported on it
    (aggregates, where the program shares feedback) and any dispute."""

    required_scope = Scope.READ

    @extend_schema(responses=HashDetailSerializer)
    def get(self, request: Request, hash_id: int) -> Response:
        row = selectors.hash_detail_for_member(member=request.user, hash_id=hash_id)
        if row is None:
            raise exceptions.NotFound("No hash with that id is visible to you.")
        return Response(HashDetailSerializer(row).data)


# The audit log (exchange/auditlog.py, docs/auditlog.md) ------------------------------------


class TextRenderer(BaseRenderer):
    """Signed notes and .tlog-proof files as text; a problem document as its JSON."""

    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if isinstance(data, str):
            return data.encode()
        return JSONRenderer().render(data)


class TlogProofRenderer(TextRenderer):
    """`?format=tlog-proof`: the inclusion proof as a C2SP tlog-proof file."""

    format = "tlog-proof"


class OctetRenderer(BaseRenderer):
    """Tiles and entry bundles as bytes; a problem document as its JSON."""

    media_type = "application/octet-stream"
    format = "bin"
    charset = None

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if isinstance(data, bytes):
            return data
        return JSONRenderer().render(data)


class CheckpointView(APIView):
    """The audit log's latest checkpoint: a C2SP signed note (origin, tree size, root hash),
    signed with the server key under the log's origin, and any witnesses' cosignatures."""

    renderer_classes = [TextRenderer]

    @extend_schema(extensions={"x-problems": [404]}, responses={(200, "text/plain"): str})
    def get(self, request: Request) -> Response:
        head = auditlog.latest_head.get()
        if head is None:
            raise exceptions.NotFound("The audit log has no checkpoint yet; one is signed once events are recorded.")
        # Mutable: caches may keep it for a few seconds at most (tlog-tiles).
        return Response(head.note, headers={"Cache-Control": "private, max-age=5"})


class InclusionProofView(APIView):
    """An event's inclusion proof in a checkpointed tree: auditors for any event, members for
    the events of their feed and those they caused. `?format=tlog-proof` answers a C2SP
    tlog-proof file, verifiable offline with the server key."""

    renderer_classes = [JSONRenderer, TlogProofRenderer]

    @extend_schema(
        extensions={"x-problems": [400, 404]},
        parameters=[InclusionQuerySerializer],
        responses={(200, "application/json"): InclusionProofSerializer, (200, "text/plain"): str},
    )
    def get(self, request: Request) -> Response:
        query = InclusionQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        proof = auditlog.inclusion_proof(
            member=request.user,
            credential=request.auth,
            leaf_index=query.validated_data["leaf_index"],
            tree_size=query.validated_data.get("tree_size"),
        )
        if request.accepted_renderer.format == "tlog-proof":
            return Response(proof.tlog_proof())
        return Response(proof.as_dict())


class ConsistencyProofView(APIView):
    """The proof that the log at size `first` is a prefix of the log at a checkpointed size."""

    @extend_schema(
        extensions={"x-problems": [400, 404]},
        parameters=[ConsistencyQuerySerializer],
        responses=ConsistencyProofSerializer,
    )
    def get(self, request: Request) -> Response:
        query = ConsistencyQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(
            auditlog.consistency_proof(first=query.validated_data["first"], second=query.validated_data.get("second"))
        )


class EntriesView(APIView):
    """Auditors: leaves `start` to `end - 1` in the format of tlog-tiles entry bundles (each
    leaf data prefixed by its length, uint16), up to 65,536 per request, streamed, and
    gzip-compressed when the client accepts it. `hashexchange log audit` reads the log with it."""

    required_scope = Scope.REPORTS
    renderer_classes = [OctetRenderer]

    @extend_schema(
        extensions={"x-problems": [400]},
        parameters=[EntriesQuerySerializer],
        responses={(200, "application/octet-stream"): bytes},
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        query = EntriesQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        blocks = auditlog.entries(start=query.validated_data["start"], end=query.validated_data["end"])
        gzip = "gzip" in request.headers.get("Accept-Encoding", "")
        response = StreamingHttpResponse(_gzipped(blocks) if gzip else blocks, content_type="application/octet-stream")
        if gzip:
            response["Content-Encoding"] = "gzip"
        response["Vary"] = "Accept-Encoding"
        # Immutable: the leaves below the tree size never change.
        response["Cache-Control"] = "private, max-age=31536000, immutable"
        return response


def _gzipped(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """gzip at level 1: leaf data shrinks to about a third for a few per cent of serving it."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    for block in blocks:
        out = compressor.compress(block)
        if out:
            yield out
    yield compressor.flush()


class TileView(APIView):
    """Auditors: the log as C2SP tlog-tiles, `tile/<L>/<N>[.p/<W>]` and `tile/entries/<N>[.p/<W>]`."""

    required_scope = Scope.REPORTS
    renderer_classes = [OctetRenderer]

    @extend_schema(extensions={"x-problems": [400, 404]}, responses={(200, "application/octet-stream"): bytes})
    def get(self, request: Request, path: str) -> Response:
        data = auditlog.tile(f"tile/{path}")
        # Immutable once served: a tile's bytes at a width never change (tlog-tiles).
        return Response(data, headers={"Cache-Control": "private, max-age=31536000, immutable"})
