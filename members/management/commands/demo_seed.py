from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from core.ledger import Actor
from members import services
from members.models import ApiCredential, Member, Program

DEMO_PROGRAM = "take-it-down"
DEMO_MEMBER = "demo-platform"


class Command(BaseCommand):
    help = (
        "Create the demo program and member if missing (idempotent) and print a fresh demo API key "
        "on the last line. Earlier demo keys stay valid."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-key", action="store_true", help="Do not issue a new key.")

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.operator("demo_seed")
        program = Program.objects.filter(slug=DEMO_PROGRAM).first() or services.program_create(
            slug=DEMO_PROGRAM,
            name="Take It Down (demo)",
            description="Demo program: hashes of intimate images of minors, submitted from their own devices.",
            actor=actor,
        )
        member = Member.objects.filter(slug=DEMO_MEMBER).first() or services.member_create(
            slug=DEMO_MEMBER, name="Demo Platform", kind=Member.Kind.PLATFORM, status=Member.Status.ACTIVE, actor=actor
        )
        services.enrollment_set(member=member, program=program, state="opted_in", actor=actor)
        if options["no_key"]:
            return
        credential, token = services.credential_issue(member=member, name="demo", actor=actor)
        count = ApiCredential.objects.filter(member=member, revoked_at=None).count()
        self.stderr.write(f"demo member {member.slug} in program {program.slug}; {count} usable demo key(s)")
        self.stdout.write(token)
