"""Writes for people's own cases. Every hash and withdrawal goes through hashes.services,
so the one store path, the ledger and the one who-may-receive rule apply to them as to
any member's.

The deployment's intake member (INTAKE_MEMBER, kind `intake`) is the submitter of record;
each case's public key is registered as one of its signing keys, so members verify a
case's envelopes like any other. Only the case's own key may act for the case.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _
from hashexchange_client import keys

from core import ledger
from core.ledger import Actor
from core.problems import Problem
from hashes import envelopes
from hashes.services import ItemResult, submissions_create, withdrawal_create
from members import services as member_services
from members.models import Member, Program, SigningKey

from .models import Case, CaseHash, Refusal

# Crockford's base32: no I, L, O or U, so a code read aloud or written by hand survives.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 12  # 60 random bits
STATUS_TYPE = "application/vnd.hashexchange.intake-status+json"
# What a case may put in the exchange: what the page computes.
CASE_SIGNAL_TYPES = ("pdq", "md5", "sha256", "video_md5")


def _wrong_case() -> Problem:
    """One refusal for a wrong code and a wrong secret alike, so neither is confirmed."""
    return Problem("case_not_found", _("That code and secret do not open a case. Check both and try again."), 404)


def code_new() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def code_normalise(raw: object) -> str:
    """What a person typed, as stored: upper case, no spaces or dashes, O→0, I/L→1."""
    if not isinstance(raw, str):
        return ""
    text = raw.upper().replace("-", "").replace(" ", "").translate(str.maketrans("OIL", "011"))
    return text if len(text) == CODE_LENGTH and all(c in CODE_ALPHABET for c in text) else ""


def intake_member() -> Member:
    member = Member.objects.filter(slug=settings.INTAKE_MEMBER, kind=Member.Kind.INTAKE).first()
    if member is None or not member.is_active:
        raise Problem(
            "intake_closed", _("This service is not taking new cases right now. Please try again later."), status=503
        )
    return member


def program_for(age: object) -> Program:
    """The program an answer to "were you under 18 in the images?" routes to."""
    slug = {"minor": settings.INTAKE_PROGRAM_MINOR, "adult": settings.INTAKE_PROGRAM_ADULT}.get(str(age))
    if slug is None:
        raise Problem.field("age", "answer whether you were under 18 in the images")
    program = Program.objects.filter(slug=slug, is_active=True).first()
    if program is None:
        raise Problem("intake_closed", _("This part of the service is not open right now."), status=503)
    return program


@dataclass
class CaseOpened:
    case: Case
    results: list[ItemResult] = field(default_factory=list)


def _check_case_envelope(*, envelope: Any, keys: dict[str, bytes], program: Program, withdrawal: bool) -> Any:
    """The envelope is signed by one of this case's keys, for its program, and names no case.

    A case reference in a signed payload would travel byte for byte to every member, so
    two platforms could join their data on it: the intake's payloads carry none.
    """
    claimed = envelopes.envelope_key_ids(envelope)
    if len(claimed) != 1 or claimed[0] not in keys:
        raise Problem("not_case_key", "this envelope is not signed by one of the case's keys", status=403)
    payload_type = envelopes.WITHDRAWAL_TYPE if withdrawal else envelopes.SUBMISSION_TYPE
    verified = envelopes.verify(envelope, {claimed[0]: keys[claimed[0]]}, payload_type)
    payload = (envelopes.parse_withdrawal if withdrawal else envelopes.parse_submission)(verified.payload)
    if payload.case:
        raise Problem("case_in_payload", "intake payloads carry no case reference")
    if payload.program != program.slug:
        raise Problem("wrong_program", f"this case belongs to {program.slug!r}")
    if payload.signal_type not in CASE_SIGNAL_TYPES:
        raise Problem("signal_type_not_allowed", f"the intake sends {', '.join(CASE_SIGNAL_TYPES)}")
    return payload


def _hash_keys(raw: object) -> dict[str, tuple[int, bytes]]:
    """The case's hash keys as the browser listed them: key id -> (index, raw public key).

    Key i is derived from the secret with HKDF (docs/intake.md), so the person can
    re-derive it to withdraw that hash; the server cannot check the derivation (it never
    sees the secret), only that the keys are distinct Ed25519 keys.
    """
    if not isinstance(raw, list) or not raw or len(raw) > settings.INTAKE_MAX_HASHES_PER_CASE:
        raise Problem.field("hash_keys", "one public key per envelope")
    found: dict[str, tuple[int, bytes]] = {}
    for index, text in enumerate(raw):
        if not isinstance(text, str):
            raise Problem.field("hash_keys", "one public key per envelope")
        public = member_services.decode_public_key(text)
        found.setdefault(keys.key_id(public), (index, public))
    if len(found) != len(raw):
        raise Problem.field("hash_keys", "every hash has a key of its own")
    return found


@transaction.atomic
def case_open(
    *,
    age: object,
    public_key: object,
    hash_keys: object,
    items: Sequence[Any],
    now: dt.datetime | None = None,
) -> CaseOpened:
    """Open an anonymous case with its first hashes, or refuse it whole.

    `public_key` is the case key's (status and withdrawal requests only; members never
    see it); `hash_keys` lists one key per hash, each derived from the same secret, so no
    two hashes of a case share anything a member receives.

    Steps:
    1. Route the age answer to a program; create the case with a fresh random code.
    2. Check each envelope belongs to this case (one of its hash keys, its program, no
       case reference), then register the keys that signed one as signing keys of the
       intake member (a `key.registered` event each, so members can verify).
    3. Hand the lot to `submissions_create`: signature, time, nonce, quality floor and
       the store path are the members' own. A refused item stores nothing.
    4. Link every accepted (or already-present) hash to the case with its key. If none
       was accepted the whole case is rolled back, keys included, and the first refusal
       is raised.
    """
    now = now or timezone.now()
    if not isinstance(items, list) or not items:
        raise Problem.field("envelopes", _("choose at least one photo or video"))
    if len(items) > settings.INTAKE_MAX_HASHES_PER_CASE:
        raise Problem(
            "too_many_hashes",
            _("One case can hold %(n)d hashes. Send fewer files, then open another case for the rest.")
            % {"n": settings.INTAKE_MAX_HASHES_PER_CASE},
        )
    if not isinstance(public_key, str):
        raise Problem.field("public_key", "missing")
    case_key = member_services.decode_public_key(public_key)
    offered = _hash_keys(hash_keys)
    if keys.key_id(case_key) in offered:
        raise Problem.field("hash_keys", "the case key signs no hash")
    program = program_for(age)
    member = intake_member()
    actor = Actor.member(member.slug)
    code = code_new()
    while Case.objects.filter(code=code).exists():  # 60 bits: a clash is all but impossible
        code = code_new()
    case = Case.objects.create(code=code, program=program, public_key=case_key, created_at=now)
    results = [ItemResult(index=i) for i in range(len(items))]
    passing: list[tuple[int, Any]] = []
    signers: dict[int, str] = {}
    used: set[str] = set()
    for index, envelope in enumerate(items):
        try:
            _check_case_envelope(
                envelope=envelope, keys={k: v[1] for k, v in offered.items()}, program=program, withdrawal=False
            )
            key_id = envelopes.envelope_key_ids(envelope)[0]
            if key_id in used:
                raise Problem("key_reused", "each hash is signed by a key of its own", status=403)
        except Problem as refusal:
            results[index].error = refusal
            continue
        used.add(key_id)
        signers[index] = key_id
        passing.append((index, envelope))
    registered = {
        key_id: member_services.signing_key_register(
            member=member, public_key=public_key_b64(offered[key_id][1]), label="intake", actor=actor
        )
        for key_id in sorted(used, key=lambda k: offered[k][0])
    }
    stored = submissions_create(member=member, items=[e for _i, e in passing], now=now) if passing else []
    for (index, _envelope), result in zip(passing, stored, strict=True):
        result.index = index
        results[index] = result
    for result in results:
        if result.status in ("accepted", "held", "duplicate"):
            key = registered[signers[result.index]]
            _link(case, result, key=key, key_index=offered[key.key_id][0], now=now)
    if not case.hashes.exists():
        first = next(r.error for r in results if r.error is not None)
        transaction.set_rollback(True)
        raise first
    ledger.record(
        "case.opened",
        actor=actor,
        subject_type="case",
        subject_id=case.pk,
        program=program.slug,
        data={"hashes": case.hashes.count()},
    )
    return CaseOpened(case, results)


def _link(case: Case, result: ItemResult, *, key: SigningKey, key_index: int, now: dt.datetime) -> None:
    """Link a hash to the case with the key that signed it; this case's own submission where it made one."""
    from hashes.models import Submission

    if result.hash_id is None:
        return
    own = Submission.objects.filter(pk=result.submission_id, signing_key=key).values_list("pk", flat=True).first()
    CaseHash.objects.get_or_create(
        case=case,
        hash_id=result.hash_id,
        defaults={"submission_id": own, "signing_key": key, "key_index": key_index, "added_at": now},
    )


def case_authenticate(*, code: object, request: Any, now: dt.datetime | None = None) -> Case:
    """The case whose key signed this status request, or one refusal that names neither part.

    The request is a DSSE envelope over `{"case": code, "created_at", "nonce"}` signed by
    the case key the browser derives from the secret; the server holds only its public half.
    """
    now = now or timezone.now()
    normal = code_normalise(code)
    case = Case.objects.select_related("program").filter(code=normal).first() if normal else None
    if case is None:
        raise _wrong_case()
    public = bytes(case.public_key)
    try:
        verified = envelopes.verify(request, {keys.key_id(public): public}, STATUS_TYPE)
        body = json.loads(verified.payload)
        created = dt.datetime.strptime(body["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except (Problem, ValueError, KeyError, TypeError):
        raise _wrong_case() from None
    if not isinstance(body, dict) or body.get("case") != normal:
        raise _wrong_case()
    skew = dt.timedelta(seconds=settings.SUBMISSION_CLOCK_SKEW_SECONDS)
    if not now - skew <= created <= now + skew:
        raise Problem("stale_timestamp", _("Your device's clock is off. Set it right and try again."))
    return case


@dataclass
class WithdrawOutcome:
    index: int
    status: str = "rejected"
    error: Problem | None = None


@transaction.atomic
def case_withdraw(*, case: Case, items: Sequence[Any], now: dt.datetime | None = None) -> list[WithdrawOutcome]:
    """Withdraw some or all of a case's hashes, each by a withdrawal envelope it signed.

    Each envelope must be signed by the key of the hash it withdraws (the browser
    re-derives it from the secret and the hash's key index). A hash that another
    person's case still holds stays distributed (their wish counts
    too): this case's link ends, and the exchange withdrawal is made by the last case
    that lets the hash go, through `withdrawal_create` like any member's, so tombstones
    and obligations follow.
    """
    now = now or timezone.now()
    member = intake_member()
    from hashes.models import Hash

    outcomes = [WithdrawOutcome(index=i) for i in range(len(items))]
    case_keys = {
        key.key_id: bytes(key.public_key)
        for key in SigningKey.objects.filter(pk__in=CaseHash.objects.filter(case=case).values("signing_key"))
    }
    for index, envelope in enumerate(items):
        try:
            payload = _check_case_envelope(envelope=envelope, keys=case_keys, program=case.program, withdrawal=True)
            row = Hash.objects.filter(signal_type=payload.signal_type, value=payload.value).first()
            link = CaseHash.objects.select_for_update().filter(case=case, hash=row).first() if row is not None else None
            if link is None:
                raise Problem("unknown_hash", "this hash is not in the case", status=404)
            if link.signing_key is None or envelopes.envelope_key_ids(envelope) != [link.signing_key.key_id]:
                raise Problem("not_case_key", "this hash is withdrawn with its own key", status=403)
            if link.status == CaseHash.Status.WITHDRAWN:
                outcomes[index].status = "duplicate"
                continue
            others = (
                CaseHash.objects.filter(hash=row, case__program=case.program, status=CaseHash.Status.ACTIVE)
                .exclude(pk=link.pk)
                .exists()
            )
            with transaction.atomic():
                if not others:
                    try:
                        withdrawal_create(member=member, envelope=envelope, now=now)
                    except Problem as refusal:
                        # Already not distributed (an admin withdrew or retired it): the
                        # person's wish is met; anything else is a real refusal.
                        if refusal.code != "nothing_to_withdraw":
                            raise
                link.status, link.withdrawn_at = CaseHash.Status.WITHDRAWN, now
                link.save(update_fields=["status", "withdrawn_at"])
            outcomes[index].status = "accepted"
        except Problem as refusal:
            outcomes[index].error = refusal
    if not case.hashes.filter(status=CaseHash.Status.ACTIVE).exists() and case.status == Case.Status.ACTIVE:
        case.status, case.withdrawn_at = Case.Status.WITHDRAWN, now
        case.save(update_fields=["status", "withdrawn_at"])
        ledger.record(
            "case.withdrawn",
            actor=Actor.member(member.slug),
            subject_type="case",
            subject_id=case.pk,
            program=case.program.slug,
            data={},
        )
    return outcomes


def public_key_b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def refusals_count(reasons: Sequence[str], *, program: str = "", now: dt.datetime | None = None) -> None:
    """Count refusals by reason for today (figures only; nothing about who was refused).

    Called outside the refused request's transaction, so a refusal that rolled the
    request back is still counted. `program`: the one the request was for, if known.
    """
    day = (now or timezone.now()).date()
    for reason in reasons:
        reason = reason[:64]
        rows = Refusal.objects.filter(day=day, program=program, reason=reason)
        if rows.update(count=F("count") + 1):
            continue
        try:
            with transaction.atomic():
                Refusal.objects.create(day=day, program=program, reason=reason, count=1)
        except IntegrityError:  # counted by another request meanwhile
            rows.update(count=F("count") + 1)


def routed_program(age: object) -> str:
    """The program slug an age answer routes to, or "" (for counting refusals only)."""
    return {"minor": settings.INTAKE_PROGRAM_MINOR, "adult": settings.INTAKE_PROGRAM_ADULT}.get(str(age), "")
