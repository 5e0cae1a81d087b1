"""Where a hash came from, in a form every downstream server and member can check.

A feed entry for a signed hash (and for a signed withdrawal) carries an `origin`:

    {"server": <origin server key id>, "server_public_key": <base64 Ed25519>,
     "member": <origin member slug>, "program": <origin program slug>,
     "path": [<server key id>, ...],       # origin first, the server that answers last
     "key_binding": <DSSE envelope>}

The key binding is the origin server's statement "this member of mine registered this
signing key, valid from then", a DSSE envelope of type KEY_BINDING_TYPE signed with
the origin server's key (the one it publishes at GET /api/v1/server-key). With it, a
member three hops away checks the member's envelope against the key the binding
names, and the binding against the origin server's key, trusting no server in between
(docs/federation.md). The payload is canonical JSON (sorted keys, no spaces), so a
binding made twice is the same bytes (Ed25519 signatures are deterministic too).

Pure logic except `attest`, which signs with this server's key.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hashexchange_client import dsse, keys

from core.problems import Problem

KEY_BINDING_TYPE = "application/vnd.hashexchange.key-binding+json"
BINDING_FIELDS = ("key_id", "member", "public_key", "server", "valid_from")
# The origin server's statement that one of its members' keys is revoked from a time on.
KEY_REVOCATION_TYPE = "application/vnd.hashexchange.key-revocation+json"
REVOCATION_FIELDS = ("key_id", "member", "revoked_at", "server")


def binding_payload(*, server: str, member: str, key_id: str, public_key_b64: str, valid_from: str) -> bytes:
    """The exact bytes the origin server signs: canonical JSON of BINDING_FIELDS."""
    data = {
        "key_id": key_id,
        "member": member,
        "public_key": public_key_b64,
        "server": server,
        "valid_from": valid_from,
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@functools.lru_cache(maxsize=4096)
def _attest_cached(member: str, key_id: str, public_key_b64: str, valid_from: str, seed: bytes) -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.from_private_bytes(seed)
    payload = binding_payload(
        server=keys.key_id(private), member=member, key_id=key_id, public_key_b64=public_key_b64, valid_from=valid_from
    )
    return json.dumps(dsse.sign_envelope(KEY_BINDING_TYPE, payload, private))


def attest(*, member: str, key_id: str, public_key_b64: str, valid_from: dt.datetime) -> dict[str, Any]:
    """This server's signed key binding for one of its members' keys (cached per key)."""
    from cryptography.hazmat.primitives import serialization

    from . import crypto

    seed = crypto.server_private_key().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return json.loads(_attest_cached(member, key_id, public_key_b64, format_valid_from(valid_from), seed))


def format_valid_from(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_origin(
    *, server: str, server_public_key: str, member: str, program: str, key_id: str, public_key: bytes, valid_from: Any
) -> dict[str, Any]:
    """The origin of something a member of this server signed."""
    public_key_b64 = base64.b64encode(public_key).decode()
    return {
        "server": server,
        "server_public_key": server_public_key,
        "member": member,
        "program": program,
        "path": [server],
        "key_binding": attest(member=member, key_id=key_id, public_key_b64=public_key_b64, valid_from=valid_from),
    }


def relayed_origin(stored: Mapping[str, Any], *, server: str) -> dict[str, Any]:
    """The origin of an imported entry as this server passes it on: itself appended to the path."""
    return {**stored, "path": [*stored["path"], server]}


@dataclass(frozen=True)
class CheckedOrigin:
    """An origin whose key binding verified: the member's key to check its envelopes with."""

    server: str
    member: str
    program: str
    path: tuple[str, ...]
    key_id: str
    public_key: bytes
    valid_from: str


def check_origin(origin: Any) -> CheckedOrigin:
    """Check an origin's shape and its key binding against the origin server's key.

    Steps: the origin server's public key must have the key id the origin names (a key
    id is the SHA-256 of the key, so the name cannot point at another key); the binding
    must be signed by that key; its payload must name the same server and member.
    Raises Problem("binding_not_attested") or Problem("malformed_origin").
    """
    if not isinstance(origin, Mapping):
        raise Problem("malformed_origin", "the entry carries no origin")
    try:
        server, member, program = str(origin["server"]), str(origin["member"]), str(origin["program"])
        path = tuple(str(p) for p in origin["path"])
        server_key = keys.public_key_from_b64(str(origin["server_public_key"]))
        binding = origin["key_binding"]
    except (KeyError, TypeError, ValueError) as exc:
        raise Problem("malformed_origin", f"the entry's origin is incomplete: {exc}") from None
    if not path or path[0] != server:
        raise Problem("malformed_origin", "the origin's path must start at the origin server")
    if keys.key_id(server_key) != server:
        raise Problem("binding_not_attested", "the origin server's public key does not have the origin's key id")
    try:
        payload = dsse.verify_envelope(binding, {server: server_key}, KEY_BINDING_TYPE)
    except dsse.EnvelopeError as exc:
        raise Problem("binding_not_attested", f"the key binding is not signed by the origin server: {exc}") from None
    try:
        data = json.loads(payload)
        public_key = base64.b64decode(data["public_key"], validate=True)
        fields = {name: data[name] for name in BINDING_FIELDS}
    except (ValueError, KeyError, TypeError) as exc:
        raise Problem("binding_not_attested", f"the key binding's payload is malformed: {exc}") from None
    if fields["server"] != server or fields["member"] != member:
        raise Problem("binding_not_attested", "the key binding is for another server or member than the origin")
    if len(public_key) != 32 or keys.key_id(public_key) != fields["key_id"]:
        raise Problem("binding_not_attested", "the key binding's key id does not match its key")
    return CheckedOrigin(
        server=server,
        member=member,
        program=program,
        path=path,
        key_id=fields["key_id"],
        public_key=public_key,
        valid_from=str(fields["valid_from"]),
    )


def open_signed(envelope: Any, origin: CheckedOrigin, payload_type: str) -> bytes:
    """The payload of an envelope signed with the origin member's bound key, or Problem("bad_envelope")."""
    try:
        return dsse.open_envelope(
            envelope, {origin.key_id: origin.public_key}, payload_type, fallback_keys={origin.key_id: origin.public_key}
        ).payload
    except dsse.EnvelopeError as exc:
        raise Problem("bad_envelope", f"the envelope does not verify with the origin member's key: {exc}") from None


# Key revocations ---------------------------------------------------------------------------
#
# A `key.revoked` feed entry for a key of one of this server's members carries an origin
# like a signed hash's, whose `revocation` is a DSSE envelope of KEY_REVOCATION_TYPE signed
# with the origin server's key: canonical JSON of REVOCATION_FIELDS. It travels with the
# entry (the path grows at each hop); a downstream server accepts it only for a key it
# imported with a binding attested by that same server for that same member.


def revocation_payload(*, server: str, member: str, key_id: str, revoked_at: str) -> bytes:
    data = {"key_id": key_id, "member": member, "revoked_at": revoked_at, "server": server}
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@functools.lru_cache(maxsize=1024)
def _attest_revocation_cached(member: str, key_id: str, revoked_at: str, seed: bytes) -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.from_private_bytes(seed)
    payload = revocation_payload(server=keys.key_id(private), member=member, key_id=key_id, revoked_at=revoked_at)
    return json.dumps(dsse.sign_envelope(KEY_REVOCATION_TYPE, payload, private))


def format_revoked_at(value: str) -> str:
    """A revocation time as the key.revoked event recorded it (ISO 8601), in the binding's spelling."""
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def local_revocation_origin(*, server: str, server_public_key: str, member: str, key_id: str, revoked_at: str) -> dict:
    """The origin of a revocation of a key of this server's member: this server's signed statement."""
    from cryptography.hazmat.primitives import serialization

    from . import crypto

    seed = crypto.server_private_key().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return {
        "server": server,
        "server_public_key": server_public_key,
        "member": member,
        "path": [server],
        "revocation": json.loads(_attest_revocation_cached(member, key_id, format_revoked_at(revoked_at), seed)),
    }


@dataclass(frozen=True)
class CheckedRevocation:
    server: str
    member: str
    key_id: str
    revoked_at: dt.datetime
    path: tuple[str, ...]


def check_revocation(origin: Any, key_id: str) -> CheckedRevocation:
    """Check a revocation's origin: the server key matches its id, the statement is signed by it,
    and names that server, the origin's member and `key_id`. Problem("binding_not_attested") otherwise."""
    if not isinstance(origin, Mapping):
        raise Problem("binding_not_attested", "the revocation carries no origin")
    try:
        server, member = str(origin["server"]), str(origin["member"])
        path = tuple(str(p) for p in origin["path"])
        server_key = keys.public_key_from_b64(str(origin["server_public_key"]))
        statement = origin["revocation"]
    except (KeyError, TypeError, ValueError) as exc:
        raise Problem("binding_not_attested", f"the revocation's origin is incomplete: {exc}") from None
    if not path or path[0] != server or keys.key_id(server_key) != server:
        raise Problem("binding_not_attested", "the revocation's server key does not match its key id or path")
    try:
        data = json.loads(dsse.verify_envelope(statement, {server: server_key}, KEY_REVOCATION_TYPE))
        fields = {name: str(data[name]) for name in REVOCATION_FIELDS}
        revoked_at = dt.datetime.fromisoformat(fields["revoked_at"].replace("Z", "+00:00"))
    except dsse.EnvelopeError as exc:
        raise Problem("binding_not_attested", f"the revocation is not signed by the origin server: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise Problem("binding_not_attested", f"the revocation's payload is malformed: {exc}") from None
    if (fields["server"], fields["member"], fields["key_id"]) != (server, member, key_id):
        raise Problem("binding_not_attested", "the revocation is for another server, member or key than the entry")
    return CheckedRevocation(server=server, member=member, key_id=key_id, revoked_at=revoked_at, path=path)
