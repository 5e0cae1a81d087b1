"""API authentication (`Authorization: Bearer <api key>`) and the permissions every view uses."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import SAFE_METHODS, BasePermission

from .models import ApiCredential, Member
from .services import credential_authenticate


class ApiKeyAuthentication(BaseAuthentication):
    """Authenticates a member by API key. The principal is the Member, `request.auth` the credential."""

    keyword = b"bearer"

    def authenticate(self, request: Any) -> tuple[Member, ApiCredential] | None:
        header = get_authorization_header(request).split()
        if not header:
            return None
        if header[0].lower() != self.keyword:
            raise exceptions.AuthenticationFailed("Use the header `Authorization: Bearer <api key>`.")
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("The Authorization header must be `Bearer <api key>`, one key.")
        try:
            token = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The API key contains characters that no key has.") from None
        credential = credential_authenticate(token)
        if credential is None:
            raise exceptions.AuthenticationFailed("Unknown, expired or revoked API key.")
        return credential.member, credential

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="api"'


class IsActiveMember(BasePermission):
    """Only active members call the API, and auditors only read."""

    def has_permission(self, request: Any, view: Any) -> bool:
        member = request.user
        if not isinstance(member, Member):
            return False
        if member.status != Member.Status.ACTIVE:
            self.message = f"Member {member.slug!r} is {member.status}; ask the clearinghouse to activate it."
            return False
        if member.kind == Member.Kind.AUDITOR and request.method not in SAFE_METHODS:
            self.message = "Auditor credentials are read-only."
            return False
        return True


class HasScope(BasePermission):
    """The credential must carry the view's `required_scope` (if the view names one)."""

    def has_permission(self, request: Any, view: Any) -> bool:
        scope = getattr(view, "required_scope", None)
        if scope is None:
            return True
        credential = request.auth
        if isinstance(credential, ApiCredential) and credential.has_scope(scope):
            return True
        self.message = f"This API key lacks the `{scope}` scope; issue a key that has it."
        return False
