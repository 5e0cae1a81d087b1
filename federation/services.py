"""Writes to peers: add, pause, resume, resync, re-pin, and the sync itself.

Every change records an event (`peer.*`) in its transaction. A sync reads the peer's
feed from our cursor, page by page; each page is stored by federation/imports.py in
one transaction that also advances the cursor, so a worker killed mid-page leaves the
cursor where the last stored page ended, and the next sync reads that page again
(imports are idempotent on the origin envelope's payload digest).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from core.ledger import Actor, record
from core.problems import Problem
from exchange import crypto
from members import services as member_services
from members.models import Member, Program

from . import imports, outcomes, remote, snapshots
from .models import Peer

logger = logging.getLogger(__name__)

DEFAULT_HOP_LIMIT = 4


def parse_program_mapping(specs: list[str], *, hop_limit: int = DEFAULT_HOP_LIMIT) -> list[dict[str, Any]]:
    """`THEIRS[:OURS]` items into the stored mapping; every OURS must be a program here."""
    if not specs:
        raise Problem.field("programs", "name at least one program that flows: --program THEIRS[:OURS]")
    mapping: list[dict[str, Any]] = []
    for spec in specs:
        theirs, _, ours = spec.partition(":")
        theirs, ours = theirs.strip(), (ours or theirs).strip()
        if not theirs or not ours:
            raise Problem.field("programs", f"{spec!r}: write THEIRS or THEIRS:OURS")
        if not Program.objects.filter(slug=ours).exists():
            raise Problem.field(
                "programs", f"{spec!r}: there is no program {ours!r} here; create it with manage.py program_create"
            )
        if any(item["theirs"] == theirs for item in mapping):
            raise Problem.field("programs", f"their program {theirs!r} is mapped twice")
        mapping.append({"theirs": theirs, "ours": ours, "hop_limit": hop_limit})
    return mapping


def peer_create(
    *, slug: str, base_url: str, api_key: str, programs: list[str], actor: Actor, hop_limit: int = DEFAULT_HOP_LIMIT
) -> Peer:
    """Add a peer: check its URL, fetch and pin its server key, store our key there encrypted.

    Its member of kind `peer` (how it authenticates with us) is created if missing,
    active and enrolled in our side of each mapped program, so the peer may pull what
    flows back; an existing member keeps its enrollments.
    """
    if Peer.objects.filter(slug=slug).exists():
        raise Problem.field("slug", f"a peer called {slug!r} already exists (peer {slug}); use the admin to change it")
    mapping = parse_program_mapping(programs, hop_limit=hop_limit)
    if not api_key.strip():
        raise Problem.field("key", "give our API key at the peer (--key)")
    try:
        url = remote.check_base_url(base_url)
        key_id, public_key = remote.server_key(url)
    except remote.PeerError as exc:
        raise Problem.field("url", f"{base_url}: {exc}") from None
    if key_id == crypto.server_key_id():
        raise Problem.field("url", f"{base_url} is this server itself (same server key)")
    if Peer.objects.filter(server_key_id=key_id).exists():
        other = Peer.objects.get(server_key_id=key_id)
        raise Problem.field("url", f"that server is already peer {other.slug!r}")
    with transaction.atomic():
        member = Member.objects.filter(slug=slug).first()
        if member is None:
            member = member_services.member_create(
                slug=slug, kind=Member.Kind.PEER, status=Member.Status.ACTIVE, actor=actor
            )
            for item in mapping:
                program = Program.objects.get(slug=item["ours"])
                member_services.enrollment_set(member=member, program=program, state="opted_in", actor=actor)
        elif member.kind != Member.Kind.PEER:
            raise Problem.field("slug", f"member {slug!r} exists and is a {member.kind}, not a peer")
        peer = Peer.objects.create(
            slug=slug,
            member=member,
            base_url=url,
            server_key_id=key_id,
            server_public_key=public_key,
            api_key_encrypted=crypto.encrypt(api_key.strip()),
            programs=mapping,
        )
        record(
            "peer.added",
            actor=actor,
            subject_type="peer",
            subject_id=slug,
            data={"peer": slug, "url": url, "server_key_id": key_id, "programs": mapping},
        )
    return peer


@transaction.atomic
def peer_programs_set(*, peer: Peer, programs: Any, actor: Actor) -> Peer:
    """Change which programs flow from the peer (the admin edits the mapping)."""
    if not isinstance(programs, list) or not all(isinstance(item, dict) and item.get("theirs") for item in programs):
        raise Problem.field("programs", 'write a list of {"theirs": slug, "ours": slug, "hop_limit": n}')
    mapping = parse_program_mapping([f"{item['theirs']}:{item.get('ours') or item['theirs']}" for item in programs])
    for item, given in zip(mapping, programs, strict=True):
        item["hop_limit"] = int(given.get("hop_limit") or DEFAULT_HOP_LIMIT)
    Peer.objects.filter(pk=peer.pk).update(programs=mapping)
    peer.programs = mapping
    record(
        "peer.programs_changed",
        actor=actor,
        subject_type="peer",
        subject_id=peer.slug,
        data={"peer": peer.slug, "programs": mapping},
    )
    return peer


STATUS_EVENTS = {Peer.Status.ACTIVE: "peer.resumed", Peer.Status.PAUSED: "peer.paused"}


@transaction.atomic
def peer_set_status(*, peer: Peer, status: str, actor: Actor) -> Peer:
    """Pause (a paused peer is not called) or resume a peer."""
    if status not in STATUS_EVENTS:
        raise Problem.field("status", "set active or paused")
    if status == Peer.Status.ACTIVE and peer.status == Peer.Status.KEY_CHANGED:
        raise Problem.field("status", "its server key changed: re-pin it first (peer_sync --repin, or the admin)")
    peer = Peer.objects.select_for_update().get(pk=peer.pk)
    if peer.status == status:
        return peer
    peer.status, peer.next_sync_at, peer.failures = status, timezone.now(), 0
    peer.save(update_fields=["status", "next_sync_at", "failures"])
    record(STATUS_EVENTS[status], actor=actor, subject_type="peer", subject_id=peer.slug, data={"peer": peer.slug})
    return peer


@transaction.atomic
def peer_resync(*, peer: Peer, actor: Actor) -> Peer:
    """Read the peer's feed again from the start (what we hold already is skipped)."""
    peer = Peer.objects.select_for_update().get(pk=peer.pk)
    previous = peer.cursor
    peer.cursor, peer.next_sync_at, peer.failures = 0, timezone.now(), 0
    peer.save(update_fields=["cursor", "next_sync_at", "failures"])
    record("peer.resync", actor=actor, subject_type="peer", subject_id=peer.slug, data={"from": previous})
    return peer


def peer_repin(*, peer: Peer, actor: Actor) -> Peer:
    """Pin the peer's current server key (after its operator confirmed the change) and resume."""
    try:
        key_id, public_key = remote.server_key(peer.base_url)
    except remote.PeerError as exc:
        raise Problem.field("url", str(exc)) from None
    with transaction.atomic():
        peer = Peer.objects.select_for_update().get(pk=peer.pk)
        previous = peer.server_key_id
        peer.server_key_id, peer.server_public_key = key_id, public_key
        peer.status, peer.last_error, peer.failures, peer.next_sync_at = Peer.Status.ACTIVE, "", 0, timezone.now()
        peer.save()
        record(
            "peer.repinned",
            actor=actor,
            subject_type="peer",
            subject_id=peer.slug,
            data={"peer": peer.slug, "from": previous, "to": key_id},
        )
    return peer


@dataclass
class SyncResult:
    """What one sync moved."""

    pages: int = 0
    entries: int = 0
    imported: int = 0
    withdrawn: int = 0
    revoked: int = 0
    duplicates: int = 0
    refused: int = 0
    skipped: int = 0
    outcomes_sent: int = 0
    outcomes_rejected: int = 0
    cursor: int = 0
    error: str = ""
    refusals: dict[str, int] = field(default_factory=dict)

    def add(self, page: imports.PageResult) -> None:
        self.pages += 1
        self.entries += page.entries
        self.imported += page.imported
        self.withdrawn += page.withdrawn
        self.revoked += page.revoked
        self.duplicates += page.duplicates
        self.refused += len(page.refusals)
        self.skipped += page.skipped
        for reason in page.refusals:
            self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def summary(self) -> str:
        text = (
            f"{self.pages} page(s), {self.entries} entries: {self.imported} imported, {self.withdrawn} withdrawn, "
            f"{self.revoked} key(s) revoked, {self.duplicates} already held, {self.refused} refused, "
            f"{self.skipped} skipped; cursor {self.cursor}; "
            f"{self.outcomes_sent} outcome(s) sent back ({self.outcomes_rejected} refused by the peer)"
        )
        if self.refusals:
            text += " (refused: " + ", ".join(f"{k} {v}" for k, v in sorted(self.refusals.items())) + ")"
        return text + (f"; error: {self.error}" if self.error else "")


def _fail(peer: Peer, message: str, *, retryable: bool, key_changed: bool = False) -> None:
    now = timezone.now()
    failures = peer.failures + 1
    delay = min(settings.PEER_MAX_BACKOFF_SECONDS, settings.PEER_SYNC_SECONDS * 2 ** min(failures, 20))
    updates: dict[str, Any] = {"last_error": message[:1000], "failures": failures}
    updates["next_sync_at"] = now + dt.timedelta(seconds=delay if retryable else settings.PEER_MAX_BACKOFF_SECONDS)
    with transaction.atomic():
        if key_changed:
            updates["status"] = Peer.Status.KEY_CHANGED
            record(
                "peer.key_changed",
                actor=Actor.system("federation"),
                subject_type="peer",
                subject_id=peer.slug,
                data={"peer": peer.slug, "pinned": peer.server_key_id},
            )
        Peer.objects.filter(pk=peer.pk).update(**updates)
    for name, value in updates.items():
        setattr(peer, name, value)


def peer_sync(*, peer: Peer, max_pages: int | None = None) -> SyncResult:
    """One full sync now: check the pinned key, pull pages until the peer has no more, then
    send back what our members reported on hashes from the peer (federation/outcomes.py).

    A paused peer, or one whose key changed, is not called. Failures are kept in
    `last_error` with a backoff (`next_sync_at`); nothing of a failed page is stored.
    """
    result = SyncResult(cursor=peer.cursor)
    if peer.status != Peer.Status.ACTIVE:
        result.error = f"peer {peer.slug} is {peer.status}; not called"
        return result
    try:
        key_id, _public_key = remote.server_key(peer.base_url)
    except remote.PeerError as exc:
        _fail(peer, str(exc), retryable=exc.retryable)
        result.error = str(exc)
        return result
    if key_id != peer.server_key_id:
        message = (
            f"the peer's server key changed (pinned {peer.server_key_id[:16]}…, now {key_id[:16]}…); nothing is "
            "imported until an admin re-pins it"
        )
        _fail(peer, message, retryable=False, key_changed=True)
        result.error = message
        return result
    api_key = crypto.decrypt(peer.api_key_encrypted)
    here = crypto.server_key_id()
    if peer.cursor == 0 and settings.PEER_BOOTSTRAP_FROM_SNAPSHOTS:
        try:
            snapshots.bootstrap(peer=peer, api_key=api_key, here=here, add=result.add)
        except remote.PeerError as exc:
            _fail(peer, f"bootstrapping from snapshots: {exc}", retryable=exc.retryable)
            result.error = str(exc)
            return result
        result.cursor = peer.cursor
    while max_pages is None or result.pages < max_pages:
        try:
            page = remote.feed_page(peer.base_url, api_key=api_key, after=peer.cursor, limit=settings.PEER_PAGE_SIZE)
        except remote.PeerError as exc:
            _fail(peer, str(exc), retryable=exc.retryable)
            result.error = str(exc)
            return result
        stored = imports.page_store(peer=peer, page=page, here=here)
        result.add(stored)
        peer.cursor = result.cursor = stored.cursor
        if not page.get("has_more"):
            break
    try:
        pushed = outcomes.outcomes_push(peer=peer, api_key=api_key)
    except remote.PeerError as exc:
        _fail(peer, f"sending outcomes back: {exc}", retryable=exc.retryable)
        result.error = str(exc)
        return result
    result.outcomes_sent, result.outcomes_rejected = pushed.sent, pushed.rejected
    Peer.objects.filter(pk=peer.pk).update(
        last_sync_at=timezone.now(), failures=0, last_error="", next_sync_at=timezone.now()
    )
    return result


# Claims: one sync at a time per peer, across every worker (like webhook deliveries).


def peer_claim(peer_id: int, *, now: dt.datetime | None = None) -> bool:
    now = now or timezone.now()
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    return bool(
        Peer.objects.filter(free, pk=peer_id, status=Peer.Status.ACTIVE).update(
            claimed_until=now + dt.timedelta(seconds=settings.PEER_CLAIM_SECONDS)
        )
    )


def peer_release(peer_id: int) -> None:
    Peer.objects.filter(pk=peer_id).update(claimed_until=None)


def peers_due(*, now: dt.datetime | None = None) -> list[int]:
    """Active peers whose next sync is due and that no worker holds."""
    now = now or timezone.now()
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    return list(
        Peer.objects.filter(free, status=Peer.Status.ACTIVE, next_sync_at__lte=now).values_list("pk", flat=True)
    )


def peer_sync_claimed(peer_id: int) -> SyncResult | None:
    """Sync a peer if no one else is; None when another worker holds it."""
    if not peer_claim(peer_id):
        return None
    try:
        peer = Peer.objects.get(pk=peer_id)
        result = peer_sync(peer=peer)
        if result.imported or result.refused or result.withdrawn or result.error:
            logger.info("peer %s synced: %s", peer.slug, result.summary())
        return result
    finally:
        peer_release(peer_id)
