"""config.wsgi with the audit log's tree timed: what bench/auditlog.py serves as `tree`.

Every call of `core.tlog.extend` and of `core.ledger._store_leaves` (the stored leaves;
each once per `record_many`, so once per batch of submissions) is timed, in CPU time of
the calling thread and in wall time, and the process's running totals are written to
BENCH_TREE_STATS_DIR/<pid>.json after each call of `extend`: a few microseconds per
batch, outside the timed part. The bench adds them up per run and compares them with
the CPU and time the same run spent on everything else.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from config.wsgi import application
from core import ledger, tlog

_extend = tlog.extend
_store_leaves = ledger._store_leaves
_totals = {"calls": 0, "events": 0, "cpu_s": 0.0, "wall_s": 0.0, "leaves_cpu_s": 0.0, "leaves_wall_s": 0.0}


def _timed_store_leaves(leaves: Any) -> None:
    cpu, wall = time.thread_time(), time.perf_counter()
    try:
        _store_leaves(leaves)
    finally:
        _totals["leaves_cpu_s"] += time.thread_time() - cpu
        _totals["leaves_wall_s"] += time.perf_counter() - wall


def _timed_extend(rows: Any) -> int:
    cpu, wall = time.thread_time(), time.perf_counter()
    try:
        return _extend(rows)
    finally:
        _totals["cpu_s"] += time.thread_time() - cpu
        _totals["wall_s"] += time.perf_counter() - wall
        _totals["calls"] += 1
        _totals["events"] += len(rows)
        # Named by the worker's pid (gunicorn forks after importing this module).
        (Path(os.environ["BENCH_TREE_STATS_DIR"]) / f"{os.getpid()}.json").write_text(json.dumps(_totals))


tlog.extend = _timed_extend
ledger._store_leaves = _timed_store_leaves  # record_many looks both up on every call

__all__ = ["application"]
