"""Store one page of a peer's feed: what it brought and our cursor, in one transaction.

Each entry is checked on its own (docs/federation.md, "What we refuse"): the program
must be agreed with the peer, the path must end at the peer and not contain us, within
the program's hop limit; the origin's key binding must be signed by the origin server;
the envelope must verify with the bound key and say what the entry says. A refused
entry is recorded (a Refusal row and a `peer.refused` event naming the peer and the
reason) and the rest of the page is still imported.

Idempotent on origin identity: an envelope whose payload digest we already hold is
skipped, whichever peer brought it first, so a page read twice (a worker killed after
the peer answered, a resync, a hash that reached us by two paths) stores nothing twice.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone
from hashexchange_client import signal_types

from core import ledger
from core.ledger import Actor, Event
from core.problems import Problem
from exchange import provenance
from hashes import envelopes
from hashes.models import Hash, Submission
from hashes.services import ItemResult, submissions_withdraw_relayed, withdrawal_store_relayed
from hashes.services.store import Pending, submission_row, submissions_store
from members.models import Program, SigningKey

from .models import KeptRevocation, Peer, Refusal

ORIGIN_FIELDS = ("server", "server_public_key", "member", "program", "path", "key_binding")


class CursorMoved(Exception):
    """Another worker stored this page meanwhile; ours is rolled back."""


@dataclass
class PageResult:
    entries: int = 0
    imported: int = 0
    withdrawn: int = 0
    revoked: int = 0
    duplicates: int = 0
    skipped: int = 0
    refusals: list[str] = field(default_factory=list)
    cursor: int = 0


@dataclass
class _Checked:
    program: Program
    origin: provenance.CheckedOrigin
    stored_origin: dict[str, Any]
    envelope: dict[str, Any]
    payload: bytes
    parsed: Any


class Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def page_store(*, peer: Peer, page: dict[str, Any], here: str) -> PageResult:
    """Store a page and move the cursor to its `next`, or nothing if the cursor moved meanwhile."""
    result = PageResult(entries=len(page["entries"]), cursor=peer.cursor)
    try:
        with transaction.atomic():
            ledger.lock()
            _store(peer=peer, entries=page["entries"], here=here, result=result)
            next_seq = max(int(page["next"]), peer.cursor)
            moved = Peer.objects.filter(pk=peer.pk, cursor=peer.cursor).update(
                cursor=next_seq, behind=bool(page.get("has_more"))
            )
            if not moved:
                raise CursorMoved
            if next_seq != peer.cursor and (result.imported or result.withdrawn or result.revoked or result.refusals):
                ledger.record(
                    "peer.pulled",
                    actor=Actor.system("federation"),
                    subject_type="peer",
                    subject_id=peer.slug,
                    data={
                        "peer": peer.slug,
                        "from": peer.cursor,
                        "to": next_seq,
                        "imported": result.imported,
                        "withdrawn": result.withdrawn,
                        "refused": len(result.refusals),
                    },
                )
    except CursorMoved:
        fresh = Peer.objects.get(pk=peer.pk)
        return PageResult(cursor=fresh.cursor)
    result.cursor = next_seq
    return result


def _store(*, peer: Peer, entries: list[Any], here: str, result: PageResult) -> None:
    programs = {p.slug: p for p in Program.objects.filter(slug__in=[m["ours"] for m in peer.programs])}
    now = timezone.now()
    bindings: dict[Any, provenance.CheckedOrigin] = {}
    revocations: dict[str, Any] = {}  # key id -> when it was revoked here (None: not revoked)
    keys: dict[str, SigningKey] = {}
    pending: list[tuple[dict[str, Any], _Checked]] = []
    seen: set[str] = set()

    def flush() -> None:
        _store_added(peer=peer, items=pending, result=result, now=now, keys=keys)
        pending.clear()

    for entry in entries:
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if kind == "hash.quarantined" or (kind == "hash.withdrawn" and not entry.get("envelopes")):
            flush()
            _store_unsigned_tombstone(peer=peer, entry=entry, programs=programs, result=result)
            continue
        if kind == "key.revoked":
            flush()
            _store_revocation(peer=peer, entry=entry, here=here, result=result, keys=keys)
            revocations.clear()
            continue
        if kind not in ("hash.added", "hash.withdrawn"):
            result.skipped += 1  # key registrations (bindings travel with entries) and restorations
            continue
        try:
            checked = _check(
                peer=peer,
                entry=entry,
                here=here,
                programs=programs,
                kind=kind,
                bindings=bindings,
                revocations=revocations,
            )
        except Refused as exc:
            _refuse(peer=peer, entry=entry, reason=exc.reason, detail=exc.detail, result=result)
            continue
        if kind == "hash.added":
            digest = envelopes.payload_digest(checked.payload)
            if digest in seen:
                result.duplicates += 1
                continue
            seen.add(digest)
            pending.append((entry, checked))
        else:
            flush()
            _store_withdrawal(peer=peer, entry=entry, checked=checked, result=result, now=now)
    flush()


def _check(
    *,
    peer: Peer,
    entry: dict[str, Any],
    here: str,
    programs: dict[str, Program],
    kind: str,
    bindings: dict[Any, provenance.CheckedOrigin],
    revocations: dict[str, Any],
) -> _Checked:
    mapped = peer.mapped(str(entry.get("program")))
    if mapped is None or mapped["ours"] not in programs:
        raise Refused(
            Refusal.Reason.PROGRAM_NOT_AGREED, f"program {entry.get('program')!r} is not agreed with the peer"
        )
    origin = entry.get("origin")
    raw_envelopes = entry.get("envelopes") or []
    if not origin or not raw_envelopes:
        raise Refused(Refusal.Reason.UNSIGNED, "the entry has no signed envelope and origin")
    try:
        checked = _check_origin(origin, bindings)
    except Problem as exc:
        raise Refused(Refusal.Reason.BINDING_NOT_ATTESTED, exc.detail) from None
    if here in checked.path:
        raise Refused(Refusal.Reason.LOOP, "its path already contains this server")
    if checked.path[-1] != peer.server_key_id:
        raise Refused(Refusal.Reason.PATH_MISMATCH, "its path does not end at the peer that sent it")
    hop_limit = int(mapped.get("hop_limit") or 0)
    if hop_limit and len(checked.path) >= hop_limit:
        raise Refused(Refusal.Reason.HOP_LIMIT, f"it has crossed {len(checked.path)} servers; the limit is {hop_limit}")
    envelope = raw_envelopes[0]
    payload_type = envelopes.SUBMISSION_TYPE if kind == "hash.added" else envelopes.WITHDRAWAL_TYPE
    try:
        payload = provenance.open_signed(envelope, checked, payload_type)
        parsed = (envelopes.parse_submission if kind == "hash.added" else envelopes.parse_withdrawal)(payload)
        canonical = envelopes.canonical_envelope(envelope)
    except Problem as exc:
        raise Refused(Refusal.Reason.BAD_ENVELOPE, exc.detail) from None
    except (KeyError, TypeError) as exc:
        raise Refused(Refusal.Reason.BAD_ENVELOPE, f"malformed envelope: {exc}") from None
    hash_ = entry.get("hash") or {}
    try:
        said = (
            str(hash_.get("signal_type")),
            signal_types.validate(str(hash_.get("signal_type")), str(hash_.get("value"))),
        )
    except Exception:  # noqa: BLE001 - any unreadable hash is a mismatch with the envelope
        said = None
    if said != (parsed.signal_type, parsed.value) or parsed.program != checked.program:
        raise Refused(Refusal.Reason.MISMATCH, "the envelope does not sign the entry's hash and program")
    program = programs[mapped["ours"]]
    if parsed.signal_type not in program.signal_types:
        raise Refused(Refusal.Reason.REFUSED_HERE, f"program {program.slug!r} does not take {parsed.signal_type}")
    if checked.key_id not in revocations:
        revocations[checked.key_id] = _revoked_at(checked)
    revoked_at = revocations[checked.key_id]
    if revoked_at is not None and parsed.created_at >= revoked_at:
        raise Refused(
            Refusal.Reason.KEY_REVOKED,
            f"signed at {parsed.created_at.isoformat()} with a key its origin server revoked at "
            f"{revoked_at.isoformat()}",
        )
    stored = {name: origin[name] for name in ORIGIN_FIELDS}
    return _Checked(
        program=program, origin=checked, stored_origin=stored, envelope=canonical, payload=payload, parsed=parsed
    )


def _check_origin(origin: Any, bindings: dict[Any, provenance.CheckedOrigin]) -> provenance.CheckedOrigin:
    """check_origin, with each distinct binding verified once per page (a member's entries share one)."""
    if not isinstance(origin, dict):
        return provenance.check_origin(origin)
    binding = origin.get("key_binding")
    try:  # the signed parts only: cheaper than encoding the whole binding for every entry
        signatures = tuple((str(s["keyid"]), str(s["sig"])) for s in binding["signatures"])  # type: ignore[index]
        cache_key: Any = (
            str(origin.get("server")),
            str(origin.get("server_public_key")),
            str(origin.get("member")),
            str(binding["payloadType"]),  # type: ignore[index]
            str(binding["payload"]),  # type: ignore[index]
            signatures,
        )
    except (KeyError, TypeError):
        cache_key = json.dumps(
            [origin.get(name) for name in ("server", "server_public_key", "member", "key_binding")], sort_keys=True
        )
    found = bindings.get(cache_key)
    if found is None:
        found = bindings[cache_key] = provenance.check_origin(origin)
    try:
        path = tuple(str(p) for p in origin["path"])
        program = str(origin["program"])
    except (KeyError, TypeError) as exc:
        raise Problem("malformed_origin", f"the entry's origin is incomplete: {exc}") from None
    if not path or path[0] != found.server:
        raise Problem("malformed_origin", "the origin's path must start at the origin server")
    return dataclasses.replace(found, path=path, program=program)


def _revoked_at(origin: provenance.CheckedOrigin) -> Any:
    """When the origin's key was revoked here (None if it is not): the held key's revocation,
    or, for a key not held yet, one its origin server sent before it (`KeptRevocation`)."""
    held = SigningKey.objects.filter(key_id=origin.key_id).values_list("revoked_at", flat=True)
    if held.exists():
        return held.first()
    kept = KeptRevocation.objects.filter(key_id=origin.key_id, server=origin.server, member=origin.member)
    return kept.values_list("revoked_at", flat=True).first()


def _imported_origin(key_id: str) -> tuple[str, str] | None:
    """(origin server, origin member) of a key a peer brought us, as recorded when it was imported."""
    row = (
        Event.objects.filter(kind="peer.key_imported", subject_type="peer", data__key_id=key_id)
        .order_by("seq")
        .values_list("data", flat=True)
        .first()
    )
    return (str(row["origin_server"]), str(row["origin_member"])) if row else None


def _store_revocation(
    *, peer: Peer, entry: dict[str, Any], here: str, result: PageResult, keys: dict[str, SigningKey]
) -> None:
    """An origin server's signed revocation of its member's key, relayed by the peer.

    Accepted only for a key we imported with a binding of that same server for that same
    member; then the key is revoked here from the stated time (`key.revoked`, carrying the
    origin, so our feed relays it on). Hashes it signed before keep their state; entries it
    signs from then on are refused as `key_revoked`. A revocation of a key not held here is
    kept (`KeptRevocation`, `peer.revocation_kept`) and applied when a peer brings the key with
    a binding of the same server for the same member; one that does not verify is refused as
    `binding_not_attested`.
    """
    key_id = str((entry.get("key") or {}).get("key_id") or "")
    if not key_id:
        result.skipped += 1
        return
    held = SigningKey.objects.filter(key_id=key_id).first()
    try:
        checked = provenance.check_revocation(entry.get("origin"), key_id)
    except Problem as exc:
        _refuse(peer=peer, entry=entry, reason=Refusal.Reason.BINDING_NOT_ATTESTED, detail=exc.detail, result=result)
        return
    if here in checked.path:
        _refuse(peer=peer, entry=entry, reason=Refusal.Reason.LOOP, detail="its path contains us", result=result)
        return
    if checked.path[-1] != peer.server_key_id:
        _refuse(
            peer=peer,
            entry=entry,
            reason=Refusal.Reason.PATH_MISMATCH,
            detail="its path does not end at the peer that sent it",
            result=result,
        )
        return
    if held is None:
        _keep_revocation(peer=peer, entry=entry, checked=checked, result=result)
        return
    if _imported_origin(key_id) != (checked.server, checked.member):
        _refuse(
            peer=peer,
            entry=entry,
            reason=Refusal.Reason.BINDING_NOT_ATTESTED,
            detail="the key was not imported here with a binding of the server and member that revoke it",
            result=result,
        )
        return
    if held.revoked_at is not None:
        result.skipped += 1  # already revoked (the same revocation by another path)
        return
    origin = entry["origin"]
    held.revoked_at = checked.revoked_at
    held.revocation_reason = f"revoked by its origin server {checked.server[:16]} (via peer {peer.slug})"[:500]
    held.save(update_fields=["revoked_at", "revocation_reason"])
    keys.pop(key_id, None)
    ledger.record(
        "key.revoked",
        actor=Actor.system("federation"),
        subject_type="signing_key",
        subject_id=key_id,
        data={
            "member": checked.member,
            "key_id": key_id,
            "revoked_at": checked.revoked_at.isoformat(),
            "reason": held.revocation_reason,
            "origin": {name: origin[name] for name in ("server", "server_public_key", "member", "path", "revocation")},
        },
    )
    result.revoked += 1


def _keep_revocation(
    *, peer: Peer, entry: dict[str, Any], checked: provenance.CheckedRevocation, result: PageResult
) -> None:
    """Keep a verified revocation of a key not held here, for when a peer brings the key.

    Which server's binding the key will come with is not known yet, so it is kept under the
    server that signed it and applies only to the key as that server binds it to that
    member: a revocation signed by some other server cannot revoke anybody else's key.
    """
    origin = {name: entry["origin"][name] for name in ("server", "server_public_key", "member", "path", "revocation")}
    _, created = KeptRevocation.objects.get_or_create(
        key_id=checked.key_id,
        server=checked.server,
        member=checked.member,
        defaults={"revoked_at": checked.revoked_at, "origin": origin, "peer": peer},
    )
    result.skipped += 1
    if created:
        ledger.record(
            "peer.revocation_kept",
            actor=Actor.system("federation"),
            subject_type="peer",
            subject_id=peer.slug,
            data={
                "peer": peer.slug,
                "key_id": checked.key_id,
                "origin_server": checked.server,
                "origin_member": checked.member,
                "revoked_at": checked.revoked_at.isoformat(),
            },
        )


def _apply_kept_revocation(*, peer: Peer, key: SigningKey, origin: provenance.CheckedOrigin) -> None:
    """A key just imported whose origin server had revoked it before it got here: revoked now,
    from the stated time, and `key.revoked` recorded with the statement (relayed on)."""
    kept = KeptRevocation.objects.filter(key_id=key.key_id, server=origin.server, member=origin.member).first()
    if kept is None:
        return
    key.revoked_at = kept.revoked_at
    key.revocation_reason = f"revoked by its origin server {kept.server[:16]} (kept from peer {kept.peer.slug})"[:500]
    key.save(update_fields=["revoked_at", "revocation_reason"])
    ledger.record(
        "key.revoked",
        actor=Actor.system("federation"),
        subject_type="signing_key",
        subject_id=key.key_id,
        data={
            "member": kept.member,
            "key_id": key.key_id,
            "revoked_at": kept.revoked_at.isoformat(),
            "reason": key.revocation_reason,
            "origin": kept.origin,
        },
    )
    kept.delete()


def _refuse(*, peer: Peer, entry: Any, reason: str, detail: str, result: PageResult) -> None:
    """Record a refusal once per entry (a page read again refuses it again, silently)."""
    seq, kind = int(entry.get("seq") or 0), str(entry.get("kind"))[:32]
    result.refusals.append(reason)
    _refusal, created = Refusal.objects.get_or_create(
        peer=peer, seq=seq, kind=kind, defaults={"reason": reason, "detail": detail[:500]}
    )
    if created:
        ledger.record(
            "peer.refused",
            actor=Actor.system("federation"),
            subject_type="peer",
            subject_id=peer.slug,
            data={"peer": peer.slug, "seq": seq, "kind": kind, "reason": reason, "detail": detail[:500]},
        )


def _key_for(*, peer: Peer, origin: provenance.CheckedOrigin, now: Any, keys: dict[str, SigningKey]) -> SigningKey:
    """The origin member's key, registered here under the peer that first brought it."""
    key = keys.get(origin.key_id) or SigningKey.objects.filter(key_id=origin.key_id).first()
    if key is not None:
        keys[origin.key_id] = key
        return key
    key = SigningKey.objects.create(
        member=peer.member,
        key_id=origin.key_id,
        public_key=origin.public_key,
        label=f"origin {origin.member} at {origin.server[:16]}",
        valid_from=now,
    )
    keys[origin.key_id] = key
    ledger.record(
        "peer.key_imported",
        actor=Actor.system("federation"),
        subject_type="peer",
        subject_id=peer.slug,
        data={
            "peer": peer.slug,
            "key_id": origin.key_id,
            "origin_server": origin.server,
            "origin_member": origin.member,
        },
    )
    _apply_kept_revocation(peer=peer, key=key, origin=origin)
    return key


def _store_added(
    *,
    peer: Peer,
    items: list[tuple[dict[str, Any], _Checked]],
    result: PageResult,
    now: Any,
    keys: dict[str, SigningKey],
) -> None:
    if not items:
        return
    digests = [envelopes.payload_digest(checked.payload) for _, checked in items]
    held = set(Submission.objects.filter(payload_sha256__in=digests).values_list("payload_sha256", flat=True))
    todo: list[Pending] = []
    by_result: dict[int, dict[str, Any]] = {}
    for index, ((entry, checked), digest) in enumerate(zip(items, digests, strict=True)):
        if digest in held:
            result.duplicates += 1
            continue
        parsed = checked.parsed
        key = _key_for(peer=peer, origin=checked.origin, now=now, keys=keys)
        row = submission_row(
            program=checked.program,
            member=peer.member,
            now=now,
            labels=parsed.labels,
            signing_key_id=key.pk,
            envelope=checked.envelope,
            payload_sha256=digest,
            nonce=parsed.nonce,
            signed_at=parsed.created_at,
            case_ref=parsed.case,
            quality=parsed.quality,
            source=f"peer:{peer.slug}"[:64],
        )
        item = Pending(
            result=ItemResult(index=index),
            program=checked.program,
            signal_type=parsed.signal_type,
            value=parsed.value,
            row=row,
            event_data={"origin": checked.stored_origin},
        )
        todo.append(item)
        by_result[index] = entry
    submissions_store(member=peer.member, items=todo, now=now)
    for item in todo:
        if item.result.status == "accepted":
            result.imported += 1
        elif item.result.status == "duplicate":
            result.duplicates += 1
        else:
            detail = item.result.error.detail if item.result.error else "refused"
            _refuse(
                peer=peer,
                entry=by_result[item.result.index],
                reason=Refusal.Reason.REFUSED_HERE,
                detail=detail,
                result=result,
            )


def _store_withdrawal(*, peer: Peer, entry: dict[str, Any], checked: _Checked, result: PageResult, now: Any) -> None:
    parsed = checked.parsed
    row = Hash.objects.filter(signal_type=parsed.signal_type, value=parsed.value).first()
    key = SigningKey.objects.filter(key_id=checked.origin.key_id).first()
    if row is None or key is None:
        result.skipped += 1  # we never held what it withdraws
        return
    supported = (
        Submission.objects.filter(hash=row, program=checked.program, signing_key=key, status=Submission.Status.ACTIVE)
        .select_related("submitter")
        .first()
    )
    if supported is None:
        result.skipped += 1
        return
    try:
        with transaction.atomic():
            withdrawal_store_relayed(
                member=supported.submitter,
                key=key,
                envelope=checked.envelope,
                payload_bytes=checked.payload,
                program=checked.program,
                row=row,
                event_data={"origin": checked.stored_origin},
                now=now,
            )
    except Problem as exc:
        _refuse(peer=peer, entry=entry, reason=Refusal.Reason.REFUSED_HERE, detail=exc.detail, result=result)
        return
    result.withdrawn += 1


def _store_unsigned_tombstone(
    *, peer: Peer, entry: dict[str, Any], programs: dict[str, Program], result: PageResult
) -> None:
    """A withdrawal or quarantine the peer decided (no member signature): the peer takes back
    what it brought us of that hash in that program, and nothing else."""
    mapped = peer.mapped(str(entry.get("program")))
    hash_ = entry.get("hash") or {}
    row = Hash.objects.filter(signal_type=str(hash_.get("signal_type")), value=str(hash_.get("value"))).first()
    if mapped is None or mapped["ours"] not in programs or row is None:
        result.skipped += 1
        return
    withdrawn = submissions_withdraw_relayed(
        member=peer.member,
        hash_=row,
        program=programs[mapped["ours"]],
        reason=f"{entry.get('kind')} at peer {peer.slug}",
        event_data={"peer": peer.slug},
    )
    if withdrawn:
        result.withdrawn += 1
    else:
        result.skipped += 1
