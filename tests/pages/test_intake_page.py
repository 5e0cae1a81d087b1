"""The intake, end to end, in headless Chromium on a phone-sized screen, against a live
server, a real Celery worker and a member's real webhook receiver.

A person chooses photos (and a few files that cannot be hashed), sends, writes down the
code and secret, sees the status; a member reports a removal and the count changes; the
person takes everything back and the tombstones reach the member's webhook. Every
request the page makes is recorded, and none carries any file's bytes. Screenshots go
to var/test-artifacts/intake/.
"""

from __future__ import annotations

import base64
import io
import json
import random
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from django.core.management import call_command
from PIL import Image, ImageDraw

from intake.models import Case
from members.models import Member, Program
from tests.conftest import Receiver, celery_command, make_caller, make_member, start_worker, stop_process, wait_for

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "var" / "test-artifacts" / "intake"
PHONE = {"width": 390, "height": 844}
WORKER_ENV = {"WEBHOOKS_ALLOW_PRIVATE": "1", "WEBHOOK_SWEEP_SECONDS": "1"}


def photo(seed: int, size: tuple[int, int] = (640, 480)) -> bytes:
    rnd = random.Random(seed)
    image = Image.new("RGB", size, tuple(rnd.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(20):
        x, y = rnd.randrange(size[0]), rnd.randrange(size[1])
        draw.ellipse(
            [x, y, x + rnd.randint(10, 300), y + rnd.randint(10, 300)], fill=tuple(rnd.randrange(256) for _ in range(3))
        )
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def windows(data: bytes, width: int = 64) -> set[bytes]:
    return {data[i : i + width] for i in range(max(0, len(data) - width + 1))}


def leaks(body: bytes, secret_file: bytes) -> bool:
    """Does the body carry any 64-byte window of the file, raw or base64-encoded?"""
    if not body:
        return False
    found = windows(body)
    if any(secret_file[i : i + 64] in found for i in range(len(secret_file) - 63)):
        return True
    for shift in range(3):
        encoded = base64.b64encode(secret_file[shift:])
        if any(encoded[i : i + 64] in found for i in range(0, len(encoded) - 63, 4)):
            return True
    return False


def check_accessibility(page: Any, name: str) -> None:
    results = Axe().run(page)
    serious = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    (ARTIFACTS / f"axe-{name}.json").write_text(json.dumps(results.response["violations"], indent=1))
    assert not serious, [(v["id"], v["help"], [n["target"] for n in v["nodes"]]) for v in serious]


@pytest.fixture
def stack(transactional_db: None, receiver: Receiver, settings: Any) -> Any:
    settings.INTAKE_POW_BITS = 12
    call_command("intake_setup")
    platform = make_caller(make_member("platform-a", Member.Kind.PLATFORM, Program.objects.get(slug="take-it-down")))
    hook = platform.client.post(
        "/api/v1/webhooks", {"url": receiver.url, "events": ["hash.added", "hash.withdrawn"]}, format="json"
    )
    assert hook.status_code == 201, hook.json()
    worker = start_worker(extra_env=WORKER_ENV, queues="celery,webhooks", pool="threads", log_name="intake-worker")
    beat_dir = ROOT / "var" / "test-intake-beat"
    beat_dir.mkdir(parents=True, exist_ok=True)
    beat = celery_command(
        "beat", "-l", "info", "--schedule", str(beat_dir / "schedule"), extra_env=WORKER_ENV, log_name="intake-beat"
    )
    yield platform
    stop_process(beat)
    stop_process(worker)


def test_a_person_opens_a_case_sees_what_happened_and_takes_it_back(
    browser: Any, live_server: Any, stack: Any, receiver: Receiver, tmp_path: Path
) -> None:
    platform = stack
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    files = {
        "beach.jpg": photo(1),
        "party.jpg": photo(2, (480, 640)),
        "extra.jpg": photo(3),
        "notes.txt": b"these are my notes, not a picture\n" * 10,
        "empty.jpg": b"",
        "broken.jpg": photo(4)[:900],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    sent: list[tuple[str, str, bytes]] = []
    page.on("request", lambda r: sent.append((r.method, r.url, r.post_data_buffer or b"")))
    page.on("dialog", lambda d: d.accept())

    page.goto(f"{live_server.url}/intake/")
    check_accessibility(page, "intake")
    page.screenshot(path=str(ARTIFACTS / "intake-start-phone.png"), full_page=True)
    assert page.get_by_test_id("intake-submit").is_disabled()

    page.get_by_test_id("intake-age-minor").check()
    page.get_by_test_id("intake-files").set_input_files([str(tmp_path / n) for n in files])
    items = page.locator("[data-testid=intake-item]")
    wait_for(lambda: items.count() == 6 and page.locator(".status", has_text="Ready").count() == 3, what="hashing")
    statuses = {
        items.nth(i).locator(".name").inner_text(): items.nth(i).locator(".status").inner_text() for i in range(6)
    }
    assert "not a photo or a video" in statuses["notes.txt"]
    assert "empty" in statuses["empty.jpg"]
    assert "could not open" in statuses["broken.jpg"]
    assert page.locator("img.thumb").first.get_attribute("src").startswith("blob:")
    # The files were hashed by the page's workers, which load our own scripts only.
    assert any(url.endswith("/static/intake/hasher.js") for _, url, _ in sent)
    page.get_by_role("button", name="Remove: extra.jpg").click()
    assert items.count() == 5
    page.screenshot(path=str(ARTIFACTS / "intake-chosen-phone.png"), full_page=True)

    page.get_by_test_id("intake-submit").click()
    page.get_by_test_id("case-code").wait_for(state="visible", timeout=30_000)
    code = page.get_by_test_id("case-code").inner_text()
    secret = page.get_by_test_id("case-secret").inner_text()
    assert len(secret.split()) == 16
    page.screenshot(path=str(ARTIFACTS / "intake-done-phone.png"), full_page=True)
    case = Case.objects.get(code=code.replace("-", ""))
    assert case.program.slug == "take-it-down"
    assert case.hashes.count() == 6  # two photos: PDQ, MD5 and SHA-256 each

    # The member's webhook gets the hashes, each signed by its own key derived from the
    # secret, with the member's own pseudonym of the case (never its code).
    wait_for(lambda: len([e for e in receiver.entries() if e["kind"] == "hash.added"]) == 6, timeout=60, what="push")
    added = [e for e in receiver.entries() if e["kind"] == "hash.added"]
    assert len({e["envelopes"][0]["signatures"][0]["keyid"] for e in added}) == 6
    assert len({e["case"] for e in added}) == 1 and code.replace("-", "") not in json.dumps(added)

    page.goto(f"{live_server.url}/intake/status/")
    check_accessibility(page, "status-empty")
    page.get_by_test_id("status-code").fill(code.lower())
    page.get_by_test_id("status-secret").fill(secret.upper())
    page.get_by_test_id("status-submit").click()
    hashes = page.get_by_test_id("case-hash")
    hashes.first.wait_for(timeout=15_000)
    assert hashes.count() == 6
    assert page.locator("[data-testid=case-hash] [data-count=received]").first.inner_text() == "1"
    pdq_value = next(h.hash.value for h in case.hashes.select_related("hash") if h.hash.signal_type == "pdq")

    reported = platform.client.post(
        "/api/v1/outcomes",
        {
            "outcomes": [
                {
                    "signal_type": "pdq",
                    "value": pdq_value,
                    "program": "take-it-down",
                    "kind": "removed",
                    "occurred_at": "2026-01-01T00:00:00Z",
                    "client_ref": "removal-1",
                }
            ]
        },
        format="json",
    )
    assert reported.status_code in (200, 201, 207), reported.json()
    page.get_by_test_id("status-submit").click()
    removed = page.locator("[data-testid=case-hash][data-signal-type=pdq] [data-count=removed]")
    wait_for(lambda: "1" in [removed.nth(i).inner_text() for i in range(removed.count())], what="removal count")
    check_accessibility(page, "status")
    page.screenshot(path=str(ARTIFACTS / "status-phone.png"), full_page=True)

    page.get_by_test_id("case-withdraw").click()
    wait_for(lambda: page.locator("[data-testid=case-hash][data-status=withdrawn]").count() == 6, what="withdrawn")
    page.screenshot(path=str(ARTIFACTS / "status-withdrawn-phone.png"), full_page=True)
    wait_for(
        lambda: len([e for e in receiver.entries() if e["kind"] == "hash.withdrawn"]) == 6,
        timeout=60,
        what="tombstones",
    )
    withdrawn = [e for e in receiver.entries() if e["kind"] == "hash.withdrawn"]
    # Each tombstone is signed by its hash's own key (the page re-derived it from the words).
    assert {e["envelopes"][0]["signatures"][0]["keyid"] for e in withdrawn} == {
        e["envelopes"][0]["signatures"][0]["keyid"] for e in added
    }
    case.refresh_from_db()
    assert case.status == "withdrawn"

    # Nothing the page sent carries the files' bytes; it talked to this server only.
    assert sent and all(url.startswith(live_server.url) or url.startswith(("blob:", "data:")) for _, url, _ in sent)
    for method, url, body in sent:
        for name, data in files.items():
            assert not (data and leaks(body, data)), f"{method} {url} carries bytes of {name}"
    context.close()
