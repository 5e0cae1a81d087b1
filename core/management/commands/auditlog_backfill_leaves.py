"""Store the leaf data of events recorded before stored leaves existed (core/tlog_check.py)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core import tlog_check


class Command(BaseCommand):
    help = (
        "Store each event's leaf data (the bytes its leaf hash is the SHA-256 of) for the events recorded "
        "before the audit log stored them, so that it serves them without encoding every event again. "
        "Batched, one short transaction per batch, inserts only: run it while the exchange runs; run it again "
        "to resume. An event whose row no longer gives its leaf hash gets no stored leaf and is reported "
        "(exit 1): see manage.py auditlog_check."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--batch", type=int, default=5000, help="Events per transaction (default 5000).")
        parser.add_argument("--after", type=int, default=0, help="Start after this seq (default: the first event).")

    def handle(self, *args: Any, batch: int, after: int, **options: Any) -> None:
        result = tlog_check.BackfillResult(0, [])
        for last, result in tlog_check.backfill_leaves(batch=max(1, batch), after=max(0, after)):
            if options["verbosity"] > 1:
                self.stdout.write(f"up to event {last}: {result.stored} leaves stored")
        self.stdout.write(f"stored leaves: {result.stored}")
        if result.changed:
            shown = ", ".join(str(seq) for seq in result.changed[:10])
            raise CommandError(
                f"{len(result.changed)} events no longer give the leaf hash they were recorded with "
                f"(no leaf stored for them): {shown}"
            )
