from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from core.ledger import Actor
from members import services

from ._base import run_service


class Command(BaseCommand):
    help = "Create a program (a hash list with its own rules)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--description", default="")
        parser.add_argument("--signal-types", default="", help="Comma-separated, e.g. pdq,md5. Default: all.")
        parser.add_argument("--threshold", action="append", default=[], metavar="TYPE=N", help="e.g. pdq=31")
        parser.add_argument("--deadline-hours", type=int, default=48, help="Removal deadline (default 48).")

    def handle(self, *args: Any, **options: Any) -> None:
        thresholds = {}
        for item in options["threshold"]:
            name, _, value = item.partition("=")
            thresholds[name] = int(value) if value.isdigit() else value
        program = run_service(
            services.program_create,
            slug=options["slug"],
            name=options["name"],
            description=options["description"],
            signal_types_=[s for s in options["signal_types"].split(",") if s] or None,
            thresholds=thresholds or None,
            removal_deadline_hours=options["deadline_hours"],
            actor=Actor.operator("program_create"),
        )
        self.stdout.write(f"created program {program.slug} ({', '.join(program.signal_types)})")
