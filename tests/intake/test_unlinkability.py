"""Members cannot join their data on a person's case.

Two platforms receive the same case's hashes, by the pull feed and by the StopNCII
facade. Within what each receives, nothing but public program data is shared between
two hashes of the case (each hash has its own key; no case reference); across the two
platforms, nothing is equal but what belongs to one hash alone (its value, its envelope,
its own key) and public program data; the case's name each of them sees is its own.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from django.test import Client
from hashexchange_client import dsse, payloads

from exchange.feed import feed_page
from intake.models import Case
from members.models import Member, Program
from tests.conftest import make_caller, make_member
from tests.exchange.test_stopncii import fetch_run, stopncii_client
from tests.intake.person import Person, open_case, post
from tests.signing import random_pdq

# Times: the hashes of one case are sent together, so their event times and signing
# times are alike (docs/intake.md says what this leaves).
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def leaves(value: Any, path: str = "") -> Iterator[str]:
    """Every scalar in what a member received as "field.path=value", DSSE payloads (base64
    JSON) decoded too, so that only equal values of the same field compare equal."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}.{key}")
            if key == "payload" and isinstance(item, str):
                try:
                    yield from leaves(json.loads(base64.b64decode(item)), f"{path}.payload:")
                except ValueError:
                    pass
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item, path)
    elif value is not None and not isinstance(value, bool):
        yield f"{path}={value}"


def value_of(leaf: str) -> str:
    return leaf.split("=", 1)[1]


def received(member: Member, case_values: set[str], key_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    """What the member's feed holds about the case: per key id, the hash entry and the key entry."""
    entries = feed_page(member=member, after=0, limit=1000).entries
    per_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        if entry.get("hash", {}).get("value") in case_values:
            (signature,) = entry["envelopes"][0]["signatures"]
            per_key[signature["keyid"]].append(entry)
        elif entry.get("key", {}).get("key_id") in key_ids:
            per_key[entry["key"]["key_id"]].append(entry)
    return per_key


def test_two_members_receive_nothing_that_joins_a_case(programs: dict[str, Program], client: Client) -> None:
    a = make_member("platform-a", Member.Kind.PLATFORM, programs["minor"])
    b = make_member("platform-b", Member.Kind.PLATFORM, programs["minor"])
    person = Person()
    values = {random_pdq(): "pdq", random_pdq(): "pdq", secrets.token_hex(16): "md5"}
    envelopes = [
        person.submission(v, program="take-it-down", signal_type=t, **({"quality": 80 + i} if t == "pdq" else {}))
        for i, (v, t) in enumerate(values.items())
    ]
    opened = open_case(client, person, envelopes)
    assert opened.status_code == 200, opened.json()
    case = Case.objects.get(code=person.code)
    key_ids = set(case.hashes.values_list("signing_key__key_id", flat=True))
    assert len(key_ids) == 3  # a key per hash

    views = {m.slug: received(m, set(values), key_ids) for m in (a, b)}
    public = {
        "take-it-down",
        "hash.added",
        "key.registered",
        "pdq",
        "md5",
        "ed25519",
        "intake-web",
        "application/vnd.hashexchange.submission+json",
        "application/vnd.hashexchange.key-binding+json",
    }
    server = next(e for entries in views["platform-a"].values() for e in entries if "hash" in e)["origin"]
    public |= {server["server"], server["server_public_key"]}

    names = {}
    for slug, per_key in views.items():
        assert set(per_key) == key_ids, f"{slug} was sent every hash and every key"
        # The member's own name for the case: on every hash entry, the same one.
        cases = {entry["case"] for entries in per_key.values() for entry in entries if "hash" in entry}
        assert len(cases) == 1
        names[slug] = cases.pop()
        # Between two hashes of the case, nothing but public data and times is shared.
        seen_in: dict[str, set[str]] = defaultdict(set)
        for key_id, entries in per_key.items():
            for leaf in leaves(
                [{k: v for k, v in e.items() if k not in ("case", "seq", "leaf_index")} for e in entries]
            ):
                seen_in[leaf].add(key_id)
        shared = {leaf for leaf, keys in seen_in.items() if len(keys) > 1}
        assert {value_of(leaf) for leaf in shared if not ISO_TIME.match(value_of(leaf))} <= public, shared

    # Across the two members: what is equal belongs to one hash alone, or is public.
    per_hash_a = {key_id: set(leaves(entries)) for key_id, entries in views["platform-a"].items()}
    all_b = set(leaves(list(views["platform-b"].values())))
    for key_id, own in per_hash_a.items():
        others = set().union(*(leaves_ for k, leaves_ in per_hash_a.items() if k != key_id))
        common = (own & all_b) & others
        assert {value_of(leaf) for leaf in common if not ISO_TIME.match(value_of(leaf))} <= public, common
    assert names["platform-a"] != names["platform-b"]
    assert person.code not in json.dumps(views)
    assert all(entry.get("case") != str(case.pk) for per_key in views.values() for e in per_key.values() for entry in e)
    assert person.public_key not in json.dumps(views)  # the case key signs nothing members see

    # The StopNCII facade: each member its own case number, the same for every hash of the case.
    numbers = {}
    for member in (a, b):
        records, _ = fetch_run(stopncii_client(make_caller(member).token))
        mine = [r for r in records if r["hashValue"] in values]
        assert len(mine) == 2  # the PDQs (the facade carries no MD5 of images)
        found = {number for record in mine for number in record["caseNumbers"]}
        assert len(found) == 1
        numbers[member.slug] = found.pop()
        assert numbers[member.slug] == names[member.slug]  # one name per member, feed and facade alike
    assert numbers["platform-a"] != numbers["platform-b"]


def test_a_hash_is_withdrawn_with_its_own_key_only(programs: dict[str, Program], client: Client) -> None:
    person = Person()
    first, second = random_pdq(), random_pdq()
    opened = open_case(client, person, [person.submission(v, program="take-it-down") for v in (first, second)])
    assert opened.status_code == 200
    status = post(client, "status", {"code": person.code, "request": person.proof()}).json()
    assert [h["key_index"] for h in status["hashes"]] == [0, 1]
    # Signed by the other hash's key, or by the case key: refused.
    body = payloads.withdrawal_payload(program="take-it-down", signal_type="pdq", value=first)
    for key in (person.hash_key(1), person.key):
        wrong = dsse.sign_envelope(payloads.WITHDRAWAL_TYPE, body, key)
        answer = post(client, "withdraw", {"code": person.code, "request": person.proof(), "envelopes": [wrong]})
        assert answer.json()["results"][0]["error"]["code"] == "not_case_key"
    answer = post(
        client,
        "withdraw",
        {
            "code": person.code,
            "request": person.proof(),
            "envelopes": [person.withdrawal(first, program="take-it-down")],
        },
    )
    assert answer.json()["results"][0]["status"] == "accepted"
