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
from core.ledger import Actor
from core.problems import Problem
from core.sql import values_in
from exchange import provenance
from hashes import envelopes
from hashes.models import Hash, Submission
from hashes.services import ItemResult, submissions_withdraw_relayed, withdrawal_store_relayed
from hashes.services.store import Pending, submission_row, submissions_store
from members.models import Program, SigningKey

from . import revocations as revocations_here
from .models import Peer, Refusal

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
    program: str  # our program's slug
    origin: provenance.CheckedOrigin
    stored_origin: dict[str, Any]
    envelope: str  # its canonical_envelope(), as JSON text
    payload: bytes
    parsed: Any
    digest: str  # the payload's SHA-256 (hex), our key for origin identity


class Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Context:
    """What checking an entry needs besides the entry; plain values, so a verifying
    process (federation/verifying.py) can be handed it."""

    programs: tuple[tuple[str, str, int, tuple[str, ...]], ...]  # (theirs, ours, hop limit, signal types)
    peer_key_id: str
    here: str

    def mapped(self, theirs: str) -> tuple[str, int, tuple[str, ...]] | None:
        for item in self.programs:
            if item[0] == theirs:
                return item[1:]
        return None


def context_for(*, peer: Peer, here: str) -> Context:
    found = {p.slug: tuple(p.signal_types) for p in Program.objects.filter(slug__in=[m["ours"] for m in peer.programs])}
    return Context(
        programs=tuple(
            (str(m["theirs"]), str(m["ours"]), int(m.get("hop_limit") or 0), found[m["ours"]])
            for m in peer.programs
            if m["ours"] in found
        ),
        peer_key_id=peer.server_key_id,
        here=here,
    )


# What checking an entry found, for the storing transaction (in the page's order):
# ("checked", entry, _Checked) — a signed hash or withdrawal whose checks all passed except
# the key's revocation here, which needs the database; ("refused", entry, reason, detail);
# ("other", entry) — tombstones, revocations and the kinds we skip. For checked and refused
# entries `entry` holds only the seq and kind (all that a refusal records).
Verified = tuple[Any, ...]


def verify_entries(entries: list[Any], context: Context) -> list[Verified]:
    """Check each entry of a page on its own (no database): the pure half of "What we refuse"."""
    bindings: dict[Any, tuple[provenance.CheckedOrigin, dict[str, Any]]] = {}
    found: list[Verified] = []
    for entry in entries:
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if kind not in ("hash.added", "hash.withdrawn") or (kind == "hash.withdrawn" and not entry.get("envelopes")):
            found.append(("other", entry))
            continue
        slim = {"seq": entry.get("seq"), "kind": kind}
        try:
            found.append(("checked", slim, _check(entry=entry, context=context, kind=kind, bindings=bindings)))
        except Refused as exc:
            found.append(("refused", slim, exc.reason, exc.detail))
    return found


def page_store(*, peer: Peer, page: dict[str, Any], here: str, verified: list[Verified] | None = None) -> PageResult:
    """Store a page and move the cursor to its `next`, or nothing if the cursor moved meanwhile.

    `verified`: the page's entries as verify_entries() found them, when that ran elsewhere
    (in a verifying process); by default they are checked here.
    """
    if verified is None:
        verified = verify_entries(page["entries"], context_for(peer=peer, here=here))
    result = PageResult(entries=len(verified), cursor=peer.cursor)
    try:
        with transaction.atomic():
            ledger.lock()
            _store(peer=peer, verified=verified, here=here, result=result)
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


def _store(*, peer: Peer, verified: list[Verified], here: str, result: PageResult) -> None:
    programs = {p.slug: p for p in Program.objects.filter(slug__in=[m["ours"] for m in peer.programs])}
    now = timezone.now()
    revocations: dict[tuple[str, str, str], Any] = {}  # (key id, server, member) -> when revoked here, or None
    keys: dict[str, SigningKey] = {}
    pending: list[tuple[dict[str, Any], _Checked]] = []
    seen: set[str] = set()

    def flush() -> None:
        _store_added(peer=peer, items=pending, result=result, now=now, keys=keys, programs=programs)
        pending.clear()

    for item in verified:
        entry = item[1]
        if item[0] == "refused":
            _refuse(peer=peer, entry=entry, reason=item[2], detail=item[3], result=result)
            continue
        if item[0] == "other":
            kind = entry.get("kind") if isinstance(entry, dict) else None
            if kind in ("hash.quarantined", "hash.withdrawn"):
                flush()
                _store_unsigned_tombstone(peer=peer, entry=entry, programs=programs, result=result)
            elif kind == "key.revoked":
                flush()
                try:
                    if revocations_here.store_revocation(peer=peer, entry=entry, here=here):
                        result.revoked += 1
                        keys.clear()
                    else:
                        result.skipped += 1
                except revocations_here.RevocationRefused as exc:
                    _refuse(peer=peer, entry=entry, reason=exc.reason, detail=exc.detail, result=result)
                revocations.clear()
            else:
                result.skipped += 1  # key registrations (bindings travel with entries) and restorations
            continue
        checked: _Checked = item[2]
        # Keyed by the origin too: a revocation kept before its key applies only to the
        # key as the server that signed it binds it (`revocations.revoked_at`).
        revoker = (checked.origin.key_id, checked.origin.server, checked.origin.member)
        if revoker not in revocations:
            revocations[revoker] = revocations_here.revoked_at(checked.origin)
        revoked_at = revocations[revoker]
        if revoked_at is not None and checked.parsed.created_at >= revoked_at:
            _refuse(
                peer=peer,
                entry=entry,
                reason=Refusal.Reason.KEY_REVOKED,
                detail=f"signed at {checked.parsed.created_at.isoformat()} with a key its origin server revoked "
                f"at {revoked_at.isoformat()}",
                result=result,
            )
            continue
        if entry["kind"] == "hash.added":
            digest = checked.digest
            if digest in seen:
                result.duplicates += 1
                continue
            seen.add(digest)
            pending.append((entry, checked))
        else:
            flush()
            _store_withdrawal(peer=peer, entry=entry, checked=checked, result=result, now=now, programs=programs)
    flush()


def _check(
    *,
    entry: dict[str, Any],
    context: Context,
    kind: str,
    bindings: dict[Any, tuple[provenance.CheckedOrigin, dict[str, Any]]],
) -> _Checked:
    mapped = context.mapped(str(entry.get("program")))
    if mapped is None:
        raise Refused(
            Refusal.Reason.PROGRAM_NOT_AGREED, f"program {entry.get('program')!r} is not agreed with the peer"
        )
    ours, hop_limit, signal_types_here = mapped
    origin = entry.get("origin")
    raw_envelopes = entry.get("envelopes") or []
    if not origin or not raw_envelopes:
        raise Refused(Refusal.Reason.UNSIGNED, "the entry has no signed envelope and origin")
    try:
        checked, stored = _check_origin(origin, bindings)
    except Problem as exc:
        raise Refused(Refusal.Reason.BINDING_NOT_ATTESTED, exc.detail) from None
    if context.here in checked.path:
        raise Refused(Refusal.Reason.LOOP, "its path already contains this server")
    if checked.path[-1] != context.peer_key_id:
        raise Refused(Refusal.Reason.PATH_MISMATCH, "its path does not end at the peer that sent it")
    if hop_limit and len(checked.path) >= hop_limit:
        raise Refused(Refusal.Reason.HOP_LIMIT, f"it has crossed {len(checked.path)} servers; the limit is {hop_limit}")
    envelope = raw_envelopes[0]
    payload_type = envelopes.SUBMISSION_TYPE if kind == "hash.added" else envelopes.WITHDRAWAL_TYPE
    try:
        payload = provenance.open_signed(envelope, checked, payload_type)
        parsed = (envelopes.parse_submission if kind == "hash.added" else envelopes.parse_withdrawal)(payload)
        canonical = json.dumps(envelopes.canonical_envelope(envelope), separators=(",", ":"))
    except Problem as exc:
        raise Refused(Refusal.Reason.BAD_ENVELOPE, exc.detail) from None
    except (KeyError, TypeError) as exc:
        raise Refused(Refusal.Reason.BAD_ENVELOPE, f"malformed envelope: {exc}") from None
    hash_ = entry.get("hash")
    said: Any = (hash_.get("signal_type"), hash_.get("value")) if isinstance(hash_, dict) else None
    if said != (parsed.signal_type, parsed.value):  # (the same already normalised: nothing to parse)
        try:
            said = (str(said[0]), signal_types.validate(str(said[0]), str(said[1]))) if said else None
        except Exception:  # noqa: BLE001 - any unreadable hash is a mismatch with the envelope
            said = None
    if said != (parsed.signal_type, parsed.value) or parsed.program != checked.program:
        raise Refused(Refusal.Reason.MISMATCH, "the envelope does not sign the entry's hash and program")
    if parsed.signal_type not in signal_types_here:
        raise Refused(Refusal.Reason.REFUSED_HERE, f"program {ours!r} does not take {parsed.signal_type}")
    return _Checked(
        program=ours,
        origin=checked,
        stored_origin=stored,
        envelope=canonical,
        payload=payload,
        parsed=parsed,
        digest=envelopes.payload_digest(payload),
    )


def _check_origin(
    origin: Any, bindings: dict[Any, tuple[provenance.CheckedOrigin, dict[str, Any]]]
) -> tuple[provenance.CheckedOrigin, dict[str, Any]]:
    """check_origin, with each distinct origin verified once per page (a member's entries
    share one), and the origin as we store it: one object for the entries that share it."""
    if not isinstance(origin, dict):
        return provenance.check_origin(origin), {}
    try:  # the values of the origin's fields, exactly (types included): cheaper than encoding it
        binding = origin["key_binding"]
        cache_key: Any = (
            tuple(origin[name] for name in ORIGIN_FIELDS if name not in ("path", "key_binding")),
            tuple(origin["path"]),
            tuple(sorted(binding)),
            binding["payloadType"],
            binding["payload"],
            tuple(tuple(sorted(s.items())) for s in binding["signatures"]),
        )
        hash(cache_key)
    except (KeyError, TypeError, AttributeError):
        cache_key = None
    found = bindings.get(cache_key) if cache_key is not None else None
    if found is None:
        checked = provenance.check_origin(origin)
        try:
            path = tuple(str(p) for p in origin["path"])
            program = str(origin["program"])
        except (KeyError, TypeError) as exc:
            raise Problem("malformed_origin", f"the entry's origin is incomplete: {exc}") from None
        if not path or path[0] != checked.server:
            raise Problem("malformed_origin", "the origin's path must start at the origin server")
        found = (
            dataclasses.replace(checked, path=path, program=program),
            {name: origin[name] for name in ORIGIN_FIELDS},
        )
        if cache_key is not None:
            bindings[cache_key] = found
    return found


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
    revocations_here.apply_kept(peer=peer, key=key, origin=origin)
    return key


def _store_added(
    *,
    peer: Peer,
    items: list[tuple[dict[str, Any], _Checked]],
    result: PageResult,
    now: Any,
    keys: dict[str, SigningKey],
    programs: dict[str, Program],
) -> None:
    if not items:
        return
    digests = [checked.digest for _, checked in items]
    held = set(
        Submission.objects.filter(payload_sha256__in=values_in(digests)).values_list("payload_sha256", flat=True)
    )
    todo: list[Pending] = []
    by_result: dict[int, dict[str, Any]] = {}
    for index, ((entry, checked), digest) in enumerate(zip(items, digests, strict=True)):
        if digest in held:
            result.duplicates += 1
            continue
        parsed = checked.parsed
        key = _key_for(peer=peer, origin=checked.origin, now=now, keys=keys)
        program = programs[checked.program]
        row = submission_row(
            program=program,
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
            program=program,
            signal_type=parsed.signal_type,
            value=parsed.value,
            row=row,
            event_data={"origin": checked.stored_origin},
        )
        todo.append(item)
        by_result[index] = entry
    submissions_store(member=peer.member, items=todo, now=now, relayed_by=peer.slug)
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


def _store_withdrawal(
    *,
    peer: Peer,
    entry: dict[str, Any],
    checked: _Checked,
    result: PageResult,
    now: Any,
    programs: dict[str, Program],
) -> None:
    parsed = checked.parsed
    program = programs[checked.program]
    row = Hash.objects.filter(signal_type=parsed.signal_type, value=parsed.value).first()
    key = SigningKey.objects.filter(key_id=checked.origin.key_id).first()
    if row is None or key is None:
        result.skipped += 1  # we never held what it withdraws
        return
    supported = (
        Submission.objects.filter(hash=row, program=program, signing_key=key, status=Submission.Status.ACTIVE)
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
                envelope=json.loads(checked.envelope),
                payload_bytes=checked.payload,
                program=program,
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
