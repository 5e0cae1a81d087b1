"""Operator commands: onboarding from the shell."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from core.ledger import Event
from members.models import ApiCredential, Enrollment, Member, Program


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_onboarding_a_platform_from_the_shell_gives_a_working_key() -> None:
    run("program_create", "ncii", "--name", "NCII", "--signal-types", "pdq,md5", "--threshold", "pdq=24")
    run("member_create", "acme", "--kind", "platform", "--program", "ncii", "--name", "Acme")
    out, err = run("credential_issue", "acme", "--name", "integration")
    token = out.strip().splitlines()[-1]
    assert token.startswith("hxk_")
    assert "not shown again" in err
    program = Program.objects.get(slug="ncii")
    assert program.thresholds["pdq"] == 24
    assert Enrollment.objects.get(member__slug="acme", program=program).state == "opted_in"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/api/v1/me").json()["slug"] == "acme"
    assert list(Event.objects.values_list("kind", "actor_type")) == [
        ("program.created", "operator"),
        ("member.created", "operator"),
        ("enrollment.changed", "operator"),
        ("credential.issued", "operator"),
    ]
    prefix = ApiCredential.objects.get().prefix
    run("credential_revoke", prefix, "--reason", "rotated")
    assert client.get("/api/v1/me").status_code == 401


@pytest.mark.django_db
def test_revoking_by_full_key_works_too() -> None:
    run("member_create", "acme", "--kind", "intake")
    token = run("credential_issue", "acme")[0].strip()
    run("credential_revoke", token)
    assert ApiCredential.objects.get().revoked_at is not None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("program_create", "p", "--signal-types", "pdq,bogus"), "unknown: bogus"),
        (("program_create", "p", "--threshold", "pdq=999"), "thresholds"),
        (("member_create", "acme", "--kind", "platform", "--program", "missing"), "unknown program 'missing'"),
        (("credential_issue", "nobody"), "unknown member 'nobody'"),
        (("credential_revoke", "nope"), "no API key with prefix 'nope'"),
    ],
)
def test_bad_operator_input_is_a_clear_error_and_changes_nothing(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not Event.objects.exists()
    assert not Member.objects.exists()


@pytest.mark.django_db
def test_auditor_keys_are_read_only() -> None:
    run("member_create", "audit-co", "--kind", "auditor")
    with pytest.raises(CommandError, match="read-only"):
        run("credential_issue", "audit-co", "--scopes", "reports,submit")
    out, _ = run("credential_issue", "audit-co")
    assert ApiCredential.objects.get().scopes == ["reports"]


@pytest.mark.django_db
def test_demo_seed_is_idempotent_and_each_run_prints_a_working_key() -> None:
    first = run("demo_seed")[0].strip().splitlines()[-1]
    second = run("demo_seed")[0].strip().splitlines()[-1]
    assert first != second
    assert Program.objects.filter(slug="take-it-down").count() == 1
    assert Member.objects.filter(slug="demo-platform").count() == 1
    for token in (first, second):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        me = client.get("/api/v1/me").json()
        assert me["enrollments"][0]["program"] == "take-it-down"
    assert Event.objects.filter(kind="enrollment.changed").count() == 1


def _me_status(token: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get("/api/v1/me").status_code


@pytest.mark.django_db
def test_demo_seed_with_a_key_file_reuses_one_key(tmp_path: Path) -> None:
    """`make run` keeps the demo key in var/demo-api-key: every start prints the same working
    key, and a new one (file deleted, or key revoked) revokes the demo keys before it."""
    key_file = tmp_path / "var" / "demo-api-key"
    first = run("demo_seed", "--key-file", str(key_file))[0].strip().splitlines()[-1]
    assert key_file.read_text().strip() == first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second, err = run("demo_seed", "--key-file", str(key_file))
    assert second.strip().splitlines()[-1] == first
    assert "reusing the key" in err
    assert ApiCredential.objects.filter(member__slug="demo-platform").count() == 1

    key_file.unlink()
    third = run("demo_seed", "--key-file", str(key_file))[0].strip().splitlines()[-1]
    assert third != first
    assert (_me_status(first), _me_status(third)) == (401, 200)

    # A kept key that no longer works (revoked by an operator) is replaced, not printed.
    credential = ApiCredential.objects.get(revoked_at=None)
    call_command("credential_revoke", credential.prefix, stdout=io.StringIO(), stderr=io.StringIO())
    fourth = run("demo_seed", "--key-file", str(key_file))[0].strip().splitlines()[-1]
    assert fourth not in (first, third)
    assert _me_status(fourth) == 200
    assert ApiCredential.objects.filter(revoked_at=None).count() == 1


@pytest.mark.django_db
def test_allowing_unsigned_submissions_is_recorded() -> None:
    run("program_create", "ncii")
    run("member_create", "acme", "--kind", "platform", "--program", "ncii")
    out, _ = run("program_allow_unsigned", "ncii", "acme")
    assert "acme may now submit unsigned hashes to ncii" in out
    assert list(Program.objects.get(slug="ncii").unsigned_submitters.values_list("slug", flat=True)) == ["acme"]
    assert Event.objects.filter(kind="program.updated").last().data["unsigned_submitters"] == ["acme"]
    run("program_allow_unsigned", "ncii", "acme", "--revoke")
    assert Event.objects.filter(kind="program.updated").last().data["unsigned_submitters"] == []
    with pytest.raises(CommandError, match="unknown member"):
        run("program_allow_unsigned", "ncii", "nobody")
