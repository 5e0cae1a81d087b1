"""The admin login: a lockout after repeated failures, and a TOTP code as the second factor."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

PASSWORD = "a-long-admin-password-42"


@pytest.fixture
def admin_user(db: None) -> User:
    return User.objects.create_superuser("operator", "operator@example.org", PASSWORD)


def code_for(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):0{device.digits}d}"


def login(client: Client, password: str, token: str = "") -> int:
    device = TOTPDevice.objects.filter(user__username="operator").first()
    form = {"username": "operator", "password": password, "otp_token": token}
    if device is not None:
        form["otp_device"] = device.persistent_id  # the login page lists the admin's devices
    return client.post("/admin/login/?next=/admin/", form).status_code


def test_a_password_alone_does_not_open_the_admin(admin_user: User, settings) -> None:  # noqa: ANN001
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # a wrong code would otherwise slow the next try down
    device = TOTPDevice.objects.create(user=admin_user, name="phone", confirmed=True)
    client = Client()
    assert login(client, PASSWORD, "000000" if code_for(device) != "000000" else "111111") == 200  # form again
    assert client.get("/admin/").status_code == 302
    assert login(client, PASSWORD, code_for(device)) == 302
    assert client.get("/admin/").status_code == 200


def test_a_session_that_skipped_the_second_factor_is_sent_back_to_the_login(admin_user: User) -> None:
    client = Client()
    client.force_login(admin_user, backend="django.contrib.auth.backends.ModelBackend")
    response = client.get("/admin/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_repeated_failures_lock_the_account_from_that_address_even_with_the_right_password(
    admin_user: User, settings
) -> None:  # noqa: ANN001
    device = TOTPDevice.objects.create(user=admin_user, name="phone", confirmed=True)
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, "wrong-password") == 200
    assert login(client, "wrong-password") == 429  # the failure that reaches the limit
    assert login(client, PASSWORD, code_for(device)) == 429
    assert client.get("/admin/").status_code == 302
    # Another address is not locked out by this one's failures.
    other = Client(REMOTE_ADDR="192.0.2.7")
    assert login(other, PASSWORD, code_for(device)) == 302


def test_admin_totp_gives_an_admin_an_authenticator_once(admin_user: User) -> None:
    out = io.StringIO()
    call_command("admin_totp", "operator", stdout=out)
    assert "otpauth://totp/" in out.getvalue()
    assert TOTPDevice.objects.filter(user=admin_user).count() == 1
    with pytest.raises(CommandError, match="--replace"):
        call_command("admin_totp", "operator", stdout=io.StringIO())
    call_command("admin_totp", "operator", "--replace", stdout=io.StringIO())
    assert TOTPDevice.objects.filter(user=admin_user).count() == 1
    with pytest.raises(CommandError, match="no user"):
        call_command("admin_totp", "nobody", stdout=io.StringIO())
