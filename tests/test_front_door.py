"""The engine has one front door: code outside `trustlists/` talks to `Engine` and never to what is behind it.

Read from the source with `ast` (like test_import_graph), over the fronts, the shell, the simulators and the
benchmarks. Behind the door are the engine's context (`engine._ctx`, once the public `engine.ctx`), its store
(`.store.read()`, `.store.transaction()`, the transactions they hand out) and the store's modules. A question a
front needs answered becomes an `Engine` method; tests and benchmarks that must seed or count inside the engine
go through `trustlists.testing`, which lives behind the door.

An attribute `ctx` is fine on `self` only: a front's own context object (the GDS's `GdsContext`, the push
target's) is `self.ctx` inside the classes that hold it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from trustlists.validation import ValidationCode

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE_THE_ENGINE = ("opcua_gds", "mqtt_broker_auth", "http_fronts", "otpki", "simulators", "bench")
CONTEXT_ATTRIBUTES = {"ctx", "_ctx"}
STORE_ATTRIBUTES = {"store", "_store"}
STORE_METHODS = {"read", "transaction"}
# Modules behind the door. `trustlists.store` itself stays importable for the one thing the shell needs: choosing
# the backend an engine is built on (`SqliteStore` in otpki/runtime.py).
PRIVATE_MODULES = ("trustlists.context", "trustlists.store.")


def _sources() -> list[Path]:
    return [path for top in OUTSIDE_THE_ENGINE for path in sorted((ROOT / top).rglob("*.py"))]


def _receiver_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def violations(source: str, where: str) -> list[str]:
    """Every place in `source` that reaches behind the engine's front door, as "where:line: what"."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, where)):
        line = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Attribute):
            on_self = isinstance(node.value, ast.Name) and node.value.id == "self"
            if node.attr in CONTEXT_ATTRIBUTES and not on_self:
                found.append(f"{line}: .{node.attr} of {ast.unparse(node.value)} (the engine's context)")
            if node.attr in STORE_METHODS and _receiver_name(node.value) in STORE_ATTRIBUTES | {"store"}:
                found.append(f"{line}: {ast.unparse(node)} (a store transaction)")
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module.startswith(PRIVATE_MODULES) or node.module == "trustlists.context":
                found.append(f"{line}: imports {node.module} (behind the engine)")
            elif node.module.startswith("trustlists"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private:
                    found.append(f"{line}: imports {', '.join(private)} from {node.module} (private)")
        elif isinstance(node, ast.Import):
            found += [f"{line}: imports {a.name} (behind the engine)" for a in node.names
                      if a.name.startswith(PRIVATE_MODULES) or a.name == "trustlists.context"]
    return found


def test_nothing_outside_the_engine_reaches_behind_its_front_door() -> None:
    found = [v for path in _sources() for v in violations(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == []


def test_the_scan_sees_what_it_forbids() -> None:
    """The scan is only worth something if it catches each way in (a scan that finds nothing proves nothing)."""
    caught = {
        "now = engine.ctx.clock()": 1,
        "revoked = self._engine._ctx.index.is_revoked(ca, serial)": 1,
        "with engine.store.read() as tx:\n    tx.latest_crl(ca)": 1,
        "with store.transaction() as tx:\n    pass": 1,
        "from trustlists.store.sql import _CERT_COLUMNS": 1,
        "from trustlists.context import EngineContext": 1,
        "import trustlists.store.sqlite": 1,
        "from trustlists.registry import _entering": 1,
    }
    for source, count in caught.items():
        assert len(violations(source, "probe.py")) == count, source
    allowed = [
        "self.ctx.groups[group_id]",  # a front's own context
        "now = engine.now()",
        "from trustlists.store import SqliteStore",
        "settings.file.store.busy_timeout_s",
        "from trustlists.testing import counting_writes",
    ]
    for source in allowed:
        assert violations(source, "probe.py") == [], source


def test_validation_outcomes_are_the_engines_own_words() -> None:
    """The validator's codes name no protocol; OPC UA StatusCodes are the OPC UA front's (validation_status)."""
    assert not [code for code in ValidationCode if code.value.startswith(("Good", "Bad"))]
