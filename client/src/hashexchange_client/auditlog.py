"""Checking the exchange's audit log from the outside: checkpoints, proofs, audits, reports.

Everything here needs only the log's key (the `log_vkey` of `GET /api/v1/server-key`,
obtained once, out of band, from a source you trust) and, for a witness policy, the
witnesses' keys. What the server sends is verified, never trusted:

- a checkpoint must carry a valid signature of the log key (and cosignatures of at least
  `quorum` of the trusted witnesses);
- a checkpoint newer than one verified before must be proven to extend it (a
  consistency proof); one that does not, or a smaller one, is a fork or a rollback;
- an inclusion proof (a `.tlog-proof` file) carries the event's leaf data, which is
  hashed here, so it proves that exactly this event is in the signed log;
- an audit downloads every entry, checks that each is the canonical encoding of an event
  with the right sequence number, and recomputes the root;
- a report carries a checkpoint and the server's signature over both.

A check that fails raises LogVerificationError: the log, a proof or a report is not what
it claims to be. Not being able to check (the server down, a refusal) is the API's
ApiError. The CLI turns them into different exit codes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import merkle, note
from .encoding import (
    MAX_JSON_DEPTH,
    Base64Error,
    StrictJSONError,
    b64decode,
    b64encode,
    json_depth,
    loads_strict,
    strict_int,
)
from .merkle import ProofError, Tile
from .note import NoteError

REPORT_HEADER = "hashexchange-report/v1"
_VKEY = re.compile(r"[^+\s]+\+[0-9a-fA-F]{8}\+")


class LogVerificationError(Exception):
    """The log, a proof or a report is not what it claims to be; the message says what."""


# Keys and policy -------------------------------------------------------------------------


def parse_log_key(text: str, origin: str | None = None) -> note.Verifier:
    """The log's key: its verifier key (`<origin>+<id>+<base64>`), or base64 of the raw
    Ed25519 key together with the log's origin."""
    text = text.strip()
    if origin is None and _VKEY.match(text):
        try:
            verifier = note.parse_vkey(text)
        except NoteError as exc:
            raise ValueError(f"log key: {exc}") from None
        if verifier.signature_type != note.ED25519:
            raise ValueError("log key: a log signs with an Ed25519 key (type 0x01)")
        return verifier
    if origin is None:
        raise ValueError(
            "log key: give the log's verifier key (log_vkey of GET /api/v1/server-key), or its origin with --origin"
        )
    try:
        raw = b64decode(text, what="the log key")
    except Base64Error as exc:
        raise ValueError(str(exc)) from None
    return note.Verifier(origin, raw, note.ED25519)


def parse_witness_key(text: str) -> note.Verifier:
    try:
        verifier = note.parse_vkey(text)
    except NoteError as exc:
        raise ValueError(f"witness key: {exc}") from None
    if verifier.signature_type != note.COSIGNATURE_V1:
        raise ValueError("witness key: a witness cosigns with a cosignature/v1 key (type 0x04)")
    return verifier


@dataclass
class Policy:
    """Whom to believe: the log key, and how many of which witnesses must have cosigned."""

    log: note.Verifier
    witnesses: Sequence[note.Verifier] = ()
    quorum: int = 0

    def open(self, data: str | bytes) -> tuple[note.Checkpoint, list[note.Verifier]]:
        """Verify a checkpoint; returns it and the witnesses that cosigned it."""
        try:
            checkpoint, _, cosigned = note.open_checkpoint(data, self.log, self.witnesses)
        except NoteError as exc:
            raise LogVerificationError(f"checkpoint: {exc}") from None
        if len(cosigned) < self.quorum:
            names = ", ".join(w.name for w in cosigned) or "none"
            raise LogVerificationError(
                f"checkpoint of size {checkpoint.size}: cosigned by {len(cosigned)} trusted witnesses ({names}), "
                f"the policy asks for {self.quorum}"
            )
        return checkpoint, cosigned


# What a verifier keeps between runs --------------------------------------------------------


@dataclass
class State:
    """The last checkpoint verified (and, after an audit, the compact range of its tree)."""

    origin: str
    size: int = 0
    root_hash: bytes = merkle.EMPTY_ROOT
    checkpoint: str = ""
    audited: merkle.CompactRange | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "size": self.size,
            "root_hash": b64encode(self.root_hash),
            "checkpoint": self.checkpoint,
            "audited": None
            if self.audited is None
            else {"size": self.audited.size, "hashes": [b64encode(h) for h in self.audited.hashes]},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        audited = data.get("audited")
        return cls(
            origin=data["origin"],
            size=int(data["size"]),
            root_hash=b64decode(data["root_hash"]),
            checkpoint=data.get("checkpoint", ""),
            audited=None
            if not audited
            else merkle.CompactRange(int(audited["size"]), [b64decode(h) for h in audited["hashes"]]),
        )


def load_state(path: Path, origin: str) -> State:
    """The state in `path`, or a fresh one; a file of another log is refused."""
    if not path.exists():
        return State(origin)
    try:
        state = State.from_json(json.loads(path.read_text("utf-8")))
    except (ValueError, KeyError, TypeError, Base64Error) as exc:
        raise ValueError(f"{path} is not a state file of this command: {exc}") from None
    if state.origin != origin:
        raise ValueError(f"{path} holds the state of the log {state.origin!r}, not {origin!r}")
    return state


def save_state(path: Path, state: State) -> None:
    """Write atomically: a run interrupted while writing leaves the previous state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(state.to_json(), indent=2) + "\n", "utf-8")
    os.replace(temporary, path)


def check_extends(state: State, checkpoint: note.Checkpoint, proof: Sequence[bytes]) -> None:
    """Raise unless `checkpoint` extends the state's last verified checkpoint."""
    if checkpoint.size < state.size:
        raise LogVerificationError(
            f"the log shrank: it was {state.size} events when last checked, the new checkpoint says {checkpoint.size}"
        )
    try:
        merkle.verify_consistency(state.size, checkpoint.size, state.root_hash, checkpoint.root_hash, list(proof))
    except ProofError as exc:
        raise LogVerificationError(
            f"the checkpoint of size {checkpoint.size} does not extend the one of size {state.size} verified before: "
            f"{exc}. The server is showing a different log than before (a fork), or rewrote it."
        ) from None


# Events ------------------------------------------------------------------------------------


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_float(item) for item in value)
    return False


def _refuse_float(text: str) -> float:
    raise StrictJSONError(f"{text}: a number with a fraction or an exponent")


_LEAF_DECODER = json.JSONDecoder(parse_int=strict_int, parse_float=_refuse_float, parse_constant=_refuse_float)
_LEAF_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical_event(data: bytes) -> Any:
    """The value `data` encodes if it is its own canonical encoding, else None: the quick
    path of `check_leaf`, a third of its cost (docs/benchmarks/auditlog.md).

    It accepts exactly what the strict reading below accepts. A repeated key, a lone
    surrogate or any escape or space that is not canonical makes the re-encoding differ;
    a float or a NaN is refused while parsing; integers and nesting have the strict
    reader's limits."""
    try:
        text = data.decode("utf-8")
        if json_depth(text, limit=MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            return None
        value = _LEAF_DECODER.decode(text)
        canonical = _LEAF_ENCODER.encode(value).encode()
    except (ValueError, RecursionError):  # UnicodeDecodeError, UnicodeEncodeError, StrictJSONError among them
        return None
    return value if canonical == data else None


def _is_event(event: Any, index: int) -> bool:
    """Whether a decoded leaf looks like the version 1 event numbered index + 1, with a kind."""
    return (
        isinstance(event, dict)
        and event.get("v") == 1
        and event.get("seq") == index + 1
        and isinstance(event.get("kind"), str)
    )


def check_leaf(data: bytes, index: int) -> dict[str, Any]:
    """The event that `data`, the leaf at `index`, encodes; LogVerificationError unless it is
    the one canonical encoding (docs/ledger.md) of a version 1 event numbered index + 1."""
    event = _canonical_event(data)
    if _is_event(event, index):
        return event
    # Something is wrong: read it again strictly, to say what.
    try:
        event = loads_strict(data)
    except (StrictJSONError, UnicodeDecodeError) as exc:
        raise LogVerificationError(f"leaf {index}: not an event's leaf data ({exc})") from None
    if not isinstance(event, dict) or event.get("v") != 1:
        raise LogVerificationError(f"leaf {index}: not a version 1 event")
    if event.get("seq") != index + 1:
        raise LogVerificationError(f"leaf {index}: holds event seq {event.get('seq')!r}, not {index + 1}")
    if not isinstance(event.get("kind"), str):
        raise LogVerificationError(f"leaf {index}: an event without a kind")
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if canonical != data or _has_float(event):
        raise LogVerificationError(f"leaf {index}: not the canonical encoding of its event")
    return event


def verify_tlog_proof(text: str, policy: Policy) -> tuple[note.Checkpoint, dict[str, Any], list[note.Verifier]]:
    """Verify a `.tlog-proof` file of the exchange: the checkpoint under the policy, the
    event in its extra data, and its inclusion. Returns the checkpoint, the event and the
    witnesses that cosigned."""
    try:
        proof = note.parse_tlog_proof(text)
    except NoteError as exc:
        raise LogVerificationError(f"proof: {exc}") from None
    checkpoint, cosigned = policy.open(proof.checkpoint)
    if proof.extra is None:
        raise LogVerificationError("proof: it carries no event (the extra line with the leaf data)")
    event = check_leaf(proof.extra, proof.index)
    try:
        merkle.verify_inclusion(
            merkle.leaf_hash(proof.extra), proof.index, checkpoint.size, list(proof.proof), checkpoint.root_hash
        )
    except ProofError as exc:
        raise LogVerificationError(f"proof: event {proof.index + 1} is not in the signed log: {exc}") from None
    return checkpoint, event, cosigned


# Audits ------------------------------------------------------------------------------------


def split_bundle(data: bytes) -> list[bytes]:
    """The entries of a tlog-tiles entry bundle (each prefixed by its length, uint16)."""
    entries, position = [], 0
    while position < len(data):
        if position + 2 > len(data):
            raise LogVerificationError("an entry bundle ends in the middle of a length")
        length = int.from_bytes(data[position : position + 2], "big")
        position += 2
        if position + length > len(data):
            raise LogVerificationError("an entry bundle ends in the middle of an entry")
        entries.append(data[position : position + length])
        position += length
    return entries


@dataclass
class AuditResult:
    checkpoint: note.Checkpoint
    audited_from: int
    kinds: dict[str, int] = field(default_factory=dict)


def _check_entries(
    entries: Sequence[bytes],
    first: int,
    compact: merkle.CompactRange,
    result: AuditResult,
    on_event: Callable[[dict[str, Any]], None],
) -> None:
    """Check leaves first, first + 1, ... (`entries`, their leaf data) and append them to the
    compact range: each is read as an event and must be its canonical encoding (`check_leaf`);
    a whole tile of 256 is hashed at once and appended as one subtree."""
    sha256 = hashlib.sha256
    kinds = result.kinds
    position, count = 0, len(entries)
    while position < count:
        index = first + position
        width = merkle.TILE_WIDTH if index % merkle.TILE_WIDTH == 0 and count - position >= merkle.TILE_WIDTH else 1
        group = entries[position : position + width]
        events = _check_group(group, index)
        for event in events:
            kinds[event["kind"]] = kinds.get(event["kind"], 0) + 1
            on_event(event)
        hashes = [sha256(b"\x00" + data).digest() for data in group]
        if width == 1:
            compact.append(hashes[0])
        else:
            compact.append_subtree(merkle.perfect_root(hashes), width)
        position += width


def _decoded(data: bytes) -> Any:
    """The value of one JSON text (with the strict reader's limits), or None."""
    try:
        text = data.decode("utf-8")
        if json_depth(text, limit=MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            return None
        return _LEAF_DECODER.decode(text)  # refuses floats, and anything after the one value
    except (ValueError, RecursionError):
        return None


def _check_group(group: Sequence[bytes], first: int) -> list[dict[str, Any]]:
    """`check_leaf` of consecutive leaves first, first + 1, ..., with one encoding for all.

    Each leaf is read on its own, as one JSON value; the values are then encoded together
    as a JSON array, which must be the leaves joined by commas. That holds exactly when
    every leaf is its own value's canonical encoding: where one first differed, one of
    the two would be a complete JSON value followed by more text, which reading it on its
    own refuses. Anything amiss is checked again leaf by leaf, for the message.
    """
    events = []
    for offset, data in enumerate(group):
        event = _decoded(data)
        if not _is_event(event, first + offset):
            event = check_leaf(data, first + offset)  # raises, saying what is wrong
        events.append(event)
    try:
        canonical = _LEAF_ENCODER.encode(events).encode()
    except UnicodeEncodeError:  # a lone surrogate
        canonical = b""
    if canonical != b"[" + b",".join(group) + b"]":
        return [check_leaf(data, first + offset) for offset, data in enumerate(group)]
    return events


def _check_bundle(
    data: bytes,
    position: int,
    checkpoint: note.Checkpoint,
    compact: merkle.CompactRange,
    result: AuditResult,
    progress: Callable[[int], None],
    on_event: Callable[[dict[str, Any]], None],
) -> int:
    """Check the entries of the bundle holding leaf `position` from there on; the position after it."""
    bundle_index = position // merkle.TILE_WIDTH
    width = merkle.tile_width(0, bundle_index, checkpoint.size)
    entries = split_bundle(data)
    if len(entries) != width:
        raise LogVerificationError(f"entry bundle {bundle_index} has {len(entries)} entries, not {width}")
    start = bundle_index * merkle.TILE_WIDTH
    _check_entries(entries[position - start :], position, compact, result, on_event)
    progress(start + width - position)
    return start + width


ENTRIES_PAGE = 16_384  # leaves per `read_entries` call: 64 entry bundles, about 5 MB


def _pages(start: int, end: int, page: int) -> list[tuple[int, int]]:
    """[start, end) cut at the multiples of `page`."""
    bounds = [start, *range((start // page + 1) * page, end, page), end]
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1) if bounds[i] < bounds[i + 1]]


def audit(
    read_tile: Callable[[str], bytes],
    checkpoint: note.Checkpoint,
    state: State,
    *,
    progress: Callable[[int], None] = lambda n: None,
    on_event: Callable[[dict[str, Any]], None] = lambda event: None,
    read_ahead: int = 0,
    read_entries: Callable[[int, int], bytes] | None = None,
    page: int = ENTRIES_PAGE,
) -> AuditResult:
    """Download the entries the state has not audited yet, check every one and recompute
    the root; raise LogVerificationError unless it is the checkpoint's.

    The entries come from `read_entries(start, end)` (the exchange's `GET /api/v1/log/entries`,
    `page` leaves a call) if given, else from `read_tile` (tlog-tiles entry bundles, 256 a
    call). With `read_ahead`, that many calls are made ahead by as many threads (each
    answer is still checked in order), so that the server prepares the next while this
    process checks one: the callables must then be safe to call from several threads.

    Resumes from the state's compact range, so each entry is fetched and checked once over
    all runs; a checkpoint whose tree does not extend the audited one cannot match.
    """
    compact = state.audited or merkle.CompactRange()
    if compact.size > checkpoint.size:
        raise LogVerificationError(
            f"the log shrank: {compact.size} events were audited, the checkpoint says {checkpoint.size}"
        )
    result = AuditResult(checkpoint, compact.size)
    position = compact.size
    if read_entries is not None:
        if page < 1 or page % merkle.TILE_WIDTH:
            raise ValueError(f"a page is a multiple of {merkle.TILE_WIDTH} leaves, not {page}")
        units: list[Any] = _pages(position, checkpoint.size, page)

        def fetch(unit: Any) -> bytes:
            return read_entries(*unit)
    else:
        units = [
            Tile(merkle.ENTRIES, index, merkle.tile_width(0, index, checkpoint.size)).path()
            for index in range(position // merkle.TILE_WIDTH, -(-checkpoint.size // merkle.TILE_WIDTH))
        ]
        fetch = read_tile
    with ThreadPoolExecutor(max_workers=max(1, read_ahead), thread_name_prefix="audit") as pool:
        # The next answers download while this one is checked; in order, at most read_ahead at once.
        pending: deque[Future[bytes]] = deque()
        for unit in units[:read_ahead]:
            pending.append(pool.submit(fetch, unit))
        for number in range(len(units)):
            if not read_ahead:
                data = fetch(units[number])
            else:
                if number + read_ahead < len(units):
                    pending.append(pool.submit(fetch, units[number + read_ahead]))
                data = pending.popleft().result()
            if read_entries is None:
                position = _check_bundle(data, position, checkpoint, compact, result, progress, on_event)
                continue
            start, end = units[number]
            entries = split_bundle(data)
            if len(entries) != end - start:
                raise LogVerificationError(
                    f"the server sent {len(entries)} entries for leaves {start}..{end - 1}, not {end - start}"
                )
            _check_entries(entries, start, compact, result, on_event)
            progress(end - start)
            position = end
    if compact.root() != checkpoint.root_hash:
        raise LogVerificationError(
            f"the entries do not hash to the checkpoint's root at size {checkpoint.size}: the log served to "
            f"auditors is not the one that was signed"
            + (
                ""
                if result.audited_from == 0
                else f", or it no longer extends the {result.audited_from} audited before"
            )
        )
    state.audited = compact
    return result


# Reports -----------------------------------------------------------------------------------


def report_digest(report: dict[str, Any]) -> str:
    """SHA-256 over the report without its attestation, keys sorted, no white space, UTF-8."""
    body = {key: value for key, value in report.items() if key != "attestation"}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    ).hexdigest()


def report_text(digest: str, checkpoint: note.Checkpoint) -> str:
    """What the server signs for a report: its digest and the checkpoint it names."""
    return (
        f"{REPORT_HEADER}\nsha256 {digest}\n"
        f"checkpoint {checkpoint.origin} {checkpoint.size} {b64encode(checkpoint.root_hash)}\n"
    )


def verify_report(report: dict[str, Any], policy: Policy) -> tuple[note.Checkpoint, list[note.Verifier]]:
    """Verify an auditors' report: the server's attestation over its content and the
    checkpoint it names, and that checkpoint under the policy."""
    log = report.get("log")
    attestation = report.get("attestation")
    if not isinstance(log, dict) or not isinstance(log.get("checkpoint"), str) or not isinstance(attestation, str):
        raise LogVerificationError("report: it names no checkpoint, or carries no attestation")
    checkpoint, cosigned = policy.open(log["checkpoint"])
    try:
        signed, _ = note.open_note(attestation, [policy.log])
    except NoteError as exc:
        raise LogVerificationError(f"report attestation: {exc}") from None
    if signed.text != report_text(report_digest(report), checkpoint):
        raise LogVerificationError(
            "report: the attestation does not cover this content and checkpoint (the report was changed)"
        )
    return checkpoint, cosigned
