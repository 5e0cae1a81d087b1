"""The submit journal: what it remembers, and surviving an interrupted write."""

from __future__ import annotations

import json
from pathlib import Path

from hashexchange_client.journal import Journal, JournalEntry


def entry(value: str, status: str = "accepted") -> JournalEntry:
    return JournalEntry(program="ncii", signal_type="md5", value=value, status=status, hash_id="h1")


def test_remembers_held_items_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.record([entry("a" * 32), entry("b" * 32, "duplicate"), entry("c" * 32, "rejected")])
    reloaded = Journal(path)
    assert ("ncii", "md5", "a" * 32) in reloaded
    assert ("ncii", "md5", "b" * 32) in reloaded
    assert ("ncii", "md5", "c" * 32) not in reloaded
    assert ("other", "md5", "a" * 32) not in reloaded
    assert len(reloaded) == 2


def test_latest_line_wins(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    Journal(path).record([entry("a" * 32)])
    Journal(path).record([entry("a" * 32, "withdrawn")])
    assert ("ncii", "md5", "a" * 32) not in Journal(path)


def test_a_line_cut_short_loses_only_itself(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    Journal(path).record([entry("a" * 32)])
    with path.open("a") as handle:
        handle.write('{"program":"ncii","signal_type":"md5","val')  # interrupted write
    journal = Journal(path)
    assert len(journal) == 1
    journal.record([entry("d" * 32)])
    assert len(Journal(path)) == 2
    last = path.read_text().splitlines()[-1]
    assert json.loads(last)["value"] == "d" * 32


def test_empty_record_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    Journal(path).record([])
    assert not path.exists()
