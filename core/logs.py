"""Logs operators can search, and that never carry what they must not.

- `request_id`: a context variable that the request middleware sets (from `X-Request-ID`
  or made anew) and Celery carries into the tasks a request causes (config/celery.py);
  `ContextFilter` puts it, and the current Celery task's id and name, on every record.
- Two formatters: plain text, and JSON Lines (`LOG_FORMAT=json`, python-json-logger),
  one object per line with `time`, `level`, `logger`, `message`, `request_id`,
  `task_id`, `task_name`, `process` and, for errors, `exc_info`.
- Both redact as they format, whatever the level and wherever the text came from (a
  message, its arguments, an exception, a library): API keys keep only their public
  prefix (`hxk_<prefix>_[redacted]`), webhook secrets become `whsec_[redacted]`, and hex
  strings of the lengths of hash values (16, 32 and 64 digits: pHash/dHash, MD5, PDQ and
  SHA-256) become `[hex]`. This is a safety net; the code does not log these in the
  first place (tests/test_logging.py runs the whole flow at DEBUG and looks).
  Case references are free text and cannot be recognised; they are never logged.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# A request id from a client or proxy is kept only if it is short and plain; anything else
# is replaced, so that a header cannot inject text (or a secret) into every log line.
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_API_KEY = re.compile(r"\bhxk_([0-9a-f]{1,32})_[A-Za-z0-9_-]+")
_WEBHOOK_SECRET = re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]+")
# Not after a ".": the digits of a float ("succeeded in 0.0595491690000926s") are not a hash.
_HASH_HEX = re.compile(r"(?<![0-9A-Fa-f.])(?:[0-9A-Fa-f]{64}|[0-9A-Fa-f]{32}|[0-9A-Fa-f]{16})(?![0-9A-Fa-f])")


def clean_request_id(value: str | None) -> str:
    """The request id to use: the given one if it is plain enough, else a new UUID."""
    if value and _REQUEST_ID_OK.match(value):
        return value
    return str(uuid.uuid4())


def redact(text: str) -> str:
    """Remove API keys, webhook secrets and hash-shaped hex from a formatted log line."""
    text = _API_KEY.sub(r"hxk_\1_[redacted]", text)
    text = _WEBHOOK_SECRET.sub("whsec_[redacted]", text)
    return _HASH_HEX.sub("[hex]", text)


class ContextFilter(logging.Filter):
    """Adds `request_id`, `task_id` and `task_name` to every record (None where there is none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        task = _current_task()
        record.task_id = task[0] if task else None
        record.task_name = task[1] if task else None
        return True


def _current_task() -> tuple[str, str] | None:
    try:
        from celery import current_task
    except ImportError:  # pragma: no cover - celery is a requirement; core does not insist
        return None
    task = current_task
    if not task or not getattr(task, "request", None) or not task.request.id:
        return None
    return task.request.id, task.name


class PlainFormatter(logging.Formatter):
    """`time level logger [request_id]: message`, redacted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
        super().__init__(*args, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = None
        return redact(super().format(record))


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(item) for item in value]
    return value


class JsonFormatter(_JsonFormatter):
    """One JSON object per line; every string in it redacted (numbers stay numbers)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault(
            "fmt",
            ["asctime", "levelname", "name", "message", "request_id", "task_id", "task_name", "process"],
        )
        kwargs.setdefault("rename_fields", {"asctime": "time", "levelname": "level", "name": "logger"})
        kwargs.setdefault("json_ensure_ascii", False)
        super().__init__(*args, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        for name in ("request_id", "task_id", "task_name"):
            if not hasattr(record, name):
                setattr(record, name, None)
        return super().format(record)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return _redact_value(super().process_log_record(log_data))


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """The LOGGING setting: one console handler, plain or JSON, with the context filter.

    `django.db.backends` is held at INFO whatever LOG_LEVEL says: at DEBUG it logs every
    SQL statement with its parameters (hash values, digests), in development at least.
    """
    formatter = "json" if log_format == "json" else "plain"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "core.logs.ContextFilter"}},
        "formatters": {
            "plain": {"()": "core.logs.PlainFormatter"},
            "json": {"()": "core.logs.JsonFormatter"},
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": formatter, "filters": ["context"]},
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.request": {"level": "ERROR"},
            "django.db.backends": {"level": "INFO"},
            # Celery's own loggers propagate to the root handler (config/celery.py keeps it).
        },
    }
