"""The layout keeps its promises: no import cycles, a pure core, the dashboard behind services and selectors."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spawner", "dashboard")
# Project wiring may import everything: it assembles the app.
WIRING = {"spawner.settings", "spawner.urls", "spawner.asgi", "spawner.wsgi"}
# What the dashboard may use of the engine app.
DASHBOARD_MAY_IMPORT = {
    "spawner.services",
    "spawner.selectors",
    "spawner.models",
    "spawner.states",
    "spawner.errors",
    "spawner.permissions",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    module_name(p): p
    for package in PACKAGES
    for p in sorted((ROOT / package).rglob("*.py"))
    if "migrations" not in p.parts
}


def imports_of(name: str) -> set[str]:
    """Project modules `name` imports, anywhere in its body (imports inside functions count too)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_there_is_no_import_cycle():
    assert cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_imports_only_the_standard_library_and_states():
    core = [name for name in MODULES if name.startswith("spawner.core.")]
    assert len(core) >= 5
    for name in core:
        assert GRAPH[name] <= {"spawner.states", "spawner.core"} | set(core), name
        top = {
            (n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
            for n in ast.walk(ast.parse(MODULES[name].read_text()))
            if isinstance(n, ast.Import | ast.ImportFrom) and (not isinstance(n, ast.ImportFrom) or n.level == 0)
            for a in n.names
        }
        assert top <= set(sys.stdlib_module_names) | {"spawner", "__future__"}, (name, top)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("spawner.core.")))
def test_each_core_module_imports_with_django_unconfigured(name):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    settings_touched = f"import {name}, django.conf; print(django.conf.settings.configured)"
    out = subprocess.run(
        [sys.executable, "-c", settings_touched], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "False", out.stderr


def test_nothing_in_the_engine_app_imports_the_dashboard():
    offenders = {
        name: sorted(m for m in GRAPH[name] if m.startswith("dashboard"))
        for name in MODULES
        if name.startswith("spawner") and name not in WIRING
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_dashboard_uses_only_services_selectors_models_states_errors_and_permissions():
    offenders = {
        name: sorted(m for m in GRAPH[name] if m.startswith("spawner") and m not in DASHBOARD_MAY_IMPORT)
        for name in MODULES
        if name.startswith("dashboard")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
