"""The import graph shows the architecture: no cycles, and every arrow points the way ARCHITECTURE.md draws it.

trustlists (the engine) <- opcua_gds, mqtt_broker_auth, http_fronts (the fronts) <- simulators <- otpki (the shell);
bench sits on top of all of them and tests on top of everything. Nothing but tests imports tests. Inside a
front, the sub-packages (opcua_gds.gds / opcua_gds.push, mqtt_broker_auth.embedded / .enrollment /
.mosquitto) do not import each other: what they share lives at the top of the front.

The graph is read from the source with `ast`, so imports inside functions (the lazy ones) count too: a cycle
hidden behind a lazy import is still a cycle a reader has to untangle.
"""

from __future__ import annotations

import ast
import importlib
from collections import defaultdict
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("trustlists", "opcua_gds", "mqtt_broker_auth", "http_fronts", "simulators", "otpki")
SCANNED = (*PRODUCT, "bench", "tests")

# Which top-level packages each one may import (besides itself).
MAY_IMPORT: dict[str, set[str]] = {
    "trustlists": set(),
    "opcua_gds": {"trustlists"},
    "mqtt_broker_auth": {"trustlists"},
    "http_fronts": {"trustlists"},
    "simulators": {"trustlists", "opcua_gds", "mqtt_broker_auth", "http_fronts"},
    "otpki": {"trustlists", "opcua_gds", "mqtt_broker_auth", "http_fronts", "simulators"},
    "bench": set(PRODUCT),
    "tests": {*PRODUCT, "bench"},
}
# Sibling sub-packages that must stay independent of each other.
INDEPENDENT = (
    ("opcua_gds.gds", "opcua_gds.push"),
    ("mqtt_broker_auth.embedded", "mqtt_broker_auth.enrollment", "mqtt_broker_auth.mosquitto"),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "node_modules" not in path.parts:
                modules[module_name(path)] = path
    return modules


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports explicitly (a parent package's __init__ running first is not an arrow)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                targets.add(submodule if submodule in known else source)
    return {t for t in targets if t in known and t != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = source_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def top(module: str) -> str:
    return module.partition(".")[0]


def test_every_product_module_imports() -> None:
    for name in source_modules():
        if top(name) in PRODUCT:
            importlib.import_module(name)


def test_no_import_cycle(graph: dict[str, set[str]]) -> None:
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_arrows_point_down(graph: dict[str, set[str]]) -> None:
    wrong = sorted(f"{source} -> {target}" for source, targets in graph.items() for target in targets
                   if top(target) != top(source) and top(target) not in MAY_IMPORT[top(source)])
    assert wrong == []


def test_sibling_subpackages_stay_apart(graph: dict[str, set[str]]) -> None:
    def owner(module: str, siblings: tuple[str, ...]) -> str | None:
        return next((s for s in siblings if module == s or module.startswith(s + ".")), None)

    crossing: dict[str, list[str]] = defaultdict(list)
    for siblings in INDEPENDENT:
        for source, targets in graph.items():
            mine = owner(source, siblings)
            for target in targets:
                theirs = owner(target, siblings)
                if mine and theirs and mine != theirs:
                    crossing[source].append(target)
    assert dict(crossing) == {}
