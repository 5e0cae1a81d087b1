"""Webhook pages: the feed's next entries for an endpoint, built once per worker process for
every endpoint that may see the same ones, and the POST body made from them
(exchange/delivery.py sends them)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from core import ledger
from members.models import Member

from .feed import EntryCache, case_pseudonyms, encode_entry, feed_page, feedback_by_hash
from .models import WebhookEndpoint

# Entries a worker process keeps for the next endpoints that ask for the same events
# (a hundred endpoints of a program ask for the same ranges); 20,000 entries of signed
# submissions take some 30 MB.
ENTRY_CACHE_ENTRIES = 20_000
entry_cache = EntryCache(ENTRY_CACHE_ENTRIES)


@dataclass(frozen=True)
class Page:
    """A page of a webhook's feed, ready to send: its entries without feedback, their JSON,
    and what the drain needs to know of them."""

    first_seq: int
    last_seq: int
    count: int
    single_kind: str | None  # the kind of a page of one entry (sent as that entry alone)
    entries: tuple[dict[str, Any], ...]  # without feedback
    parts: tuple[bytes, ...]  # each entry's JSON, without feedback
    joined: bytes  # the parts, comma-separated
    added_programs: frozenset[str]

    def feedback(self) -> dict[tuple[int, str], dict[str, int]]:
        """The feedback members reported up to now on the page's hashes (a query, two when
        somebody reported): the same for every endpoint, so asked once per page and round."""
        hashed = [entry for entry in self.entries if "hash" in entry]
        return feedback_by_hash({e["hash"]["id"] for e in hashed}, {e["program"] for e in hashed})

    def joined_for(self, member: Member, feedback: dict[tuple[int, str], dict[str, int]] | None = None) -> bytes:
        """The entries' JSON with the feedback reported up to now (`feedback()`, asked here
        unless given) and, on entries of intake cases, this member's own pseudonym of the
        case: only the entries that have either are encoded again."""
        feedback = self.feedback() if feedback is None else feedback
        cases = case_pseudonyms(self.entries, member)
        if not feedback and not cases:
            return self.joined
        parts = []
        for index, (entry, part) in enumerate(zip(self.entries, self.parts, strict=True)):
            found = feedback.get((entry["hash"]["id"], entry["program"])) if "hash" in entry else None
            case = cases.get(index)
            if found is None and case is None:
                parts.append(part)
                continue
            entry = {**entry, "feedback": found} if found is not None else dict(entry)
            if case is not None:
                entry["case"] = case
            parts.append(encode_entry(entry))
        return b",".join(parts)


class PageCache:
    """Pages built in the last PAGE_CACHE_SECONDS, shared by the threads of a worker process.

    When new events fan out, a hundred endpoints ask for the same pages: the same cursor,
    event kinds, pushed programs and tombstones, and the same last committed seq. These
    are the key, so every endpoint still gets what the receiving rule (read for it before
    every POST) lets it see. Events up to that seq and what they name never change; what
    does, outcomes' feedback, is not kept but asked for on every POST.
    """

    def __init__(self, seconds: float, max_pages: int) -> None:
        self.seconds, self.max_pages = seconds, max_pages
        self._pages: OrderedDict[tuple[Any, ...], tuple[float, Page | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> tuple[bool, Page | None]:
        with self._lock:
            found = self._pages.get(key)
            if found is None or time.monotonic() - found[0] > self.seconds:
                return False, None
            return True, found[1]

    def put(self, key: tuple[Any, ...], page: Page | None) -> None:
        with self._lock:
            self._pages[key] = (time.monotonic(), page)
            self._pages.move_to_end(key)
            while len(self._pages) > self.max_pages:
                self._pages.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()


PAGE_CACHE_SECONDS = 300.0
# A page of 100 signed submissions is ~160 KB here (entries and JSON): 64 pages, ~10 MB.
page_cache = PageCache(PAGE_CACHE_SECONDS, max_pages=64)


def message_body(
    page: Page, member: Member, now: dt.datetime, feedback: dict[tuple[int, str], dict[str, int]] | None = None
) -> bytes:
    """The POST's JSON: one entry as is, several as an `events.batch`.

    Joined from the entries' JSON made once per worker (exchange/feed.py `encode_entry`):
    byte for byte what encoding the whole message with `json.dumps` would give.
    """
    timestamp = json.dumps(ledger.format_time(now)).encode()
    joined = page.joined_for(member, feedback)
    if page.single_kind is not None:
        kind = json.dumps(page.single_kind, ensure_ascii=False).encode()
        return b'{"type":' + kind + b',"timestamp":' + timestamp + b',"data":' + joined + b"}"
    head = b'{"type":"events.batch","timestamp":%s,"data":{"first_seq":%d,"last_seq":%d,"entries":[' % (
        timestamp,
        page.first_seq,
        page.last_seq,
    )
    return head + joined + b"]}}"


def added_programs(entries: Iterable[dict[str, Any]]) -> set[str]:
    return {e["program"] for e in entries if e.get("kind") == "hash.added" and e.get("program")}


def page_key(
    endpoint: WebhookEndpoint, pushed: list[str], tombstones: dict[str, int], latest: int, latest_leaf: str
) -> tuple[Any, ...]:
    return (
        endpoint.cursor_seq,
        latest,
        latest_leaf,
        settings.WEBHOOK_BATCH_SIZE,
        tuple(sorted(endpoint.event_kinds or ())),
        tuple(sorted(pushed)),
        tuple(sorted(tombstones.items())),
    )


def webhook_page(
    endpoint: WebhookEndpoint, pushed: list[str], tombstones: dict[str, int], latest: int, latest_leaf: str
) -> Page | None:
    """The next page after the endpoint's cursor, built once for every endpoint that asks
    for the same one within PAGE_CACHE_SECONDS; None when nothing up to `latest` is for it.

    The key holds the leaf hash of the event at `latest`, not only its seq, so that a
    database restored or recreated (tests) is never answered from another's pages.
    """
    key = page_key(endpoint, pushed, tombstones, latest, latest_leaf)
    found, page = page_cache.get(key) if latest_leaf else (False, None)
    if found:
        return page
    feed = feed_page(
        member=endpoint.member,
        after=endpoint.cursor_seq,
        limit=settings.WEBHOOK_BATCH_SIZE,
        kinds=endpoint.event_kinds or None,
        programs=pushed,
        tombstones=tombstones,
        cache=entry_cache,
        encode=True,
        pseudonyms=False,
    )
    page = None
    if feed.entries:
        entries = tuple({k: v for k, v in entry.items() if k != "feedback"} for entry in feed.entries)
        encoded = feed.encoded or [encode_entry(entry) for entry in feed.entries]
        parts = tuple(
            encode_entry(bare) if "feedback" in entry else part
            for entry, bare, part in zip(feed.entries, entries, encoded, strict=True)
        )
        page = Page(
            first_seq=entries[0]["seq"],
            last_seq=entries[-1]["seq"],
            count=len(entries),
            single_kind=entries[0]["kind"] if len(entries) == 1 else None,
            entries=entries,
            parts=parts,
            joined=b",".join(parts),
            added_programs=frozenset(added_programs(entries)),
        )
    if latest_leaf:
        page_cache.put(key, page)
    return page
