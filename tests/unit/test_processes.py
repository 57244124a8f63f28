"""Forked and multiprocessing children just work: no deadlock, every child's telemetry exactly once, the parent's
never duplicated, children identifiable — without any child calling ``shutdown()``.

Each scenario is a real bot process (tests/bots/forking.py) exporting over OTLP to a receiver in this test, with
two threads trading in the parent while it forks, so locks are taken at the moment of every fork.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

from tests.support.otlp_receiver import OtlpHttpReceiver, attributes
from tests.support.servers import REPO


def _run_bot(receiver: OtlpHttpReceiver, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
    env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_SERVICE_NAME": "fork-bot",
                "OTEL_METRIC_EXPORT_INTERVAL": "2000",
                "QT_TELEMETRY_EXPORTER_DRAIN_TIMEOUT": "60", "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"})
    proc = subprocess.run([sys.executable, "-m", "tests.bots.forking", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _orders_by_pid(receiver: OtlpHttpReceiver) -> dict[int, Counter[str]]:
    out: dict[int, Counter[str]] = {}
    for resource, span in receiver.spans():
        if span.name == "qt.order.place":
            out.setdefault(int(resource["process.pid"]), Counter())[attributes(span)["symbol"]] += 1
    return out


def _latency_counts(receiver: OtlpHttpReceiver) -> dict[tuple[str, str], int]:
    """Latest cumulative order count per (service.instance.id, symbol)."""
    out: dict[tuple[str, str], int] = {}
    for resource, metric in receiver.metrics():
        if metric.name == "qt.order.latency":
            for point in metric.histogram.data_points:
                key = (resource["service.instance.id"], attributes(point)["symbol"])
                out[key] = max(out.get(key, 0), point.count)
    return out


def _check(receiver: OtlpHttpReceiver, report: dict[str, Any], orders: int) -> None:
    assert report["hung"] == [], f"{len(report['hung'])} children deadlocked"
    children = report["children"]

    def complete() -> bool:
        by_pid = _orders_by_pid(receiver)
        return all(sum(by_pid.get(pid, Counter()).values()) >= orders for pid in children) and \
            by_pid.get(report["parent"], Counter())["PARENT"] >= 10

    try:
        receiver.wait_for(complete, timeout=60, what="every child's orders and the parent's", interval=1.0)
    except AssertionError:
        by_pid = _orders_by_pid(receiver)
        missing = {pid: dict(by_pid.get(pid, {})) for pid in [report["parent"], *children]
                   if sum(by_pid.get(pid, Counter()).values()) < orders}
        dropped = [(r.get("process.pid"), attributes(p), p.as_int) for r, m in receiver.metrics()
                   if m.name == "qt.telemetry.dropped" for p in m.sum.data_points]
        raise AssertionError(f"incomplete: {missing}; dropped: {dropped[-10:]}") from None
    by_pid = _orders_by_pid(receiver)
    for n, pid in enumerate(children):
        assert by_pid[pid] == Counter({f"C{n}": orders}), f"child {n} (pid {pid}): {by_pid[pid]}"
    assert by_pid[report["parent"]]["PARENT"] == 10  # exactly once: no child re-exported the parent's

    spans = receiver.spans()
    instances = {int(r["process.pid"]): r["service.instance.id"] for r, _ in spans}
    assert len({instances[pid] for pid in children} | {instances[report["parent"]]}) == len(children) + 1
    odd = [(r.get("process.pid"), attributes(s)) for r, s in spans if s.name == "qt.order.update"
           and "symbol" not in attributes(s)]
    assert not odd, odd[:5]
    fills = [(s, r) for r, s in spans if s.name == "qt.order.update" and attributes(s)["symbol"].startswith("C")]
    placed = {s.span_id for r, s in spans if s.name == "qt.order.place"}
    assert len(fills) == orders * len(children)
    assert all(s.parent_span_id in placed for s, _ in fills)  # every fill joined its order's trace

    def metrics_complete() -> bool:
        counts = _latency_counts(receiver)
        return all(counts.get((instances[pid], f"C{n}"), 0) == orders for n, pid in enumerate(children)) and \
            counts.get((instances[report["parent"]], "PARENT"), 0) == 10

    try:
        receiver.wait_for(metrics_complete, timeout=60, what="every child's order count in its own metrics",
                          interval=1.0)
    except AssertionError:
        counts = _latency_counts(receiver)
        wrong = {f"C{n}": counts.get((instances[pid], f"C{n}")) for n, pid in enumerate(children)
                 if counts.get((instances[pid], f"C{n}"), 0) != orders}
        raise AssertionError(f"order counts per child wrong: {wrong}") from None
    counts = _latency_counts(receiver)
    child_instances = {instances[pid] for pid in children}
    assert not [k for k in counts if k[0] in child_instances and k[1] in ("PARENT", "LOAD")], \
        "a child exported the parent's series"
    assert counts[(instances[report["parent"]], "PARENT")] == 10


@pytest.fixture
def receiver() -> Any:
    r = OtlpHttpReceiver()
    yield r
    r.close()


def test_a_hundred_forks_after_init_under_load_never_deadlock_and_export_exactly_once(receiver) -> None:
    report = _run_bot(receiver, "--children", "100", "--orders", "3")
    _check(receiver, report, orders=3)


@pytest.mark.parametrize("mode", ["mp-fork", "mp-spawn"])
def test_multiprocessing_children_export_without_calling_shutdown(receiver, mode: str) -> None:
    report = _run_bot(receiver, "--mode", mode, "--children", "4", "--orders", "5")
    _check(receiver, report, orders=5)
