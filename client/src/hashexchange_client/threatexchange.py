"""A `threatexchange` (pytx) extension: the exchange's native feed as a SignalExchangeAPI.

Install it into the `threatexchange` CLI with

    threatexchange config extensions add hashexchange_client.threatexchange

or list :class:`HashExchangeSignalExchangeAPI` among Hasher-Matcher-Actioner's exchange
types (docs/platforms.md has both, line by line). Unlike the StopNCII-shaped facade it
carries what the native feed carries:

- **withdrawals**: a hash withdrawn or quarantined in a program (a retirement is a
  withdrawal from every program) comes as a `None` update, so the CLI and HMA delete it;
- **verification**: every envelope is checked against the submitter's Ed25519 key (keys
  arrive in the same feed, before anything they signed) and against the entry it came
  with (same program, signal type and value) before the entry is yielded; an entry that
  fails stops the fetch with :class:`UnverifiableEntryError`, after yielding what came
  before it, so the checkpoint never passes it;
- **a cursor that never skips**: the checkpoint is the feed's sequence number.

Records are keyed by `program/signal_type/value`, so a hash listed in two programs and
withdrawn from one stays matched through the other. `report_opinion` becomes an
outcome (`POST /api/v1/outcomes`) in every program of yours that lists the hash.

This module imports no Django and needs `threatexchange` (the `threatexchange` extra).
"""

import datetime as dt
import hashlib
import logging
import typing as t
from dataclasses import dataclass, field
from typing import Any

from threatexchange.exchanges import auth, signal_exchange_api
from threatexchange.exchanges import fetch_state as state
from threatexchange.exchanges.collab_config import CollaborationConfigBase
from threatexchange.extensions.manifest import ThreatExchangeExtensionManifest
from threatexchange.signal_type.md5 import VideoMD5Signal
from threatexchange.signal_type.pdq.signal import PdqSignal
from threatexchange.signal_type.signal_base import SignalType

from . import dsse, keys, payloads
from .api import ApiError, Client

log = logging.getLogger(__name__)

API_NAME = "hashexchange"
PAGE_SIZE = 1000
# Our signal types that pytx has a type for; the others (phash, dhash, md5 and sha256 of
# image files) are skipped with a warning.
SIGNAL_TYPES: dict[str, type[SignalType]] = {"pdq": PdqSignal, "video_md5": VideoMD5Signal}
# What an opinion becomes (pytx's categories; DISPUTED is an aggregate, never reported).
OPINION_TO_OUTCOME: dict[state.SignalOpinionCategory, str] = {
    state.SignalOpinionCategory.POSITIVE_CLASS: "removed",
    state.SignalOpinionCategory.NEGATIVE_CLASS: "not_violating",
    state.SignalOpinionCategory.INVESTIGATION_SEED: "matched",
}
TOMBSTONES = ("hash.withdrawn", "hash.quarantined")
RecordKey = str  # "program/signal_type/value"


class UnverifiableEntryError(Exception):
    """A feed entry whose envelope does not verify, or that does not say what its envelope says.

    The fetch stops there: everything before it has been yielded with a checkpoint just
    before it, so the next fetch tries this entry again (and fails again until the
    exchange's operator looks into it).
    """

    def __init__(self, seq: int, reason: str) -> None:
        self.seq = seq
        self.reason = reason
        super().__init__(f"feed entry {seq} cannot be verified: {reason}")


@dataclass
class HashExchangeCollabConfig(CollaborationConfigBase):
    """A collaboration with one exchange: its base URL (the API key is a credential)."""

    base_url: str = field(metadata={"help": "the exchange's base URL, e.g. https://exchange.example.org"})


@dataclass
class HashExchangeCredentials(auth.CredentialHelper):
    """An API key of your member (`read` scope to fetch, `outcomes` to report opinions)."""

    ENV_VARIABLE: t.ClassVar[str] = "TX_HASHEXCHANGE_KEY"
    FILE_NAME: t.ClassVar[str] = "~/.tx_hashexchange_key"

    api_key: str = field(metadata={"help": "an API key of your member (hxk_…)"})

    @classmethod
    def _from_str(cls, s: str) -> "HashExchangeCredentials":
        return cls(api_key=s.strip())

    def _are_valid(self) -> bool:
        return bool(self.api_key)


@dataclass
class HashExchangeCheckpoint(state.FetchCheckpointBase):
    """The feed position (a sequence number) and the signing keys seen before it."""

    after: int
    # The time of the newest entry passed (seconds), for progress displays; never goes back.
    progress_time: int
    # key id → base64 Ed25519 public key, and key id → member, from the feed's key events.
    keys: dict[str, str] = field(default_factory=dict)
    key_owners: dict[str, str] = field(default_factory=dict)

    def is_stale(self) -> bool:
        return False  # a sequence number never expires

    def get_progress_timestamp(self) -> int | None:
        return self.progress_time


@dataclass
class HashExchangeSignalMetadata(state.FetchedSignalMetadata):
    """What one program says about one hash: who signed it, and the shared feedback counts."""

    program: str
    hash_id: int
    signed_by: list[str] = field(default_factory=list)  # members whose envelope verified
    feedback: dict[str, int] = field(default_factory=dict)  # outcome kind → reports (shared programs)

    def get_as_opinions(self) -> t.Sequence[state.SignalOpinion]:
        opinions = [state.SignalOpinion(False, state.SignalOpinionCategory.INVESTIGATION_SEED, {self.program})]
        removed = sum(self.feedback.get(k, 0) for k in ("removed", "blocked_at_upload", "restricted"))
        if removed:
            opinions.append(state.SignalOpinion(False, state.SignalOpinionCategory.POSITIVE_CLASS, set()))
        if self.feedback.get("not_violating"):
            opinions.append(state.SignalOpinion(False, state.SignalOpinionCategory.NEGATIVE_CLASS, set()))
        return opinions

    def __str__(self) -> str:
        signed = ",".join(self.signed_by) if self.signed_by else "unsigned"
        return f"{self.get_as_aggregate_opinion().category.name} {self.program} {signed}"


def record_key(program: str, signal_type: str, value: str) -> RecordKey:
    return f"{program}/{signal_type}/{value}"


def _seconds(at: Any) -> int:
    try:
        return int(dt.datetime.fromisoformat(str(at).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


class HashExchangeSignalExchangeAPI(
    auth.SignalExchangeWithAuth[HashExchangeCollabConfig, HashExchangeCredentials],
    signal_exchange_api.SignalExchangeAPI[
        HashExchangeCollabConfig,
        HashExchangeCheckpoint,
        HashExchangeSignalMetadata,
        RecordKey,
        HashExchangeSignalMetadata,
    ],
):
    """The exchange's pull feed (`GET /api/v1/feed`) for pytx: deltas, tombstones, verified envelopes."""

    def __init__(self, collab: HashExchangeCollabConfig, client: Client) -> None:
        self.collab = collab
        self.client = client
        self._parsed: dict[str, Any] = {}  # key id → Ed25519PublicKey, parsed once

    def _keyring(self, checkpoint: HashExchangeCheckpoint) -> dict[str, Any]:
        for key_id, encoded in checkpoint.keys.items():
            if key_id not in self._parsed:
                self._parsed[key_id] = keys.public_key_from_b64(encoded)
        return {key_id: self._parsed[key_id] for key_id in checkpoint.keys}

    @classmethod
    def get_name(cls) -> str:
        return API_NAME

    @staticmethod
    def get_config_cls() -> type[HashExchangeCollabConfig]:
        return HashExchangeCollabConfig

    @staticmethod
    def get_checkpoint_cls() -> type[HashExchangeCheckpoint]:
        return HashExchangeCheckpoint

    @staticmethod
    def get_record_cls() -> type[HashExchangeSignalMetadata]:
        return HashExchangeSignalMetadata

    @staticmethod
    def get_credential_cls() -> type[HashExchangeCredentials]:
        return HashExchangeCredentials

    @classmethod
    def for_collab(
        cls, collab: HashExchangeCollabConfig, credentials: HashExchangeCredentials | None = None
    ) -> "HashExchangeSignalExchangeAPI":
        credentials = credentials or HashExchangeCredentials.get(cls)
        if not collab.base_url:
            raise auth.SignalExchangeAPIInvalidAuthException(cls, f"collab {collab.name} has no base_url")
        return cls(collab, Client(collab.base_url, credentials.api_key, retries=3))

    # Fetching ----------------------------------------------------------------------------

    def fetch_iter(
        self,
        supported_signal_types: t.Sequence[type[SignalType]],
        checkpoint: HashExchangeCheckpoint | None,
    ) -> t.Iterator[state.FetchDelta[RecordKey, HashExchangeSignalMetadata, HashExchangeCheckpoint]]:
        """Page through the feed from the checkpoint; one delta per page.

        Each entry is turned into an update (or a tombstone) only after its envelope
        verified; key events extend the keyring kept in the checkpoint. On an entry that
        fails, what came before it is yielded with a checkpoint just before it, then
        :class:`UnverifiableEntryError` is raised.
        """
        wanted = {s.get_name() for s in supported_signal_types}
        current = checkpoint or HashExchangeCheckpoint(after=0, progress_time=0)
        while True:
            page = self._page(current.after)
            entries = page["entries"]
            working = HashExchangeCheckpoint(
                after=current.after,
                progress_time=current.progress_time,
                keys=dict(current.keys),
                key_owners=dict(current.key_owners),
            )
            updates: dict[RecordKey, HashExchangeSignalMetadata | None] = {}
            processed: list[int] = []
            failure: UnverifiableEntryError | None = None
            for entry in entries:
                seq = entry.get("seq")
                if not isinstance(seq, int):
                    failure = UnverifiableEntryError(current.after + 1, "an entry without a sequence number")
                    break
                try:
                    self._apply(entry, working, updates, wanted)
                except UnverifiableEntryError as exc:
                    failure = exc
                    break
                processed.append(seq)
                working.progress_time = max(working.progress_time, _seconds(entry.get("at")))
            if failure is None:
                working.after = max(page["next"], current.after)
            else:
                # Up to the last event all of whose entries were processed (an imported
                # group shares one sequence number), never past the one that failed.
                working.after = max([current.after, *(s for s in processed if s < failure.seq)])
            if updates or working != current:
                yield state.FetchDelta(updates, working)
            if failure is not None:
                raise failure
            current = working
            if not page.get("has_more"):
                return

    def _page(self, after: int) -> dict[str, Any]:
        try:
            return self.client.feed_page(after, PAGE_SIZE)
        except ApiError as exc:
            if exc.status in (401, 403):
                raise auth.SignalExchangeAPIInvalidAuthException(
                    type(self), f"the exchange refused the API key: {exc.detail}"
                ) from exc
            raise

    def _apply(
        self,
        entry: dict[str, Any],
        checkpoint: HashExchangeCheckpoint,
        updates: dict[RecordKey, HashExchangeSignalMetadata | None],
        wanted: set[str],
    ) -> None:
        kind, seq = entry.get("kind"), entry["seq"]
        if kind == "key.registered":
            key = entry.get("key") or {}
            if key.get("algorithm", "ed25519") != "ed25519":
                return
            try:
                parsed = keys.public_key_from_b64(str(key.get("public_key", "")))
            except keys.SigningKeyError as exc:
                raise UnverifiableEntryError(seq, f"a registered key that cannot be read: {exc}") from exc
            if key.get("key_id") != keys.key_id(parsed):
                raise UnverifiableEntryError(seq, "a registered key whose key_id is not the SHA-256 of the key")
            self._parsed[key["key_id"]] = parsed
            checkpoint.keys[key["key_id"]] = str(key["public_key"])
            checkpoint.key_owners[key["key_id"]] = str(key.get("member", ""))
            return
        if kind == "key.revoked":
            return  # signatures made before a revocation stay valid; the server refuses later ones
        found = entry.get("hash")
        program = entry.get("program")
        if not isinstance(found, dict) or not isinstance(program, str):
            return  # an entry kind this version does not know
        signal_type, value = found.get("signal_type"), found.get("value")
        if not isinstance(signal_type, str) or not isinstance(value, str):
            raise UnverifiableEntryError(seq, "the entry names no signal type or value")
        pytx_type = SIGNAL_TYPES.get(signal_type)
        if pytx_type is None:
            log.warning("skipping feed entry %s: signal type %r has no threatexchange equivalent", seq, signal_type)
            return
        if pytx_type.get_name() not in wanted:
            return
        key = record_key(program, pytx_type.get_name(), value)
        if kind in TOMBSTONES:
            # A member's withdrawal is signed: check it; an operator's carries no envelope.
            for envelope in entry.get("envelopes") or []:
                self._verify(envelope, checkpoint, seq, program, signal_type, value, payloads.WITHDRAWAL_TYPE)
            updates[key] = None
            return
        if kind == "hash.added":
            signers = [
                self._verify(envelope, checkpoint, seq, program, signal_type, value, payloads.SUBMISSION_TYPE)
                for envelope in entry.get("envelopes") or []
            ]
            if not signers and entry.get("signed", False):
                raise UnverifiableEntryError(seq, "the entry says it is signed but carries no envelope")
        elif kind == "hash.restored":
            restored = self._restored_signers(entry, checkpoint, program, signal_type, value)
            if restored is None:
                return
            signers = restored
        else:
            return
        feedback = entry.get("feedback") or {}
        updates[key] = HashExchangeSignalMetadata(
            program=program,
            hash_id=int(found.get("id") or 0),
            signed_by=sorted(set(signers)),
            feedback={k: v for k, v in feedback.items() if isinstance(v, int)},
        )

    def _restored_signers(
        self, entry: dict[str, Any], checkpoint: HashExchangeCheckpoint, program: str, signal_type: str, value: str
    ) -> list[str] | None:
        """A restored hash carries no envelope: verify what supports it now (GET /api/v1/hashes/{id}).

        None when it is no longer active in the program (a later entry of the feed says
        so, and is applied in turn); an unsigned supporter (an operator's import, a
        program's unsigned submitter) counts as in the feed, shown as `unsigned`.
        """
        try:
            detail = self.client.hash_detail(int(entry["hash"]["id"]))
        except ApiError as exc:
            if exc.status == 404:  # no longer visible to us: nothing to restore
                return None
            raise
        listings = [item for item in detail.get("programs") or [] if item.get("program") == program]
        if detail.get("status") != "active" or not any(item.get("status") == "active" for item in listings):
            return None
        signers: list[str] = []
        unsigned = any(item.get("imported_from") for item in listings)
        for submission in detail.get("submissions") or []:
            if submission.get("program") != program or submission.get("status") != "active":
                continue
            envelope = submission.get("envelope")
            if not envelope:
                unsigned = True
                continue
            signers.append(
                self._verify(envelope, checkpoint, entry["seq"], program, signal_type, value, payloads.SUBMISSION_TYPE)
            )
        if not signers and not unsigned:
            raise UnverifiableEntryError(entry["seq"], "a restored hash with no supporting submission in its program")
        return signers

    def _verify(
        self,
        envelope: Any,
        checkpoint: HashExchangeCheckpoint,
        seq: int,
        program: str,
        signal_type: str,
        value: str,
        payload_type: str,
    ) -> str:
        """The member who signed `envelope`, if it verifies and says what the entry says."""
        try:
            opened = dsse.open_envelope(envelope, self._keyring(checkpoint), payload_type)
            claims = payloads.parse_payload(opened.payload)
        except (dsse.EnvelopeError, payloads.PayloadError) as exc:
            raise UnverifiableEntryError(seq, str(exc)) from exc
        said = (claims.get("program"), claims.get("signal_type"), claims.get("value"))
        if said != (program, signal_type, value):
            raise UnverifiableEntryError(seq, "the envelope is about another program or hash than its entry")
        return checkpoint.key_owners.get(opened.key_id, "") or opened.key_id

    # Converting and merging --------------------------------------------------------------

    @classmethod
    def naive_convert_to_signal_type(
        cls,
        signal_types: t.Sequence[type[SignalType]],
        collab: HashExchangeCollabConfig,
        fetched: t.Mapping[RecordKey, HashExchangeSignalMetadata],
    ) -> dict[type[SignalType], dict[str, HashExchangeSignalMetadata]]:
        by_name = {s.get_name(): s for s in signal_types}
        converted: dict[type[SignalType], dict[str, HashExchangeSignalMetadata]] = {}
        for key, metadata in fetched.items():
            if metadata is None:
                continue
            _program, type_name, value = key.split("/", 2)
            signal_type = by_name.get(type_name)
            if signal_type is None:
                continue
            converted.setdefault(signal_type, {})[value] = metadata
        return converted

    # Opinions ----------------------------------------------------------------------------

    def report_opinion(self, s_type: type[SignalType], signal: str, opinion: state.SignalOpinion) -> None:
        """Record an opinion as an outcome in each of your programs that lists the hash.

        POSITIVE_CLASS is `removed`, NEGATIVE_CLASS `not_violating` (it counts toward a
        dispute), INVESTIGATION_SEED `matched`; the opinion's tags go along as outcome tags.
        The same opinion twice on one day records one outcome. Raises ValueError (what
        pytx's callers catch) for a hash you were not sent or an opinion that was refused.
        """
        kind = OPINION_TO_OUTCOME.get(opinion.category)
        if kind is None:
            raise ValueError(f"{opinion.category.name} cannot be reported; report one member's opinion")
        ours = {name: pytx for name, pytx in SIGNAL_TYPES.items() if pytx is s_type}
        if not ours:
            raise ValueError(f"the exchange carries no {s_type.get_name()} hashes")
        signal_type = next(iter(ours))
        try:
            results = self.client.match([{"signal_type": signal_type, "value": signal}])
        except ApiError as exc:
            raise ValueError(f"cannot look up the hash: {exc}") from exc
        exact = [m for m in results[0].get("matches", []) if m.get("value") == signal.lower()]
        if not exact:
            raise ValueError("no hash with this value was sent to you")
        # An opinion is a state, not an event: the same one again on the same day is a
        # duplicate (same client_ref, same report), so the day is its time.
        day = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        now = day.isoformat()
        tags = sorted(opinion.tags)
        items = []
        for found in exact:
            for program in found.get("programs", []):
                ref = hashlib.sha256(f"{found['hash_id']}:{program}:{kind}:{','.join(tags)}:{now}".encode()).hexdigest()
                items.append(
                    {
                        "hash_id": found["hash_id"],
                        "program": program,
                        "kind": kind,
                        "occurred_at": now,
                        "tags": tags,
                        "client_ref": f"pytx:{ref[:40]}",
                    }
                )
        answer = self.client.report_outcomes(items)
        refused = [r for r in answer.get("results", []) if r.get("status") == "rejected"]
        if refused:
            error = refused[0].get("error") or {}
            raise ValueError(f"the exchange refused the opinion: {error.get('detail', 'rejected')}")


TX_MANIFEST = ThreatExchangeExtensionManifest(apis=(HashExchangeSignalExchangeAPI,))
