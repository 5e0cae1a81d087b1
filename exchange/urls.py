from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from . import api

router = SimpleRouter(trailing_slash=False)
router.register("webhooks", api.WebhookViewSet, basename="webhooks")

urlpatterns = [
    path("feed", api.FeedView.as_view(), name="feed"),
    path("server-key", api.ServerKeyView.as_view(), name="server-key"),
    *router.urls,
]
