"""config.wsgi plus one bare Django view, `GET /bench/floor`, that returns a constant: the
framework's floor (the WSGI server, Django's handler and every middleware, no DRF, no
authentication, no database), which bench/auditlog.py --large measures the log's requests
against, through the same server in the same run."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from config.wsgi import application


def floor(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok", content_type="text/plain")


def _add_floor() -> None:
    from config import urls  # after config.wsgi has set Django up

    urls.urlpatterns.insert(0, path("bench/floor", floor))


_add_floor()

__all__ = ["application"]
