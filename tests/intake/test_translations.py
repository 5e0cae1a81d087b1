"""The intake speaks the person's language: every string goes through Django's i18n, and
a catalogue for another language changes the pages, the scripts' messages and the API's
refusals. English ships (locale/en); here a tiny catalogue for a test language is made."""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

from django.test import Client

from tests.intake.person import Person, open_case, post
from tests.signing import random_pdq

ROOT = Path(__file__).resolve().parents[2]
TEST_LANGUAGE = "eo"
CATALOGUE = {
    "Stop your private images from being shared": "TEST Haltigu la dividon de viaj privataj bildoj",
    "Were you under 18 in the photos or videos?": "TEST Ĉu vi estis sub 18 jaroj?",
    # A message the page's script shows (from the page's <template id="messages">).
    "This is not a photo or a video, so nothing will be sent for it.": "TEST Ĉi tio ne estas foto.",
    # A refusal from the JSON API.
    "That code and secret do not open a case. Check both and try again.": "TEST Tiu kodo kaj sekreto ne malfermas.",
}


def write_mo(path: Path, messages: dict[str, str]) -> None:
    """A GNU gettext .mo file (the format msgfmt writes), so the test needs no gettext tools."""
    entries = {"": "Content-Type: text/plain; charset=UTF-8\n", **messages}
    keys = sorted(entries)
    ids = strs = b""
    offsets = []
    for key in keys:
        k, v = key.encode(), entries[key].encode()
        offsets.append((len(ids), len(k), len(strs), len(v)))
        ids += k + b"\0"
        strs += v + b"\0"
    start = 7 * 4 + 16 * len(keys)
    key_table, value_table = [], []
    for o_id, l_id, o_str, l_str in offsets:
        key_table += [l_id, start + o_id]
        value_table += [l_str, start + len(ids) + o_str]
    header = struct.pack("Iiiiiii", 0x950412DE, 0, len(keys), 7 * 4, 7 * 4 + 8 * len(keys), 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        header
        + struct.pack(f"{len(key_table)}i", *key_table)
        + struct.pack(f"{len(value_table)}i", *value_table)
        + ids
        + strs
    )


def test_a_catalogue_for_another_language_changes_the_pages_and_the_refusals(
    programs: dict, client: Client, settings: Any, tmp_path: Path
) -> None:
    write_mo(tmp_path / TEST_LANGUAGE / "LC_MESSAGES" / "django.mo", CATALOGUE)
    settings.LOCALE_PATHS = [tmp_path]
    settings.LANGUAGES = [("en", "English"), (TEST_LANGUAGE, "Esperanto")]

    english = client.get("/intake/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Stop your private images from being shared" in english and "TEST" not in english

    page = client.get("/intake/", HTTP_ACCEPT_LANGUAGE=f"{TEST_LANGUAGE},en;q=0.5")
    assert page["Content-Language"] == TEST_LANGUAGE
    text = page.content.decode()
    assert f'<html lang="{TEST_LANGUAGE}">' in text
    for translated in list(CATALOGUE.values())[:3]:
        assert translated in text, translated
    assert "Stop your private images from being shared" not in text
    # Strings without a translation fall back to English.
    assert "Choose the photos or videos" in text

    person = Person()
    assert open_case(client, person, [person.submission(random_pdq(), program="take-it-down")]).status_code == 200
    refused = post(
        client, "status", {"code": person.code, "request": Person().proof(person.code)}, HTTP_ACCEPT_LANGUAGE="eo"
    )
    assert refused.status_code == 404
    assert refused.json()["detail"] == CATALOGUE["That code and secret do not open a case. Check both and try again."]


def test_the_english_catalogue_holds_every_string_of_the_pages() -> None:
    """locale/en/LC_MESSAGES/django.po is up to date with the templates (makemessages -l en)."""
    catalogue = (ROOT / "locale" / "en" / "LC_MESSAGES" / "django.po").read_text()
    msgids = {
        "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', block))
        for block in re.findall(r"^msgid ((?:\".*\"\n)+)", catalogue, flags=re.M)
    }
    found = []
    for template in (ROOT / "intake" / "templates" / "intake").glob("*.html"):
        found += re.findall(r"{% translate \"([^\"]+)\"", template.read_text())
        found += re.findall(r"{% translate '([^']+)'", template.read_text())
    assert len(found) > 50
    missing = [s for s in found if s.replace('"', '\\"') not in msgids]
    assert not missing, f"run manage.py makemessages -l en: {missing}"
