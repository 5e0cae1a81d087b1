"""Checking a snapshot's entries in other processes while this one stores them.

A new peer's bootstrap reads hundreds of thousands of entries, and the checks that need
no database (federation/imports.py `verify_entries`: the origin's key binding, the
member's Ed25519 signature, the strict payload parse) cost more CPU than storing them.
So when a snapshot is large and this process may have children, chunks of its lines go
to a pool of processes that parse and check them, a few chunks ahead, while this process
stores the chunks already checked, in order, each in its own transaction as before
(federation/snapshots.py). Nothing a child finds is stored by the child: what is stored
and when the cursor moves are decided here, so a killed child or parent loses or
duplicates nothing (the page is read again and idempotence on origin identity holds).

A Celery prefork child is a daemon process and may not have children: there (and
inside a transaction, as in some tests, where the fork would share the connection) the
entries are checked in this process, one chunk after the other. The pool is forked
with the database connections closed first, so no child ever holds the parent's socket.

Python's cyclic garbage collector is paused while the chunks are checked and stored (in
the children too, which inherit it paused): a chunk's entries are hundreds of thousands
of objects that reference counting frees, and the collector's passes over them cost
10-25% of both the checking and the storing (docs/benchmarks/federation.md). After each
stored chunk only the young generations are collected.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from django.conf import settings
from django.db import connection, connections

from .imports import Context, Verified, verify_entries

# Chunks checked ahead of the one being stored, per process of the pool.
AHEAD = 2


class VerifierDied(Exception):
    """A process of the pool ended before answering (killed, out of memory): try again later."""


class BadSnapshot(Exception):
    """A line of the snapshot is not an entry, or is past the manifest's seq."""


def processes(entries: int) -> int:
    """How many verifying processes to use for a snapshot of `entries` entries (0: none)."""
    wanted = settings.PEER_VERIFY_PROCESSES
    if wanted < 0:
        wanted = min(4, os.cpu_count() or 1)
    if wanted == 0 or entries < settings.PEER_VERIFY_MIN_ENTRIES:
        return 0
    if multiprocessing.current_process().daemon or connection.in_atomic_block:
        return 0
    return wanted


def check_lines(lines: list[bytes], context: Context, upto: int) -> list[Verified]:
    """Parse and check a chunk of snapshot lines (in a child, or here)."""
    entries: list[Any] = []
    for line in lines:
        try:
            entry = json.loads(line)
            seq = int(entry.get("seq") or 0) if isinstance(entry, dict) else None
        except (ValueError, TypeError) as exc:
            raise BadSnapshot(f"a line is not an entry: {exc}") from None
        if seq is None or seq > upto:
            raise BadSnapshot("the peer's snapshot holds an entry past its seq")
        entries.append(entry)
    return verify_entries(entries, context)


def checked_chunks(
    chunks: Iterable[list[bytes]], *, context: Context, upto: int, workers: int
) -> Iterator[list[Verified]]:
    """The chunks' verify_entries() results, in order; checked by `workers` processes if > 0."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield from _checked_chunks(chunks, context=context, upto=upto, workers=workers)
    finally:
        if collecting:
            gc.enable()


def _checked_chunks(
    chunks: Iterable[list[bytes]], *, context: Context, upto: int, workers: int
) -> Iterator[list[Verified]]:
    if workers <= 0:
        for lines in chunks:
            yield check_lines(lines, context, upto)
            gc.collect(1)
        return
    if connection.vendor != "sqlite":  # (an in-memory SQLite database would be lost)
        connections.close_all()  # reopened on the next query; a child must not inherit a socket
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
    try:
        queue: deque[Future[list[Verified]]] = deque()
        source = iter(chunks)
        done = False
        while True:
            try:
                while not done and len(queue) < workers * AHEAD:
                    lines = next(source, None)
                    if lines is None:
                        done = True
                        break
                    queue.append(pool.submit(check_lines, lines, context, upto))
                if not queue:
                    return
                checked = queue.popleft().result()
            except BrokenProcessPool as exc:
                raise VerifierDied(f"a verifying process died: {exc}") from None
            yield checked
            gc.collect(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
