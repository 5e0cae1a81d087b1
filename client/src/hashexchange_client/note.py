"""Signed notes (C2SP signed-note), checkpoints (C2SP tlog-checkpoint), witness
cosignatures (C2SP tlog-cosignature, Ed25519) and offline proofs (C2SP tlog-proof).

The exchange signs its audit log's tree heads as checkpoints with its Ed25519 server key
(the key of `GET /api/v1/server-key`), under the log's origin as key name. A member or
auditor needs only that public key and the origin to check a checkpoint; witnesses add
their cosignatures as further signature lines, which verifiers that do not know the
witness ignore, as the note format says they must.

A note is text ending in a newline, a blank line, and signature lines
`— <key name> <base64(4-byte key id || signature)>`. The key id of an Ed25519 key is
SHA-256(name || 0x0A || 0x01 || public key)[:4]; of a witness's cosigning key the same
with 0x04. A verifier key ("vkey") is written `<name>+<8 hex digits of key id>+<base64
of type byte || public key>`.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .encoding import Base64Error, b64decode, b64encode
from .keys import public_key_bytes

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
DASH = "\u2014"
MAX_SIGNATURES = 64
MAX_NOTE_BYTES = 1 << 20
PROOF_HEADER = "c2sp.org/tlog-proof@v1"


class NoteError(ValueError):
    """A note, checkpoint, key or proof that is malformed or does not verify; the message says which."""


def valid_name(name: str) -> bool:
    """Key names and origins: non-empty, no white space, no plus sign."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_id(name: str, signature_type: int, public_key: bytes) -> int:
    """SHA-256(name || 0x0A || type || public key)[:4], as a big-endian integer."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([signature_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class Signature:
    """One signature line: who (name and key id) and the signature bytes after the id."""

    name: str
    key_id: int
    data: bytes

    def line(self) -> str:
        return f"{DASH} {self.name} {b64encode(self.key_id.to_bytes(4, 'big') + self.data)}\n"


@dataclass
class Note:
    """A note's text (ending in a newline) and its signature lines, in order."""

    text: str
    signatures: list[Signature] = field(default_factory=list)

    def __str__(self) -> str:
        return self.text + "\n" + "".join(signature.line() for signature in self.signatures)


def parse_note(data: str | bytes) -> Note:
    """Split a signed note into text and signatures; NoteError when it is not one."""
    if isinstance(data, bytes):
        if len(data) > MAX_NOTE_BYTES:
            raise NoteError(f"a note is at most {MAX_NOTE_BYTES} bytes")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("a note is UTF-8 text") from None
    if len(data) > MAX_NOTE_BYTES:
        raise NoteError(f"a note is at most {MAX_NOTE_BYTES} bytes")
    if any(ord(c) < 0x20 and c != "\n" for c in data):
        raise NoteError("a note holds no control characters other than newlines")
    split = data.rfind("\n\n")
    if split < 0 or not data.endswith("\n"):
        raise NoteError("a note is text, a blank line and signature lines, each ending in a newline")
    text, lines = data[: split + 1], data[split + 2 :].splitlines()
    if not lines:
        raise NoteError("a note has at least one signature line")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"a note has at most {MAX_SIGNATURES} signatures")
    signatures = []
    for line in lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH or not valid_name(parts[1]):
            raise NoteError(f"not a signature line: {line[:80]!r}")
        try:
            raw = b64decode(parts[2], what="a signature")
        except Base64Error as exc:
            raise NoteError(str(exc)) from None
        if len(raw) < 5:
            raise NoteError("a signature is a 4-byte key id and at least one byte more")
        signatures.append(Signature(parts[1], int.from_bytes(raw[:4], "big"), raw[4:]))
    return Note(text, signatures)


# Keys ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verifier:
    """A trusted key: its name, type (0x01 Ed25519, 0x04 cosignature) and raw public key."""

    name: str
    public_key: bytes
    signature_type: int = ED25519

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise NoteError(f"key name {self.name!r} must be non-empty, with no spaces or plus signs")
        if self.signature_type not in (ED25519, COSIGNATURE_V1):
            raise NoteError(f"unsupported signature type 0x{self.signature_type:02x}")
        if len(self.public_key) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.signature_type, self.public_key)

    def vkey(self) -> str:
        return f"{self.name}+{self.key_id:08x}+{b64encode(bytes([self.signature_type]) + self.public_key)}"

    def matches(self, signature: Signature) -> bool:
        return signature.name == self.name and signature.key_id == self.key_id

    def verify(self, text: str, signature: Signature) -> bool:
        """Whether `signature` (one of this key's) signs `text`."""
        key = Ed25519PublicKey.from_public_bytes(self.public_key)
        message = text.encode()
        data = signature.data
        if self.signature_type == COSIGNATURE_V1:
            if len(data) != 8 + 64:
                return False
            message = cosigned_message(text, int.from_bytes(data[:8], "big"))
            data = data[8:]
        try:
            key.verify(data, message)
        except InvalidSignature:
            return False
        return True


def parse_vkey(text: str) -> Verifier:
    """Read a verifier key `<name>+<hex key id>+<base64(type || key)>`; the id must match."""
    name, sep, rest = text.strip().partition("+")
    hex_id, sep2, encoded = rest.partition("+")
    if not sep or not sep2 or len(hex_id) != 8:
        raise NoteError("a verifier key is <name>+<8 hex digits>+<base64 of the type byte and the key>")
    try:
        raw = b64decode(encoded, what="the verifier key")
        declared = int(hex_id, 16)
    except (Base64Error, ValueError) as exc:
        raise NoteError(f"verifier key: {exc}") from None
    if len(raw) != 33:
        raise NoteError("the verifier key's base64 holds a type byte and a 32-byte Ed25519 key")
    verifier = Verifier(name, raw[1:], raw[0])
    if verifier.key_id != declared:
        raise NoteError(f"the verifier key's id {hex_id} is not the id of its name and key")
    return verifier


@dataclass(frozen=True)
class Signer:
    """An Ed25519 private key under a name, signing notes (type 0x01)."""

    name: str
    private_key: Ed25519PrivateKey

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, public_key_bytes(self.private_key), ED25519)

    def sign(self, text: str) -> Signature:
        return Signature(self.name, self.verifier.key_id, self.private_key.sign(text.encode()))


@dataclass(frozen=True)
class Cosigner:
    """A witness's Ed25519 key under its name, making timestamped cosignatures (type 0x04)."""

    name: str
    private_key: Ed25519PrivateKey

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, public_key_bytes(self.private_key), COSIGNATURE_V1)

    def sign(self, text: str, timestamp: int | None = None) -> Signature:
        timestamp = int(time.time()) if timestamp is None else timestamp
        signed = self.private_key.sign(cosigned_message(text, timestamp))
        return Signature(self.name, self.verifier.key_id, struct.pack(">Q", timestamp) + signed)


def cosigned_message(text: str, timestamp: int) -> bytes:
    """What an Ed25519 cosignature signs: a header, the time, and the checkpoint's text."""
    if not 0 <= timestamp < 1 << 63:
        raise NoteError("a cosignature's time is 0 to 2**63 - 1 seconds")
    return f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode()


def cosignature_time(signature: Signature) -> int:
    """The POSIX time a cosignature states it was made."""
    return int.from_bytes(signature.data[:8], "big")


def sign_note(text: str, signers: Iterable[Signer | Cosigner]) -> str:
    """Sign text (which must end in a newline) with each signer; the note as a string."""
    if not text.endswith("\n") or "\n\n" in text:
        raise NoteError("the text of a checkpoint ends in a newline and has no blank line")
    return str(Note(text, [signer.sign(text) for signer in signers]))


def open_note(data: str | bytes, verifiers: Sequence[Verifier]) -> tuple[Note, list[Verifier]]:
    """Parse a note and check its signatures against the trusted `verifiers`.

    Signatures of unknown keys are ignored. A known key's signature that fails, or a note
    signed by no known key, is a NoteError. Returns the note and the keys that signed it.
    """
    note = parse_note(data)
    signed: list[Verifier] = []
    for signature in note.signatures:
        for verifier in verifiers:
            if verifier.matches(signature):
                if not verifier.verify(note.text, signature):
                    raise NoteError(f"the signature of {signature.name} does not verify: the note was altered")
                if verifier not in signed:
                    signed.append(verifier)
    if not signed:
        names = ", ".join(sorted({v.name for v in verifiers})) or "none"
        raise NoteError(f"no signature by a trusted key (trusted: {names})")
    return note, signed


# Checkpoints --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's origin, the tree size and the root hash (raw 32 bytes)."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.size), b64encode(self.root_hash), *self.extensions]
        return "\n".join(lines) + "\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """Read a checkpoint's note text (not its signatures)."""
    if not text.endswith("\n"):
        raise NoteError("a checkpoint's text ends in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise NoteError("a checkpoint's text is an origin, a tree size and a root hash, on non-empty lines")
    origin, size_text, root_text = lines[:3]
    if not size_text.isascii() or not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise NoteError(f"tree size {size_text!r} is not a decimal number without leading zeros")
    size = int(size_text)
    if size >= 1 << 63:
        raise NoteError("the tree size is below 2**63")
    try:
        root_hash = b64decode(root_text, what="the root hash")
    except Base64Error as exc:
        raise NoteError(str(exc)) from None
    if len(root_hash) != 32:
        raise NoteError("the root hash is 32 bytes")
    return Checkpoint(origin, size, root_hash, tuple(lines[3:]))


def open_checkpoint(
    data: str | bytes, log: Verifier, witnesses: Sequence[Verifier] = ()
) -> tuple[Checkpoint, Note, list[Verifier]]:
    """Verify a checkpoint signed by the log key `log` (and whichever `witnesses` cosigned it).

    The origin must be the log key's name. Returns the checkpoint, the note, and the
    witnesses whose cosignatures verified (any cosignature of theirs that fails is an error).
    """
    note, signed = open_note(data, [log, *witnesses])
    if log not in signed:
        raise NoteError(f"the checkpoint is not signed by the log key {log.name}")
    checkpoint = parse_checkpoint(note.text)
    if checkpoint.origin != log.name:
        raise NoteError(f"the checkpoint's origin {checkpoint.origin!r} is not the log's, {log.name!r}")
    return checkpoint, note, [verifier for verifier in signed if verifier != log]


# Offline proofs (C2SP tlog-proof) -----------------------------------------------------------


@dataclass(frozen=True)
class TlogProof:
    """An entry's index, its inclusion proof, and the checkpoint (a signed note) it leads to."""

    index: int
    proof: tuple[bytes, ...]
    checkpoint: str
    extra: bytes | None = None

    def __str__(self) -> str:
        lines = [PROOF_HEADER]
        if self.extra is not None:
            lines.append(f"extra {b64encode(self.extra)}")
        lines.append(f"index {self.index}")
        lines += [b64encode(item) for item in self.proof]
        return "\n".join(lines) + "\n\n" + self.checkpoint


def parse_tlog_proof(text: str) -> TlogProof:
    """Read a `.tlog-proof` text; the checkpoint in it is left for open_checkpoint."""
    head, sep, checkpoint = text.partition("\n\n")
    lines = head.split("\n")
    if not sep or lines[0] != PROOF_HEADER:
        raise NoteError(f"a proof starts with {PROOF_HEADER}, then index and hash lines, a blank line, a checkpoint")
    lines = lines[1:]
    extra = None
    try:
        if lines and lines[0].startswith("extra "):
            extra = b64decode(lines.pop(0)[6:], what="the extra data")
        if not lines or not lines[0].startswith("index "):
            raise NoteError("the proof's index line is missing")
        index_text = lines.pop(0)[6:]
        if not index_text.isdigit() or (index_text != "0" and index_text.startswith("0")):
            raise NoteError(f"index {index_text!r} is not a decimal number without leading zeros")
        proof = tuple(b64decode(line, what="a proof hash") for line in lines)
    except Base64Error as exc:
        raise NoteError(str(exc)) from None
    if any(len(item) != 32 for item in proof):
        raise NoteError("each proof line is a 32-byte hash")
    return TlogProof(int(index_text), proof, checkpoint, extra)
