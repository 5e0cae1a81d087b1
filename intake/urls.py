from __future__ import annotations

from django.urls import path

from . import views

app_name = "intake"

urlpatterns = [
    path("", views.intake_page, name="page"),
    path("status/", views.status_page, name="status-page"),
    path("api/challenge", views.challenge, name="challenge"),
    path("api/cases", views.cases, name="cases"),
    path("api/status", views.status, name="status"),
    path("api/withdraw", views.withdraw, name="withdraw"),
]
