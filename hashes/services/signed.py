"""Checks shared by everything a member signs: whose key, a valid signature, a fresh time.

Submissions and withdrawals are both DSSE envelopes signed by the member's own
registered Ed25519 key; these checks run before either is parsed further.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db.models import Q

from core.problems import Problem
from members.models import Member, SigningKey

from .. import envelopes


def _clock_skew() -> dt.timedelta:
    return dt.timedelta(seconds=settings.SUBMISSION_CLOCK_SKEW_SECONDS)


# An envelope whose keyid names no registered key (or that has none: DSSE makes it an
# optional hint) is tried against the submitter's own keys, up to this many.
MAX_KEYS_TRIED = 16


def signing_keys(items: Iterable[Any], *, member: Member) -> dict[str, SigningKey]:
    """Every registered key that any of the envelopes claims, and the member's own, in one query."""
    key_ids: set[str] = set()
    for envelope in items:
        try:
            key_ids.update(envelopes.envelope_key_ids(envelope))
        except Problem:
            continue
    own = SigningKey.objects.filter(member=member).order_by("-valid_from", "-pk").values("pk")[:MAX_KEYS_TRIED]
    rows = SigningKey.objects.filter(Q(key_id__in=key_ids) | Q(pk__in=own)).select_related("member")
    return {key.key_id: key for key in rows}


def verify_signed(
    *, member: Member, envelope: Any, keys: dict[str, SigningKey], payload_type: str, now: dt.datetime
) -> tuple[SigningKey, bytes]:
    """Check that one of the member's own keys signed the envelope and may sign now.

    Steps: find the claimed keys among those registered; keep the member's own (another
    member's key is refused: members sign only for themselves); if no claimed key id is
    registered (or the envelope names none), try the member's own keys; verify the
    signature; refuse a key revoked by now.
    """
    claimed = envelopes.envelope_key_ids(envelope)
    known = [keys[kid] for kid in claimed if kid in keys]
    fallback: dict[str, bytes] | None = None
    if known:
        own = {key.key_id: bytes(key.public_key) for key in known if key.member_id == member.pk}
        if not own:
            raise Problem("key_not_yours", "the envelope is signed by another member's key", status=403)
    else:
        own = {}
        fallback = {kid: bytes(key.public_key) for kid, key in keys.items() if key.member_id == member.pk}
        if not fallback:
            raise Problem(
                "unknown_key",
                "the envelope is not signed by a registered key; register it with POST /api/v1/keys",
                status=403,
            )
    try:
        verified = envelopes.verify(envelope, own, payload_type, fallback_keys=fallback)
    except Problem as exc:
        if fallback is not None and exc.code == "bad_signature":
            raise Problem(
                "unknown_key",
                "the envelope is not signed by any of your registered keys; register it with POST /api/v1/keys",
                status=403,
            ) from None
        raise
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
