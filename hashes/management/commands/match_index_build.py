"""Build this host's matching-index snapshots now (what Celery beat does every minute).

For hosts without a Celery worker (each host keeps its own snapshot in MATCH_INDEX_DIR),
for a first start after a large import, and for operators who want a full rebuild.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from hashes import matching


class Command(BaseCommand):
    help = "Write new matching-index snapshots (merge new hashes, or --full from the database)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--full", action="store_true", help="Rebuild from the database (drops retired hashes).")
        parser.add_argument("--force", action="store_true", help="Write a snapshot even if few hashes are new.")

    def handle(self, *args: Any, full: bool, force: bool, **options: Any) -> None:
        for signal_type in matching.INDEXED:
            result = matching.index_build(signal_type=signal_type, full=full, min_tail=1 if force else None)
            where = result.path.name if result.path else "unchanged"
            self.stdout.write(f"{signal_type}: {result.count} hashes to event {result.seq} ({result.reason}) {where}")
