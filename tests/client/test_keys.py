"""Signing keys: files, permissions, encodings and key ids."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from hashexchange_client import keys
from hashexchange_client.keys import SigningKeyError


def test_save_and_load_private_key(tmp_path: Path) -> None:
    key = keys.generate_private_key()
    path = keys.save_private_key(key, tmp_path / "k.pem")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert keys.key_id(keys.load_private_key(path)) == keys.key_id(key)


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    first = keys.generate_private_key()
    keys.save_private_key(first, path)
    with pytest.raises(SigningKeyError, match="refusing to overwrite"):
        keys.save_private_key(keys.generate_private_key(), path)
    assert keys.key_id(keys.load_private_key(path)) == keys.key_id(first)

    path.chmod(0o644)
    second = keys.generate_private_key()
    keys.save_private_key(second, path, overwrite=True)
    assert keys.key_id(keys.load_private_key(path)) == keys.key_id(second)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_password_protected_key(tmp_path: Path) -> None:
    key = keys.generate_private_key()
    path = keys.save_private_key(key, tmp_path / "k.pem", password=b"correct horse")
    assert keys.key_id(keys.load_private_key(path, password=b"correct horse")) == keys.key_id(key)
    with pytest.raises(SigningKeyError):
        keys.load_private_key(path)
    with pytest.raises(SigningKeyError):
        keys.load_private_key(path, password=b"wrong")


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="cannot read"):
        keys.load_private_key(tmp_path / "missing.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(SigningKeyError, match="not a PEM private key"):
        keys.load_private_key(junk)


def test_rejects_other_key_types(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "ec.pem"
    path.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SigningKeyError, match="not an Ed25519 key"):
        keys.load_private_key(path)


def test_public_key_round_trip(tmp_path: Path) -> None:
    key = keys.private_key_from_seed(bytes(32))
    path = keys.save_public_key(key, tmp_path / "k.pub")
    assert path.read_text().endswith("=\n")
    loaded = keys.load_public_key(path)
    assert keys.public_key_bytes(loaded) == keys.public_key_bytes(key)
    assert keys.public_key_from_b64(keys.public_key_to_b64(key)) == loaded


def test_key_id_is_sha256_of_raw_public_key() -> None:
    key = keys.private_key_from_seed(bytes(range(32)))
    raw = keys.public_key_bytes(key)
    assert len(raw) == 32
    expected = hashlib.sha256(raw).hexdigest()
    assert keys.key_id(key) == keys.key_id(key.public_key()) == keys.key_id(raw) == expected
    assert len(expected) == 64 and expected == expected.lower()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg", "base64"),  # no padding
        ("A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=", "base64"),  # URL-safe
        ("AAAA", "32 bytes"),
        ("A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbh=", "canonical"),
    ],
)
def test_public_key_from_b64_is_strict(text: str, message: str) -> None:
    with pytest.raises(SigningKeyError, match=message):
        keys.public_key_from_b64(text)


def test_seed_must_be_32_bytes() -> None:
    with pytest.raises(SigningKeyError):
        keys.private_key_from_seed(bytes(31))
