"""Videos (vPDQ) in the match API: a query video against the indexed ones, by
python-threatexchange's rule, exactly.

A video's matching frames sit in the PDQ-like index of its signal type, each under the id
`hash id << FRAME_BITS | position`; `video_candidates` asks the index for every frame pair
within the largest threshold, and `score_videos` turns the pairs into the percentages the
rule compares (pure, so the benchmark times it on its own).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hashexchange_client import signal_types

from . import index as hx
from .models import HashBody

if TYPE_CHECKING:
    from .matching import Query

FRAME_BITS = 16  # more than VPDQ_MAX_FRAMES positions
_ID_CHUNK = 900  # below SQLite's default limit on query parameters


@dataclass(frozen=True)
class VideoScore:
    """How a query video compares with an indexed one at one frame threshold."""

    threshold: int
    query_match_percent: float  # of the query's matching frames, how many match one of the video's
    compared_match_percent: float  # of the video's matching frames, how many match one of the query's
    distance: int  # the largest distance from a matched query frame to its nearest frame of the video

    def as_dict(self) -> dict[str, Any]:
        return {
            "query_match_percent": round(self.query_match_percent, 2),
            "compared_match_percent": round(self.compared_match_percent, 2),
            "full_match": self.compared_match_percent >= signal_types.VPDQ_FULL_MATCH_PERCENT,
        }


def video_candidates(
    index: hx.HammingIndex, queries: Sequence[Query], positions: list[int], thresholds: list[int]
) -> dict[tuple[int, int], dict[int, VideoScore]]:
    """{(query, video hash id): {threshold: score}} for the videos each query matches.

    python-threatexchange's rule, exactly: the index returns every (query frame, indexed
    frame) pair within the largest threshold, which is all a brute-force comparison of the
    two frame lists would find; the percentages are counted from those pairs, and a video
    matches at a threshold when at least VPDQ_QUERY_MATCH_PERCENT of the query's frames
    found a frame of it.
    """
    if not thresholds:
        return {}
    mask = (1 << FRAME_BITS) - 1
    pairs: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
    sizes: dict[int, int] = {}
    for qi in positions:
        frames = signal_types.vpdq_match_frames(signal_types.parse_vpdq(queries[qi].value))
        sizes[qi] = len(frames)
        if not frames:
            continue
        found = index.search(hx.codes_from_hex(frames, signal_types.get(queries[qi].signal_type).bits), thresholds[0])
        for j, frame_id, d in zip(found.query.tolist(), found.ids.tolist(), found.distances.tolist(), strict=True):
            pairs[(qi, frame_id >> FRAME_BITS)].append((j, frame_id & mask, d))
    if not pairs:
        return {}
    ids = sorted({pk for _, pk in pairs})
    totals: dict[int, int] = {}
    for start in range(0, len(ids), _ID_CHUNK):
        totals.update(
            HashBody.objects.filter(pk__in=ids[start : start + _ID_CHUNK]).values_list("hash_id", "match_frames")
        )
    return score_videos(pairs, sizes, totals, thresholds)


def score_videos(
    pairs: dict[tuple[int, int], list[tuple[int, int, int]]],
    sizes: dict[int, int],
    totals: dict[int, int],
    thresholds: list[int],
) -> dict[tuple[int, int], dict[int, VideoScore]]:
    """The scores of (query, video) pairs from their frame pairs (query frame, video frame
    position, distance), the query's frame count and each video's; pure, for the benchmark too."""
    found_videos: dict[tuple[int, int], dict[int, VideoScore]] = {}
    for (qi, pk), found_pairs in pairs.items():
        total = totals.get(pk)
        if not total:
            continue
        scores: dict[int, VideoScore] = {}
        for t in thresholds:
            nearest: dict[int, int] = {}
            theirs: set[int] = set()
            for j, position, d in found_pairs:
                if d <= t:
                    nearest[j] = min(d, nearest.get(j, d))
                    theirs.add(position)
            query_percent = len(nearest) * 100 / sizes[qi]
            if query_percent >= signal_types.VPDQ_QUERY_MATCH_PERCENT:
                scores[t] = VideoScore(t, query_percent, len(theirs) * 100 / total, max(nearest.values()))
        if scores:
            found_videos[(qi, pk)] = scores
    return found_videos
