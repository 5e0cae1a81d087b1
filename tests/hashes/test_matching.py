"""POST /api/v1/match and the service behind it: fresh, exact, filtered at query time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from hashes import matching, tasks
from hashes.models import Hash, MatchCount
from members import services as member_services
from members.models import Member
from tests.conftest import ROOT, SETUP, Caller, make_caller, make_member, worker_database_url
from tests.signing import Signer, make_signer, near, random_pdq

# Each test gets its own index snapshot directory and a freshly loaded registry.
pytestmark = pytest.mark.usefixtures("index_dir")


def ask(caller: Caller | Signer, *queries: tuple[str, str]) -> Any:
    body = {"queries": [{"signal_type": t, "value": v} for t, v in queries]}
    response = caller.client.post("/api/v1/match", body, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def submit(signer: Signer, value: str, **fields: Any) -> int:
    body = signer.submit(signer.submission(value, **fields)).json()
    assert body["accepted"] == 1, body
    return body["results"][0]["hash_id"]


def test_a_submitted_hash_matches_on_the_next_request(signer_a: Signer, platform_b: Caller) -> None:
    other = random_pdq()
    submit(signer_a, other)
    assert ask(platform_b, ("pdq", near(other, 3)))["matched"] == 1  # the index is loaded now
    value = random_pdq()
    hash_id = submit(signer_a, value)
    body = ask(platform_b, ("pdq", near(value, 7)), ("pdq", value), ("pdq", random_pdq()))
    assert body["matched"] == 2
    first, exact, none = body["results"]
    assert first == {
        "index": 0,
        "matches": [
            {"hash_id": hash_id, "signal_type": "pdq", "value": value, "distance": 7, "programs": ["take-it-down"]}
        ],
        "truncated": False,
    }
    assert exact["matches"][0]["distance"] == 0
    assert none["matches"] == []


def test_threshold_is_the_programs(signer_a: Signer, program: Any) -> None:
    value = random_pdq()
    submit(signer_a, value)
    assert [len(r["matches"]) for r in ask(signer_a, *(("pdq", near(value, d)) for d in (31, 32)))["results"]] == [1, 0]
    program.thresholds = {**program.thresholds, "pdq": 10}
    program.save()
    assert [len(r["matches"]) for r in ask(signer_a, *(("pdq", near(value, d)) for d in (10, 11)))["results"]] == [1, 0]


def test_a_withdrawal_is_honoured_at_once(signer_a: Signer, platform_b: Caller) -> None:
    value = random_pdq()
    submit(signer_a, value)
    assert ask(platform_b, ("pdq", value))["matched"] == 1
    response = signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(value), format="json")
    assert response.status_code == 201, response.content
    assert ask(platform_b, ("pdq", value))["matched"] == 0


def test_quarantined_and_retired_hashes_never_match(signer_a: Signer) -> None:
    values = [random_pdq(), random_pdq()]
    ids = [submit(signer_a, v) for v in values]
    assert ask(signer_a, *(("pdq", v) for v in values))["matched"] == 2
    Hash.objects.filter(pk=ids[0]).update(status=Hash.Status.QUARANTINED)
    Hash.objects.filter(pk=ids[1]).update(status=Hash.Status.RETIRED)
    assert ask(signer_a, *(("pdq", v) for v in values))["matched"] == 0


def test_programs_the_caller_is_not_opted_into_are_invisible(
    signer_a: Signer, other_program: Any, platform_b: Caller
) -> None:
    member_services.enrollment_set(member=platform_b.member, program=other_program, state="opted_in", actor=SETUP)
    signer_b = make_signer(platform_b)
    value = random_pdq()
    submit(signer_b, value, program="ncii")
    assert ask(signer_a, ("pdq", value))["matched"] == 0
    member_services.enrollment_set(member=signer_a.caller.member, program=other_program, state="opted_in", actor=SETUP)
    assert ask(signer_a, ("pdq", value))["results"][0]["matches"][0]["programs"] == ["ncii"]
    member_services.enrollment_set(member=signer_a.caller.member, program=other_program, state="paused", actor=SETUP)
    assert ask(signer_a, ("pdq", value))["matched"] == 0


def test_a_hash_in_two_programs_lists_both(signer_a: Signer, other_program: Any) -> None:
    member_services.enrollment_set(member=signer_a.caller.member, program=other_program, state="opted_in", actor=SETUP)
    value = random_pdq()
    submit(signer_a, value)
    submit(signer_a, value, program="ncii")
    matches = ask(signer_a, ("pdq", value))["results"][0]["matches"]
    assert [m["programs"] for m in matches] == [["ncii", "take-it-down"]]


def test_exact_and_64_bit_types(signer_a: Signer) -> None:
    md5, phash = "0123456789abcdef" * 2, "8f373714acfcf4d0"
    submit(signer_a, md5, signal_type="md5")
    submit(signer_a, phash, signal_type="phash")
    body = ask(
        signer_a,
        ("md5", md5.upper()),
        ("md5", "f" * 32),
        ("phash", f"{int(phash, 16) ^ 0b1111111111:016x}"),
        ("phash", f"{int(phash, 16) ^ 0b11111111111:016x}"),
        ("dhash", phash),
    )
    assert [[m["distance"] for m in r["matches"]] for r in body["results"]] == [[0], [], [10], [], []]


def test_matches_are_counted_per_hash_member_and_day(signer_a: Signer, platform_b: Caller) -> None:
    value = random_pdq()
    hash_id = submit(signer_a, value)
    ask(platform_b, ("pdq", value), ("pdq", near(value, 2)))
    ask(platform_b, ("pdq", value))
    ask(signer_a, ("pdq", random_pdq()))
    assert list(MatchCount.objects.values_list("hash_id", "member__slug", "count")) == [(hash_id, "platform-b", 3)]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            {"queries": [{"signal_type": "pdq", "value": "zz" * 32}]},
            "queries[0].value: pdq value must contain only hex",
        ),
        (
            {"queries": [{"signal_type": "md5", "value": "0" * 32}, {"signal_type": "pdq", "value": "ab" * 31}]},
            "queries[1].value: pdq value must be 64 hex digits",
        ),
        ({"queries": [{"signal_type": "photodna", "value": "00"}]}, "queries[0].signal_type: unknown signal type"),
        ({"queries": [{"signal_type": "pdq", "value": "0" * 64}]}, "queries[0].value: pdq value is degenerate"),
        ({"queries": ["abc"]}, "queries[0]: each query is an object"),
        ({"queries": []}, "queries: give a non-empty list"),
        ({}, "queries: give a non-empty list"),
        ({"queries": [{"signal_type": "md5", "value": "0" * 32}] * 1001}, "queries: at most 1000 queries"),
    ],
)
def test_bad_input_is_refused_naming_the_item(platform_a: Caller, body: Any, detail: str) -> None:
    response = platform_a.client.post("/api/v1/match", body, format="json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["detail"].startswith(detail), response.json()["detail"]


def test_an_empty_body_is_refused(platform_a: Caller) -> None:
    response = platform_a.client.post("/api/v1/match", b"", content_type="application/json")
    assert response.status_code == 400


def test_snapshots_are_built_merged_and_picked_up(
    signer_a: Signer, settings: Any, index_dir: Path, client: Any
) -> None:
    settings.MATCH_INDEX_COMPACT_MIN = 1
    values = [random_pdq() for _ in range(3)]
    ids = [submit(signer_a, v) for v in values[:2]]
    assert ask(signer_a, ("pdq", values[0]))["matched"] == 1  # loaded from the database, no snapshot yet
    assert matching.registry.status()["pdq"]["snapshot_size"] == 0
    tasks.match_index_compact_task()
    first = matching._store().current_path("pdq")
    assert first is not None
    ids.append(submit(signer_a, values[2]))
    assert [r["matches"][0]["hash_id"] for r in ask(signer_a, *(("pdq", v) for v in values))["results"]] == ids
    status = matching.registry.status()["pdq"]
    assert (status["snapshot_size"], status["tail_size"], status["lag_events"]) == (2, 1, 0)
    assert status["snapshot_shared"] is True
    tasks.match_index_compact_task()  # merges the third
    second = matching._store().current_path("pdq")
    assert second != first and first.exists()  # the previous one is kept for processes still on it
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready"
    index = ready["checks"]["index"]
    assert index["loaded"] and index["native_kernel"]
    assert (index["pdq"]["size"], index["pdq"]["snapshot_size"], index["pdq"]["tail_size"]) == (3, 3, 0)
    assert index["pdq"]["lag_events"] == 0
    tasks.match_index_rebuild_task()
    assert not first.exists()
    assert [len(r["matches"]) for r in ask(signer_a, *(("pdq", v) for v in values))["results"]] == [1, 1, 1]


def test_a_snapshot_from_another_database_is_ignored(signer_a: Signer, settings: Any) -> None:
    settings.MATCH_INDEX_COMPACT_MIN = 1
    value = random_pdq()
    submit(signer_a, value)
    tasks.match_index_compact_task()
    path = matching._store().current_path("pdq")
    snapshot = matching.hx.open_snapshot(path)
    assert matching._open_valid(path) is not None
    forged = matching.hx.write_snapshot(
        matching._store().new_path("pdq", snapshot.seq),
        signal_type="pdq",
        ids=snapshot.ids,
        codes=snapshot.codes,
        seq=snapshot.seq,
        meta={"leaf": "0" * 64},
    )
    assert matching._open_valid(forged) is None


# Across OS processes ------------------------------------------------------------------------

PEER_PROCESS = textwrap.dedent(
    """
    import json, os, sys
    import django
    django.setup()
    from django.conf import settings
    from hashes import matching
    from hashes.index import mapping_stats
    from members.models import Member
    member = Member.objects.get(slug=sys.argv[1])
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        value = line.strip()
        results = matching.match(member=member, queries=[matching.Query("pdq", value)])
        snapshot = matching.registry.indexes()["pdq"].snapshot
        print(json.dumps({
            "matches": results[0].matches,
            "mapping": mapping_stats(snapshot.path) if snapshot else {},
        }), flush=True)
    """
)


@pytest.mark.django_db(transaction=True)
def test_another_process_matches_a_new_hash_at_once_and_shares_the_snapshot(
    program: Any, settings: Any, index_dir: Path
) -> None:
    """A second OS process (as a second web worker would be) sees a hash submitted here on
    its next query, and maps the same snapshot file, shared."""
    settings.MATCH_INDEX_COMPACT_MIN = 1
    platform = make_caller(make_member("platform-x", Member.Kind.PLATFORM, program))
    signer = make_signer(platform)
    first = random_pdq()
    submit(signer, first)
    tasks.match_index_compact_task()
    env = {
        "DATABASE_URL": worker_database_url(),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "MATCH_INDEX_DIR": str(index_dir),
        "ENV_FILE": "/dev/null",
        # This checkout's client package first, whatever the shared environment installed.
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'client' / 'src'}",
    }

    peer = subprocess.Popen(
        [sys.executable, "-c", PEER_PROCESS, "platform-x"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert json.loads(peer.stdout.readline()) == {"ready": True}

        def peer_match(value: str) -> dict[str, Any]:
            peer.stdin.write(value + "\n")
            peer.stdin.flush()
            return json.loads(peer.stdout.readline())

        assert [m["value"] for m in peer_match(first)["matches"]] == [first]
        second = random_pdq()
        hash_id = submit(signer, second)  # committed here; the peer has not been told anything
        answer = peer_match(near(second, 5))
        assert [(m["hash_id"], m["distance"]) for m in answer["matches"]] == [(hash_id, 5)]
        assert answer["mapping"]["shared"] is True
        ours = matching.registry.indexes()["pdq"].snapshot
        assert ours is not None and str(ours.path.resolve()) == str(
            Path(matching._store().current_path("pdq")).resolve()
        )
    finally:
        peer.stdin.close()
        peer.wait(timeout=30)


def test_the_build_command_writes_snapshots(signer_a: Signer, index_dir: Path) -> None:
    from io import StringIO

    from django.core.management import call_command

    submit(signer_a, random_pdq())
    out = StringIO()
    call_command("match_index_build", "--full", stdout=out)
    assert "pdq: 1 hashes" in out.getvalue()
    assert matching._store().current_path("pdq") is not None
    call_command("match_index_build", stdout=out)
    last_run = out.getvalue().splitlines()[-len(matching.INDEXED) :]
    assert [line for line in last_run if line.startswith("pdq:")][0].startswith("pdq: 1 hashes")
    assert "up to date" in out.getvalue()
