"""Hooks that apps above exchange fill in from their AppConfig.ready().

Exchange may not import the apps above it (intake, federation: the layers in
pyproject.toml), yet its feed, facades, dashboard and reports must show what those apps
know. Each hook is a small registry: the app registers a function, exchange calls what is
registered (nothing, on a deployment without the app).

- case sources: which case a submitter's hash belongs to, as an opaque token that is
  never shown; members see only their own pseudonym of it (`case_pseudonyms`).
- figure sources: a program's counts for the dashboard and the auditors' reports
  (counts only, nothing that identifies a person or a case).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from members.models import Member


@dataclass(frozen=True)
class CaseSource:
    submitter: str  # the member slug whose submissions the source knows the cases of
    cases: Callable[[Collection[int]], Mapping[int, str]]  # hash ids -> opaque case token


@dataclass(frozen=True)
class FigureSource:
    name: str  # its key in a program's report ("intake")
    title: str  # its heading on the dashboard
    # (program slug, start, end) -> {figure: count, or {reason: count}}, or None when the
    # source has nothing to say about that program
    figures: Callable[[str, dt.datetime, dt.datetime], Mapping[str, Any] | None]


_case_sources: dict[str, CaseSource] = {}
_figure_sources: dict[str, FigureSource] = {}


def register_case_source(source: CaseSource) -> None:
    _case_sources[source.submitter] = source


def register_figures(source: FigureSource) -> None:
    _figure_sources[source.name] = source


def case_sources() -> Mapping[str, CaseSource]:
    return dict(_case_sources)


def figure_sources() -> list[FigureSource]:
    return list(_figure_sources.values())


def case_tokens(submitter: str, hash_ids: Collection[int]) -> Mapping[int, str]:
    """The opaque case token of each of these hashes that `submitter` submitted for a case."""
    source = _case_sources.get(submitter)
    if source is None or not hash_ids:
        return {}
    return {hash_id: f"{submitter}:{token}" for hash_id, token in source.cases(hash_ids).items()}


def case_pseudonym(*, member: Member, token: str) -> str:
    """What one member sees of a case: a keyed HMAC of the member and the case (a UUID).

    Two members get different names for the same case, so they cannot join on it; one
    member gets the same name for every hash of the case, in the feed, the webhooks and
    the StopNCII facade alike.
    """
    from .compat import selectors, stopncii

    return stopncii.case_pseudonym(selectors.case_key(), member_id=member.pk, case=f"source:{token}")


def program_figures(program: str, start: dt.datetime, end: dt.datetime) -> dict[str, dict[str, Any]]:
    """Every registered source's figures for a program and period, by source name."""
    found = {}
    for source in figure_sources():
        figures = source.figures(program, start, end)
        if figures is not None:
            found[source.name] = dict(figures)
    return found
