"""Check the audit log against the events: leaf hashes, then the stored tree hashes."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core import ledger, tlog_check


class Command(BaseCommand):
    help = (
        "Recompute every event's leaf hash, every stored leaf's hash and every stored tree hash and leaf tile of "
        "the audit log and compare them with what is stored. Exits 1 when anything differs. --repair stores tree "
        "hashes and leaf tiles that are missing (a log restored without them, or recorded before leaf tiles); it "
        "never overwrites one that differs: that means the log was changed."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--repair", action="store_true", help="Store missing tree hashes and leaf tiles.")

    def handle(self, *args: Any, repair: bool, **options: Any) -> None:
        changed = ledger.verify_chain()
        leaves = tlog_check.check_leaves()
        with transaction.atomic():
            if repair:
                ledger.lock()  # no event may be recorded while missing hashes are filled in
            result = tlog_check.check(repair=repair)
        self.stdout.write(f"events: {result.size}, tree hashes recomputed: {result.checked}")
        problems = []
        if changed:
            problems.append(f"events whose data no longer gives their leaf hash: {_some(changed)}")
        if leaves:
            problems.append(f"stored leaves that do not hash to their event's leaf hash: {_some(leaves)}")
        if result.wrong:
            problems.append(f"tree hashes that differ from the events (level, position): {_some(result.wrong)}")
        if result.missing:
            verb = "stored" if repair else "missing (run with --repair to store them)"
            self.stdout.write(f"tree hashes {verb}: {_some(result.missing)}")
        if result.extra:
            problems.append(f"tree hashes for tiles the events do not fill: {_some(result.extra)}")
        if result.tiles_missing:
            verb = "stored" if repair else "not stored (run with --repair to store them; proofs read the events)"
            self.stdout.write(f"leaf tiles {verb}: {_some(result.tiles_missing)}")
        if result.tiles_wrong:
            problems.append(f"leaf tiles that differ from the events' leaf hashes: {_some(result.tiles_wrong)}")
        if result.tiles_extra:
            problems.append(f"leaf tiles the events do not fill: {_some(result.tiles_extra)}")
        if problems:
            raise CommandError("the audit log does not match the events; " + "; ".join(problems))
        if not (result.missing or result.tiles_missing) or repair:
            self.stdout.write("ok")


def _some(items: list[Any], limit: int = 10) -> str:
    shown = ", ".join(str(item) for item in items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown
