"""URL map: the API under /api/v1/, compatibility facades under /compat/, the admin, probes and API docs."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from core.problems import problem
from exchange.dashboard import dashboard

from . import health, metrics
from .admin_security import install_admin_site

install_admin_site()
admin.site.site_header = "Hash exchange administration"
admin.site.site_title = "Hash exchange"

api_v1 = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its script as a file, so the strict CSP needs no inline script.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("", include("members.urls")),
    path("", include("exchange.urls")),
    path("", include("hashes.urls")),
]

urlpatterns = [
    path("", RedirectView.as_view(url="/api/v1/docs/", permanent=False)),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),  # operators' scraper only (config/metrics.py)
    path("api/v1/", include(api_v1)),
    path("compat/", include("exchange.compat.urls")),  # StopNCII-shaped API for existing clients
    path("intake/", include("intake.urls")),  # people's own cases, hashed in their browser
    path("admin/dashboard/", admin.site.admin_view(dashboard), name="admin-dashboard"),
    path("admin/", admin.site.urls),
]


def _problem_page(status: int, detail: str, code: str):  # noqa: ANN202
    def view(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
        return JsonResponse(problem(status, detail, code=code), status=status, content_type="application/problem+json")

    return view


handler404 = _problem_page(404, "No such URL; see /api/v1/docs/ for the API.", "not_found")
handler500 = _problem_page(500, "The server failed; the error was logged.", "server_error")
handler400 = _problem_page(400, "The request could not be read.", "bad_request")
handler403 = _problem_page(403, "Not allowed.", "permission_denied")
