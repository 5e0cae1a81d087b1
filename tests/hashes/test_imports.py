"""Operators' bulk import of an existing hash list."""

from __future__ import annotations

import gzip
import hashlib
import io

import pytest
from django.core.management import CommandError, call_command

from core.ledger import Event
from hashes import imports
from hashes.models import Hash, ImportBatch, Listing
from members.models import Program
from tests.conftest import Caller
from tests.signing import Signer, random_pdq


def run_import(path: str, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_hashes", path, "--no-progress", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_an_import_lists_new_hashes_and_commits_to_their_values_in_the_log(
    tmp_path, program: Program, signer_a: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    monkeypatch.setattr(imports, "EVENT_GROUP_SIZE", 2)
    already = random_pdq()
    signer_a.submit(signer_a.submission(already))
    fresh = [random_pdq() for _ in range(4)]
    md5 = "d41d8cd98f00b204e9800998ecf8427e"
    lines = [
        "# exported from another exchange",
        "",
        *fresh[:2],
        f"md5,{md5.upper()}",
        fresh[2],
        fresh[2],
        f"pdq\t{fresh[3]}",
        already,
        "not-a-hash",
        "tmk,abcd",
    ]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    before = Event.objects.count()
    out, err = run_import(
        str(tmp_path / "list.txt"),
        "--program",
        "take-it-down",
        "--source",
        "other-exchange",
        "--signal-type",
        "pdq",
        "--chunk-size",
        "3",
    )
    assert "read 9 hashes (2 invalid), newly listed 5 in take-it-down" in out
    assert "line 10: pdq value must be 64 hex digits" in err
    assert "line 11: unknown signal type 'tmk'" in err
    batch = ImportBatch.objects.get()
    assert (batch.source, batch.lines_read, batch.lines_invalid, batch.hashes_listed) == ("other-exchange", 9, 2, 5)
    imported = Listing.objects.filter(import_batch=batch)
    assert {(listing.hash.signal_type, listing.hash.value) for listing in imported} == {
        *(("pdq", v) for v in fresh),
        ("md5", md5),
    }
    assert Listing.objects.get(hash__value=already).import_batch is None  # members' listing stays as it was
    events = list(Event.objects.filter(seq__gt=before))
    assert [e.kind for e in events][0] == "import.started" and events[-1].kind == "import.finished"
    groups = [e for e in events if e.kind == "hashes.imported"]
    announced = [hash_id for e in groups for hash_id in e.data["hash_ids"]]
    assert sorted(announced) == sorted(listing.hash_id for listing in imported)
    assert all(len(e.data["hash_ids"]) <= 2 for e in groups)
    for event in groups:
        rows = Hash.objects.filter(pk__in=event.data["hash_ids"]).order_by("pk")
        digest = hashlib.sha256("".join(f"{h.pk}:{h.signal_type}:{h.value}\n" for h in rows).encode()).hexdigest()
        assert event.data["digest"] == digest


def test_importing_the_same_list_twice_lists_nothing_new(tmp_path, program: Program) -> None:  # noqa: ANN001
    path = tmp_path / "list.txt.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(random_pdq() for _ in range(5)))
    run_import(str(path), "--program", "take-it-down", "--source", "a", "--signal-type", "pdq")
    out, _ = run_import(str(path), "--program", "take-it-down", "--source", "a", "--signal-type", "pdq")
    assert "newly listed 0" in out
    assert Listing.objects.count() == 5


def test_an_imported_hash_stays_listed_when_a_member_withdraws_its_own_support(
    tmp_path, program: Program, signer_a: Signer, platform_b: Caller
) -> None:  # noqa: ANN001
    value = random_pdq()
    (tmp_path / "one.txt").write_text(f"pdq,{value}\n")
    run_import(str(tmp_path / "one.txt"), "--program", "take-it-down", "--source", "s")
    signer_a.submit(signer_a.submission(value))
    result = signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(value), format="json").json()
    assert result["listing_status"] == "active"
    detail = platform_b.client.get(f"/api/v1/hashes/{result['hash_id']}").json()
    assert detail["programs"][0]["imported_from"] == "s"


def test_a_withdrawn_hash_is_listed_again_by_an_import(tmp_path, signer_a: Signer) -> None:  # noqa: ANN001
    value = random_pdq()
    signer_a.submit(signer_a.submission(value))
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(value), format="json")
    assert Hash.objects.get(value=value).status == "withdrawn"
    (tmp_path / "one.txt").write_text(value + "\n")
    out, _ = run_import(str(tmp_path / "one.txt"), "--program", "take-it-down", "--source", "s", "--signal-type", "pdq")
    assert "newly listed 1" in out
    assert Hash.objects.get(value=value).status == "active"
    assert Listing.objects.get(hash__value=value).status == "active"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--program", "nope", "--source", "s"), "unknown program 'nope'"),
        (("--program", "take-it-down", "--source", " "), "name the source"),
    ],
)
def test_bad_import_arguments_are_clear_errors(tmp_path, program: Program, args, message) -> None:  # noqa: ANN001
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(CommandError, match=message):
        run_import(str(tmp_path / "x.txt"), *args)
    with pytest.raises(CommandError, match="no such file"):
        run_import(str(tmp_path / "missing.txt"), "--program", "take-it-down", "--source", "s")
    assert not Event.objects.filter(kind__startswith="import").exists()


def test_a_failure_while_writing_stops_the_import_and_its_reader(
    tmp_path, program: Program, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    """The next chunk is read in a thread while one is written: a write that fails ends the
    command with that error, the chunks written before stay, and no reader is left running."""
    import threading

    values = sorted(random_pdq() for _ in range(9))
    (tmp_path / "list.txt").write_text("\n".join(values) + "\n")
    written = imports._import_chunk
    calls = []

    def fail_second(chunk, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls.append(len(chunk))
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return written(chunk, **kwargs)

    monkeypatch.setattr(imports, "_import_chunk", fail_second)
    with pytest.raises(RuntimeError, match="disk full"):
        run_import(
            str(tmp_path / "list.txt"), "--program", "take-it-down", "--source", "x", "--signal-type", "pdq",
            "--chunk-size", "3",
        )  # fmt: skip
    assert calls == [3, 3]
    assert (
        sorted(Hash.objects.filter(listings__import_batch__isnull=False).values_list("value", flat=True)) == values[:3]
    )
    assert not [t for t in threading.enumerate() if t.name.startswith("import-read")]
