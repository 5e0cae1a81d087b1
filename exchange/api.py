"""Thin views: the pull feed, webhook endpoints, and the server's public key."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from members.api import member_actor
from members.models import Scope

from . import crypto, services
from .feed import feed_page
from .models import WebhookEndpoint
from .serializers import (
    FeedPageSerializer,
    FeedQuerySerializer,
    RotateSecretSerializer,
    ServerKeySerializer,
    TestResultSerializer,
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
        page = feed_page(member=request.user, after=after, limit=limit)
        services.feed_cursor_record(member=request.user, after=after, last_seq=page.next)
        return Response({"entries": page.entries, "next": page.next, "has_more": page.has_more})


class ServerKeyView(APIView):
    """The clearinghouse's Ed25519 public key: verifies `v1a` webhook signatures."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(responses=ServerKeySerializer, auth=[])
    def get(self, request: Request) -> Response:
        return Response(
            {"algorithm": "ed25519", "public_key": crypto.server_public_key_b64(), "key_id": crypto.server_key_id()}
        )


class WebhookViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """Webhook endpoints: create (the secret is returned once), list, update, delete, rotate, test."""

    required_scope = Scope.WEBHOOKS
    serializer_class = WebhookSerializer
    queryset = WebhookEndpoint.objects.none()

    def get_queryset(self) -> Any:
        return WebhookEndpoint.objects.filter(member=self.request.user).select_related("member").order_by("pk")

    @extend_schema(request=WebhookSerializer, responses={201: WebhookWithSecretSerializer})
    def create(self, request: Request) -> Response:
        params = WebhookSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        endpoint, secret = services.webhook_create(
            member=request.user,
            url=params.validated_data["url"],
            event_kinds=params.validated_data.get("event_kinds"),
            description=params.validated_data.get("description", ""),
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
