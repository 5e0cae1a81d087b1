from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from core.ledger import Actor
from members import services
from members.models import Enrollment, Member, Program

PROGRAM_NAMES = {
    "minor": ("Take It Down", "Hashes of intimate images of people under 18, sent from their own devices."),
    "adult": ("Non-consensual intimate images", "Hashes of intimate images of adults, sent from their own devices."),
}


class Command(BaseCommand):
    help = (
        "Make the intake ready (idempotent): the INTAKE_MEMBER intake member, active, opted in to "
        "INTAKE_PROGRAM_MINOR and INTAKE_PROGRAM_ADULT; programs that are missing are created."
    )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.operator("intake_setup")
        member = Member.objects.filter(slug=settings.INTAKE_MEMBER).first() or services.member_create(
            slug=settings.INTAKE_MEMBER,
            name="Intake page",
            kind=Member.Kind.INTAKE,
            status=Member.Status.ACTIVE,
            actor=actor,
        )
        if member.kind != Member.Kind.INTAKE:
            self.stderr.write(f"member {member.slug} exists and is not an intake member; set INTAKE_MEMBER")
            raise SystemExit(1)
        for age, slug in (("minor", settings.INTAKE_PROGRAM_MINOR), ("adult", settings.INTAKE_PROGRAM_ADULT)):
            name, description = PROGRAM_NAMES[age]
            program = Program.objects.filter(slug=slug).first() or services.program_create(
                slug=slug, name=name, description=description, actor=actor
            )
            services.enrollment_set(member=member, program=program, state=Enrollment.State.OPTED_IN, actor=actor)
        self.stderr.write(
            f"intake: member {member.slug} opted in to "
            f"{settings.INTAKE_PROGRAM_MINOR} and {settings.INTAKE_PROGRAM_ADULT}"
        )
