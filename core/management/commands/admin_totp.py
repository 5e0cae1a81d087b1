"""Give an admin account a TOTP authenticator: prints the otpauth:// URL to scan, once."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django_otp.plugins.otp_totp.models import TOTPDevice


class Command(BaseCommand):
    help = (
        "Create a TOTP device for an admin user and print its otpauth:// URL (scan it with an "
        "authenticator app). The admin then logs in with password and code. --replace removes "
        "the user's other TOTP devices first."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="authenticator", help="A name for the device, shown in the admin.")
        parser.add_argument("--replace", action="store_true", help="Remove the user's existing TOTP devices.")

    def handle(self, *args: Any, username: str, name: str, replace: bool, **options: Any) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user called {username!r}; create one with `manage.py createsuperuser`")
        if not user.is_staff:
            raise CommandError(f"{username!r} is not staff: only admin accounts need a TOTP device")
        existing = TOTPDevice.objects.filter(user=user)
        if existing.exists() and not replace:
            raise CommandError(f"{username!r} already has a TOTP device; give --replace to make a new one")
        existing.delete()
        device = TOTPDevice.objects.create(user=user, name=name, confirmed=True)
        self.stdout.write("Scan this URL with an authenticator app (it is shown once):")
        self.stdout.write(device.config_url)
