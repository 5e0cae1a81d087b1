"""Security headers on every answer, a clean deploy check, and no credentials on the debug page."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client, override_settings

from config.debug import CredentialHidingFilter

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", ["/healthz", "/api/v1/docs/", "/admin/login/", "/api/v1/me"])
def test_every_answer_carries_the_security_headers(db: None, path: str) -> None:
    response = Client().get(path)
    csp = response["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp.split("script-src", 1)[1].split(";", 1)[0]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert "camera=()" in response["Permissions-Policy"]


def test_the_api_docs_page_runs_no_inline_script(db: None) -> None:
    html = Client().get("/api/v1/docs/").content.decode()
    assert "<script>" not in html.replace(" ", "")
    for chunk in html.split("<script")[1:]:
        assert "src=" in chunk.split(">", 1)[0], "an inline script would be blocked by the CSP"


@override_settings(SECURE_HSTS_SECONDS=31_536_000)
def test_hsts_is_sent_over_tls_only(db: None) -> None:
    assert Client().get("/healthz", secure=True)["Strict-Transport-Security"].startswith("max-age=31536000")
    assert "Strict-Transport-Security" not in Client().get("/healthz")


@override_settings(
    DATABASE_URL="postgres://hx:db-secret-1@db.internal:5432/hx",
    REDIS_URL="redis://:redis-secret-2@cache.internal:6379/0",
    CELERY_BROKER_URL="redis://user:broker-secret-3@cache.internal:6379/1",
)
def test_the_debug_page_shows_service_urls_without_their_passwords() -> None:
    shown = repr(CredentialHidingFilter().get_safe_settings())
    for secret in ("db-secret-1", "redis-secret-2", "broker-secret-3"):
        assert secret not in shown
    assert "db.internal:5432/hx" in shown  # the rest of the URL stays readable


def test_the_deploy_check_is_clean_with_production_settings(tmp_path: Path) -> None:
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in ("DEBUG", "SECURE_COOKIES", "SECURE_HSTS_SECONDS", "DJANGO_ALLOW_ASYNC_UNSAFE")
        },
        "ENV_FILE": str(tmp_path / "none.env"),
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "API_KEY_PEPPER": secrets.token_urlsafe(50),
        "SITE_URL": "https://exchange.example.org",
        "ALLOWED_HOSTS": "exchange.example.org",
        "BEHIND_TLS_PROXY": "1",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
        "SECURE_HSTS_PRELOAD": "1",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
