"""The admin dashboard: the auditors' figures for a program, with charts over time.

Charts are SVG drawn here, on the server: no JavaScript library, no external CDN.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from members.selectors import programs_all

from . import hooks, selectors
from .reports import Period

PERIODS = {"7": 7, "30": 30, "90": 90}


def bar_chart(title: str, points: Sequence[tuple[dt.date, int]], *, width: int = 640, height: int = 140) -> SafeString:
    """A small bar chart as inline SVG, one bar a day, with the largest value labelled."""
    peak = max((v for _, v in points), default=0)
    top = peak or 1
    bar = width / max(len(points), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<text x="0" y="12" font-size="12">{escape(title)} (max {peak} a day)</text>',
    ]
    for index, (day, value) in enumerate(points):
        h = round(value / top * height)
        parts.append(
            f'<rect x="{index * bar:.1f}" y="{20 + height - h}" width="{max(bar - 1, 1):.1f}" height="{h}" '
            f'fill="#417690"><title>{day.isoformat()}: {value}</title></rect>'
        )
    if points:
        parts.append(f'<text x="0" y="{height + 30}" font-size="10">{points[0][0].isoformat()}</text>')
        parts.append(
            f'<text x="{width}" y="{height + 30}" font-size="10" text-anchor="end">{points[-1][0].isoformat()}</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text is escaped above


def short_time(value: str | None) -> str:
    """An ISO time from a report as the table shows it: to the minute, without the "T" and
    microseconds that made every time column twice as wide (the full value is the cell's title)."""
    if not value:
        return ""
    return value[:16].replace("T", " ")


def _figure_rows(figures: dict[str, Any]) -> list[tuple[str, Any]]:
    """A source's figures as (label, count) rows; a group of counts (refusals by reason) as one row each."""
    rows: list[tuple[str, Any]] = []
    for name, value in figures.items():
        if isinstance(value, dict):
            rows += [(f"{name.replace('_', ' ')}: {key.replace('_', ' ')}", count) for key, count in value.items()]
            if not value:
                rows.append((name.replace("_", " "), 0))
        else:
            rows.append((name.replace("_", " "), value))
    return rows


def dashboard(request: HttpRequest) -> HttpResponse:
    """Admin page: pick a program and a period; see the report's figures and daily charts."""
    programs = programs_all()
    program = next((p for p in programs if p.slug == request.GET.get("program")), programs[0] if programs else None)
    days = PERIODS.get(request.GET.get("days", "30"), 30)
    end = timezone.now()
    start = end - dt.timedelta(days=days)
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "programs": programs,
        "program": program,
        "days": days,
        "periods": PERIODS,
    }
    if program is not None:
        report = selectors.program_report(program=program, period=Period(start, end))
        series = selectors.program_daily_series(program=program, start=start, end=end)
        dates = [(start + dt.timedelta(days=i + 1)).date() for i in range(days)]
        for row in report["members"]:
            row["feed"]["last_read_short"] = short_time(row["feed"]["last_read_at"])
            row["feed"]["unread_since_short"] = short_time(row["feed"]["unread_since"])
        context["report"] = report
        context["sections"] = [
            (source.title, _figure_rows(report[source.name]))
            for source in hooks.figure_sources()
            if source.name in report
        ]
        context["charts"] = [
            bar_chart(label, [(d, series[key].get(d, 0)) for d in dates])
            for key, label in [
                ("distributed", "Hashes distributed"),
                ("matched", "Matches reported"),
                ("removed", "Removals reported"),
                ("withdrawn", "Withdrawals"),
            ]
        ]
    return render(request, "admin/exchange/dashboard.html", context)
