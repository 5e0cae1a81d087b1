from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.ledger import Actor
from members import services
from members.models import Member, Program

from ._base import run_service


class Command(BaseCommand):
    help = (
        "Let a member's compatibility client (StopNCII SubmitHashes) submit unsigned hashes to a program, "
        "or stop it with --revoke. Unsigned submissions are recorded as such."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("program")
        parser.add_argument("member")
        parser.add_argument("--revoke", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        program = Program.objects.filter(slug=options["program"]).first()
        member = Member.objects.filter(slug=options["member"]).first()
        if program is None:
            raise CommandError(f"unknown program {options['program']!r}")
        if member is None:
            raise CommandError(f"unknown member {options['member']!r}")
        run_service(
            services.program_allow_unsigned,
            program=program,
            member=member,
            allow=not options["revoke"],
            actor=Actor.operator("program_allow_unsigned"),
        )
        verb = "may no longer" if options["revoke"] else "may now"
        self.stdout.write(f"{member.slug} {verb} submit unsigned hashes to {program.slug}")
