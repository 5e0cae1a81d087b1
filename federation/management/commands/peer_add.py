from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.ledger import Actor
from core.problems import Problem
from federation import services


class Command(BaseCommand):
    help = (
        "Add a peer clearinghouse: fetch and pin its server key, store our API key there encrypted, "
        "and create its peer member here if missing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="Our name for the peer (also its member's slug here).")
        parser.add_argument("--url", required=True, help="The peer's base URL, e.g. https://exchange.example.org")
        parser.add_argument("--key", required=True, help="Our API key at the peer (a member of kind peer there).")
        parser.add_argument(
            "--program",
            action="append",
            default=[],
            help="THEIRS[:OURS]: their program slug, and ours if it differs; repeat for several.",
        )
        parser.add_argument("--hop-limit", type=int, default=services.DEFAULT_HOP_LIMIT)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            peer = services.peer_create(
                slug=options["slug"],
                base_url=options["url"],
                api_key=options["key"],
                programs=options["program"],
                hop_limit=options["hop_limit"],
                actor=Actor.operator("peer_add"),
            )
        except Problem as exc:
            lines = [f"{k}: {'; '.join(v)}" for k, v in exc.errors.items()] if exc.errors else [exc.detail]
            raise CommandError("\n".join(lines)) from None
        flows = ", ".join(f"{m['theirs']} -> {m['ours']}" for m in peer.programs)
        self.stdout.write(f"added peer {peer.slug} at {peer.base_url}, server key {peer.server_key_id} pinned; {flows}")
