"""The URL map: no route shadows another, and every route of ours answers to its own view.

Django tries patterns in order and the first match wins, so a second pattern with the
same route can never be reached, whichever app registered it and whatever its view does.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, resolve

_PARAMETER = re.compile(r"<(?:\w+:)?\w+>")


def _regex_parameters(route: str) -> list[tuple[int, int, str, str]]:
    """The named groups of a regex route: (start, end, name, body), nested parentheses counted."""
    found = []
    for match in re.finditer(r"\(\?P<(\w+)>", route):
        depth, index = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(route[index], 0) if route[index - 1] != "\\" else 0
            index += 1
        found.append((match.start(), index, match.group(1), route[match.end() : index - 1]))
    return found


def _normalised(route: str) -> str:
    """A route with its anchors dropped and every parameter written `<>`, whatever its name or type."""
    for start, end, _, _ in reversed(_regex_parameters(route)):
        route = route[:start] + "<>" + route[end:]
    return _PARAMETER.sub("<>", route.replace("^", "").replace("$", ""))


def _patterns(*, skip_namespaces: tuple[str, ...] = ()) -> list[tuple[str, URLPattern]]:
    """Every URL pattern with its full route (the routes of the includes above it joined)."""
    found: list[tuple[str, URLPattern]] = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                if pattern.namespace not in skip_namespaces:
                    walk(pattern.url_patterns, route)
            else:
                found.append((route, pattern))

    walk(get_resolver().url_patterns, "")
    return found


SAMPLES = ("1", "take-it-down", "a" * 64)


def _sample_path(route: str) -> str:
    """A path that the route matches: each parameter filled with a sample value it accepts."""
    for start, end, _, body in reversed(_regex_parameters(route)):
        value = next(sample for sample in SAMPLES if re.fullmatch(body, sample))
        route = route[:start] + value + route[end:]
    route = _PARAMETER.sub(lambda m: "1" if m.group().startswith("<int:") else "take-it-down", route)
    route = re.sub(r"\([^()]*\)\?", "", route)  # optional unnamed groups: left out
    return "/" + route.replace("^", "").replace("$", "").replace("/+", "/")


def test_no_two_patterns_have_the_same_route() -> None:
    routes = Counter(_normalised(route) for route, _ in _patterns())
    shadowed = sorted(route for route, count in routes.items() if count > 1)
    assert not shadowed, f"routes registered more than once (only the first can answer): {shadowed}"


# Django's admin site (its models and apps by name) is Django's to test; the dashboard beside it is ours.
OURS = _patterns(skip_namespaces=("admin",))


@pytest.mark.parametrize(("route", "pattern"), OURS, ids=[route for route, _ in OURS])
def test_every_route_of_ours_resolves_to_its_own_view(route: str, pattern: URLPattern) -> None:
    match = resolve(_sample_path(route))
    answered_by = getattr(match.func, "view_class", match.func)
    assert match.func is pattern.callback, f"{route} is answered by {answered_by} (pattern {match.url_name!r})"


def test_the_hash_detail_is_the_exchanges_view() -> None:
    from exchange.api import HashDetailView

    assert resolve("/api/v1/hashes/1").func.view_class is HashDetailView
