"""The audit log over the API: signed checkpoints, proofs for whoever may have them, tiles for
auditors, witnesses' cosignatures, and the leaf index in feed entries.

Everything a member receives is checked the way a member would check it: with the client
package's verifier and the server key from `GET /api/v1/server-key`, and proofs also with
the RFC 6962 reference written in the tests.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.db import transaction
from hashexchange_client import merkle, note

from core import tlog
from core.ledger import Actor, Event, NewEvent, record_many
from exchange import auditlog, tasks
from exchange.models import Checkpoint, Cosignature, Witness
from members.models import Member
from tests.conftest import Caller, local_server, make_caller, make_member
from tests.exchange.rewrite import rewrite
from tests.rfc6962 import Rfc6962
from tests.signing import make_signer
from tests.witness import TlogWitness


def log_key(client: Any) -> note.Verifier:
    answer = client.get("/api/v1/server-key").json()
    verifier = note.parse_vkey(answer["log_vkey"])
    assert verifier.name == answer["log_origin"]
    assert base64.b64encode(verifier.public_key).decode() == answer["public_key"]
    return verifier


def leaf_data() -> list[bytes]:
    return [event.leaf_data() for event in Event.objects.order_by("seq")]


def b64d(value: str) -> bytes:
    return base64.b64decode(value)


@pytest.fixture
def submitted(platform_a: Caller, platform_b: Caller) -> dict[str, Any]:
    """Platform A submits a hash (platform B, in the same program, is sent it); a checkpoint follows."""
    signer = make_signer(platform_a)
    result = signer.submit(signer.submission()).json()["results"][0]
    added = Event.objects.get(kind="hash.added", subject_id=str(result["hash_id"]))
    checkpoint = auditlog.checkpoint_create()
    return {"event": added, "checkpoint": checkpoint, "signer": signer}


# Checkpoints -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_checkpoint_is_signed_when_the_log_grew_and_only_then(platform_a: Caller) -> None:
    first = auditlog.checkpoint_create()
    assert first is not None and first.size == Event.objects.count()
    assert auditlog.checkpoint_create() is None
    with transaction.atomic():
        record_many([NewEvent("t.e", "t", str(i)) for i in range(300)], actor=Actor.system("t"))
    second = auditlog.checkpoint_create()
    assert second.size == first.size + 300
    assert bytes(second.root_hash) == Rfc6962.mth(leaf_data())
    checkpoint, _, _ = note.open_checkpoint(second.note, log_key(platform_a.client))
    assert (checkpoint.size, checkpoint.root_hash) == (second.size, bytes(second.root_hash))


@pytest.mark.django_db
def test_no_checkpoint_is_signed_over_a_log_that_does_not_extend_the_last(platform_a: Caller) -> None:
    with transaction.atomic():
        record_many([NewEvent("t.e", "t", str(i)) for i in range(10)], actor=Actor.system("t"))
    signed = auditlog.checkpoint_create()
    # Someone with database access rewrites an early event and its leaf hash consistently.
    rewrite(("UPDATE exchange_event SET leaf_hash = %s WHERE seq = 3", ["00" * 32]), table="exchange_event")
    with transaction.atomic():
        record_many([NewEvent("t.e", "t", "late")], actor=Actor.system("t"))
    with pytest.raises(auditlog.InconsistentLog):
        auditlog.checkpoint_create()
    assert auditlog.latest_checkpoint() == signed


@pytest.mark.django_db
def test_the_checkpoint_endpoint_serves_the_signed_note(platform_a: Caller, auditor: Caller) -> None:
    assert platform_a.client.get("/api/v1/log/checkpoint").status_code == 404
    auditlog.checkpoint_create()
    for caller in (platform_a, auditor):
        response = caller.client.get("/api/v1/log/checkpoint")
        assert response.status_code == 200
        assert response["Content-Type"] == "text/plain; charset=utf-8"
        checkpoint, _, _ = note.open_checkpoint(response.content, log_key(caller.client))
        assert checkpoint.size == Event.objects.count()
        assert checkpoint.origin == "127.0.0.1:8000/api/v1/log"


# Inclusion proofs --------------------------------------------------------------------------


@pytest.mark.django_db
def test_members_get_inclusion_proofs_of_their_feed_and_verify_them(
    submitted: dict[str, Any], platform_a: Caller, platform_b: Caller
) -> None:
    event = submitted["event"]
    for caller in (platform_a, platform_b):  # A submitted it; B, in the same program, was sent it
        answer = caller.client.get(f"/api/v1/log/proof/inclusion?seq={event.seq}")
        assert answer.status_code == 200, answer.content
        body = answer.json()
        assert body["leaf_index"] == event.seq - 1 and body["seq"] == event.seq
        assert body["leaf_hash"] == event.leaf_hash
        checkpoint, _, _ = note.open_checkpoint(body["checkpoint"], log_key(caller.client))
        assert (checkpoint.size, base64.b64encode(checkpoint.root_hash).decode()) == (
            body["tree_size"],
            body["root_hash"],
        )
        proof = [b64d(item) for item in body["proof"]]
        merkle.verify_inclusion(
            bytes.fromhex(event.leaf_hash), body["leaf_index"], checkpoint.size, proof, checkpoint.root_hash
        )
        assert Rfc6962.inclusion_holds(
            merkle.leaf_hash(event.leaf_data()), body["leaf_index"], checkpoint.size, proof, checkpoint.root_hash
        )
    assert platform_a.client.get(f"/api/v1/log/proof/inclusion?leaf_index={event.seq - 1}").json() == answer.json()


@pytest.mark.django_db
def test_a_proof_of_an_event_outside_the_callers_feed_is_refused(
    submitted: dict[str, Any], other_program: Any, auditor: Caller, platform_a: Caller
) -> None:
    outsider = make_caller(make_member("outsider", Member.Kind.PLATFORM, other_program))
    auditlog.checkpoint_create()
    event = submitted["event"]
    answer = outsider.client.get(f"/api/v1/log/proof/inclusion?seq={event.seq}")
    assert answer.status_code == 404 and answer["Content-Type"] == "application/problem+json"
    # The outsider's own doings (it opted in through the API) are its to prove.
    outsider.client.post("/api/v1/enrollments", {"program": "take-it-down", "state": "opted_in"}, format="json")
    own = Event.objects.filter(kind="enrollment.changed", actor_id="outsider").last()
    auditlog.checkpoint_create()
    assert outsider.client.get(f"/api/v1/log/proof/inclusion?seq={own.seq}").status_code == 200
    # Another member's credential being issued is nobody's but auditors'.
    private = Event.objects.filter(kind="credential.issued", subject_id=platform_a.credential.prefix).get()
    assert outsider.client.get(f"/api/v1/log/proof/inclusion?seq={private.seq}").status_code == 404
    assert auditor.client.get(f"/api/v1/log/proof/inclusion?seq={private.seq}").status_code == 200


@pytest.mark.django_db
def test_an_inclusion_proof_as_a_tlog_proof_file_verifies_offline(
    submitted: dict[str, Any], platform_b: Caller
) -> None:
    event = submitted["event"]
    answer = platform_b.client.get(f"/api/v1/log/proof/inclusion?seq={event.seq}&format=tlog-proof")
    assert answer.status_code == 200 and answer["Content-Type"] == "text/plain; charset=utf-8"
    proof = note.parse_tlog_proof(answer.content.decode())
    checkpoint, _, _ = note.open_checkpoint(proof.checkpoint, log_key(platform_b.client))
    merkle.verify_inclusion(
        merkle.leaf_hash(event.leaf_data()), proof.index, checkpoint.size, list(proof.proof), checkpoint.root_hash
    )
    assert proof.index == event.seq - 1


@pytest.mark.django_db
def test_proofs_from_cached_subtrees_are_right_even_when_the_cache_is_not(auditor: Caller) -> None:
    """Proofs reuse the subtree hashes earlier proofs computed (core.tlog.node_cache). A cache
    that no longer matches the database (a restored database, a rolled-back test) must not
    change a single answer: every proof is checked against the signed root first."""
    with transaction.atomic():
        record_many([NewEvent("t.e", "t", str(i)) for i in range(700)], actor=Actor.system("t"))
    checkpoint = auditlog.checkpoint_create()
    data = leaf_data()
    size = checkpoint.size
    first = 300

    def answers() -> tuple[list[list[bytes]], dict[str, Any]]:
        paths = []
        for index in (0, 255, 256, 511, size - 1):
            body = auditor.client.get(f"/api/v1/log/proof/inclusion?leaf_index={index}").json()
            paths.append([b64d(item) for item in body["proof"]])
        return paths, auditor.client.get(f"/api/v1/log/proof/consistency?first={first}").json()

    expected = [Rfc6962.path(index, data) for index in (0, 255, 256, 511, size - 1)]
    paths, consistency = answers()  # computed from the tiles, and cached
    assert paths == expected
    assert tlog.node_cache.hashes
    for key in tlog.node_cache.hashes:  # every cached subtree now says something else
        tlog.node_cache.hashes[key] = bytes(32)
    paths, consistency_again = answers()
    assert paths == expected
    assert consistency_again == consistency
    assert [b64d(item) for item in consistency["proof"]] == Rfc6962.proof(first, data)
    assert b64d(consistency["first_root_hash"]) == Rfc6962.mth(data[:first])


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("", "leaf_index"),
        ("leaf_index=1&seq=2", "leaf_index"),
        ("leaf_index=-1", "leaf_index"),
        ("leaf_index=x", "leaf_index"),
        ("seq=0", "seq"),
        ("leaf_index=100000", "leaf_index"),
        ("leaf_index=0&tree_size=100000", "tree_size"),
        ("leaf_index=0&tree_size=0", "tree_size"),
        ("leaf_index=0&tree_size=ten", "tree_size"),
    ],
)
def test_bad_inclusion_queries_are_400s_naming_the_parameter(
    submitted: dict[str, Any], platform_a: Caller, query: str, parameter: str
) -> None:
    answer = platform_a.client.get(f"/api/v1/log/proof/inclusion?{query}")
    assert answer.status_code == 400, answer.content
    assert answer["Content-Type"] == "application/problem+json"
    assert parameter in answer.json()["errors"], answer.json()
    assert answer.json()["detail"].startswith(parameter)


@pytest.mark.django_db
def test_proofs_wait_for_a_checkpoint(platform_a: Caller) -> None:
    answer = platform_a.client.get("/api/v1/log/proof/inclusion?leaf_index=0")
    assert answer.status_code == 404 and answer.json()["code"] == "no_checkpoint"


# Consistency proofs ------------------------------------------------------------------------


@pytest.mark.django_db
def test_consistency_proofs_between_checkpoints_verify(submitted: dict[str, Any], platform_b: Caller) -> None:
    first = submitted["checkpoint"]
    with transaction.atomic():
        record_many([NewEvent("t.e", "t", str(i)) for i in range(600)], actor=Actor.system("t"))
    second = auditlog.checkpoint_create()
    body = platform_b.client.get(f"/api/v1/log/proof/consistency?first={first.size}").json()
    assert (body["first"], body["second"]) == (first.size, second.size)
    new, _, _ = note.open_checkpoint(body["checkpoint"], log_key(platform_b.client))
    old, _, _ = note.open_checkpoint(first.note, log_key(platform_b.client))
    proof = [b64d(item) for item in body["proof"]]
    merkle.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
    assert Rfc6962.consistency_holds(old.size, new.size, proof, old.root_hash, new.root_hash)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "parameter"),
    [("", "first"), ("first=-1", "first"), ("first=5&second=2", "first"), ("first=1&second=999999", "second")],
)
def test_bad_consistency_queries_are_400s_naming_the_parameter(
    submitted: dict[str, Any], platform_a: Caller, query: str, parameter: str
) -> None:
    answer = platform_a.client.get(f"/api/v1/log/proof/consistency?{query}")
    assert answer.status_code == 400, answer.content
    assert parameter in answer.json()["errors"]


# Tiles -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_auditors_read_tiles_and_entry_bundles(submitted: dict[str, Any], auditor: Caller, platform_a: Caller) -> None:
    with transaction.atomic():
        record_many([NewEvent("t.e", "t", str(i)) for i in range(300)], actor=Actor.system("t"))
    size = Event.objects.count()
    data = leaf_data()
    full = auditor.client.get("/api/v1/log/tile/0/000")
    assert full.status_code == 200 and full["Content-Type"] == "application/octet-stream"
    assert full.content == b"".join(merkle.leaf_hash(item) for item in data[:256])
    partial = auditor.client.get(f"/api/v1/log/tile/0/001.p/{size - 256}")
    assert merkle.split_hashes(partial.content) == [merkle.leaf_hash(item) for item in data[256:]]
    assert auditor.client.get("/api/v1/log/tile/1/000.p/1").content == Rfc6962.mth(data[:256])
    bundle = auditor.client.get(f"/api/v1/log/tile/entries/001.p/{size - 256}").content
    assert bundle == b"".join(len(item).to_bytes(2, "big") + item for item in data[256:])
    assert platform_a.client.get("/api/v1/log/tile/0/000").status_code == 403
    bad = auditor.client.get("/api/v1/log/tile/0/1")
    assert bad.status_code == 400 and "tile" in bad.json()["errors"]
    assert auditor.client.get("/api/v1/log/tile/0/002").status_code == 404
    assert auditor.client.get("/api/v1/log/tile/0/001").status_code == 404  # not full yet


# Feed entries ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_feed_entries_and_the_event_log_carry_the_leaf_index(
    submitted: dict[str, Any], platform_b: Caller, auditor: Caller
) -> None:
    entries = platform_b.client.get("/api/v1/feed?after=0").json()["entries"]
    assert entries and all(entry["leaf_index"] == entry["seq"] - 1 for entry in entries)
    events = auditor.client.get("/api/v1/events?after=0").json()["events"]
    assert events and all(event["leaf_index"] == event["seq"] - 1 for event in events)
    assert Event.objects.order_by("seq").first().seq == 1  # seq starts at 1, so leaf index = seq - 1


@pytest.mark.django_db
def test_webhook_bodies_carry_the_leaf_index_and_it_proves_the_event(
    platform_a: Caller, platform_b: Caller, receiver: Any
) -> None:
    from exchange import delivery as webhook_delivery
    from exchange import services

    endpoint, _ = services.webhook_create(member=platform_b.member, url=receiver.url, actor=Actor.admin("admin"))
    signer = make_signer(platform_a)
    signer.submit(signer.submission(), signer.submission())
    webhook_delivery.deliver_endpoint(endpoint.pk)
    entries = receiver.entries()
    assert [entry["kind"] for entry in entries].count("hash.added") == 2
    assert all(entry["leaf_index"] == entry["seq"] - 1 for entry in entries)
    auditlog.checkpoint_create()
    added = next(entry for entry in entries if entry["kind"] == "hash.added")
    body = platform_b.client.get(f"/api/v1/log/proof/inclusion?leaf_index={added['leaf_index']}").json()
    assert json.loads(body["leaf_data"])["data"]["hash_id"] == added["hash"]["id"]


# Witnesses ---------------------------------------------------------------------------------


@pytest.fixture
def witness(settings: Any) -> Any:
    yield from local_server(settings, TlogWitness(log=auditlog.verifier()))


def add_witness(server: TlogWitness) -> Witness:
    row = Witness(name=server.name, public_key=server.public_key_b64, url=server.url)
    row.full_clean()
    return auditlog.witness_save(witness=row, actor=Actor.admin("admin"))


@pytest.mark.django_db
def test_a_witness_cosigns_checkpoints_and_the_checkpoint_carries_it(platform_a: Caller, witness: TlogWitness) -> None:
    row = add_witness(witness)
    assert Event.objects.filter(kind="witness.configured", subject_id=witness.name).exists()
    assert tasks.checkpoint_task() == Event.objects.count()
    with transaction.atomic():
        record_many([NewEvent("t.e", "t", str(i)) for i in range(700)], actor=Actor.system("t"))
    size = tasks.checkpoint_task()
    assert [old for old, status in witness.requests] == [0, size - 700] and all(
        status == 200 for _, status in witness.requests
    )
    row.refresh_from_db()
    assert row.last_size == size and row.last_error == ""
    text = platform_a.client.get("/api/v1/log/checkpoint").content
    checkpoint, _, witnesses = note.open_checkpoint(text, log_key(platform_a.client), [witness.cosigner.verifier])
    assert checkpoint.size == size and witnesses == [witness.cosigner.verifier]
    assert Cosignature.objects.count() == 2
    assert tasks.checkpoint_task() == size and len(witness.requests) == 2  # nothing new: nothing sent


@pytest.mark.django_db
def test_a_witness_that_lost_track_is_caught_up_from_the_size_it_names(
    platform_a: Caller, witness: TlogWitness
) -> None:
    row = add_witness(witness)
    tasks.checkpoint_task()
    Witness.objects.filter(pk=row.pk).update(last_size=0)  # as after restoring an old backup of ours
    with transaction.atomic():
        record_many([NewEvent("t.e", "t", str(i)) for i in range(5)], actor=Actor.system("t"))
    tasks.checkpoint_task()
    assert [status for _, status in witness.requests] == [200, 409, 200]
    assert not Event.objects.filter(kind=auditlog.SPLIT_VIEW).exists()


@pytest.mark.django_db
def test_a_witness_holding_another_tree_of_ours_raises_one_split_view_alarm(
    platform_a: Caller, witness: TlogWitness
) -> None:
    add_witness(witness)
    size = Event.objects.count()
    # The witness was shown another log of the same size, signed with our key: a split view.
    forged = note.Checkpoint(auditlog.origin(), size, merkle.leaf_hash(b"another log"))
    witness.size, witness.root = forged.size, forged.root_hash
    Witness.objects.update(last_size=size)
    tasks.checkpoint_task()
    alarms = Event.objects.filter(kind=auditlog.SPLIT_VIEW)
    assert alarms.count() == 1
    assert alarms.get().data["size"] == size and "different tree" in alarms.get().data["detail"]
    with transaction.atomic():
        record_many([NewEvent("t.e", "t", "more")], actor=Actor.system("t"))
    tasks.checkpoint_task()  # the witness refuses again (422): still one alarm until it cosigns
    assert [status for _, status in witness.requests] == [409, 422]
    assert Event.objects.filter(kind=auditlog.SPLIT_VIEW).count() == 1
    assert Witness.objects.get().last_error.startswith("witness witness.test/w1 disagrees")
    assert Checkpoint.objects.count() == 2 and Cosignature.objects.count() == 0


@pytest.mark.django_db
def test_a_witness_is_configured_from_its_verifier_key(witness: TlogWitness) -> None:
    row = Witness(public_key=witness.cosigner.verifier.vkey(), url=witness.url)
    row.full_clean()
    assert row.name == witness.name and row.public_key == witness.public_key_b64
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        Witness(name="x", public_key=auditlog.verifier().vkey(), url=witness.url).full_clean()  # a log key, not 0x04


@pytest.mark.django_db
def test_an_unreachable_witness_is_an_error_not_an_alarm(platform_a: Caller, settings: Any) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    row = Witness(
        name="witness.test/gone", public_key=base64.b64encode(b"\x01" * 32).decode(), url="http://127.0.0.1:9"
    )
    auditlog.witness_save(witness=row, actor=Actor.admin("admin"))
    tasks.checkpoint_task()
    row.refresh_from_db()
    assert row.last_error and row.last_size == 0
    assert not Event.objects.filter(kind=auditlog.SPLIT_VIEW).exists()
    assert tlog.tree_size() == Event.objects.count()


@pytest.mark.django_db
def test_admins_add_a_witness_by_its_verifier_key_and_see_checkpoints(
    admin_client: Any, witness: TlogWitness, platform_a: Caller
) -> None:
    response = admin_client.post(
        "/admin/exchange/witness/add/",
        {"name": "", "public_key": witness.cosigner.verifier.vkey(), "url": witness.url, "is_active": "on"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    row = Witness.objects.get()
    assert (row.name, row.public_key) == (witness.name, witness.public_key_b64)
    configured = Event.objects.get(kind="witness.configured")
    assert (configured.actor_type, configured.actor_id) == ("admin", "admin")
    assert configured.data["vkey"] == witness.cosigner.verifier.vkey()
    tasks.checkpoint_task()
    page = admin_client.get("/admin/exchange/checkpoint/").content.decode()
    assert witness.name in page
    assert admin_client.get(f"/admin/exchange/checkpoint/{Checkpoint.objects.get().pk}/change/").status_code == 200
    assert admin_client.get(f"/admin/exchange/witness/{row.pk}/delete/").status_code == 403
