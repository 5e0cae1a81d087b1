"""The clearinghouse's own keys: encryption of stored secrets, and its Ed25519 signing key."""

from __future__ import annotations

import base64
import functools

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from hashexchange_client import keys, webhooks


def _derive(secret: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret.encode())


@functools.cache
def _fernet(secret: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(_derive(secret, b"hashexchange secrets at rest v1")))


def encrypt(plaintext: str) -> str:
    return _fernet(settings.SECRETS_ENCRYPTION_KEY).encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    return _fernet(settings.SECRETS_ENCRYPTION_KEY).decrypt(token.encode()).decode()


@functools.cache
def _server_key(seed_b64: str, fallback: str) -> Ed25519PrivateKey:
    if seed_b64:
        try:
            seed = base64.b64decode(seed_b64, validate=True)
            return keys.private_key_from_seed(seed)
        except Exception as exc:  # noqa: BLE001 - any malformed value is a configuration error
            raise ImproperlyConfigured("SERVER_SIGNING_KEY must be standard base64 of a 32-byte seed") from exc
    return Ed25519PrivateKey.from_private_bytes(_derive(fallback, b"hashexchange server signing key v1"))


def server_private_key() -> Ed25519PrivateKey:
    """The clearinghouse's Ed25519 key: v1a webhook signatures, and later signed checkpoints."""
    return _server_key(settings.SERVER_SIGNING_KEY, settings.SECRET_KEY)


def server_public_key_b64() -> str:
    return keys.public_key_to_b64(server_private_key())


def server_public_key_whpk() -> str:
    """The same key in the Standard Webhooks form, `whpk_` + base64."""
    return webhooks.public_key_to_whpk(server_private_key())


def server_key_id() -> str:
    return keys.key_id(server_private_key())
