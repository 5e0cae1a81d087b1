"""The Celery application.

Tasks are thin wrappers around services (see ARCHITECTURE.md §2). The broker is Redis;
nothing durable lives only in Redis: every task can be re-derived from the database by a
periodic sweep, so a Redis outage delays work but loses none.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("hashexchange")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
