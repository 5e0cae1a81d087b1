"""What our members did with hashes a peer sent us, sent back to that peer (docs/federation.md).

Outcomes and withdrawal acknowledgements that members (and downstream peers) report on
hashes imported from a peer go back to it as outcomes of our peer member there,
aggregated per hash, program, kind and day (counts only, no member names), so the
origin's reports, obligations and disputes count what happened on every server.

Exactly once across failures: the batch is the `outcome.reported` events after
`outcomes_cursor` up to `outcomes_sending_through`, fixed in the database before the
POST; each aggregate's client_ref is derived from that batch, so a batch sent again
after a crash is a repeat the peer ignores, and the cursor moves only after the peer
answered.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from core.ledger import Event
from exchange import crypto
from hashes.models import Hash, Submission

from . import remote
from .models import Peer

BATCH_EVENTS = 1000


@dataclass
class PushResult:
    sent: int = 0
    accepted: int = 0
    rejected: int = 0


def _events(peer: Peer, through: int) -> list[Any]:
    ours = [m["ours"] for m in peer.programs]
    return list(
        Event.objects.filter(kind="outcome.reported", seq__gt=peer.outcomes_cursor, seq__lte=through, program__in=ours)
        .exclude(data__member=peer.member.slug)
        .order_by("seq")
        .values_list("seq", "program", "data")
    )


def _batch_end(peer: Peer) -> int:
    """Where the batch to send ends: fixed once chosen, until the peer took it."""
    if peer.outcomes_sending_through > peer.outcomes_cursor:
        return peer.outcomes_sending_through
    ours = [m["ours"] for m in peer.programs]
    seqs = list(
        Event.objects.filter(kind="outcome.reported", seq__gt=peer.outcomes_cursor, program__in=ours)
        .order_by("seq")
        .values_list("seq", flat=True)[:BATCH_EVENTS]
    )
    if not seqs:
        return peer.outcomes_cursor
    with transaction.atomic():
        Peer.objects.filter(pk=peer.pk).update(outcomes_sending_through=seqs[-1])
    peer.outcomes_sending_through = seqs[-1]
    return seqs[-1]


def aggregates(peer: Peer, events: list[Any], *, here: str, first: int, through: int) -> list[dict[str, Any]]:
    """The outcomes to send: per hash imported from this peer, program, kind and day."""
    hash_ids = {int(data["hash_id"]) for _seq, _program, data in events}
    theirs = {m["ours"]: m["theirs"] for m in peer.programs}
    imported = set(
        Submission.objects.filter(hash_id__in=hash_ids, source=f"peer:{peer.slug}"[:64]).values_list(
            "hash_id", "program__slug"
        )
    )
    values = {
        pk: (signal_type, value)
        for pk, signal_type, value in Hash.objects.filter(pk__in=hash_ids).values_list("pk", "signal_type", "value")
    }
    groups: dict[tuple[int, str, str, str], dict[str, Any]] = defaultdict(lambda: {"count": 0, "occurred_at": ""})
    for _seq, program, data in events:
        hash_id = int(data["hash_id"])
        if (hash_id, program) not in imported:
            continue
        group = groups[(hash_id, program, data["kind"], data["occurred_at"][:10])]
        group["count"] += int(data.get("count") or 1)
        group["occurred_at"] = max(group["occurred_at"], data["occurred_at"])
    items = []
    for (hash_id, program, kind, day), group in sorted(groups.items()):
        signal_type, value = values[hash_id]
        ref = hashlib.sha256(f"{here}|{first}|{through}|{hash_id}|{program}|{kind}|{day}".encode()).hexdigest()
        items.append(
            {
                "signal_type": signal_type,
                "value": value,
                "program": theirs[program],
                "kind": kind,
                "occurred_at": group["occurred_at"],
                "count": group["count"],
                "client_ref": f"peer:{ref[:48]}",
            }
        )
    return items


def outcomes_push(*, peer: Peer, api_key: str) -> PushResult:
    """Send the next batches of outcomes back to the peer until none is left; PeerError on failure."""
    result = PushResult()
    here = crypto.server_key_id()
    while True:
        through = _batch_end(peer)
        if through <= peer.outcomes_cursor:
            return result
        events = _events(peer, through)
        items = aggregates(peer, events, here=here, first=peer.outcomes_cursor + 1, through=through)
        for start in range(0, len(items), 1000):
            answer = remote.post_outcomes(peer.base_url, api_key=api_key, items=items[start : start + 1000])
            result.sent += len(items[start : start + 1000])
            result.accepted += int(answer.get("accepted") or 0) + int(answer.get("duplicates") or 0)
            result.rejected += int(answer.get("rejected") or 0)
        with transaction.atomic():
            Peer.objects.filter(pk=peer.pk).update(outcomes_cursor=through)
        peer.outcomes_cursor = through
