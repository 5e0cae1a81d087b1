"""Writes to members, programs, enrollments, credentials and signing keys.

Each service runs in one transaction and records its event in the ledger, so the
change and its event commit together. Bad input raises a `Problem` naming
the field, which the API answers as 400, the admin shows and the commands print.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from hashexchange_client import keys, signal_types

from core.ledger import Actor, record
from core.problems import Problem

from .models import DEFAULT_SCOPES, WRITE_SCOPES, ApiCredential, Enrollment, Member, Program, Scope, SigningKey
from .selectors import credential_by_prefix

API_KEY_PREFIX = "hxk"


# Programs -------------------------------------------------------------------------------


def _clean_program_rules(*, signal_types_: list[str], thresholds: dict[str, int], submitter_kinds: list[str]) -> None:
    errors: dict[str, list[str]] = {}
    unknown = [name for name in signal_types_ if name not in signal_types.SIGNAL_TYPES]
    if unknown or not signal_types_:
        errors["signal_types"] = [
            f"choose one or more of {', '.join(signal_types.SIGNAL_TYPE_NAMES)}"
            + (f"; unknown: {', '.join(map(str, unknown))}" if unknown else "")
        ]
    bad = [
        f"{name}={value!r}"
        for name, value in thresholds.items()
        if name not in signal_types.SIGNAL_TYPES
        or isinstance(value, bool)
        or not isinstance(value, int)
        or not 0 <= value <= signal_types.SIGNAL_TYPES[name].bits
    ]
    if bad:
        errors["thresholds"] = [f"thresholds must map known signal types to 0..bits; invalid: {', '.join(bad)}"]
    bad_kinds = [kind for kind in submitter_kinds if kind not in Member.Kind.values or kind == Member.Kind.AUDITOR]
    if bad_kinds:
        errors["submitter_kinds"] = [f"submitters must be platform, intake or peer; invalid: {', '.join(bad_kinds)}"]
    if errors:
        raise Problem.fields(errors)


@transaction.atomic
def program_create(
    *,
    slug: str,
    name: str = "",
    description: str = "",
    signal_types_: list[str] | None = None,
    thresholds: dict[str, int] | None = None,
    submitter_kinds: list[str] | None = None,
    removal_deadline_hours: int = 48,
    protection: dict[str, object] | None = None,
    actor: Actor,
) -> Program:
    """Create a program; defaults accept every signal type with the standard thresholds.

    `protection` sets flood and false-positive settings (docs/floods.md) other than their defaults.
    """
    program = Program(
        slug=slug, name=name or slug, description=description, removal_deadline_hours=removal_deadline_hours
    )
    for field, value in (protection or {}).items():
        if field not in PROTECTION_FIELDS:
            raise Problem.field(field, f"not a protection setting; they are {', '.join(PROTECTION_FIELDS)}")
        setattr(program, field, value)
    if signal_types_ is not None:
        program.signal_types = list(signal_types_)
    if thresholds is not None:
        program.thresholds = {**signal_types.DEFAULT_THRESHOLDS, **thresholds}
    if submitter_kinds is not None:
        program.submitter_kinds = list(submitter_kinds)
    _clean_program_rules(
        signal_types_=program.signal_types, thresholds=program.thresholds, submitter_kinds=program.submitter_kinds
    )
    if Program.objects.filter(slug=slug).exists():
        raise Problem.field("slug", f"a program called {slug!r} already exists")
    program.full_clean()
    program.save()
    record(
        "program.created",
        actor=actor,
        subject_type="program",
        subject_id=slug,
        program=slug,
        data=_program_data(program),
    )
    return program


# The flood and false-positive settings of a program (docs/floods.md).
PROTECTION_FIELDS = (
    "refuse_benign",
    "anomaly_multiple",
    "anomaly_window_days",
    "anomaly_min_matches",
    "hold_dispute_percent",
    "hold_dispute_min",
    "hold_window_days",
    "hold_burst_size",
    "hold_burst_minutes",
)


def _program_data(program: Program) -> dict[str, object]:
    return {
        "slug": program.slug,
        "signal_types": list(program.signal_types),
        "thresholds": dict(program.thresholds),
        "submitter_kinds": list(program.submitter_kinds),
        "min_pdq_quality": program.min_pdq_quality,
        "removal_deadline_hours": program.removal_deadline_hours,
        "is_active": program.is_active,
        "share_feedback": program.share_feedback,
        "dispute_threshold": program.dispute_threshold,
        "lapse_after_days": program.lapse_after_days,
        "refuse_benign": program.refuse_benign,
        "anomaly_multiple": program.anomaly_multiple,
        "anomaly_window_days": program.anomaly_window_days,
        "anomaly_min_matches": program.anomaly_min_matches,
        **{field: getattr(program, field) for field in PROTECTION_FIELDS if field.startswith("hold_")},
        "unsigned_submitters": sorted(program.unsigned_submitters.values_list("slug", flat=True)) if program.pk else [],
    }


@transaction.atomic
def program_allow_unsigned(*, program: Program, member: Member, allow: bool, actor: Actor) -> Program:
    """Let a member's compatibility client submit unsigned hashes to a program (or stop it)."""
    if allow and member.kind not in program.submitter_kinds:
        raise Problem.field("member", f"{member.kind} members may not submit to {program.slug!r} at all")
    if allow:
        program.unsigned_submitters.add(member)
    else:
        program.unsigned_submitters.remove(member)
    _record_program_updated(program, actor)
    return program


def _record_program_updated(program: Program, actor: Actor) -> None:
    record(
        "program.updated",
        actor=actor,
        subject_type="program",
        subject_id=program.slug,
        program=program.slug,
        data=_program_data(program),
    )


@transaction.atomic
def program_update(*, program: Program, actor: Actor) -> Program:
    """Save an edited program (from the admin) and record its new rules."""
    _clean_program_rules(
        signal_types_=program.signal_types, thresholds=program.thresholds, submitter_kinds=program.submitter_kinds
    )
    program.full_clean()
    program.save()
    _record_program_updated(program, actor)
    return program


# Members --------------------------------------------------------------------------------


@transaction.atomic
def member_create(*, slug: str, name: str = "", kind: str, status: str = Member.Status.PENDING, actor: Actor) -> Member:
    """Create a member (pending unless told otherwise)."""
    if kind not in Member.Kind.values:
        raise Problem.field("kind", f"kind must be one of {', '.join(Member.Kind.values)}")
    if Member.objects.filter(slug=slug).exists():
        raise Problem.field("slug", f"a member called {slug!r} already exists")
    member = Member(slug=slug, name=name or slug, kind=kind, status=status)
    member.full_clean()
    member.save()
    record(
        "member.created",
        actor=actor,
        subject_type="member",
        subject_id=slug,
        data={"slug": slug, "kind": kind, "status": status},
    )
    return member


STATUS_EVENTS = {
    Member.Status.ACTIVE: "member.activated",
    Member.Status.SUSPENDED: "member.suspended",
    Member.Status.PENDING: "member.pending",
}


@transaction.atomic
def member_set_status(*, member: Member, status: str, reason: str = "", actor: Actor) -> Member:
    """Activate or suspend a member. Suspension stops all its credentials at once."""
    if status not in Member.Status.values:
        raise Problem.field("status", f"status must be one of {', '.join(Member.Status.values)}")
    member = Member.objects.select_for_update().get(pk=member.pk)
    if member.status == status:
        return member
    previous = member.status
    member.status = status
    member.status_reason = reason
    member.save(update_fields=["status", "status_reason", "updated_at"])
    record(
        STATUS_EVENTS[Member.Status(status)],
        actor=actor,
        subject_type="member",
        subject_id=member.slug,
        data={"slug": member.slug, "from": previous, "to": status, "reason": reason},
    )
    return member


# Enrollments ----------------------------------------------------------------------------

MEMBER_SETTABLE_STATES = (Enrollment.State.OPTED_IN, Enrollment.State.OPTED_OUT, Enrollment.State.PAUSED)


@transaction.atomic
def enrollment_set(
    *, member: Member, program: Program, state: str, reason: str = "", actor: Actor
) -> tuple[Enrollment, bool]:
    """Opt a member in or out of a program (or pause). Returns (enrollment, changed).

    Setting the state it already has changes nothing and records nothing, so clients
    can repeat the call safely.
    """
    if state not in Enrollment.State.values:
        raise Problem.field("state", f"state must be one of {', '.join(Enrollment.State.values)}")
    existing = Enrollment.objects.select_for_update().filter(member=member, program=program).first()
    if existing is not None and existing.state == state:
        return existing, False
    # Any state that receives a program's hashes (opted in, paused, lapsed) is a way in;
    # a closed program lets nobody new in, whatever the state asked for.
    entering = state in Enrollment.RECEIVING and (existing is None or existing.state not in Enrollment.RECEIVING)
    if entering and not program.is_active:
        raise Problem.field("program", f"program {program.slug!r} is closed to new enrollments")
    if state in Enrollment.RECEIVING and member.kind == Member.Kind.AUDITOR:
        raise Problem.field("program", "auditors read reports; they do not enroll in programs")
    created = existing is None
    enrollment = existing or Enrollment.objects.create(member=member, program=program, state=state, reason=reason)
    previous = None if created else enrollment.state
    now = timezone.now()
    enrollment.state = state
    enrollment.reason = reason
    enrollment.changed_at = now
    enrollment.save(update_fields=["state", "reason", "changed_at"])
    record(
        "enrollment.changed",
        actor=actor,
        subject_type="enrollment",
        subject_id=f"{member.slug}:{program.slug}",
        program=program.slug,
        data={"member": member.slug, "from": previous, "to": state, "reason": reason},
    )
    return enrollment, True


def enrollments_mark_sent(*, member: Member, through: Mapping[str, int]) -> None:
    """Record that the member was sent each program's hashes up to a sequence number.

    Called by the feed and by webhook delivery with the programs of the `hash.added`
    entries they sent; never lowers a mark. It is what "was sent this hash" means for
    tombstones and withdrawal obligations (members/selectors.py).
    """
    for slug, seq in through.items():
        Enrollment.objects.filter(member=member, program__slug=slug, sent_through__lt=seq).update(sent_through=seq)


def enrollments_mark_sent_many(*, through_by_member: Mapping[int, Mapping[str, int]]) -> None:
    """`enrollments_mark_sent` for several members at once (webhook delivery to a group of
    endpoints): one UPDATE per program and seq. The rows are locked first, all of them in
    id order in one statement, so that two groups with a member in common cannot each
    wait for the other (an UPDATE of many rows locks them in the order it finds them)."""
    wanted: dict[tuple[str, int], set[int]] = {}
    for member_id, through in through_by_member.items():
        for slug, seq in through.items():
            wanted.setdefault((slug, seq), set()).add(member_id)
    if not wanted:
        return
    with transaction.atomic(savepoint=False):
        rows = Enrollment.objects.filter(
            member_id__in=list(through_by_member), program__slug__in={slug for slug, _ in wanted}
        )
        list(rows.select_for_update(of=("self",), no_key=True).order_by("pk").values_list("pk", flat=True))
        for (slug, seq), member_ids in sorted(wanted.items()):
            Enrollment.objects.filter(
                member_id__in=sorted(member_ids), program__slug=slug, sent_through__lt=seq
            ).update(sent_through=seq)


# API credentials ------------------------------------------------------------------------


def credential_digest(token: str) -> str:
    """Keyed digest of a full API key; only this is stored."""
    return hmac.new(settings.API_KEY_PEPPER.encode(), token.encode(), hashlib.sha256).hexdigest()


def parse_token(token: str) -> str | None:
    """The prefix of a well-formed key `hxk_<prefix>_<secret>`, else None."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1] or len(parts[2]) < 20:
        return None
    return parts[1]


@transaction.atomic
def credential_issue(
    *,
    member: Member,
    name: str = "",
    scopes: Iterable[str] | None = None,
    expires_at: dt.datetime | None = None,
    actor: Actor,
) -> tuple[ApiCredential, str]:
    """Issue an API key. Returns the credential and the key, which is never shown again."""
    chosen = list(dict.fromkeys(scopes)) if scopes is not None else list(DEFAULT_SCOPES[Member.Kind(member.kind)])
    unknown = [scope for scope in chosen if scope not in Scope.values]
    if unknown:
        raise Problem.field("scopes", f"unknown scopes {', '.join(unknown)}; known: {', '.join(Scope.values)}")
    if member.kind == Member.Kind.AUDITOR and WRITE_SCOPES.intersection(chosen):
        raise Problem.field("scopes", "auditor credentials are read-only: only read and reports are allowed")
    if expires_at is not None and expires_at <= timezone.now():
        raise Problem.field("expires_at", "expiry must be in the future")
    prefix = secrets.token_hex(6)
    token = f"{API_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    credential = ApiCredential.objects.create(
        member=member, name=name, prefix=prefix, digest=credential_digest(token), scopes=chosen, expires_at=expires_at
    )
    record(
        "credential.issued",
        actor=actor,
        subject_type="credential",
        subject_id=prefix,
        data={
            "member": member.slug,
            "prefix": prefix,
            "scopes": chosen,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return credential, token


@transaction.atomic
def credential_revoke(*, credential: ApiCredential, reason: str = "", actor: Actor) -> ApiCredential:
    """Revoke an API key at once. Revoking twice changes nothing."""
    credential = ApiCredential.objects.select_for_update().select_related("member").get(pk=credential.pk)
    if credential.revoked_at is not None:
        return credential
    credential.revoked_at = timezone.now()
    credential.save(update_fields=["revoked_at"])
    record(
        "credential.revoked",
        actor=actor,
        subject_type="credential",
        subject_id=credential.prefix,
        data={"member": credential.member.slug, "prefix": credential.prefix, "reason": reason},
    )
    return credential


def credential_authenticate(token: str) -> ApiCredential | None:
    """The usable credential for a presented key, or None (unknown, revoked, expired)."""
    prefix = parse_token(token)
    if prefix is None:
        return None
    credential = credential_by_prefix(prefix)
    if credential is None or not hmac.compare_digest(credential.digest, credential_digest(token)):
        return None
    now = timezone.now()
    if not credential.is_usable(now):
        return None
    # Written at most once a minute, so authentication is not a write on every request.
    if credential.last_used_at is None or now - credential.last_used_at > dt.timedelta(minutes=1):
        ApiCredential.objects.filter(pk=credential.pk).update(last_used_at=now)
        credential.last_used_at = now
    return credential


# Signing keys ---------------------------------------------------------------------------


def decode_public_key(encoded: str) -> bytes:
    """Decode standard base64 of a raw Ed25519 public key, with a message that says what to fix."""
    if not isinstance(encoded, str) or not encoded.strip():
        raise Problem.field("public_key", "give the raw 32-byte Ed25519 public key, base64-encoded")
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Problem.field("public_key", "not valid base64 (standard alphabet, with padding)") from None
    if len(raw) != 32:
        raise Problem.field("public_key", f"an Ed25519 public key is 32 bytes; this decodes to {len(raw)} bytes")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise Problem.field("public_key", "not a valid Ed25519 public key") from None
    return raw


@transaction.atomic
def signing_key_register(
    *, member: Member, public_key: str, algorithm: str = "ed25519", label: str = "", actor: Actor
) -> SigningKey:
    """Register a member's Ed25519 public key, valid from now."""
    if algorithm != "ed25519":
        raise Problem.field("algorithm", "only ed25519 is supported")
    if member.kind == Member.Kind.AUDITOR:
        raise Problem.field("public_key", "auditors do not sign submissions")
    raw = decode_public_key(public_key)
    key_id = keys.key_id(raw)  # the client computes it the same way: one definition
    if SigningKey.objects.filter(key_id=key_id).exists():
        raise Problem.field("public_key", f"this key is already registered (key_id {key_id})")
    key = SigningKey.objects.create(member=member, key_id=key_id, algorithm=algorithm, public_key=raw, label=label)
    record(
        "key.registered",
        actor=actor,
        subject_type="signing_key",
        subject_id=key_id,
        data={"member": member.slug, **key.as_event_data(), "valid_from": key.valid_from.isoformat()},
    )
    return key


@transaction.atomic
def signing_key_revoke(*, key: SigningKey, reason: str = "", actor: Actor) -> SigningKey:
    """Revoke a signing key from now on; signatures made before stay valid."""
    key = SigningKey.objects.select_for_update().select_related("member").get(pk=key.pk)
    if key.revoked_at is not None:
        return key
    key.revoked_at = timezone.now()
    key.revocation_reason = reason
    key.save(update_fields=["revoked_at", "revocation_reason"])
    record(
        "key.revoked",
        actor=actor,
        subject_type="signing_key",
        subject_id=key.key_id,
        data={
            "member": key.member.slug,
            "key_id": key.key_id,
            "revoked_at": key.revoked_at.isoformat(),
            "reason": reason,
        },
    )
    return key
