"""manage.py ledger_verify: is the event log whole? For restored backups and periodic checks."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count, Max, Min

from core.ledger import Event, verify_chain


class Command(BaseCommand):
    help = (
        "Check the event log: sequence numbers run from 1 without a gap, and every stored leaf hash "
        "matches its event. Prints the count and the last sequence number; exits 1 on any fault."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--after", type=int, default=0, help="Check only the events after this sequence number.")

    def handle(self, *args: Any, **options: Any) -> None:
        figures = Event.objects.aggregate(count=Count("seq"), first=Min("seq"), last=Max("seq"))
        count, first, last = figures["count"], figures["first"], figures["last"]
        faults = []
        if count and (first != 1 or last != count):
            faults.append(f"sequence numbers run from {first} to {last} but there are {count} events (a gap)")
        bad = verify_chain(after=options["after"])
        if bad:
            shown = ", ".join(str(seq) for seq in bad[:20]) + (" …" if len(bad) > 20 else "")
            faults.append(f"{len(bad)} event(s) whose leaf hash does not match: {shown}")
        if faults:
            raise CommandError("; ".join(faults))
        self.stdout.write(f"ledger ok: {count} events, last seq {last or 0}, every leaf hash matches")
