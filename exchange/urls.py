from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from . import api

router = SimpleRouter(trailing_slash=False)
router.register("webhooks", api.WebhookViewSet, basename="webhooks")

urlpatterns = [
    # The one route of a hash: here, not in hashes, because it adds the exchange's feedback
    # and disputes to hashes' view of the hash (exchange may import hashes, not the reverse).
    path("hashes/<int:hash_id>", api.HashDetailView.as_view(), name="hash-detail"),
    path("feed", api.FeedView.as_view(), name="feed"),
    path("programs/<slug:slug>/snapshot", api.SnapshotView.as_view(), name="program-snapshot"),
    path("programs/<slug:slug>/snapshot/<str:name>", api.SnapshotFileView.as_view(), name="program-snapshot-file"),
    path("server-key", api.ServerKeyView.as_view(), name="server-key"),
    path("outcomes", api.OutcomesView.as_view(), name="outcomes"),
    path("obligations", api.ObligationListView.as_view(), name="obligations"),
    path("reports/programs/<slug:slug>", api.ProgramReportView.as_view(), name="report-program"),
    path("reports/members/<slug:slug>", api.MemberReportView.as_view(), name="report-member"),
    path("events", api.EventLogView.as_view(), name="events"),
    # The audit log: its prefix for C2SP tlog-tiles clients is <SITE_URL>/api/v1/log.
    path("log/checkpoint", api.CheckpointView.as_view(), name="log-checkpoint"),
    path("log/proof/inclusion", api.InclusionProofView.as_view(), name="log-inclusion"),
    path("log/proof/consistency", api.ConsistencyProofView.as_view(), name="log-consistency"),
    path("log/entries", api.EntriesView.as_view(), name="log-entries"),
    path("log/tile/<path:path>", api.TileView.as_view(), name="log-tile"),
    *router.urls,
]
