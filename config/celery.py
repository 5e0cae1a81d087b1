"""The Celery application.

Tasks are thin wrappers around services (see ARCHITECTURE.md §2). The broker is Redis;
nothing durable lives only in Redis: every task can be re-derived from the database by a
periodic sweep, so a Redis outage delays work but loses none.
"""

from __future__ import annotations

import logging.config
import os
from typing import Any

from celery import Celery
from celery.signals import before_task_publish, setup_logging, task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("hashexchange")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The message header that carries the id of the request (or task) that queued a task.
REQUEST_ID_HEADER = "hx_request_id"


@setup_logging.connect
def _use_django_logging(**kwargs: Any) -> None:
    """Workers and beat log as the web does (LOG_FORMAT, LOG_LEVEL, redaction, request ids)
    instead of Celery's own set-up, so one search covers every process."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


@before_task_publish.connect
def _carry_request_id(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """A task queued while a request (or a task it caused) runs carries that request's id."""
    from core.logs import request_id

    current = request_id.get()
    if current and headers is not None:
        headers.setdefault(REQUEST_ID_HEADER, current)


@task_prerun.connect
def _adopt_request_id(task: Any = None, **kwargs: Any) -> None:
    from core.logs import request_id

    if task is not None:
        task.request.hx_request_token = request_id.set(getattr(task.request, REQUEST_ID_HEADER, None))


@task_postrun.connect
def _drop_request_id(task: Any = None, **kwargs: Any) -> None:
    from core.logs import request_id

    token = getattr(getattr(task, "request", None), "hx_request_token", None)
    if token is not None:
        try:
            request_id.reset(token)
        except ValueError:  # set in another context (a pool thread that changed): leave it
            request_id.set(None)
