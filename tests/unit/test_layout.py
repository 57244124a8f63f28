"""The floor plan: the two processes show in the package, arrows point down, the trading side stays light.

The recorder (the trading process's side) never imports the exporter's code, nothing imports in a circle (lazy
imports inside functions count: a cycle hidden in a function is still a cycle), and a bot in process mode
never loads the exporter or the SDK's metrics code.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "qt_telemetry"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """qt_telemetry modules ``path`` imports anywhere, except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for stmt in ast.walk(tree) if isinstance(stmt, ast.If)
               and isinstance(stmt.test, ast.Name) and stmt.test.id == "TYPE_CHECKING"
               for node in ast.walk(stmt)}
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:  # ``from pkg import submodule`` imports the submodule, not pkg's face
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: _imports(path, modules) for name, path in paths.items()}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_no_module_imports_itself_through_others() -> None:
    graph = _graph()
    cycles = sorted(name for name in graph if name in _reachable(graph, name))
    assert cycles == [], f"import cycles through: {cycles}"


def test_the_trading_side_never_imports_the_exporter_side() -> None:
    graph = _graph()
    for name in graph:
        if name.startswith(("qt_telemetry._engine.recorder", "qt_telemetry._engine.transport")):
            reached = _reachable(graph, name)
            leaks = sorted(m for m in reached if m.startswith("qt_telemetry._engine.exporter"))
            assert leaks == [], f"{name} reaches {leaks}"


BOT = """
import os, sys
import qt_telemetry as qt
qt.init(mode="otlp", endpoint="http://127.0.0.1:9")
@qt.traced_order(venue="v")
def place(symbol, side, quantity):
    return {"id": 1}
with qt.trade_flow(symbol="S", strategy="s") as flow:
    with flow.execution():
        place("S", "buy", 1)
qt.force_flush(1)
loaded = sorted(m for m in sys.modules if m.startswith(("qt_telemetry._engine.exporter", "opentelemetry.sdk.metrics",
                                                        "opentelemetry.exporter")))
print(qt.current().engine, loaded)
qt.shutdown(1)
"""


def test_a_bot_in_process_mode_loads_no_exporter_or_sdk_metrics_code() -> None:
    out = subprocess.run([sys.executable, "-c", BOT], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "process []", out.stdout + out.stderr
