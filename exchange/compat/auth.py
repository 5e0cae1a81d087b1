"""Authentication of the facades: StopNCII's two key headers, and NCMEC's HTTP Basic.

StopNCII-style: two headers, both carrying API keys of one member.

The StopNCII client sends `Ocp-Apim-Subscription-Key` (one key for the platform) and
`x-functions-key` (a key per endpoint: FetchHashes, SubmitFeedback, SubmitHashes) on
every request. Both are ordinary API keys here (`manage.py credential_issue`):

- the subscription key names the member; it must be usable (not revoked or expired);
- the function key must be a usable key of the *same* member, and it is the one whose
  scopes are checked: `read` for FetchHashes, `outcomes` for SubmitFeedback, `submit`
  for SubmitHashes. A platform that wants a fetch-only deployment gives it a key with
  only `read`; the simplest setup puts one key in both places.

Nothing else changes: a suspended member is refused (403), rate limits count per
function key, and every refusal is a JSON problem document.
"""

from __future__ import annotations

import base64
from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from members.models import ApiCredential, Member
from members.services import credential_authenticate

SUBSCRIPTION_HEADER = "Ocp-Apim-Subscription-Key"
FUNCTION_HEADER = "x-functions-key"


class StopNCIIKeyAuthentication(BaseAuthentication):
    """The member of the two StopNCII headers; `request.auth` is the function key's credential."""

    def authenticate(self, request: Any) -> tuple[Member, ApiCredential]:
        subscription = request.headers.get(SUBSCRIPTION_HEADER, "").strip()
        function = request.headers.get(FUNCTION_HEADER, "").strip()
        if not subscription or not function:
            missing = [name for name, value in ((SUBSCRIPTION_HEADER, subscription), (FUNCTION_HEADER, function))
                       if not value]  # fmt: skip
            raise exceptions.AuthenticationFailed(
                f"Send {' and '.join(missing)}: API keys of your member (one key may serve as both)."
            )
        owner = credential_authenticate(subscription)
        if owner is None:
            raise exceptions.AuthenticationFailed(f"Unknown, expired or revoked API key in {SUBSCRIPTION_HEADER}.")
        key = owner if function == subscription else credential_authenticate(function)
        if key is None:
            raise exceptions.AuthenticationFailed(f"Unknown, expired or revoked API key in {FUNCTION_HEADER}.")
        if key.member_id != owner.member_id:
            raise exceptions.AuthenticationFailed(
                f"The keys in {SUBSCRIPTION_HEADER} and {FUNCTION_HEADER} belong to different members."
            )
        return owner.member, key

    def authenticate_header(self, request: Any) -> str:
        # Any value makes DRF answer 401 (not 403) to a request without credentials.
        return f'ApiKey realm="stopncii", headers="{SUBSCRIPTION_HEADER} {FUNCTION_HEADER}"'


class NCMECBasicAuthentication(BaseAuthentication):
    """The NCMEC client's HTTP Basic credentials: your member's slug and one of its API keys.

    The password is an ordinary API key (`manage.py credential_issue`), whose scopes are
    checked as anywhere else: `read` for status, members, reasons and entries, `outcomes`
    for feedback. The user name must be the key's member, so a key pasted under the wrong
    account fails loudly instead of reading another member's view.
    """

    def authenticate(self, request: Any) -> tuple[Member, ApiCredential]:
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded.strip():
            raise exceptions.AuthenticationFailed(
                "Send HTTP Basic credentials: your member's slug as the user name and an API key as the password."
            )
        try:
            user, colon, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            raise exceptions.AuthenticationFailed("The Basic credentials are not base64 of user:password.") from None
        if not colon or not user or not password:
            raise exceptions.AuthenticationFailed("The Basic credentials need a user name and a password.")
        key = credential_authenticate(password)
        if key is None:
            raise exceptions.AuthenticationFailed("Unknown, expired or revoked API key (the Basic password).")
        if key.member.slug != user:
            raise exceptions.AuthenticationFailed("The user name is not the member this API key belongs to.")
        return key.member, key

    def authenticate_header(self, request: Any) -> str:
        return 'Basic realm="ncmec"'
