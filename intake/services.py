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
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from core import ledger
from core.ledger import Actor
from core.problems import Problem
from hashes import envelopes
from hashes.services import ItemResult, check_signed_time, submissions_create, withdrawal_create
from members import services as member_services
from members.models import Member, Program, SigningKey

from .models import Case, CaseHash

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


def _check_case_envelope(*, envelope: Any, key: SigningKey, program: Program, withdrawal: bool) -> Any:
    """The envelope is signed by this case's key, for its program, and names no case.

    A case reference in a signed payload would travel byte for byte to every member, so
    two platforms could join their data on it: the intake's payloads carry none.
    """
    claimed = envelopes.envelope_key_ids(envelope)
    if claimed != [key.key_id]:
        raise Problem("not_case_key", "this envelope is not signed by the case's key", status=403)
    payload_type = envelopes.WITHDRAWAL_TYPE if withdrawal else envelopes.SUBMISSION_TYPE
    verified = envelopes.verify(envelope, {key.key_id: bytes(key.public_key)}, payload_type)
    payload = (envelopes.parse_withdrawal if withdrawal else envelopes.parse_submission)(verified.payload)
    if payload.case:
        raise Problem("case_in_payload", "intake payloads carry no case reference")
    if payload.program != program.slug:
        raise Problem("wrong_program", f"this case belongs to {program.slug!r}")
    if payload.signal_type not in CASE_SIGNAL_TYPES:
        raise Problem("signal_type_not_allowed", f"the intake sends {', '.join(CASE_SIGNAL_TYPES)}")
    return payload


@transaction.atomic
def case_open(*, age: object, public_key: object, items: Sequence[Any], now: dt.datetime | None = None) -> CaseOpened:
    """Open an anonymous case with its first hashes, or refuse it whole.

    Steps:
    1. Route the age answer to a program; register the browser's public key as a signing
       key of the intake member (a `key.registered` event, so members can verify).
    2. Create the case with a fresh random code.
    3. Check each envelope belongs to this case (its key, its program, no case reference),
       then hand the lot to `submissions_create`: signature, time, nonce, quality floor
       and the store path are the members' own. A refused item stores nothing.
    4. Link every accepted (or already-present) hash to the case. If none was accepted
       the whole case is rolled back, key included, and the first refusal is raised.
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
    program = program_for(age)
    member = intake_member()
    actor = Actor.member(member.slug)
    key = member_services.signing_key_register(member=member, public_key=public_key, label="intake case", actor=actor)
    code = code_new()
    while Case.objects.filter(code=code).exists():  # 60 bits: a clash is all but impossible
        code = code_new()
    case = Case.objects.create(code=code, program=program, signing_key=key, created_at=now)
    results = [ItemResult(index=i) for i in range(len(items))]
    passing: list[tuple[int, Any]] = []
    for index, envelope in enumerate(items):
        try:
            _check_case_envelope(envelope=envelope, key=key, program=program, withdrawal=False)
        except Problem as refusal:
            results[index].error = refusal
            continue
        passing.append((index, envelope))
    stored = submissions_create(member=member, items=[e for _i, e in passing], now=now) if passing else []
    for (index, _envelope), result in zip(passing, stored, strict=True):
        result.index = index
        results[index] = result
    _link(case, [r for r in results if r.status in ("accepted", "held", "duplicate")], now=now)
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


def _link(case: Case, results: list[ItemResult], *, now: dt.datetime) -> None:
    """Link hashes to the case; this case's own submission where it made one."""
    from hashes.models import Submission

    own = {
        s.hash_id: s.pk
        for s in Submission.objects.filter(
            pk__in=[r.submission_id for r in results if r.submission_id], signing_key=case.signing_key
        )
    }
    seen: set[int] = set()
    for result in results:
        if result.hash_id is None or result.hash_id in seen:
            continue
        seen.add(result.hash_id)
        CaseHash.objects.get_or_create(
            case=case, hash_id=result.hash_id, defaults={"submission_id": own.get(result.hash_id), "added_at": now}
        )


def case_authenticate(*, code: object, request: Any, now: dt.datetime | None = None) -> Case:
    """The case whose key signed this status request, or one refusal that names neither part.

    The request is a DSSE envelope over `{"case": code, "created_at", "nonce"}` signed by
    the key the browser derives from the secret; the server holds only the public key.
    """
    now = now or timezone.now()
    normal = code_normalise(code)
    case = Case.objects.select_related("signing_key", "program").filter(code=normal).first() if normal else None
    if case is None:
        raise _wrong_case()
    key = case.signing_key
    try:
        verified = envelopes.verify(request, {key.key_id: bytes(key.public_key)}, STATUS_TYPE)
        body = json.loads(verified.payload)
        created = dt.datetime.strptime(body["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except (Problem, ValueError, KeyError, TypeError):
        raise _wrong_case() from None
    if not isinstance(body, dict) or body.get("case") != normal:
        raise _wrong_case()
    check_signed_time(key=key, created_at=created, now=now)
    return case


@dataclass
class WithdrawOutcome:
    index: int
    status: str = "rejected"
    error: Problem | None = None


@transaction.atomic
def case_withdraw(*, case: Case, items: Sequence[Any], now: dt.datetime | None = None) -> list[WithdrawOutcome]:
    """Withdraw some or all of a case's hashes, each by a withdrawal envelope it signed.

    A hash that another person's case still holds stays distributed (their wish counts
    too): this case's link ends, and the exchange withdrawal is made by the last case
    that lets the hash go, through `withdrawal_create` like any member's, so tombstones
    and obligations follow.
    """
    now = now or timezone.now()
    member = intake_member()
    from hashes.models import Hash

    outcomes = [WithdrawOutcome(index=i) for i in range(len(items))]
    for index, envelope in enumerate(items):
        try:
            payload = _check_case_envelope(
                envelope=envelope, key=case.signing_key, program=case.program, withdrawal=True
            )
            row = Hash.objects.filter(signal_type=payload.signal_type, value=payload.value).first()
            link = CaseHash.objects.select_for_update().filter(case=case, hash=row).first() if row is not None else None
            if link is None:
                raise Problem("unknown_hash", "this hash is not in the case", status=404)
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
