"""The admin's login: which address a failure counts against, the lockout page, and TOTP.

The admin is the one part of the exchange that takes passwords; django-axes counts
failed logins per username and address, and django-otp adds a TOTP code where
ADMIN_REQUIRE_OTP is set (by default whenever DEBUG is off).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django_otp.admin import OTPAdminSite


def client_ip(request: HttpRequest) -> str:
    """The address a login came from: behind the TLS proxy, the one it appended last."""
    if settings.BEHIND_TLS_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return request.META.get("REMOTE_ADDR", "")


def locked_out(request: HttpRequest, credentials: Any = None, *args: Any, **kwargs: Any) -> HttpResponse:
    """Plain words, no detail an attacker can use; 429 so monitors see it for what it is."""
    hours = settings.AXES_COOLOFF_TIME
    return HttpResponse(
        f"Too many failed logins for this account from this address. Try again in {hours} hour(s), "
        "or ask another administrator to unlock it (manage.py axes_reset_username USERNAME).",
        status=429,
        content_type="text/plain; charset=utf-8",
    )


def install_admin_site() -> None:
    """Ask for a TOTP code at the admin's login, and a verified session on every page, if required."""
    if settings.ADMIN_REQUIRE_OTP:
        admin.site.__class__ = OTPAdminSite
