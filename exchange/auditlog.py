"""The audit log: signed checkpoints, proofs for members and auditors, tiles, witnesses.

The tree itself is stored and grown by the ledger (core/tlog.py). This module signs its
heads as C2SP checkpoints with the server's Ed25519 key (the key of `GET
/api/v1/server-key`, under the log's origin as key name), answers proofs to the callers
entitled to them, serves C2SP tlog-tiles to auditors, and asks witnesses (C2SP
tlog-witness) to cosign. docs/auditlog.md describes it for members and operators.

Who may ask what:
- a checkpoint, and consistency proofs between checkpointed sizes: any active member;
- an inclusion proof: auditors (the `reports` scope, which reads the whole event log)
  for any event; other members for the events of their own feed (what the pull feed
  and webhooks showed them) and the events they caused themselves;
- tiles and entry bundles: auditors only (entries are the whole events).

A checkpoint is never recorded as an event: that would grow the log by one event per
checkpoint, for ever. A witness that disagrees with us is: `auditlog.split_view`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models.signals import post_save
from django.utils import timezone
from hashexchange_client import auditlog as client_auditlog
from hashexchange_client import merkle, note
from hashexchange_client.merkle import ProofError
from hashexchange_client.note import NoteError
from rest_framework.renderers import JSONRenderer

from core import ledger, tlog
from core.ledger import Actor, Event
from core.problems import Problem
from members.models import ApiCredential, Member, Scope

from . import crypto, net
from .feed import feed_page
from .models import Checkpoint, Cosignature, Witness

logger = logging.getLogger(__name__)

SPLIT_VIEW = "auditlog.split_view"
WITNESS_CONFIGURED = "witness.configured"
SYSTEM = Actor.system("auditlog")


class InconsistentLog(RuntimeError):
    """The stored log no longer extends the last checkpoint we signed: nothing more is signed."""


# Keys --------------------------------------------------------------------------------------


def origin() -> str:
    return settings.AUDITLOG_ORIGIN


def signer() -> note.Signer:
    """The server's Ed25519 key under the log's origin: signs checkpoints."""
    return note.Signer(origin(), crypto.server_private_key())


def verifier() -> note.Verifier:
    return signer().verifier


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


# Checkpoints -------------------------------------------------------------------------------


def latest_checkpoint() -> Checkpoint | None:
    return Checkpoint.objects.filter(origin=origin()).order_by("-size").first()


def checkpoint_at(size: int) -> Checkpoint | None:
    return Checkpoint.objects.filter(origin=origin(), size=size).first()


def checkpoint_create() -> Checkpoint | None:
    """Sign a checkpoint of the log as it is now, if it grew since the last one.

    Steps:
    1. The tree size is the number of committed events; nothing to do when the latest
       checkpoint already has it (or a larger one, made meanwhile by another process).
    2. The root at that size, from the stored tiles.
    3. Check, with the verifier members use, that the new head extends the latest signed
       one. A log must never sign two inconsistent checkpoints; if the stored log no
       longer extends what we signed (events or tree hashes were changed underneath),
       raise InconsistentLog and sign nothing.
    4. Sign and store. Two processes signing the same size store one row.
    Returns the new checkpoint, or None.
    """
    size = tlog.tree_size()
    latest = latest_checkpoint()
    if size == 0 or (latest is not None and latest.size >= size):
        return None
    root = tlog.root(size)
    if latest is not None:
        proof = tlog.consistency_proof(latest.size, size)
        try:
            merkle.verify_consistency(latest.size, size, bytes(latest.root_hash), root, proof)
        except ProofError as exc:
            logger.critical(
                "the audit log no longer extends checkpoint %s: %s; no checkpoint is signed until this is resolved "
                "(manage.py auditlog_check)",
                latest.size,
                exc,
            )
            raise InconsistentLog(f"the log at size {size} does not extend the checkpoint at {latest.size}") from exc
    text = note.Checkpoint(origin(), size, root).text()
    signed = note.sign_note(text, [signer()])
    try:
        with transaction.atomic():
            return Checkpoint.objects.create(origin=origin(), size=size, root_hash=root, note=signed)
    except IntegrityError:
        return None


@dataclass(frozen=True)
class Head:
    """A checkpoint as proofs and the checkpoint endpoint serve it: its size, its root and its
    note with the witnesses' cosignatures."""

    size: int
    root_hash: bytes
    note: str

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> Head:
        return cls(checkpoint.size, bytes(checkpoint.root_hash), cosigned_note(checkpoint))


class _LatestHead:
    """The latest checkpoint with its cosignatures, kept by each process for `ttl` seconds.

    Every proof and the checkpoint endpoint start from it; reading it (the checkpoint, then
    its cosignatures) was a third of a proof request's own time (docs/benchmarks/auditlog.md).
    A checkpoint or cosignature stored by this process empties it at once; one stored by
    another (Celery beat signs them) is seen within `ttl`, well within the signing period
    and the 5 s that GET /api/v1/log/checkpoint lets caches keep it. What it holds was
    read from the database: a proof is still checked against its root before it is served.
    """

    def __init__(self, ttl: float = 1.0) -> None:
        self.ttl = ttl
        self.value: tuple[float, str, Head | None] | None = None

    def get(self) -> Head | None:
        now, alias = time.monotonic(), connection.alias
        value = self.value
        if value is not None and value[1] == alias and now - value[0] < self.ttl:
            return value[2]
        checkpoint = latest_checkpoint()
        head = Head.of(checkpoint) if checkpoint is not None else None
        self.value = (now, alias, head)
        return head

    def clear(self, **kwargs: Any) -> None:
        self.value = None


latest_head = _LatestHead()
post_save.connect(latest_head.clear, sender=Checkpoint, dispatch_uid="auditlog-latest-head-checkpoint")
post_save.connect(latest_head.clear, sender=Cosignature, dispatch_uid="auditlog-latest-head-cosignature")


def cosigned_note(checkpoint: Checkpoint) -> str:
    """The checkpoint with the witnesses' cosignatures after the server's signature."""
    lines = [
        line if line.endswith("\n") else line + "\n"
        for line in checkpoint.cosignatures.order_by("witness__name").values_list("line", flat=True)
    ]
    return checkpoint.note + "".join(lines)


# Proofs ------------------------------------------------------------------------------------


def _is_auditor(credential: Any) -> bool:
    return isinstance(credential, ApiCredential) and credential.has_scope(Scope.REPORTS)


def _checkpointed_size(tree_size: int | None, parameter: str = "tree_size") -> tuple[int, Head | None]:
    """The tree size a proof is asked for (the latest checkpoint's by default), and the
    checkpoint made at that size if there is one."""
    latest = latest_head.get()
    if latest is None:
        raise Problem(
            "no_checkpoint",
            f"The audit log has no checkpoint yet; one is signed every {settings.CHECKPOINT_SECONDS:g} s "
            "once events are recorded.",
            404,
        )
    if tree_size is None:
        return latest.size, latest
    if tree_size < 1:
        raise Problem.field(parameter, "a tree size is 1 or more")
    if tree_size > latest.size:
        raise Problem.field(
            parameter,
            f"{tree_size} is beyond the latest checkpoint ({latest.size} events); ask for a checkpointed size, "
            f"or wait for the next checkpoint (every {settings.CHECKPOINT_SECONDS:g} s)",
        )
    if tree_size == latest.size:
        return tree_size, latest
    checkpoint = checkpoint_at(tree_size)
    return tree_size, (Head.of(checkpoint) if checkpoint is not None else None)


def can_see_event(*, member: Member, credential: Any, seq: int) -> bool:
    """Whether the caller may have proofs of event `seq`: auditors any; others the events of
    their own feed (the same rule as the feed, by asking the feed) and those they caused."""
    if _is_auditor(credential):
        return True
    event = Event.objects.filter(seq=seq).values("actor_type", "actor_id").first()
    if event is None:
        return False
    if event["actor_type"] == "member" and event["actor_id"] == member.slug:
        return True
    page = feed_page(member=member, after=seq - 1, limit=1)
    return bool(page.entries) and page.entries[0]["seq"] == seq


@dataclass
class InclusionProof:
    leaf_index: int
    tree_size: int
    leaf_data: bytes
    root_hash: bytes
    proof: list[bytes]
    checkpoint: str | None

    @property
    def leaf_hash(self) -> bytes:
        return merkle.leaf_hash(self.leaf_data)

    def as_dict(self) -> dict[str, Any]:
        return {
            "leaf_index": self.leaf_index,
            "seq": self.leaf_index + 1,
            "tree_size": self.tree_size,
            "leaf_data": self.leaf_data.decode(),
            "leaf_hash": self.leaf_hash.hex(),
            "root_hash": b64(self.root_hash),
            "proof": [b64(item) for item in self.proof],
            "checkpoint": self.checkpoint,
        }

    def tlog_proof(self) -> str:
        """The proof as a C2SP tlog-proof file (needs the checkpoint of its tree size), with the
        event's leaf data as its extra data: what a verifier hashes to get the leaf hash."""
        if self.checkpoint is None:
            raise Problem.field(
                "tree_size",
                f"no checkpoint was signed at size {self.tree_size}; a .tlog-proof needs one (omit tree_size)",
            )
        return str(note.TlogProof(self.leaf_index, tuple(self.proof), self.checkpoint, self.leaf_data))


def inclusion_proof(
    *, member: Member, credential: Any, leaf_index: int, tree_size: int | None = None
) -> InclusionProof:
    """The inclusion proof of one event in a checkpointed tree, for a caller entitled to it."""
    size, checkpoint = _checkpointed_size(tree_size)
    if leaf_index >= size:
        raise Problem.field(
            "leaf_index",
            f"{leaf_index} is not in the tree of {size} events (leaf indexes run from 0 to {size - 1}); "
            f"an event recorded since is covered by the next checkpoint, within {settings.CHECKPOINT_SECONDS:g} s",
        )
    if not can_see_event(member=member, credential=credential, seq=leaf_index + 1):
        raise Problem("not_found", "No event with that leaf index is visible to you.", 404)
    # The leaf data as auditors are served it (the stored leaf, if still the event's).
    if checkpoint is not None:  # usual: leaf and tile read, subtrees cached, checked against the signed root
        root_hash = checkpoint.root_hash
        leaf_data, proof = tlog.verified_inclusion_proof_of(leaf_index, size, root_hash)
    else:
        leaf_data = tlog.read_leaf(leaf_index)
        root_hash, proof = tlog.root(size), tlog.inclusion_proof(leaf_index, size)
    return InclusionProof(
        leaf_index=leaf_index,
        tree_size=size,
        leaf_data=leaf_data,
        root_hash=root_hash,
        proof=proof,
        checkpoint=checkpoint.note if checkpoint else None,
    )


def consistency_proof(*, first: int, second: int | None = None) -> dict[str, Any]:
    """The proof that the tree of `first` events is a prefix of the tree of `second`."""
    size, checkpoint = _checkpointed_size(second, "second")
    if first > size:
        raise Problem.field("first", f"{first} is larger than second ({size}); a log only grows")
    if first < 0:
        raise Problem.field("first", "a tree size is 0 or more")
    if checkpoint is not None:  # as for inclusion proofs
        second_root = checkpoint.root_hash
        first_root, proof = tlog.verified_consistency_proof(first, size, second_root)
    else:
        first_root, second_root, proof = tlog.root(first), tlog.root(size), tlog.consistency_proof(first, size)
    return {
        "first": first,
        "second": size,
        "first_root_hash": b64(first_root),
        "second_root_hash": b64(second_root),
        "proof": [b64(item) for item in proof],
        "checkpoint": checkpoint.note if checkpoint else None,
    }


# Reports -----------------------------------------------------------------------------------


def attest_report(report: dict[str, Any]) -> dict[str, Any]:
    """Name the checkpoint a report was computed at, and sign both.

    The checkpoint is the latest one (at most CHECKPOINT_SECONDS old): the report's
    figures were read when the log had at least its events. Signing a fresh one here
    would make every report's cost depend on the log's growth, for no more precision: the
    figures come from the tables the events describe, not from a cut of the log. The
    report is returned as the JSON it will be sent as, plus `log` (the checkpoint) and
    `attestation`: a note signed with the log key whose text is the SHA-256 of the report
    (without the attestation; keys sorted, no white space) and the checkpoint. `hashexchange
    report verify` checks both with the log key alone (docs/auditlog.md).
    """
    checkpoint = latest_checkpoint()
    if checkpoint is None:
        return report
    # As the client will parse it: times as strings, numbers as JSON numbers.
    body = json.loads(JSONRenderer().render(report))
    body["log"] = {
        "origin": checkpoint.origin,
        "size": checkpoint.size,
        "root_hash": b64(bytes(checkpoint.root_hash)),
        "checkpoint": cosigned_note(checkpoint),
    }
    head = note.Checkpoint(checkpoint.origin, checkpoint.size, bytes(checkpoint.root_hash))
    text = client_auditlog.report_text(client_auditlog.report_digest(body), head)
    body["attestation"] = note.sign_note(text, [signer()])
    return body


# Tiles -------------------------------------------------------------------------------------


def tile(path: str) -> bytes:
    """A tile or an entry bundle by its tlog-tiles path (tile/<L>/<N>[.p/<W>]), for auditors."""
    try:
        wanted = merkle.parse_tile_path(path)
    except ValueError as exc:
        raise Problem.field("tile", str(exc)) from None
    size = tlog.tree_size()
    level = 0 if wanted.is_entries else wanted.level
    have = merkle.tile_width(level, wanted.index, size)
    if have < wanted.width:
        raise Problem("not_found", f"The log of {size} events has no {path}.", 404)
    return tlog.read_entry_bundle(wanted) if wanted.is_entries else tlog.read_tile(wanted)


MAX_ENTRIES = 65_536  # a page of `entries`: 256 entry bundles, about 20 MB of leaf data


def entries(*, start: int, end: int) -> Iterator[bytes]:
    """Leaves [start, end) in the format of entry bundles (each leaf data prefixed by its length
    as a big-endian uint16), for auditors: many bundles' worth in one request, streamed."""
    size = tlog.tree_size()
    if end > size:
        raise Problem.field("end", f"{end} is beyond the log of {size} events")
    if start >= end:
        raise Problem.field("start", f"{start} is not before end ({end})")
    if end - start > MAX_ENTRIES:
        raise Problem.field("end", f"at most {MAX_ENTRIES} entries per request (start + {MAX_ENTRIES})")
    # A missing event is left out rather than failing the response half-way: the auditor counts.
    return tlog.iter_entries(start, end, complete=False)


# Witnesses ---------------------------------------------------------------------------------


def witness_verifier(witness: Witness) -> note.Verifier:
    return note.Verifier(witness.name, base64.b64decode(witness.public_key), note.COSIGNATURE_V1)


def witness_save(*, witness: Witness, actor: Actor) -> Witness:
    """Add or change a witness (admins); the configuration is an event."""
    witness_verifier(witness)  # refuses a malformed name or key before anything is stored
    with transaction.atomic():
        witness.save()
        ledger.record(
            WITNESS_CONFIGURED,
            actor=actor,
            subject_type="witness",
            subject_id=witness.name,
            data={
                "name": witness.name,
                "public_key": witness.public_key,
                "url": witness.url,
                "is_active": witness.is_active,
                "vkey": witness_verifier(witness).vkey(),
            },
        )
    return witness


@dataclass
class PushResult:
    witness: str
    status: str  # cosigned, already, conflict, refused, error, split_view
    detail: str = ""


def witnesses_push(checkpoint: Checkpoint) -> list[PushResult]:
    """Ask every active witness to cosign `checkpoint`."""
    return [witness_push(witness, checkpoint) for witness in Witness.objects.filter(is_active=True)]


def _add_checkpoint_body(old: int, checkpoint: Checkpoint) -> bytes:
    proof = tlog.consistency_proof(old, checkpoint.size) if 0 < old < checkpoint.size else []
    lines = [f"old {old}", *(b64(item) for item in proof)]
    return ("\n".join(lines) + "\n\n" + checkpoint.note).encode()


def witness_push(witness: Witness, checkpoint: Checkpoint, *, attempts: int = 2) -> PushResult:
    """Send `checkpoint` to one witness with a consistency proof from the size it last
    cosigned (tlog-witness add-checkpoint) and store its cosignature.

    A 409 naming another size is answered once more from that size. A witness that holds
    a different root for a size we signed, or a size we never signed, is an alarm: an
    `auditlog.split_view` event, once until the witness cosigns again.
    """
    old = witness.last_size
    for _ in range(attempts):
        if old > checkpoint.size:
            if checkpoint_at(old) is not None:
                return PushResult(witness.name, "already", f"it cosigned {old} already")
            return _split_view(witness, checkpoint, f"it holds a checkpoint of size {old}, which we never signed")
        if old == checkpoint.size and checkpoint.cosignatures.filter(witness=witness).exists():
            return PushResult(witness.name, "already")
        result = net.post(
            witness.url.rstrip("/") + "/add-checkpoint",
            _add_checkpoint_body(old, checkpoint),
            {},
            content_type="text/plain; charset=utf-8",
        )
        text = result.content.decode("utf-8", "replace")
        if result.status_code == 200:
            return _store_cosignature(witness, checkpoint, text)
        if result.status_code == 409:
            text = text.strip()
            if text.isdigit() and int(text) != old:
                old = int(text)
                continue
            if old == checkpoint.size or text == str(old):
                return _split_view(witness, checkpoint, f"it holds a different tree of size {old}")
            return _failed(witness, "refused", f"HTTP 409 without a tree size: {text[:200]}")
        if result.status_code == 422:
            return _split_view(witness, checkpoint, f"our consistency proof from size {old} fails against its view")
        detail = result.error or f"HTTP {result.status_code}: {result.excerpt[:200]}"
        return _failed(witness, "refused" if result.status_code else "error", detail)
    return _failed(witness, "conflict", f"it keeps naming another size ({old})")


def _failed(witness: Witness, status: str, detail: str) -> PushResult:
    Witness.objects.filter(pk=witness.pk).update(last_failure_at=timezone.now(), last_error=detail[:500])
    logger.warning("witness %s: %s", witness.name, detail)
    return PushResult(witness.name, status, detail)


def _store_cosignature(witness: Witness, checkpoint: Checkpoint, body: str) -> PushResult:
    verifier_ = witness_verifier(witness)
    try:
        opened, _ = note.open_note(checkpoint.note + body, [verifier_])
    except NoteError as exc:
        return _failed(witness, "refused", f"its answer is not a valid cosignature: {exc}")
    signature = next(s for s in opened.signatures if verifier_.matches(s))
    signed_at = dt.datetime.fromtimestamp(note.cosignature_time(signature), tz=dt.UTC)
    with transaction.atomic():
        Cosignature.objects.get_or_create(
            checkpoint=checkpoint, witness=witness, defaults={"line": signature.line(), "signed_at": signed_at}
        )
        Witness.objects.filter(pk=witness.pk).update(
            last_size=checkpoint.size, last_success_at=timezone.now(), last_error=""
        )
    witness.last_size = checkpoint.size
    return PushResult(witness.name, "cosigned")


def _split_view(witness: Witness, checkpoint: Checkpoint, detail: str) -> PushResult:
    """A witness saw a log of ours that this one does not extend: record it, once per episode."""
    message = f"witness {witness.name} disagrees with our log at size {checkpoint.size}: {detail}"
    logger.critical("%s", message)
    with transaction.atomic():
        ledger.lock()
        since = witness.last_success_at or witness.created_at
        already = Event.objects.filter(
            kind=SPLIT_VIEW, subject_type="witness", subject_id=witness.name, created_at__gte=since
        ).exists()
        if not already:
            ledger.record(
                SPLIT_VIEW,
                actor=SYSTEM,
                subject_type="witness",
                subject_id=witness.name,
                data={
                    "witness": witness.name,
                    "size": checkpoint.size,
                    "root_hash": b64(bytes(checkpoint.root_hash)),
                    "witness_size": witness.last_size,
                    "detail": detail,
                },
            )
    _failed(witness, "split_view", message)
    return PushResult(witness.name, "split_view", message)
