"""The debug page's settings filter: it hides the credentials inside service URLs too.

Django's default filter hides settings whose names look secret (KEY, TOKEN, PASS, ...);
DATABASE_URL, REDIS_URL and CELERY_BROKER_URL carry a password inside an ordinary
name. Shown with DEBUG=1 only, but a development database's password is still one.
"""

from __future__ import annotations

import re
from typing import Any

from django.views.debug import SafeExceptionReporterFilter

_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<userinfo>[^@/\s]*)@", re.IGNORECASE)


def hide_credentials(value: str) -> str:
    """`scheme://user:password@host/...` becomes `scheme://********@host/...`."""
    return _CREDENTIALS.sub(lambda m: f"{m['scheme']}{SafeExceptionReporterFilter.cleansed_substitute}@", value)


class CredentialHidingFilter(SafeExceptionReporterFilter):
    def cleanse_setting(self, key: Any, value: Any) -> Any:
        cleansed = super().cleanse_setting(key, value)
        if type(cleansed) is str:  # not lazy proxies that pass for one
            return hide_credentials(cleansed)
        return cleansed
