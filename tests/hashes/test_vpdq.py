"""vPDQ: the value format python-threatexchange uses, its checks, storage, feed, and matching
by python-threatexchange's rule, compared with its brute-force matcher."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hashexchange_client import signal_types
from hashexchange_client.signal_types import SignalValueError
from hypothesis import given
from hypothesis import strategies as st
from threatexchange.extensions.vpdq.vpdq import VPDQSignal
from threatexchange.extensions.vpdq.vpdq_brute_matcher import match_VPDQ_hash_brute
from threatexchange.extensions.vpdq.vpdq_util import VpdqCompactFeature, json_to_vpdq, vpdq_to_json

from hashes import matching
from hashes.models import Hash, HashBody, Submission
from tests.conftest import Caller
from tests.signing import Signer, random_pdq

# Each test gets its own index snapshot directory and a freshly loaded registry.
pytestmark = pytest.mark.usefixtures("index_dir")


def flip(value: str, bits: int, rng: random.Random) -> str:
    """`value` with `bits` distinct random bits flipped: at Hamming distance `bits`."""
    mask = 0
    for bit in rng.sample(range(256), bits):
        mask |= 1 << bit
    return f"{int(value, 16) ^ mask:064x}"


def video(pdqs: list[str], quality: int | list[int] = 100, step: float = 1.0) -> str:
    """A value as python-threatexchange serialises it."""
    qualities = quality if isinstance(quality, list) else [quality] * len(pdqs)
    return vpdq_to_json(
        [VpdqCompactFeature(h, q, i * step) for i, (h, q) in enumerate(zip(pdqs, qualities, strict=True))]
    )


# The value format -----------------------------------------------------------------------------


def test_python_threatexchange_values_are_accepted_unchanged_and_ours_read_by_it() -> None:
    frames = [VpdqCompactFeature(random_pdq(), q, t) for q, t in ((100, 0.0), (40, 0.5), (90, 123.456))]
    theirs = vpdq_to_json(frames)
    assert signal_types.validate("vpdq", theirs) == theirs
    # Upper case and spacing are normalised; the result is what python-threatexchange reads.
    messy = json.dumps([f" {f.pdq_hex.upper()} , {f.quality}, {f.timestamp}" for f in frames], indent=2)
    ours = signal_types.validate("vpdq", messy)
    assert ours == theirs
    assert [(f.pdq_hex, f.quality) for f in json_to_vpdq(ours)] == [(f.pdq_hex, f.quality) for f in frames]
    assert VPDQSignal.validate_signal_str(ours) == ours


def test_equal_timestamps_from_rounding_are_accepted() -> None:
    # python-threatexchange keeps three significant digits: 1000 s and 1001 s both read "1e+03".
    value = vpdq_to_json([VpdqCompactFeature(random_pdq(), 100, t) for t in (1000.0, 1001.0)])
    assert json.loads(value)[0].endswith(",1e+03") and json.loads(value)[1].endswith(",1e+03")
    assert signal_types.validate("vpdq", value) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not json", "JSON list"),
        ("[]", "non-empty"),
        ('{"0": "x"}', "non-empty JSON list"),
        ("[1]", "frame 0 must be a string"),
        ('["abc,100"]', "three comma-separated"),
        ('["abc,100,0"]', "64 hex digits"),
        (json.dumps(["z" * 64 + ",100,0"]), "64 hex digits"),
        (json.dumps([random_pdq() + ",101,0"]), "quality must be an integer from 0 to 100"),
        (json.dumps([random_pdq() + ",-1,0"]), "quality must be an integer"),
        (json.dumps([random_pdq() + ",\u00b2,0"]), "quality must be an integer"),
        (json.dumps([random_pdq() + ",100,inf"]), "timestamp"),
        ("[" * 100_000, "JSON list"),
        (json.dumps([random_pdq() + ",100,nan"]), "timestamp"),
        (json.dumps([random_pdq() + ",100,-1"]), "timestamp"),
        (json.dumps([random_pdq() + ",100,2.0", random_pdq() + ",100,1.0"]), "frame 1: timestamps must not decrease"),
        (json.dumps([random_pdq() + ",49,0"]), "no frame of quality 50"),
        (json.dumps(["0" * 64 + ",100,0"]), "no frame of quality 50 or more that is not blank"),
    ],
)
def test_malformed_values_are_refused_with_a_reason(value: str, message: str) -> None:
    with pytest.raises(SignalValueError, match=message):
        signal_types.validate("vpdq", value)


def test_too_many_frames_are_refused() -> None:
    pdq = random_pdq()
    value = json.dumps([f"{pdq},100,{i}" for i in range(signal_types.VPDQ_MAX_FRAMES + 1)])
    with pytest.raises(SignalValueError, match=f"at most {signal_types.VPDQ_MAX_FRAMES}"):
        signal_types.validate("vpdq", value)


# Storage and distribution -----------------------------------------------------------------------


def test_a_vpdq_submission_is_stored_by_digest_and_distributed_whole(signer_a: Signer, platform_b: Caller) -> None:
    value = video([random_pdq() for _ in range(5)])
    response = signer_a.submit(signer_a.submission(value, signal_type="vpdq"))
    assert response.json()["accepted"] == 1, response.json()
    row = Hash.objects.get(signal_type="vpdq")
    assert row.value == signal_types.get("vpdq").storage_key(value)
    body = HashBody.objects.get(hash=row)
    assert (body.value, body.frames, body.match_frames) == (value, 5, 5)
    feed = platform_b.client.get("/api/v1/feed?after=0").json()
    added = [e for e in feed["entries"] if e["kind"] == "hash.added"]
    assert added[0]["hash"] == {"id": row.pk, "signal_type": "vpdq", "value": value}
    assert platform_b.client.get(f"/api/v1/hashes/{row.pk}").json()["value"] == value
    # The same video again is a duplicate; its withdrawal names the value and finds it.
    again = signer_a.submit(signer_a.submission(value, signal_type="vpdq")).json()
    assert again["results"][0]["status"] == "duplicate"
    withdrawn = signer_a.client.post(
        "/api/v1/withdrawals", signer_a.withdrawal(value, signal_type="vpdq"), format="json"
    )
    assert withdrawn.status_code in (200, 201), withdrawn.content
    feed = platform_b.client.get("/api/v1/feed?after=0").json()
    tombstone = [e for e in feed["entries"] if e["kind"] == "hash.withdrawn"][0]
    assert tombstone["hash"]["value"] == value


def test_a_malformed_vpdq_submission_stores_nothing(signer_a: Signer) -> None:
    import json as _json

    from hashexchange_client import payloads

    raw = _json.dumps(
        {
            "program": "take-it-down",
            "signal_type": "vpdq",
            "value": _json.dumps([random_pdq() + ",100,2", random_pdq() + ",100,1"]),
            "created_at": payloads.format_timestamp(),
            "nonce": payloads.new_nonce(),
        }
    ).encode()
    body = signer_a.submit(signer_a.raw(raw)).json()
    assert body["accepted"] == 0
    assert body["results"][0]["error"]["code"] == "invalid_value"
    assert "timestamps must not decrease" in body["results"][0]["error"]["detail"]
    assert not Hash.objects.filter(signal_type="vpdq").exists()
    assert not Submission.objects.exists()


# Matching ---------------------------------------------------------------------------------------------


def ask(caller: Caller, *values: str) -> list[dict[str, Any]]:
    body = {"queries": [{"signal_type": "vpdq", "value": v} for v in values]}
    response = caller.client.post("/api/v1/match", body, format="json")
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_matching_is_exactly_python_threatexchanges_brute_force(signer_a: Signer, platform_b: Caller) -> None:
    """Generated frame sets: videos built from shared scenes, queries that are re-encodes
    (frames moved a few bits), trims, mixes and unrelated videos; every (query, video) pair
    is judged by python-threatexchange's brute-force matcher and must agree with the API."""
    rng = random.Random(18)
    scenes = [[random_pdq() for _ in range(12)] for _ in range(6)]
    indexed: list[str] = []
    for scene in scenes:
        indexed.append(video(scene))
        indexed.append(video(scene[:6] + [random_pdq() for _ in range(6)]))  # half shared
        qualities = [100] + [rng.choice([40, 60, 100]) for _ in scene[1:]]  # some frames too poor to count
        indexed.append(video([flip(h, rng.randrange(0, 40), rng) for h in scene], quality=qualities))
    envelopes = [signer_a.submission(v, signal_type="vpdq") for v in indexed]
    assert signer_a.submit(*envelopes).json()["accepted"] == len(indexed)
    ids = {signal_types.get("vpdq").storage_key(v): pk for pk, v in HashBody.objects.values_list("hash_id", "value")}
    queries = []
    for scene in scenes:
        queries.append(video([flip(h, rng.randrange(0, 34), rng) for h in scene]))  # re-encoded
        queries.append(video(scene[3:10]))  # trimmed
        queries.append(video(scene[:4] + [random_pdq() for _ in range(2)]))  # a third foreign
        queries.append(video([random_pdq() for _ in range(8)]))  # unrelated
    results = ask(platform_b, *queries)
    found_any = 0
    for query, result in zip(queries, results, strict=True):
        expected = {}
        for value in indexed:
            score = match_VPDQ_hash_brute(json_to_vpdq(query), json_to_vpdq(value), 50, 31)
            if score.query_match_percent >= signal_types.VPDQ_QUERY_MATCH_PERCENT:
                expected[ids[signal_types.get("vpdq").storage_key(value)]] = (
                    round(score.query_match_percent, 2),
                    round(score.compared_match_percent, 2),
                )
        got = {m["hash_id"]: (m["query_match_percent"], m["compared_match_percent"]) for m in result["matches"]}
        assert got == expected
        found_any += bool(expected)
    assert found_any >= len(scenes)  # not vacuous: every trim matches its scene at least


def test_full_match_and_thresholds(signer_a: Signer, platform_b: Caller, program: Any) -> None:
    rng = random.Random(7)
    scene = [random_pdq() for _ in range(10)]
    signer_a.submit(signer_a.submission(video(scene), signal_type="vpdq"))
    [whole] = ask(platform_b, video([flip(h, 20, rng) for h in scene]))
    assert whole["matches"][0]["full_match"] is True
    assert whole["matches"][0]["distance"] == 20
    [part] = ask(platform_b, video(scene[:5]))
    assert (part["matches"][0]["query_match_percent"], part["matches"][0]["full_match"]) == (100.0, False)
    # The program's frame threshold decides: at 10, frames moved 20 bits no longer match.
    program.thresholds = {**program.thresholds, "vpdq": 10}
    program.save()
    [strict] = ask(platform_b, video([flip(h, 20, rng) for h in scene]))
    assert strict["matches"] == []


def test_a_withdrawn_video_no_longer_matches(signer_a: Signer, platform_b: Caller) -> None:
    value = video([random_pdq() for _ in range(4)])
    signer_a.submit(signer_a.submission(value, signal_type="vpdq"))
    assert ask(platform_b, value)[0]["matches"]
    signer_a.client.post("/api/v1/withdrawals", signer_a.withdrawal(value, signal_type="vpdq"), format="json")
    assert ask(platform_b, value)[0]["matches"] == []


def test_snapshots_carry_the_frame_index(signer_a: Signer, platform_b: Caller) -> None:
    value = video([random_pdq() for _ in range(6)])
    signer_a.submit(signer_a.submission(value, signal_type="vpdq"))
    built = matching.index_build(signal_type="vpdq", full=True)
    assert built.count == 6
    matching.registry.reset()
    assert ask(platform_b, value)[0]["matches"][0]["full_match"] is True


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**256 - 1),
            st.integers(0, 100),
            st.floats(0, 100_000, allow_nan=False, allow_infinity=False),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_normalising_is_idempotent_and_python_threatexchange_reads_the_result(
    frames: list[tuple[int, int, float]],
) -> None:
    balanced = int("5a" * 32, 16)
    rows = [VpdqCompactFeature(f"{h ^ balanced:064x}", q, t) for h, q, t in sorted(frames, key=lambda f: f[2])]
    rows[0] = VpdqCompactFeature(f"{balanced:064x}", 100, rows[0].timestamp)  # one usable frame
    value = json.dumps([f"{r.pdq_hex.upper()},{r.quality},{r.timestamp!r}" for r in rows])
    normalised = signal_types.validate("vpdq", value)
    assert signal_types.validate("vpdq", normalised) == normalised
    assert [(f.pdq_hex, f.quality) for f in json_to_vpdq(normalised)] == [(r.pdq_hex, r.quality) for r in rows]
