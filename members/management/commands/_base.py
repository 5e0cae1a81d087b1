"""Shared plumbing for operator commands: turn service errors into readable CommandErrors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

T = TypeVar("T")


def run_service(func: Callable[..., T], **kwargs: Any) -> T:
    try:
        return func(**kwargs)
    except ValidationError as exc:
        messages = (
            [f"{field}: {'; '.join(errors)}" for field, errors in exc.message_dict.items()]
            if hasattr(exc, "error_dict")
            else exc.messages
        )
        raise CommandError("\n".join(messages)) from None
