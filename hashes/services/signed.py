"""Checks shared by everything a member signs: whose key, a valid signature, a fresh time.

Submissions and withdrawals are both DSSE envelopes signed by the member's own
registered Ed25519 key; these checks run before either is parsed further.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.conf import settings

from core.problems import Problem
from members.models import Member, SigningKey

from .. import envelopes


def _clock_skew() -> dt.timedelta:
    return dt.timedelta(seconds=settings.SUBMISSION_CLOCK_SKEW_SECONDS)


def signing_keys(items: Iterable[Any]) -> dict[str, SigningKey]:
    """Every registered key that any of the envelopes claims, in one query."""
    key_ids: set[str] = set()
    for envelope in items:
        try:
            key_ids.update(envelopes.envelope_key_ids(envelope))
        except Problem:
            continue
    if not key_ids:
        return {}
    return {key.key_id: key for key in SigningKey.objects.filter(key_id__in=key_ids).select_related("member")}


def verify_signed(
    *, member: Member, envelope: Any, keys: dict[str, SigningKey], payload_type: str, now: dt.datetime
) -> tuple[SigningKey, bytes]:
    """Check that one of the member's own keys signed the envelope and may sign now.

    Steps: find the claimed keys among those registered; keep the member's own (another
    member's key is refused: members sign only for themselves); verify the signature;
    refuse a key revoked by now.
    """
    claimed = envelopes.envelope_key_ids(envelope)
    known = [keys[kid] for kid in claimed if kid in keys]
    if not known:
        raise Problem(
            "unknown_key",
            "the envelope is not signed by a registered key; register it with POST /api/v1/keys",
            status=403,
        )
    own = {key.key_id: bytes(key.public_key) for key in known if key.member_id == member.pk}
    if not own:
        raise Problem("key_not_yours", "the envelope is signed by another member's key", status=403)
    verified = envelopes.verify(envelope, own, payload_type)
    key = keys[verified.key_id]
    if key.revoked_at is not None and key.revoked_at <= now:
        raise Problem("key_revoked", f"signing key {key.key_id} was revoked; sign with a current key", status=403)
    return key, verified.payload


def check_signed_time(*, key: SigningKey, created_at: dt.datetime, now: dt.datetime) -> None:
    """created_at must be near the server's clock, and the key valid at that time.

    A key counts as valid from its registration minus the clock skew, so a member whose
    clock runs a little behind can sign right after registering.
    """
    skew = _clock_skew()
    if created_at < now - skew:
        raise Problem(
            "stale_timestamp",
            f"created_at {created_at.isoformat()} is more than {skew.seconds} s in the past; sign a fresh envelope",
        )
    if created_at > now + skew:
        raise Problem(
            "future_timestamp",
            f"created_at {created_at.isoformat()} is more than {skew.seconds} s in the future; check the clock",
        )
    if created_at < key.valid_from - skew or (key.revoked_at is not None and created_at >= key.revoked_at):
        raise Problem("key_not_valid", f"signing key {key.key_id} was not valid at {created_at.isoformat()}", 403)
