"""The steps every admin decision on an open quarantine or hold takes, written once.

Disputes (exchange/outcomes.py), match-rate anomalies (floods.py) and held batches
(holds.py) each wait for an admin who decides them one way or the other, with a reason
that goes into the log. `decide_open` checks the decision and the reason, takes the
ledger lock and the row's, refuses a row already decided, and stamps who decided what,
when and why; the caller then records its events in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from django.db import models
from django.utils import timezone

from core import ledger
from core.ledger import Actor
from core.problems import Problem

Decided = TypeVar("Decided", bound=models.Model)

OPEN = "open"


def decide_open(
    *,
    model: type[Decided],
    pk: int,
    decision: str,
    choices: Sequence[str],
    reason: str,
    actor: Actor,
    related: Sequence[str] = (),
) -> Decided:
    """Lock the open row `pk` of `model` and stamp the decision on it; the caller records the rest.

    Steps:
    1. Refuse a decision not among `choices`, or an empty reason (it is recorded in the log).
    2. Take the ledger lock, then the row's (`related` rows are read with it).
    3. Refuse a row that is no longer open (decided by someone else meanwhile).
    4. Set status, decided_at, decided_by and decision_reason.
    """
    if decision not in choices:
        raise Problem.field("decision", f"decide {' or '.join(choices)}")
    if not reason.strip():
        raise Problem.field("reason", "give a reason; it is recorded in the log")
    ledger.lock()
    row = model._default_manager.select_for_update().select_related(*related).get(pk=pk)
    status = row.status  # type: ignore[attr-defined]
    if status != OPEN:
        raise Problem.field("decision", f"this {model._meta.verbose_name} was already decided: {status}")
    row.status, row.decided_at, row.decided_by, row.decision_reason = (  # type: ignore[attr-defined]
        decision,
        timezone.now(),
        actor.id,
        reason[:500],
    )
    row.save(update_fields=["status", "decided_at", "decided_by", "decision_reason"])
    return row
