from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.ledger import Actor
from core.problems import Problem
from federation import services
from federation.models import Peer


class Command(BaseCommand):
    help = "Run one full sync with a peer now (pull its feed from our cursor) and print what moved."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--repin", action="store_true", help="Pin the server key the peer publishes now first.")
        parser.add_argument("--from-zero", action="store_true", help="Read the peer's feed again from the start.")

    def handle(self, *args: Any, **options: Any) -> None:
        peer = Peer.objects.filter(slug=options["slug"]).first()
        if peer is None:
            raise CommandError(f"no peer called {options['slug']!r}; add it with manage.py peer_add")
        actor = Actor.operator("peer_sync")
        try:
            if options["repin"]:
                peer = services.peer_repin(peer=peer, actor=actor)
            if options["from_zero"]:
                peer = services.peer_resync(peer=peer, actor=actor)
        except Problem as exc:
            raise CommandError(exc.detail) from None
        if not services.peer_claim(peer.pk):
            raise CommandError(f"peer {peer.slug} is being synced by a worker right now, or is {peer.status}")
        try:
            result = services.peer_sync(peer=Peer.objects.get(pk=peer.pk))
        finally:
            services.peer_release(peer.pk)
        self.stdout.write(f"peer {peer.slug}: {result.summary()}")
        if result.error:
            raise CommandError(result.error)
