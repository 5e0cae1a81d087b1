from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from core.ledger import Actor
from members import services
from members.models import Member, Program

from ._base import run_service


class Command(BaseCommand):
    help = "Create an active member, enrolled in the given programs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--kind", required=True, choices=Member.Kind.values)
        parser.add_argument("--program", action="append", default=[], help="Program slug; repeat for several.")
        parser.add_argument("--pending", action="store_true", help="Leave the member pending instead of active.")

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.operator("member_create")
        programs = []
        for slug in options["program"]:
            program = Program.objects.filter(slug=slug).first()
            if program is None:
                raise CommandError(f"unknown program {slug!r}; create it with `manage.py program_create {slug}`")
            programs.append(program)
        with transaction.atomic():
            member = run_service(
                services.member_create,
                slug=options["slug"],
                name=options["name"],
                kind=options["kind"],
                status=Member.Status.PENDING if options["pending"] else Member.Status.ACTIVE,
                actor=actor,
            )
            for program in programs:
                run_service(services.enrollment_set, member=member, program=program, state="opted_in", actor=actor)
        enrolled = ", ".join(p.slug for p in programs) or "no programs"
        self.stdout.write(f"created {member.kind} member {member.slug} ({member.status}), enrolled in {enrolled}")
