"""A local, append-only record of what the server already holds from this member.

Re-running ``hashexchange submit`` over the same folder is always safe, because the
server answers a repeated hash as a duplicate; the journal only saves the work of
signing and uploading those again. It is JSON Lines, one line per confirmed item,
written and flushed batch by batch, so an interrupted run keeps what was confirmed.
The latest line for a (program, signal type, value) wins, which lets a withdrawal
take an item out again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

JournalKey = tuple[str, str, str]

# Statuses meaning "the server holds this hash from us for this program".
# `held`: stored, and waiting for the clearinghouse's review before it is distributed.
HELD = frozenset({"accepted", "held", "duplicate"})


@dataclass(frozen=True)
class JournalEntry:
    """One confirmed outcome for one hash in one program."""

    program: str
    signal_type: str
    value: str
    status: str
    hash_id: str | None = None
    path: str | None = None


class Journal:
    """Which hashes need not be sent again, loaded from and appended to one file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._held: set[JournalKey] = set()
        if self.path.exists():
            self._load()

    def __contains__(self, key: JournalKey) -> bool:
        return key in self._held

    def __len__(self) -> int:
        return len(self._held)

    def record(self, entries: Iterable[JournalEntry]) -> None:
        """Append entries and force them to disk before returning."""
        lines = []
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for entry in entries:
            lines.append(
                json.dumps(
                    {
                        "at": now,
                        "program": entry.program,
                        "signal_type": entry.signal_type,
                        "value": entry.value,
                        "status": entry.status,
                        "hash_id": entry.hash_id,
                        "path": entry.path,
                    },
                    separators=(",", ":"),
                )
            )
            self._apply(entry.program, entry.signal_type, entry.value, entry.status)
        if not lines:
            return
        with self.path.open("a+b") as handle:
            # After a write cut short, start on a fresh line so only that line is lost.
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")
            handle.write(("\n".join(lines) + "\n").encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())

    def _load(self) -> None:
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    item = json.loads(line)
                    self._apply(item["program"], item["signal_type"], item["value"], item["status"])
                except (ValueError, KeyError, TypeError):
                    # A line cut short by an interrupted write: its item is simply sent
                    # again, which the server answers as a duplicate.
                    continue

    def _apply(self, program: str, signal_type: str, value: str, status: str) -> None:
        key = (program, signal_type, value)
        if status in HELD:
            self._held.add(key)
        else:
            self._held.discard(key)
