"""Who may call what: every endpoint × every kind of caller, in one table.

A row lists the status each caller gets. Callers that must be refused leave nothing
behind: no new event, no new row. Under /api/ a caller sends its key as
`Authorization: Bearer <key>`; under /compat/stopncii/ in both of the facade's headers,
`Ocp-Apim-Subscription-Key` and `x-functions-key`; under /compat/ncmec/ as the password
of HTTP Basic, with the member's slug as the user name.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.utils import timezone
from rest_framework.test import APIClient

from core.ledger import Event
from members import services
from members.models import Member, Scope
from tests.conftest import SETUP, Caller, make_caller, make_member


def new_public_key() -> str:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


CALLERS = [
    "anonymous",
    "malformed_key",
    "unknown_key",
    "revoked_key",
    "expired_key",
    "suspended",
    "platform_a",
    "platform_b",
    "intake",
    "peer",
    "auditor",
    "read_only",
]
# The facade's two headers can be wrong in two more ways: one of them missing (platform
# A's key as the subscription key, no function key), or keys of two different members.
COMPAT_CALLERS = [*CALLERS, "one_header", "two_members"]

# Refusals shared by every endpoint: authentication first, then member status.
AUTH = {
    "anonymous": 401,
    "malformed_key": 401,
    "unknown_key": 401,
    "revoked_key": 401,
    "expired_key": 401,
    "suspended": 403,
    "one_header": 401,
    "two_members": 401,
}
UNKNOWN_KEY = "hxk_000000000000_" + "x" * 43


def callers_of(path: str) -> list[str]:
    return COMPAT_CALLERS if path.startswith("/compat/") else CALLERS


# (name, method, path, body, {caller: status}). A row that does not name `anonymous` gives
# the callers of AUTH its refusals; under /compat/ the callers are COMPAT_CALLERS.
ENDPOINTS: list[tuple[str, str, str, Any, dict[str, int]]] = [
    (
        "API schema (public)",
        "get",
        "/api/v1/schema/",
        None,
        dict.fromkeys(CALLERS, 200),
    ),
    (
        "API docs (public)",
        "get",
        "/api/v1/docs/",
        None,
        dict.fromkeys(CALLERS, 200),
    ),
    (
        "me",
        "get",
        "/api/v1/me",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 200, "read_only": 200},
    ),
    (
        "programs",
        "get",
        "/api/v1/programs",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 200, "read_only": 200},
    ),
    (
        "keys list",
        "get",
        "/api/v1/keys",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 403, "read_only": 403},
    ),
    (
        "keys register",
        "post",
        "/api/v1/keys",
        "new_key",
        {"platform_a": 201, "platform_b": 201, "intake": 201, "peer": 201, "auditor": 403, "read_only": 403},
    ),
    (
        "key detail (A's)",
        "get",
        "/api/v1/keys/{key_a}",
        None,
        {"platform_a": 200, "platform_b": 404, "intake": 404, "peer": 404, "auditor": 403, "read_only": 403},
    ),
    (
        "key revoke (A's)",
        "post",
        "/api/v1/keys/{key_a}/revoke",
        {"reason": "rotated"},
        {"platform_a": 200, "platform_b": 404, "intake": 404, "peer": 404, "auditor": 403, "read_only": 403},
    ),
    (
        "enrollments list",
        "get",
        "/api/v1/enrollments",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 403, "read_only": 403},
    ),
    (
        "enrollment detail",
        "get",
        "/api/v1/enrollments/take-it-down",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 403, "read_only": 403},
    ),
    (
        "submit (signed by A)",
        "post",
        "/api/v1/submissions",
        "submission_a",
        {"platform_a": 201, "platform_b": 403, "intake": 403, "peer": 403, "auditor": 403, "read_only": 403},
    ),
    (
        "submit (signed by the caller)",
        "post",
        "/api/v1/submissions",
        "own_submission",
        {"platform_a": 201, "platform_b": 201, "intake": 201, "peer": 201, "auditor": 403, "read_only": 403},
    ),
    (
        "withdraw (signed by A)",
        "post",
        "/api/v1/withdrawals",
        "withdrawal_a",
        {"platform_a": 201, "platform_b": 403, "intake": 403, "peer": 403, "auditor": 403, "read_only": 403},
    ),
    (
        "hash detail (A's, in take-it-down)",
        "get",
        "/api/v1/hashes/{hash_a}",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 403, "read_only": 200},
    ),
    (
        "feed",
        "get",
        "/api/v1/feed?after=0",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 403, "read_only": 200},
    ),
    (
        "server key (public)",
        "get",
        "/api/v1/server-key",
        None,
        dict.fromkeys(CALLERS, 200),
    ),
    (
        "webhooks list",
        "get",
        "/api/v1/webhooks",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 403, "peer": 200, "auditor": 403, "read_only": 403},
    ),
    (
        "webhook create",
        "post",
        "/api/v1/webhooks",
        "new_webhook",
        {"platform_a": 201, "platform_b": 201, "intake": 403, "peer": 201, "auditor": 403, "read_only": 403},
    ),
    (
        "webhook detail (A's)",
        "get",
        "/api/v1/webhooks/{hook_a}",
        None,
        {"platform_a": 200, "platform_b": 404, "intake": 403, "peer": 404, "auditor": 403, "read_only": 403},
    ),
    (
        "webhook update (A's)",
        "patch",
        "/api/v1/webhooks/{hook_a}",
        {"description": "changed"},
        {"platform_a": 200, "platform_b": 404, "intake": 403, "peer": 404, "auditor": 403, "read_only": 403},
    ),
    (
        "webhook rotate (A's)",
        "post",
        "/api/v1/webhooks/{hook_a}/rotate-secret",
        {"grace_hours": 1},
        {"platform_a": 200, "platform_b": 404, "intake": 403, "peer": 404, "auditor": 403, "read_only": 403},
    ),
    (
        "webhook test (A's)",
        "post",
        "/api/v1/webhooks/{hook_a}/test",
        None,
        {"platform_a": 200, "platform_b": 404, "intake": 403, "peer": 404, "auditor": 403, "read_only": 403},
    ),
    (
        "webhook delete (A's)",
        "delete",
        "/api/v1/webhooks/{hook_a}",
        None,
        {"platform_a": 204, "platform_b": 404, "intake": 403, "peer": 404, "auditor": 403, "read_only": 403},
    ),
    (
        "outcomes report",
        "post",
        "/api/v1/outcomes",
        {
            "outcomes": [
                {
                    "hash_id": 1,
                    "program": "take-it-down",
                    "kind": "matched",
                    "occurred_at": "2026-01-01T00:00:00Z",
                    "client_ref": "x",
                }
            ]
        },
        {"platform_a": 200, "platform_b": 200, "intake": 403, "peer": 200, "auditor": 403, "read_only": 403},
    ),
    (
        "obligations",
        "get",
        "/api/v1/obligations",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 403, "read_only": 200},
    ),
    (
        "program report",
        "get",
        "/api/v1/reports/programs/take-it-down",
        None,
        {"platform_a": 403, "platform_b": 403, "intake": 403, "peer": 403, "auditor": 200, "read_only": 403},
    ),
    (
        "member report",
        "get",
        "/api/v1/reports/members/platform-a",
        None,
        {"platform_a": 403, "platform_b": 403, "intake": 403, "peer": 403, "auditor": 200, "read_only": 403},
    ),
    (
        "event log",
        "get",
        "/api/v1/events?after=0",
        None,
        {"platform_a": 403, "platform_b": 403, "intake": 403, "peer": 403, "auditor": 200, "read_only": 403},
    ),
    (
        "audit log checkpoint",
        "get",
        "/api/v1/log/checkpoint",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 200, "read_only": 200},
    ),
    (
        "inclusion proof (A's submission, in take-it-down's feed)",
        "get",
        "/api/v1/log/proof/inclusion?seq={seq_a}",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 200, "read_only": 200},
    ),
    (
        "inclusion proof (A's credential issued: in nobody's feed)",
        "get",
        "/api/v1/log/proof/inclusion?seq={seq_private}",
        None,
        {"platform_a": 404, "platform_b": 404, "intake": 404, "peer": 404, "auditor": 200, "read_only": 404},
    ),
    (
        "consistency proof",
        "get",
        "/api/v1/log/proof/consistency?first=1",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 200, "read_only": 200},
    ),
    (
        "program snapshot (none built yet: 404 to those who receive the program)",
        "get",
        "/api/v1/programs/take-it-down/snapshot",
        None,
        {"platform_a": 404, "platform_b": 404, "intake": 404, "peer": 404, "auditor": 403, "read_only": 404},
    ),
    (
        "program snapshot file (no such file: 404 to those who receive the program)",
        "get",
        "/api/v1/programs/take-it-down/snapshot/nope.ndjson.gz",
        None,
        {"platform_a": 404, "platform_b": 404, "intake": 404, "peer": 404, "auditor": 403, "read_only": 404},
    ),
    (
        "audit log tile",
        "get",
        "/api/v1/log/tile/0/000.p/1",
        None,
        {"platform_a": 403, "platform_b": 403, "intake": 403, "peer": 403, "auditor": 200, "read_only": 403},
    ),
    (
        "audit log entry bundle",
        "get",
        "/api/v1/log/tile/entries/000.p/1",
        None,
        {"platform_a": 403, "platform_b": 403, "intake": 403, "peer": 403, "auditor": 200, "read_only": 403},
    ),
    (
        "audit log entries",
        "get",
        "/api/v1/log/entries?start=0&end=1",
        None,
        {"platform_a": 403, "platform_b": 403, "intake": 403, "peer": 403, "auditor": 200, "read_only": 403},
    ),
    (
        "match",
        "post",
        "/api/v1/match",
        "match_a",
        {"platform_a": 200, "platform_b": 200, "intake": 403, "peer": 403, "auditor": 403, "read_only": 403},
    ),
    (
        "enrollment set",
        "post",
        "/api/v1/enrollments",
        {"program": "ncii", "state": "opted_in"},
        {"platform_a": 201, "platform_b": 201, "intake": 201, "peer": 201, "auditor": 403, "read_only": 403},
    ),
    (
        "stopncii FetchHashes",
        "get",
        "/compat/stopncii/v1/FetchHashes?startTimestamp=10&pageSize=10",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 403, "read_only": 200},
    ),
    (
        "stopncii SubmitFeedback (on A's hash)",
        "post",
        "/compat/stopncii/v1/SubmitFeedback",
        "feedback_a",
        {"platform_a": 200, "platform_b": 200, "intake": 403, "peer": 200, "auditor": 403, "read_only": 403},
    ),
    (
        "stopncii SubmitHashes (unsigned, allowed from A and the peer)",
        "post",
        "/compat/stopncii/v1/SubmitHashes",
        "hash_record",
        {"platform_a": 200, "platform_b": 403, "intake": 403, "peer": 200, "auditor": 403, "read_only": 403},
    ),
    (
        "stopncii take-it-down FetchHashes",
        "get",
        "/compat/stopncii/programs/take-it-down/v1/FetchHashes?startTimestamp=10&pageSize=10",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 403, "read_only": 200},
    ),
    (
        "stopncii take-it-down SubmitFeedback (on A's hash)",
        "post",
        "/compat/stopncii/programs/take-it-down/v1/SubmitFeedback",
        "feedback_a",
        {"platform_a": 200, "platform_b": 200, "intake": 403, "peer": 200, "auditor": 403, "read_only": 403},
    ),
    (
        "stopncii take-it-down SubmitHashes (unsigned, allowed from A and the peer)",
        "post",
        "/compat/stopncii/programs/take-it-down/v1/SubmitHashes",
        "hash_record",
        {"platform_a": 200, "platform_b": 403, "intake": 403, "peer": 200, "auditor": 403, "read_only": 403},
    ),
    (
        "stopncii ncii FetchHashes (a program no caller receives)",
        "get",
        "/compat/stopncii/programs/ncii/v1/FetchHashes?startTimestamp=10&pageSize=10",
        None,
        {"platform_a": 403, "platform_b": 403, "intake": 403, "peer": 403, "auditor": 403, "read_only": 403},
    ),
    (
        "stopncii unknown endpoint",
        "get",
        "/compat/stopncii/v1/FetchEverything",
        None,
        dict.fromkeys(COMPAT_CALLERS, 404),
    ),
    (
        "ncmec status",
        "get",
        "/compat/ncmec/v2/status",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 403, "read_only": 200},
    ),
    (
        "ncmec members",
        "get",
        "/compat/ncmec/v2/members",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 403, "read_only": 200},
    ),
    (
        "ncmec feedback reasons",
        "get",
        "/compat/ncmec/v2/feedback/PDQ/reasons",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 403, "read_only": 200},
    ),
    (
        "ncmec entries",
        "get",
        "/compat/ncmec/v2/entries",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 403, "read_only": 200},
    ),
    (
        "ncmec feedback (an upvote on A's hash, which nobody was sent yet)",
        "put",
        "/compat/ncmec/v2/entries/{program_id}/{hash_a}/PDQ/feedback",
        "upvote",
        {"platform_a": 403, "platform_b": 403, "intake": 403, "peer": 403, "auditor": 403, "read_only": 403},
    ),
    (
        "ncmec take-it-down status",
        "get",
        "/compat/ncmec/programs/take-it-down/v2/status",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 403, "read_only": 200},
    ),
    (
        "ncmec take-it-down members",
        "get",
        "/compat/ncmec/programs/take-it-down/v2/members",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 403, "read_only": 200},
    ),
    (
        "ncmec take-it-down feedback reasons",
        "get",
        "/compat/ncmec/programs/take-it-down/v2/feedback/PDQ/reasons",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 403, "read_only": 200},
    ),
    (
        "ncmec take-it-down entries",
        "get",
        "/compat/ncmec/programs/take-it-down/v2/entries",
        None,
        {"platform_a": 200, "platform_b": 200, "intake": 200, "peer": 200, "auditor": 403, "read_only": 200},
    ),
    (
        "ncmec take-it-down feedback (an upvote on A's hash, which nobody was sent yet)",
        "put",
        "/compat/ncmec/programs/take-it-down/v2/entries/{program_id}/{hash_a}/PDQ/feedback",
        "upvote",
        {"platform_a": 403, "platform_b": 403, "intake": 403, "peer": 403, "auditor": 403, "read_only": 403},
    ),
    (
        "ncmec ncii entries (a program no caller receives)",
        "get",
        "/compat/ncmec/programs/ncii/v2/entries",
        None,
        {"platform_a": 403, "platform_b": 403, "intake": 403, "peer": 403, "auditor": 403, "read_only": 403},
    ),
    (
        "ncmec unknown endpoint",
        "get",
        "/compat/ncmec/v2/everything",
        None,
        dict.fromkeys(COMPAT_CALLERS, 404),
    ),
]


@pytest.fixture
def cast(program, other_program, platform_a, platform_b, intake, peer, auditor, receiver) -> dict[str, Any]:  # noqa: ANN001
    """Every caller (as an /api/ client and as a StopNCII client), plus platform A's signing
    key and a hash it submitted. The program takes unsigned submissions from A and the peer."""
    from tests.signing import make_signer, random_pdq

    signer = make_signer(platform_a)
    # Members that sign their own submissions; any other caller sends one signed by A
    # (it is refused before the envelope is read).
    signers = {"platform_a": signer, "read_only": signer}
    for name, caller in (("platform_b", platform_b), ("intake", intake), ("peer", peer)):
        signers[name] = make_signer(caller)
    value = random_pdq()
    hash_a = signer.submit(signer.submission(value)).json()["results"][0]["hash_id"]

    def client_with(header: str) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=header)
        return client

    def basic_client(user: str, password: str) -> APIClient:
        return client_with("Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())

    def stopncii_client(subscription_key: str | None, function_key: str | None) -> APIClient:
        client = APIClient()
        headers = {"HTTP_OCP_APIM_SUBSCRIPTION_KEY": subscription_key, "HTTP_X_FUNCTIONS_KEY": function_key}
        client.credentials(**{name: key for name, key in headers.items() if key is not None})
        return client

    revoked = make_caller(platform_a.member)
    services.credential_revoke(credential=revoked.credential, actor=SETUP)
    expired = make_caller(platform_a.member)
    expired.credential.expires_at = timezone.now() - dt.timedelta(seconds=1)
    expired.credential.save()
    suspended = make_caller(make_member("suspended", Member.Kind.PLATFORM, program))
    services.member_set_status(member=suspended.member, status=Member.Status.SUSPENDED, actor=SETUP)
    read_only = make_caller(platform_a.member, scopes=[Scope.READ])
    tokens = {
        "unknown_key": UNKNOWN_KEY,
        "revoked_key": revoked.token,
        "expired_key": expired.token,
        "suspended": suspended.token,
        "read_only": read_only.token,
        **{
            caller.member.slug.replace("-", "_"): caller.token
            for caller in (platform_a, platform_b, intake, peer, auditor)
        },
    }
    callers: dict[str, APIClient] = {
        "anonymous": APIClient(),
        "malformed_key": client_with("Token abc"),
        **{name: client_with(f"Bearer {token}") for name, token in tokens.items()},
    }
    slugs = {"unknown_key": "platform-a", "revoked_key": "platform-a", "expired_key": "platform-a",
             "read_only": "platform-a", "suspended": "suspended"}  # fmt: skip
    ncmec: dict[str, APIClient] = {
        "anonymous": APIClient(),
        "malformed_key": client_with("Basic !!!"),
        "one_header": basic_client("platform-a", ""),  # no password
        "two_members": basic_client("platform-a", platform_b.token),
        **{name: basic_client(slugs.get(name, name.replace("_", "-")), token) for name, token in tokens.items()},
    }
    compat: dict[str, APIClient] = {
        "anonymous": APIClient(),
        "malformed_key": stopncii_client("Token abc", "Token abc"),
        "one_header": stopncii_client(platform_a.token, None),
        "two_members": stopncii_client(platform_a.token, platform_b.token),
        **{name: stopncii_client(token, token) for name, token in tokens.items()},
    }
    for member in (platform_a.member, peer.member):
        services.program_allow_unsigned(program=program, member=member, allow=True, actor=SETUP)
    from exchange import services as exchange_services

    hook_a, _ = exchange_services.webhook_create(member=platform_a.member, url=receiver.url, actor=SETUP)
    from exchange import auditlog

    seq_a = Event.objects.get(kind="hash.added", subject_id=str(hash_a)).seq
    seq_private = Event.objects.get(kind="credential.issued", subject_id=platform_a.credential.prefix).seq
    auditlog.checkpoint_create()
    return {
        "seq_a": seq_a,
        "seq_private": seq_private,
        "callers": callers,
        "compat": compat,
        "ncmec": ncmec,
        "program_id": program.pk,
        "upvote": lambda caller: b"<feedbackSubmission><affirmative/></feedbackSubmission>",
        "hook_a": hook_a.pk,
        "new_webhook": lambda caller: {"url": receiver.url},
        "key_a": signer.key.key_id,
        "hash_a": hash_a,
        "submission_a": lambda caller: signer.submission(),
        "own_submission": lambda caller: signers.get(caller, signer).submission(),
        "withdrawal_a": lambda caller: signer.withdrawal(value),
        "match_a": lambda caller: {"queries": [{"signal_type": "pdq", "value": value}]},
        "feedback_a": lambda caller: {"count": 1, "hashFeedbacks": [{"hashValue": value, "feedbackValue": "Blocked"}]},
        "hash_record": lambda caller: {
            "count": 1,
            "hashRecords": [{"signalType": "ImagePDQ", "hashValue": random_pdq(), "CSPFeedbacks": []}],
        },
    }


def row_counts() -> dict[str, int]:
    from exchange.models import FeedCursor, Outcome, WebhookEndpoint
    from hashes.models import Submission, Withdrawal
    from members.models import ApiCredential, Enrollment, SigningKey

    return {
        "submissions": Submission.objects.count(),
        "withdrawals": Withdrawal.objects.count(),
        "webhooks": WebhookEndpoint.objects.count(),
        "webhook descriptions": WebhookEndpoint.objects.exclude(description="").count(),
        "events": Event.objects.count(),
        "keys": SigningKey.objects.count(),
        "revoked keys": SigningKey.objects.exclude(revoked_at=None).count(),
        "enrollments": Enrollment.objects.count(),
        "credentials": ApiCredential.objects.count(),
        "outcomes": Outcome.objects.count(),
        "feed cursors": FeedCursor.objects.count(),
    }


def _cases() -> list[Any]:
    cases = []
    for name, method, path, body, expected in ENDPOINTS:
        for caller in callers_of(path):
            status = expected.get(caller) if "anonymous" in expected else AUTH.get(caller) or expected.get(caller)
            cases.append(pytest.param(method, path, body, caller, status, id=f"{name}-{caller}"))
    return cases


@pytest.mark.parametrize(("method", "path", "body", "caller", "status"), _cases())
def test_permission_matrix(cast: dict[str, Any], method: str, path: str, body: Any, caller: str, status: int) -> None:
    compat = path.startswith("/compat/")
    facade = "ncmec" if path.startswith("/compat/ncmec") else "compat"
    client: APIClient = cast[facade if compat else "callers"][caller]
    url = path.format(**{name: cast[name] for name in SAMPLE_IDS})
    if body == "new_key":
        payload = {"public_key": new_public_key()}
    elif isinstance(body, str):
        payload = cast[body](caller)  # made fresh for this call (envelopes are signed now)
    else:
        payload = body
    call: Callable[..., Any] = getattr(client, method)
    before = row_counts()
    if isinstance(payload, bytes):
        response = call(url, payload, content_type="application/xml")
    else:
        response = call(url, payload, format="json") if payload is not None else call(url)
    assert response.status_code == status, response.content
    if status >= 400:
        assert response["Content-Type"] == "application/problem+json"
        assert response.json()["detail"]
        assert row_counts() == before, "a refused request left something behind"
    if status == 401:
        expected = {"ncmec": "Basic", "compat": "ApiKey"}[facade] if compat else "Bearer"
        assert response["WWW-Authenticate"].startswith(expected)


def test_every_row_names_every_caller() -> None:
    """A new kind of caller must be given its answer on every row (rows that do not name
    `anonymous` take the shared refusals of AUTH for the callers AUTH names)."""
    incomplete = {}
    for name, _, path, _, expected in ENDPOINTS:
        callers = set(callers_of(path))
        wanted = callers if "anonymous" in expected else callers - set(AUTH)
        if set(expected) != wanted:
            incomplete[name] = {"missing": sorted(wanted - set(expected)), "unknown": sorted(set(expected) - wanted)}
    assert not incomplete, f"rows whose callers are not exactly the cast: {incomplete}"


# Stand-ins for the cast's ids, so that a row's path resolves without a database.
SAMPLE_IDS = {"key_a": "0" * 64, "hash_a": 1, "hook_a": 1, "seq_a": 1, "seq_private": 1, "program_id": 1}
ROUTE_PREFIXES = ("api/", "compat/")


def project_routes() -> set[str]:
    """Every URL pattern under /api/ and /compat/, spelled as Django spells a match's route:
    the patterns of the includes joined, each but the first without its leading `^`."""
    from django.urls import get_resolver

    found: set[str] = set()

    def walk(patterns: Any, prefix: str) -> None:
        for pattern in patterns:
            piece = str(pattern.pattern)
            route = prefix + piece.removeprefix("^") if prefix else piece
            if hasattr(pattern, "url_patterns"):
                walk(pattern.url_patterns, route)
            else:
                found.add(route)

    walk(get_resolver().url_patterns, "")
    return {route for route in found if route.startswith(ROUTE_PREFIXES)}


def matrix_gaps(endpoints: list[tuple[str, str, str, Any, dict[str, int]]]) -> tuple[list[str], list[str]]:
    """(routes that no row reaches, rows that reach no route of ours), both sorted.

    A row reaches the route its path resolves to; several rows (one per method) may reach
    the same route. A row whose path does not resolve, or resolves outside /api/ and
    /compat/, reaches none; nor does one that lands on a catch-all (a route that a row
    answered 404 for every caller reaches, like the facade's "no such endpoint") unless
    it too expects 404 from everyone."""
    from django.urls import Resolver404, resolve

    routes = project_routes()
    reached: dict[str, list[tuple[str, bool]]] = {}
    stray = []
    for name, method, path, _, expected in endpoints:
        url = path.format(**SAMPLE_IDS).split("?")[0]
        where = f"{name} ({method.upper()} {url})"
        try:
            route = resolve(url).route
        except Resolver404:
            stray.append(f"{where}: no route")
            continue
        if route not in routes:
            stray.append(f"{where}: route {route!r} is not under /api/ or /compat/")
            continue
        not_found = "anonymous" in expected and set(expected.values()) == {404}
        reached.setdefault(route, []).append((where, not_found))
    for route, rows in reached.items():
        if any(not_found for _, not_found in rows):
            stray += [f"{where}: only the catch-all {route!r}" for where, not_found in rows if not not_found]
    return sorted(routes - set(reached)), sorted(stray)


def test_every_route_has_a_row_and_every_row_a_route() -> None:
    """A new endpoint must be added to the table above before it can ship, and a removed one
    taken out of it: the routes and the rows match exactly."""
    without_row, without_route = matrix_gaps(ENDPOINTS)
    assert not without_row, f"routes without a row in ENDPOINTS: {without_row}"
    assert not without_route, f"rows of ENDPOINTS without a route: {without_route}"


def test_the_route_check_names_what_is_missing_both_ways() -> None:
    """The check above fails for a new sub-route that only shares a prefix with a row, and
    for a row whose route is gone (or that only a catch-all answers)."""
    without_revoke = [row for row in ENDPOINTS if not row[2].endswith("/revoke")]
    assert matrix_gaps(without_revoke) == (["api/v1/keys/(?P<key_id>[0-9a-f]{64})/revoke$"], [])
    gone = ("key rename", "post", "/api/v1/keys/{key_a}/rename", None, {})
    elsewhere = ("health", "get", "/healthz", None, {})
    caught = ("stopncii FetchAll", "get", "/compat/stopncii/v1/FetchAll", None, {"platform_a": 200})
    assert matrix_gaps([*ENDPOINTS, gone, elsewhere, caught]) == (
        [],
        [
            "health (GET /healthz): route 'healthz' is not under /api/ or /compat/",
            f"key rename (POST /api/v1/keys/{SAMPLE_IDS['key_a']}/rename): no route",
            "stopncii FetchAll (GET /compat/stopncii/v1/FetchAll): only the catch-all 'compat/stopncii(/.*)?$'",
        ],
    )


def test_the_two_platforms_never_see_each_others_keys(cast: dict[str, Any], platform_a: Caller) -> None:
    listed_by_b = cast["callers"]["platform_b"].get("/api/v1/keys").json()["results"]
    assert cast["key_a"] not in {key["key_id"] for key in listed_by_b}
    listed_by_a = platform_a.client.get("/api/v1/keys").json()["results"]
    assert [key["key_id"] for key in listed_by_a] == [cast["key_a"]]
