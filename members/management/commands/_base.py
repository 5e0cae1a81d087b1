"""Shared plumbing for operator commands: turn service errors into readable CommandErrors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.core.management.base import CommandError

from core.problems import Problem

T = TypeVar("T")


def run_service(func: Callable[..., T], **kwargs: Any) -> T:
    try:
        return func(**kwargs)
    except Problem as exc:
        messages = (
            [f"{field}: {'; '.join(errors)}" for field, errors in exc.errors.items()] if exc.errors else [exc.detail]
        )
        raise CommandError("\n".join(messages)) from None
