from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from core.ledger import Actor
from members import services
from members.models import Member

from ._base import run_service


class Command(BaseCommand):
    help = "Issue an API key for a member. The key is printed once, on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="Member slug.")
        parser.add_argument("--name", default="", help="What the key is for.")
        parser.add_argument(
            "--scopes", default="", help="Comma-separated; default: the usual scopes of the member's kind."
        )
        parser.add_argument("--expires-days", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        member = Member.objects.filter(slug=options["slug"]).first()
        if member is None:
            raise CommandError(f"unknown member {options['slug']!r}")
        expires_at = None
        if options["expires_days"] is not None:
            expires_at = timezone.now() + dt.timedelta(days=options["expires_days"])
        credential, token = run_service(
            services.credential_issue,
            member=member,
            name=options["name"],
            scopes=[s for s in options["scopes"].split(",") if s] or None,
            expires_at=expires_at,
            actor=Actor.operator("credential_issue"),
        )
        self.stderr.write(
            f"issued key hxk_{credential.prefix}… for {member.slug} with scopes {', '.join(credential.scopes)}"
        )
        self.stderr.write("store it now: it is not shown again")
        self.stdout.write(token)
