from __future__ import annotations

import gzip
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from hashexchange_client import signal_types
from tqdm import tqdm

from core.ledger import Actor
from hashes import imports
from members.models import Program


def _lines_with_progress(handle: IO[str], bar: tqdm) -> Iterator[str]:
    pending = 0
    for line in handle:
        pending += len(line)
        if pending >= 1 << 20:
            bar.update(pending)
            pending = 0
        yield line
    bar.update(pending)


class Command(BaseCommand):
    help = (
        "Import an existing hash list into a program, streaming. Lines are `value` (with --signal-type) or "
        "`signal_type,value`; blank lines and # comments are skipped; .gz files are read as they are. "
        "Imported hashes are recorded as not signed by a member, with their source."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="Path, or - for standard input.")
        parser.add_argument("--program", required=True)
        parser.add_argument("--source", required=True, help="Where the list comes from, e.g. 'other-exchange-2026'.")
        parser.add_argument("--signal-type", choices=signal_types.SIGNAL_TYPE_NAMES, default=None)
        parser.add_argument("--chunk-size", type=int, default=imports.CHUNK_SIZE)
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        program = Program.objects.filter(slug=options["program"]).first()
        if program is None:
            raise CommandError(f"unknown program {options['program']!r}")
        name = options["file"]
        if name == "-":
            handle, size = sys.stdin, None
        else:
            path = Path(name)
            if not path.is_file():
                raise CommandError(f"no such file: {name}")
            opener = gzip.open if path.suffix == ".gz" else open
            handle = opener(path, "rt", encoding="utf-8", errors="replace")  # type: ignore[operator]
            size = None if path.suffix == ".gz" else os.path.getsize(path)
        started = time.monotonic()
        with tqdm(total=size, unit="B", unit_scale=True, desc="importing", disable=options["no_progress"]) as bar:
            try:
                report = imports.import_hashes(
                    lines=_lines_with_progress(handle, bar),
                    program=program,
                    source=options["source"],
                    default_signal_type=options["signal_type"],
                    file_name="" if name == "-" else Path(name).name,
                    chunk_size=options["chunk_size"],
                    actor=Actor.operator("import_hashes"),
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            finally:
                if handle is not sys.stdin:
                    handle.close()
        seconds = time.monotonic() - started
        batch = report.batch
        for error in report.errors:
            self.stderr.write(error)
        if batch.lines_invalid > len(report.errors):
            self.stderr.write(f"… and {batch.lines_invalid - len(report.errors)} more invalid lines")
        rate = batch.lines_read / seconds if seconds else 0
        self.stdout.write(
            f"import {batch.pk}: read {batch.lines_read} hashes ({batch.lines_invalid} invalid), "
            f"newly listed {batch.hashes_listed} in {program.slug} in {seconds:.1f} s ({rate:,.0f} hashes/s)"
        )
