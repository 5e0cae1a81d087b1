from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from . import api

router = SimpleRouter(trailing_slash=False)
router.register("keys", api.SigningKeyViewSet, basename="keys")
router.register("enrollments", api.EnrollmentViewSet, basename="enrollments")

urlpatterns = [
    path("me", api.MeView.as_view(), name="me"),
    path("programs", api.ProgramListView.as_view(), name="programs"),
    *router.urls,
]
