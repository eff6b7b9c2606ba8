"""Statuses, providers and scopes are defined once, as enums in their models, and every query is scoped.

Issue 18 items 4 and 5: a literal list of an enum's values (a CLI `choices=`, a metrics label set, a
`Literal[...]`, a provider tuple) drifts from the enum the day a value is added; a service whose workspace
is optional (`workspace_id=None`) is one forgotten argument away from touching every workspace. Both are
found by reading the source with `ast`, so the check needs no list of places to look at.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

import pytest

from subscriptions.models import SignatureType, SubscriptionStatus
from sync_trigger.models import ConnectionStatus, JobStatus, SyncMode
from synchook.auth.models import Scope
from synchook.providers import Provider
from webhooks.models import DeliveryStatus, ReplayKind, ReplayStatus

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("synchook", "sync_trigger", "subscriptions", "webhooks", "bench")
ENUMS: tuple[type[StrEnum], ...] = (
    Provider,
    Scope,
    JobStatus,
    SyncMode,
    ConnectionStatus,
    DeliveryStatus,
    ReplayKind,
    ReplayStatus,
    SubscriptionStatus,
    SignatureType,
)
# The fake Google and Microsoft servers stand for the real providers: they name themselves as those do, and
# reading our enum would hide a drift between the two sides.
OUTSIDE = ("synchook/fakes/",)
# (file, enum) pairs that may spell the values out, and why.
ALLOWED: dict[tuple[str, str], str] = {
    # The JSON Schema of the calendar.sync.* bodies: `subscriptions` never imports `sync_trigger` (STYLE.md §2).
    ("subscriptions/catalogue.py", "SyncMode"): "schema of another domain's event",
    # The kernel's metric label set: the kernel never imports a domain; test_metrics holds it to DeliveryStatus.
    ("synchook/metrics.py", "DeliveryStatus"): "kernel label set",
}


def _sources() -> Iterator[tuple[str, ast.AST]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if not name.startswith(OUTSIDE):
                yield name, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _string_collections(tree: ast.AST) -> Iterator[tuple[int, frozenset[str]]]:
    """Every tuple, list or set literal (so `Literal[...]` too) and every dict's keys made of two or more strings."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            items: list[ast.expr | None] = list(node.elts)
        elif isinstance(node, ast.Dict):
            items = list(node.keys)
        else:
            continue
        if len(items) >= 2 and all(isinstance(i, ast.Constant) and isinstance(i.value, str) for i in items):
            yield node.lineno, frozenset(i.value for i in items if isinstance(i, ast.Constant))


def literal_value_lists() -> list[str]:
    found = []
    for name, tree in _sources():
        for line, values in _string_collections(tree):
            for enum in ENUMS:
                allowed = (name, enum.__name__) in ALLOWED
                if not allowed and values <= {member.value for member in enum}:
                    found.append(f"{name}:{line}: {sorted(values)} spells out {enum.__name__}")
    return found


def optional_workspace_parameters() -> list[str]:
    found = []
    for name, tree in _sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            args = node.args
            positional = [*args.posonlyargs, *args.args]
            defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
            pairs = [*zip(positional, defaults, strict=True), *zip(args.kwonlyargs, args.kw_defaults, strict=True)]
            for arg, default in pairs:
                if arg.arg != "workspace_id":
                    continue
                optional = isinstance(default, ast.Constant) and default.value is None
                if optional or (arg.annotation is not None and "None" in ast.unparse(arg.annotation)):
                    found.append(f"{name}:{node.lineno}: {node.name}() takes an optional workspace_id")
    return found


def test_no_literal_list_of_enum_values_outside_the_enums() -> None:
    assert literal_value_lists() == []


def test_no_function_takes_an_optional_workspace() -> None:
    assert optional_workspace_parameters() == []


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ('parser.add_argument("--status", choices=["failed", "dead"])', True),
        ('Kind = Literal["single", "bulk"]', True),
        ('PROVIDERS = ("google", "microsoft")', True),
        ('CONNECTORS = {"google": 1, "microsoft": 2}', True),
        ('LOG_FORMATS = ("json", "text")', False),
        ('status = "failed"', False),
    ],
)
def test_the_scan_finds_a_list_of_values_in_any_of_its_forms(source: str, caught: bool) -> None:
    values = [v for _, v in _string_collections(ast.parse(source))]
    assert any(v <= {m.value for m in enum} for v in values for enum in ENUMS) is caught
