"""Each table has one owner: subscriptions never imports webhooks, nor declares a table of its own in Core."""

from __future__ import annotations

import ast
from pathlib import Path

import subscriptions

_PACKAGE = Path(subscriptions.__file__).parent


def _sources() -> dict[str, ast.Module]:
    return {str(path): ast.parse(path.read_text()) for path in sorted(_PACKAGE.rglob("*.py"))}


def test_subscriptions_never_imports_webhooks() -> None:
    imported = {
        (name, path)
        for path, tree in _sources().items()
        for node in ast.walk(tree)
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
    }
    assert [(name, path) for name, path in imported if name.split(".")[0] == "webhooks"] == []


def test_subscriptions_declares_no_other_domains_table() -> None:
    # sa.table("deliveries", …) was how the deletion wrote the delivery side's rows; it calls a hook now.
    declared = [
        path
        for path, tree in _sources().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "table"
    ]
    assert declared == []
