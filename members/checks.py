"""System checks that refuse an unsafe production configuration."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.security, deploy=False)
def check_secret_key(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    if settings.DEBUG:
        return []
    problems = []
    if settings.SECRET_KEY == settings.DEV_SECRET_KEY:
        problems.append(
            checks.Error(
                "SECRET_KEY is the development default while DEBUG is off.",
                hint="Set SECRET_KEY (and API_KEY_PEPPER) to long random values, e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`.",
                id="hashexchange.E001",
            )
        )
    if settings.API_KEY_PEPPER == settings.DEV_SECRET_KEY:
        problems.append(
            checks.Error(
                "API_KEY_PEPPER is the development default while DEBUG is off.",
                hint="Set API_KEY_PEPPER; changing it later invalidates every API key.",
                id="hashexchange.E002",
            )
        )
    return problems
