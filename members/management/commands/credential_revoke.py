from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.ledger import Actor
from members import services
from members.models import ApiCredential

from ._base import run_service


class Command(BaseCommand):
    help = "Revoke an API key, given its prefix (the part after hxk_) or the whole key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("key", help="Prefix or full key.")
        parser.add_argument("--reason", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        key = options["key"]
        prefix = services.parse_token(key) or key.removeprefix("hxk_")
        credential = ApiCredential.objects.select_related("member").filter(prefix=prefix).first()
        if credential is None:
            raise CommandError(f"no API key with prefix {prefix!r}")
        run_service(
            services.credential_revoke,
            credential=credential,
            reason=options["reason"],
            actor=Actor.operator("credential_revoke"),
        )
        self.stdout.write(f"revoked hxk_{credential.prefix}… of {credential.member.slug}")
