"""Session fixture: the real stack on loopback, started once, stopped at the end, logs shown on failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.fleet.harness import Fleet
from tests.e2e.grafana import Grafana
from tests.e2e.stack import Stack
from tests.support.servers import REPO

_STACK: Stack | None = None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            # the servers its fixtures start: built before the first test (tests/support/servers.py)
            fixtures = getattr(item, "fixturenames", ())
            if "stack" in fixtures:
                item.add_marker(pytest.mark.servers(*Stack.BINARIES))
            if "grafana" in fixtures:
                item.add_marker(pytest.mark.servers(Grafana.BINARY))
            if "tests/e2e/fleet" in str(item.fspath):
                item.add_marker(pytest.mark.servers(*Fleet.BINARIES))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and _STACK is not None and "tests/e2e" in str(item.fspath):
        report.sections.append(("server logs", _STACK.logs()))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    global _STACK
    s = Stack(tmp_path_factory.mktemp("stack"))
    _STACK = s
    try:
        s.start()
        yield s
    finally:
        s.stop()
        _STACK = None


@pytest.fixture(scope="session")
def grafana(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Grafana:
    """Grafana with the repo's provisioning against the stack; stopped with the stack, its log shown on failure."""
    g = Grafana(stack, tmp_path_factory.mktemp("grafana"))
    g.start()
    return g


def bot_env(stack: Stack, service: str, protocol: str = "http/protobuf") -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
    endpoint = stack.otlp_grpc if protocol == "grpc" else stack.otlp_http
    return {**clean, "OTEL_SERVICE_NAME": service, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "OTEL_BSP_SCHEDULE_DELAY": "200", "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}


def run_workload(stack: Stack, service: str, *args: str, protocol: str = "http/protobuf") -> list[dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", "tests.e2e.workload", *args], cwd=REPO,
                          env=bot_env(stack, service, protocol), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[-1] == {"shutdown_ok": True}, "shutdown must flush everything to a live collector"
    return lines[:-1]


def _bot_until_the_end(stack: Stack, service: str, *args: str, **env: str) -> Iterator[str]:
    """A workload bot that runs until its stdin closes: at the end of the session (it then shuts down)."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.e2e.workload", *args], cwd=REPO,
                            env={**bot_env(stack, service), **env}, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        yield service
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def live_bot(stack: Stack) -> Iterator[str]:
    """A bot that keeps trading for the whole session (what dashboards look at), with its kill switch, a breaker
    and a feed flipping now and then (tests/e2e/workload.py Safety)."""
    yield from _bot_until_the_end(stack, "e2e-live-bot", "--forever")


@pytest.fixture(scope="session")
def lossy_bot(stack: Stack) -> Iterator[str]:
    """A bot whose span queue (4) is far too small for its bursts of 300 order queries: it drops spans, counted in
    qt.telemetry.dropped, for the whole session."""
    yield from _bot_until_the_end(stack, "e2e-lossy-bot", "--flood", OTEL_BSP_MAX_QUEUE_SIZE="4",
                                  OTEL_BSP_MAX_EXPORT_BATCH_SIZE="4", OTEL_BSP_SCHEDULE_DELAY="2000")


@pytest.fixture(scope="session")
def workload(stack: Stack) -> dict[str, Any]:
    """One realistic run over OTLP/HTTP and one over OTLP/gRPC, and a bot with its kill switch active."""
    started = time.time() - 5
    trades = run_workload(stack, "e2e-bot", "--trades", "40")
    grpc_trades = run_workload(stack, "e2e-grpc-bot", "--trades", "6", protocol="grpc")
    halted = run_workload(stack, "e2e-halted-bot", "--trades", "3", "--kill-switch")
    return {"started": started, "trades": trades, "grpc_trades": grpc_trades, "halted": halted}
