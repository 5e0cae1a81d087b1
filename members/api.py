"""Thin DRF views over the members services and selectors."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.ledger import Actor
from core.problems import Problem

from . import selectors, services
from .models import Scope
from .serializers import (
    EnrollmentSerializer,
    EnrollmentSetSerializer,
    MeSerializer,
    ProgramSerializer,
    RevokeSerializer,
    SigningKeyCreateSerializer,
    SigningKeySerializer,
)


def member_actor(request: Request) -> Actor:
    return Actor.member(request.user.slug)


class MeView(APIView):
    """The calling member, the credential in use, its enrollments and signing keys."""

    @extend_schema(responses=MeSerializer)
    def get(self, request: Request) -> Response:
        member = selectors.member_profile(member=request.user)
        return Response(MeSerializer(member, context={"request": request}).data)


class ProgramListView(ListAPIView):
    """Programs a member can opt into (and any it is enrolled in)."""

    serializer_class = ProgramSerializer

    def get_queryset(self) -> Any:
        return selectors.programs_visible(member=self.request.user).order_by("slug")


class SigningKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Register, list and revoke the member's Ed25519 signing keys."""

    required_scope = Scope.KEYS
    serializer_class = SigningKeySerializer
    lookup_field = "key_id"
    lookup_value_regex = "[0-9a-f]{64}"

    def get_queryset(self) -> Any:
        return selectors.signing_keys_of(member=self.request.user)

    @extend_schema(request=SigningKeyCreateSerializer, responses={201: SigningKeySerializer})
    def create(self, request: Request) -> Response:
        params = SigningKeyCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        key = services.signing_key_register(member=request.user, actor=member_actor(request), **params.validated_data)
        return Response(SigningKeySerializer(key).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=RevokeSerializer, responses=SigningKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, key_id: str) -> Response:
        params = RevokeSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        key = services.signing_key_revoke(key=self.get_object(), actor=member_actor(request), **params.validated_data)
        return Response(SigningKeySerializer(key).data)


class EnrollmentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Opt in or out of programs. POST is an upsert on the program."""

    required_scope = Scope.ENROLLMENTS
    serializer_class = EnrollmentSerializer
    lookup_field = "program__slug"
    lookup_url_kwarg = "program"
    lookup_value_regex = "[-a-zA-Z0-9_]+"  # a slug; anything else is a 404 before any query

    def get_queryset(self) -> Any:
        return selectors.enrollments_of(member=self.request.user)

    @extend_schema(
        request=EnrollmentSetSerializer,
        responses={200: EnrollmentSerializer, 201: EnrollmentSerializer},
        description="Set the member's state in a program; 201 when the state changed, 200 when it was already so.",
    )
    def create(self, request: Request) -> Response:
        params = EnrollmentSetSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        slug = params.validated_data["program"]
        program = selectors.program_by_slug(slug)
        if program is None:
            raise Problem.field("program", f"unknown program {slug!r}; see GET /api/v1/programs")
        enrollment, changed = services.enrollment_set(
            member=request.user,
            program=program,
            state=params.validated_data["state"],
            reason=params.validated_data["reason"],
            actor=member_actor(request),
        )
        return Response(EnrollmentSerializer(enrollment).data, status=201 if changed else 200)
