"""The layout the conventions set: views query nothing themselves (they parse input and
call a selector or a service), and no module of the apps grows past 600 lines."""

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
APPS = ("core", "members", "hashes", "exchange", "federation", "intake", "config")
MAX_LINES = 600


@pytest.mark.parametrize("module", VIEW_MODULES)
def test_views_use_no_model_manager(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text(), filename=module)
    found = [
        f"{module}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in ("objects", "_default_manager", "_base_manager")
    ]
    assert not found, f"move these queries into the app's selectors.py: {found}"


def test_no_module_of_the_apps_is_over_600_lines() -> None:
    """CONVENTIONS.md: a module past 600 lines is split along its seams (migrations aside)."""
    long = {
        str(path.relative_to(ROOT)): n
        for app in APPS
        for path in (ROOT / app).rglob("*.py")
        if "migrations" not in path.parts and (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these along their seams: {long}"
