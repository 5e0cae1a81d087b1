"""Writes to hashes, one module per seam; each service records its events.

- `store`: the one path that stores a batch of submissions, signed or unsigned;
- `submissions`: signed submission envelopes, checked item by item;
- `unsigned`: a facade's unsigned hashes, for the members a program names;
- `withdrawals`: signed withdrawals, and admins' decisions to withdraw or retire;
- `signed`: the checks every signed envelope passes first;
- `floods`: the benign list and match-rate quarantines (docs/floods.md);
- `holds`: submissions held for review (submitter trust, bursts) and their release;
- `decisions`: the steps every admin decision on an open quarantine or hold takes.
"""

from __future__ import annotations

from .decisions import decide_open
from .floods import anomaly_decide, anomaly_quarantine, benign_add, benign_add_hash, benign_remove
from .holds import held_batch_decide
from .signed import check_signed_time, verify_signed
from .store import ItemResult
from .submissions import submissions_create
from .unsigned import UnsignedItem, unsigned_check_program, unsigned_submissions_create
from .withdrawals import (
    WithdrawalResult,
    hash_restore,
    hash_set_status,
    submissions_withdraw_relayed,
    withdrawal_create,
    withdrawal_store_relayed,
)

__all__ = [
    "ItemResult",
    "anomaly_decide",
    "anomaly_quarantine",
    "benign_add",
    "benign_add_hash",
    "benign_remove",
    "UnsignedItem",
    "WithdrawalResult",
    "check_signed_time",
    "decide_open",
    "held_batch_decide",
    "hash_restore",
    "hash_set_status",
    "submissions_create",
    "submissions_withdraw_relayed",
    "unsigned_check_program",
    "unsigned_submissions_create",
    "verify_signed",
    "withdrawal_create",
    "withdrawal_store_relayed",
]
