"""Views query nothing themselves: they parse input and call a selector or a service."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VIEW_MODULES = (
    "members/api.py",
    "hashes/api.py",
    "exchange/api.py",
    "exchange/compat/views.py",
    "exchange/dashboard.py",
    "intake/views.py",
)


@pytest.mark.parametrize("module", VIEW_MODULES)
def test_views_use_no_model_manager(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text(), filename=module)
    found = [
        f"{module}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in ("objects", "_default_manager", "_base_manager")
    ]
    assert not found, f"move these queries into the app's selectors.py: {found}"
