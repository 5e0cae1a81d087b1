from __future__ import annotations

from django.urls import path

from . import api

urlpatterns = [
    path("submissions", api.SubmissionsView.as_view(), name="submissions"),
    path("withdrawals", api.WithdrawalsView.as_view(), name="withdrawals"),
    path("match", api.MatchView.as_view(), name="match"),
]
