"""Ed25519 signing keys: create, store, load, and name them.

A member signs every submission and withdrawal with its own key, so the exchange (and
any peer it relays to) can prove who vouched for a hash without trusting the server.
The private key never leaves the member; only the raw public key is registered.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .encoding import Base64Error, b64decode, b64encode

PUBLIC_KEY_SIZE = 32
PRIVATE_KEY_FILENAME = "signing_key.pem"
PUBLIC_KEY_FILENAME = "signing_key.pub"

_RAW = serialization.Encoding.Raw
_RAW_PUBLIC = serialization.PublicFormat.Raw


class SigningKeyError(ValueError):
    """A key or key file that cannot be used; the message says which and why."""


def generate_private_key() -> Ed25519PrivateKey:
    """A fresh key from the operating system's random source."""
    return Ed25519PrivateKey.generate()


def private_key_from_seed(seed: bytes) -> Ed25519PrivateKey:
    """The key for a 32-byte seed; used for reproducible examples and tests."""
    if len(seed) != PUBLIC_KEY_SIZE:
        raise SigningKeyError("an Ed25519 seed is exactly 32 bytes")
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_bytes(key: Ed25519PublicKey | Ed25519PrivateKey | bytes) -> bytes:
    """The raw 32 public-key bytes, whichever form the caller holds."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    if isinstance(key, Ed25519PublicKey):
        return key.public_bytes(_RAW, _RAW_PUBLIC)
    if isinstance(key, bytes) and len(key) == PUBLIC_KEY_SIZE:
        return key
    raise SigningKeyError("an Ed25519 public key is exactly 32 raw bytes")


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey | bytes) -> str:
    """Lowercase hex SHA-256 of the raw public key: the ``keyid`` in envelopes.

    A digest rather than a server-assigned number, so anyone holding the public key can
    compute it and no registry is needed to connect a signature to its key.
    """
    return hashlib.sha256(public_key_bytes(key)).hexdigest()


def public_key_to_b64(key: Ed25519PublicKey | Ed25519PrivateKey | bytes) -> str:
    """Standard base64 of the raw public key, the form the API and peers exchange."""
    return b64encode(public_key_bytes(key))


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    """Parse a base64 raw public key strictly (canonical base64, exactly 32 bytes)."""
    try:
        raw = b64decode(text.strip(), what="public key")
    except Base64Error as exc:
        raise SigningKeyError(str(exc)) from exc
    if len(raw) != PUBLIC_KEY_SIZE:
        raise SigningKeyError(f"public key must decode to {PUBLIC_KEY_SIZE} bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def save_private_key(
    key: Ed25519PrivateKey,
    path: str | os.PathLike[str],
    *,
    password: bytes | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the key as PEM PKCS#8, readable by the owner only (mode 0600).

    The file is created with its final mode in one step, so it is never readable by
    others, not even for an instant; an existing key is kept unless ``overwrite``,
    because losing it means re-registering and re-signing.
    """
    path = Path(path)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise SigningKeyError(f"{path} already exists; refusing to overwrite a signing key") from None
    with os.fdopen(fd, "wb") as handle:
        # O_CREAT's mode is ignored for an existing file, so overwrite must chmod.
        os.fchmod(handle.fileno(), 0o600)
        handle.write(pem)
    return path


def load_private_key(path: str | os.PathLike[str], *, password: bytes | None = None) -> Ed25519PrivateKey:
    """Read a PEM PKCS#8 Ed25519 private key, with a clear error for anything else."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read signing key {path}: {exc.strerror or exc}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except TypeError as exc:
        # cryptography raises TypeError for a missing or unexpected password.
        raise SigningKeyError(f"signing key {path}: {exc}") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"{path} is not a PEM private key (or the password is wrong)") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def save_public_key(
    key: Ed25519PublicKey | Ed25519PrivateKey | bytes,
    path: str | os.PathLike[str],
) -> Path:
    """Write the base64 public key and a newline; it is public, so mode 0644."""
    path = Path(path)
    path.write_text(public_key_to_b64(key) + "\n", encoding="ascii")
    return path


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Read a file written by :func:`save_public_key`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningKeyError(f"cannot read public key {path}: {exc}") from exc
    return public_key_from_b64(text)
