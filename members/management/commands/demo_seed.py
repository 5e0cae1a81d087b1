from __future__ import annotations

import os
from pathlib import Path
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
        "Create the demo program and member if missing (idempotent) and print a demo API key on the "
        "last line. With --key-file the key kept there is reused while it works; a new one replaces it "
        "(and earlier demo keys are revoked) only when it does not."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-key", action="store_true", help="Do not issue a new key.")
        parser.add_argument("--key-file", type=Path, help="Keep the demo key in this file (mode 0600) and reuse it.")

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
        key_file: Path | None = options["key_file"]
        kept = key_file.read_text().strip() if key_file is not None and key_file.is_file() else ""
        credential = services.credential_authenticate(kept) if kept else None
        if credential is not None and credential.member_id == member.pk:
            token = kept
            self.stderr.write(f"demo member {member.slug} in program {program.slug}; reusing the key in {key_file}")
        else:
            credential, token = services.credential_issue(member=member, name="demo", actor=actor)
            if key_file is not None:
                # One demo key at a time: the ones minted before it (and lost with the file) stop working.
                for old in ApiCredential.objects.filter(member=member, name="demo", revoked_at=None).exclude(
                    pk=credential.pk
                ):
                    services.credential_revoke(credential=old, reason="replaced by a new demo key", actor=actor)
                key_file.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as out:
                    out.write(token + "\n")
            count = ApiCredential.objects.filter(member=member, revoked_at=None).count()
            self.stderr.write(f"demo member {member.slug} in program {program.slug}; {count} usable demo key(s)")
        self.stdout.write(token)
