"""Dependencies point one way (STYLE.md): the kernel never imports a domain or the composition root, no domain
imports the root, `subscriptions` never imports `webhooks`, `sync_trigger` knows neither `webhooks` nor
`subscriptions`. Every import statement counts, at module level or inside a function (a lazy import is still
a dependency), read from the source with ast: nothing is imported to check it."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOMAINS = ("sync_trigger", "subscriptions", "webhooks")
# The composition root: the only code that imports the domains to build the app, the worker and the CLI.
ROOT = ("synchook.root", "synchook.cli")

# Imports that break a rule today and are kept on purpose, each with its reason: (importer, imported).
ALLOWED: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Rule:
    importers: tuple[str, ...]  # module-name prefixes the rule applies to
    forbidden: tuple[str, ...]  # module-name prefixes they must not import
    exempt: tuple[str, ...] = ()  # importers under these prefixes are not bound by the rule

    def applies_to(self, module: str) -> bool:
        return _under(module, self.importers) and not _under(module, self.exempt)


RULES = {
    "the kernel imports no domain and not the root": Rule(("synchook",), (*DOMAINS, *ROOT), exempt=ROOT),
    "a domain does not import the composition root": Rule(DOMAINS, ROOT),
    "subscriptions does not import webhooks": Rule(("subscriptions",), ("webhooks",)),
    "sync_trigger imports neither webhooks nor subscriptions": Rule(("sync_trigger",), ("webhooks", "subscriptions")),
}


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    base = REPO.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """Every module this file imports (``from a import b`` is ``a.b`` when b is a module, else ``a``)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this file's package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if _is_module(candidate) else base)
    return found


def all_imports() -> dict[str, set[str]]:
    return {
        _module_name(path): imports_of(path)
        for package in ("synchook", *DOMAINS)
        for path in sorted((REPO / package).rglob("*.py"))
    }


def violations(rule: Rule, graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{importer} imports {imported}"
        for importer, imported_modules in graph.items()
        if rule.applies_to(importer)
        for imported in imported_modules
        if _under(imported, rule.forbidden) and (importer, imported) not in ALLOWED
    )


@pytest.mark.parametrize("name", sorted(RULES))
def test_dependencies_point_one_way(name: str) -> None:
    assert violations(RULES[name], all_imports()) == []


def test_the_walk_sees_imports_inside_functions() -> None:
    """The checker itself: a forbidden import is reported, and an import inside a function is found."""
    graph = {"synchook.queue": {"synchook.settings"}, "synchook.janitor": {"webhooks.tasks"}}
    assert violations(RULES["the kernel imports no domain and not the root"], graph) == [
        "synchook.janitor imports webhooks.tasks"
    ]
    webhooks_cli = imports_of(REPO / "webhooks" / "cli.py")  # imports webhooks.admin inside its commands
    assert "webhooks.admin.queries" in webhooks_cli
    assert "synchook.context" in webhooks_cli


def test_the_root_is_where_the_domains_are_wired() -> None:
    """The root does import the domains (else the rules above would pass on an empty tree)."""
    graph = all_imports()
    assert {"subscriptions.routes", "sync_trigger.routes", "webhooks.routes"} <= graph["synchook.root.app"]
    assert "webhooks.cli" in graph["synchook.cli"]
