"""Costs and budgets that keep anonymous intake from flooding every platform with junk.

- Opening a case costs a proof of work: the page finds a number that makes the SHA-256 of
  a server-issued challenge start with INTAKE_POW_BITS zero bits (a fraction of a second
  on a phone, real money for a flood). A challenge is signed by the server, expires after
  ten minutes and is good once.
- Per network address, a budget of cases per window and of wrong code-or-secret tries.
  The address is never stored: Redis keeps a keyed hash of it (HMAC under the server's
  secret) that expires with the window.

Like the API's rate limits these fail open when Redis is down: a person in need is not
turned away because a cache is unreachable; the proof of work still applies.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time

import redis
from django.conf import settings
from django.utils.translation import gettext as _

from core.problems import Problem
from core.redis import redis_client

log = logging.getLogger(__name__)

CHALLENGE_SECONDS = 600


def _key(purpose: str) -> bytes:
    return hashlib.sha256(f"hashexchange intake {purpose}\0{settings.SECRET_KEY}".encode()).digest()


def _mac(purpose: str, message: str) -> str:
    return hmac.new(_key(purpose), message.encode(), hashlib.sha256).hexdigest()


def challenge_issue(*, now: float | None = None) -> dict[str, object]:
    """A fresh challenge for the page to work on: `time.random.mac`, and how many bits."""
    body = f"{int(now if now is not None else time.time())}.{secrets.token_hex(16)}"
    return {"challenge": f"{body}.{_mac('pow', body)[:32]}", "bits": settings.INTAKE_POW_BITS}


def leading_zero_bits(digest: bytes) -> int:
    bits = 0
    for byte in digest:
        if byte == 0:
            bits += 8
            continue
        return bits + 8 - byte.bit_length()
    return bits


def challenge_check(*, challenge: object, nonce: object, now: float | None = None) -> None:
    """Refuse a missing, forged, stale, reused or unsolved challenge."""
    refused = Problem(
        "work_missing", _("The page's safety check did not finish. Reload the page and try again."), status=400
    )
    if not isinstance(challenge, str) or not isinstance(nonce, str) or len(challenge) > 200 or len(nonce) > 32:
        raise refused
    parts = challenge.split(".")
    if len(parts) != 3 or not parts[0].isdigit():
        raise refused
    body = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_mac("pow", body)[:32], parts[2]):
        raise refused
    age = (now if now is not None else time.time()) - int(parts[0])
    if age > CHALLENGE_SECONDS or age < -60:
        raise Problem("work_expired", _("The page waited too long. Reload the page and try again."), status=400)
    digest = hashlib.sha256(f"{challenge}:{nonce}".encode()).digest()
    if leading_zero_bits(digest) < settings.INTAKE_POW_BITS:
        raise refused
    try:
        fresh = redis_client().set(
            f"hx:intake:pow:{_mac('pow-used', challenge)[:32]}", 1, nx=True, ex=CHALLENGE_SECONDS
        )
    except redis.RedisError:
        log.warning("intake: Redis unreachable; proof-of-work reuse not checked")
        return
    if not fresh:
        raise refused


def _address_key(kind: str, address: str) -> str:
    # A keyed hash, so that what Redis holds cannot be turned back into an address.
    return f"hx:intake:{kind}:{_mac('address', address)[:32]}"


def _spend(kind: str, address: str, limit: int, *, count: bool = True) -> int:
    """Count one use against an address's budget; the count so far (0 when Redis is down)."""
    key = _address_key(kind, address)
    try:
        client = redis_client()
        if not count:
            return int(client.get(key) or 0)
        used = int(client.incr(key))
        if used == 1:
            client.expire(key, settings.INTAKE_ADDRESS_WINDOW_SECONDS)
        return used
    except redis.RedisError:
        log.warning("intake: Redis unreachable; address budget not applied")
        return 0


def _wait(code: str, message: str) -> Problem:
    """A 429 that tells the person how long this address's window lasts (`message` has %(minutes)d)."""
    minutes = max(1, settings.INTAKE_ADDRESS_WINDOW_SECONDS // 60)
    return Problem(code, message % {"minutes": minutes}, status=429)


def case_budget_spend(address: str) -> None:
    """One more case from this address, or a refusal in plain words."""
    if _spend("cases", address, settings.INTAKE_CASES_PER_ADDRESS) > settings.INTAKE_CASES_PER_ADDRESS:
        raise _wait(
            "too_many_cases",
            _(
                "Many cases were opened from your network just now. "
                "Please wait about %(minutes)d minutes and try again."
            ),
        )


def tries_check(address: str) -> None:
    """Refuse when this address has guessed wrong too often."""
    if _spend("tries", address, 0, count=False) >= settings.INTAKE_STATUS_TRIES_PER_ADDRESS:
        raise _wait(
            "too_many_tries",
            _("Too many tries from your network. Please wait about %(minutes)d minutes and try again."),
        )


def tries_spend(address: str) -> None:
    _spend("tries", address, settings.INTAKE_STATUS_TRIES_PER_ADDRESS)
