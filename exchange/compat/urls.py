"""URLs of the compatibility facades, mounted at /compat/.

The StopNCII client builds `base + "/" + Endpoint`, with the CamelCase names and no
trailing slash, so the routes match exactly that; a base configured with a trailing
slash (`…/v1/` → `…/v1//FetchHashes`) is forgiven. Two bases:

- `/compat/stopncii/v1` — every program the caller receives, merged by hash;
- `/compat/stopncii/programs/<slug>/v1` — one program.

Anything else under /compat/stopncii/ answers a JSON 404.

The NCMEC client builds `base + "/v2/" + endpoint`; its bases here are `/compat/ncmec`
(every program the caller receives) and `/compat/ncmec/programs/<slug>` (one program).
"""

from __future__ import annotations

from django.urls import re_path

from . import ncmec_views, views

_ENDPOINTS = (
    ("FetchHashes", views.FetchHashesView, "fetch"),
    ("SubmitFeedback", views.SubmitFeedbackView, "feedback"),
    ("SubmitHashes", views.SubmitHashesView, "submit"),
)
_BASES = (
    (r"^stopncii/v1/+", "stopncii"),
    (r"^stopncii/programs/(?P<program>[-a-zA-Z0-9_]+)/v1/+", "stopncii-program"),
)

urlpatterns = [
    re_path(f"{base}{endpoint}$", view.as_view(), name=f"{prefix}-{name}")
    for base, prefix in _BASES
    for endpoint, view, name in _ENDPOINTS
] + [re_path(r"^stopncii(/.*)?$", views.not_found, name="stopncii-not-found")]

_NCMEC_ENDPOINTS = (
    ("status", ncmec_views.StatusView, "status"),
    ("members", ncmec_views.MembersView, "members"),
    ("feedback/(?P<fingerprint_type>[A-Za-z_]+)/reasons", ncmec_views.FeedbackReasonsView, "reasons"),
    ("entries", ncmec_views.EntriesView, "entries"),
    (
        "entries/(?P<esp_id>[0-9]+)/(?P<entry_id>[^/]+)/(?P<fingerprint_type>[A-Za-z_]+)/feedback",
        ncmec_views.EntryFeedbackView,
        "feedback",
    ),
)
_NCMEC_BASES = (
    (r"^ncmec/v2/", "ncmec"),
    (r"^ncmec/programs/(?P<program>[-a-zA-Z0-9_]+)/v2/", "ncmec-program"),
)

urlpatterns += [
    re_path(f"{base}{endpoint}$", view.as_view(), name=f"{prefix}-{name}")
    for base, prefix in _NCMEC_BASES
    for endpoint, view, name in _NCMEC_ENDPOINTS
] + [re_path(r"^ncmec(/.*)?$", ncmec_views.not_found, name="ncmec-not-found")]
