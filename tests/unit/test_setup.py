"""init()/shutdown(): once per process, cooperative with existing providers, bounded in time, safe before init."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pybreaker
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import qt_telemetry as qt
from qt_telemetry import semconv
from qt_telemetry._engine.exporter.console import TraceSummaryExporter
from qt_telemetry._engine.recorder.state import STATE
from tests.support.polling import wait_until
from tests.support.servers import REPO

pytestmark = pytest.mark.usefixtures("clean_globals")


@qt.traced_order(venue="binance")
def place(symbol, side, quantity):
    return None


def _serving(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).read()
    except OSError:
        return False
    return True


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Switch:
    active = False

    def activate(self, reason: str = "r") -> None:
        self.active = True

    def deactivate(self) -> None:
        self.active = False


#: One call per public name that does something at run time (the rest are types, modules and constants).
BEFORE_INIT: dict[str, Any] = {
    "traced_order": lambda: place("BTCUSDT", "buy", 1),
    "trade_flow": lambda: _flow(),
    "current_flow": lambda: qt.current_flow(),
    "risk_check": lambda: _risk(),
    "order_span": lambda: _order_span(),
    "order_acknowledged": lambda: qt.order_acknowledged("c-1", order_id=1),
    "order_filled": lambda: qt.order_filled("c-1", quantity=1, price=1),
    "order_cancelled": lambda: qt.order_cancelled("c-1", reason="user"),
    "order_rejected": lambda: qt.order_rejected("c-1", reason="margin"),
    "record_kill_switch": lambda: qt.record_kill_switch(True, name="main", reason="loss"),
    "kill_switch_activation": lambda: qt.kill_switch_activation(name="ks")(lambda reason: None)("loss"),
    "kill_switch_deactivation": lambda: qt.kill_switch_deactivation(name="ks")(lambda: None)(),
    "observe_kill_switch": lambda: qt.observe_kill_switch(_Switch(), name="obs", is_active="active").activate(),
    "record_breaker_state": lambda: qt.record_breaker_state("api", "open"),
    "PyBreakerListener": lambda: qt.PyBreakerListener("pb").state_change(None, "closed", "open"),
    "observe_pybreaker": lambda: qt.observe_pybreaker(pybreaker.CircuitBreaker(name="pyb")),
    "set_risk_gauges": lambda: qt.set_risk_gauges(strategy="s", open_positions=2, daily_pnl_used=0.5),
    "daily_pnl_used": lambda: qt.daily_pnl_used(-50, 100),
    "FeedMonitor": lambda: qt.FeedMonitor("ws").message("BTCUSDT"),
    "market_event": lambda: _triggered(qt.market_event("BTCUSDT", venue="v", exchange_time=1_796_000_000.0)),
    "inject": lambda: qt.inject(),
    "extract": lambda: qt.extract({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}),
    "force_flush": lambda: qt.force_flush(),
    "shutdown": lambda: qt.shutdown(),
    "current": lambda: qt.current(),
}
_NOT_CALLS = {"ConfigurationError", "MarketEvent", "RiskCheck", "Stage", "TelemetryInfo", "TradeFlow", "__version__",
              "init", "logs", "semconv"}


def _flow() -> None:
    with qt.trade_flow(symbol="BTCUSDT", strategy="s") as flow:
        with flow.signal(confidence=1.0), flow.entry(), flow.execution(), flow.exit():
            place("BTCUSDT", "buy", 1)


def _triggered(event: qt.MarketEvent) -> None:  # the trade's latency budget starts at its trigger
    with qt.trade_flow(symbol="BTCUSDT", strategy="s") as flow, flow.signal(trigger=event):
        pass


def _risk() -> None:
    with qt.risk_check("max_position") as check:
        check.reject("too_big")


def _order_span() -> None:
    with qt.order_span(venue="v", symbol="BTCUSDT", client_order_id="c-2") as order:
        order.set_result({"id": 1})


def test_the_before_init_table_covers_every_public_name() -> None:
    assert set(qt.__all__) - _NOT_CALLS == set(BEFORE_INIT)


@pytest.mark.parametrize("name", sorted(BEFORE_INIT))
def test_every_public_call_works_before_init_and_a_later_init_exports_only_state(name: str) -> None:
    BEFORE_INIT[name]()
    memory = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    qt.init(mode="none", span_processors=[SimpleSpanProcessor(memory)], metric_readers=[reader])
    assert memory.get_finished_spans() == ()  # nothing recorded before init() is replayed after it
    data = reader.get_metrics_data()
    points = {m.name: m for rm in (data.resource_metrics if data else []) for sm in rm.scope_metrics
              for m in sm.metrics if m.data.data_points}
    kinds = {name: semconv.METRICS[name].kind for name in points}
    assert set(kinds.values()) <= {"gauge"}, f"{name}: {kinds}"  # state, yes (kill switch, breakers, risk)


def test_state_recorded_before_init_is_exported_right_after_it_without_another_call() -> None:
    qt.record_breaker_state("api", "open")
    qt.record_kill_switch(True, name="main", reason="daily_loss")
    qt.set_risk_gauges(strategy="momo", open_positions=2, daily_pnl_used=lambda: 0.75)
    reader = InMemoryMetricReader()
    qt.init(mode="none", metric_readers=[reader])
    data = reader.get_metrics_data()
    values = {(m.name, tuple(sorted(p.attributes.items()))): p.value for rm in data.resource_metrics
              for sm in rm.scope_metrics for m in sm.metrics for p in m.data.data_points}
    assert values[(semconv.BREAKER_STATE.name, (("breaker", "api"),))] == 1.0
    assert values[(semconv.KILL_SWITCH_ACTIVE.name, (("kill_switch", "main"),))] == 1.0
    assert values[(semconv.OPEN_POSITIONS.name, (("strategy", "momo"),))] == 2
    assert values[(semconv.DAILY_PNL_USED.name, (("strategy", "momo"),))] == 0.75


def test_init_installs_providers_and_a_second_call_warns_and_keeps_the_first() -> None:
    reader = InMemoryMetricReader()
    info = qt.init(mode="none", service_name="first", metric_readers=[reader])
    assert info is not None and info.service_name == "first" and info.owns_providers
    with pytest.warns(RuntimeWarning, match="already called"):
        again = qt.init(mode="none", service_name="second")
    assert again == info
    place("BTCUSDT", "buy", 1)
    names = {m.name for rm in reader.get_metrics_data().resource_metrics
             for sm in rm.scope_metrics for m in sm.metrics}
    assert semconv.ORDER_LATENCY.name in names
    resource = trace.get_tracer_provider().resource
    assert resource.attributes["service.name"] == "first"
    assert resource.attributes["service.instance.id"]  # two bots never merge into one series


def test_service_name_and_resource_attributes_from_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "env-bot")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=paper,team=quant")
    qt.init(mode="none")
    attrs = trace.get_tracer_provider().resource.attributes
    assert attrs["service.name"] == "env-bot"
    assert attrs["deployment.environment.name"] == "paper" and attrs["team"] == "quant"


def test_otel_sdk_disabled_makes_init_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert qt.init() is None
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    place("BTCUSDT", "buy", 1)  # still fine


def test_init_cooperates_with_an_already_installed_provider() -> None:
    existing = TracerProvider()  # e.g. installed by opentelemetry-instrument
    auto = InMemorySpanExporter()
    existing.add_span_processor(SimpleSpanProcessor(auto))
    trace.set_tracer_provider(existing)
    mine = InMemorySpanExporter()

    info = qt.init(mode="none", span_processors=[SimpleSpanProcessor(mine)])

    assert trace.get_tracer_provider() is existing  # not clobbered
    assert info is not None
    place("BTCUSDT", "buy", 1)
    assert [s.name for s in auto.get_finished_spans()] == [semconv.SPAN_ORDER]
    assert [s.name for s in mine.get_finished_spans()] == [semconv.SPAN_ORDER]  # extra processor added


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_with_the_collector_down_flush_says_so_in_its_bound_and_shutdown_hands_over_at_once(protocol: str) -> None:
    qt.init(endpoint=f"http://127.0.0.1:{_closed_port()}", protocol=protocol, shutdown_timeout=1.0,
            exporter_drain_timeout=1.0)
    exporter = STATE.engine.outbox.channel._proc
    for _ in range(50):
        with qt.trade_flow(symbol="BTCUSDT", strategy="s") as flow, flow.execution():
            place("BTCUSDT", "buy", 1)

    started = time.monotonic()
    flushed = qt.force_flush()
    flush_took = time.monotonic() - started
    started = time.monotonic()
    shut = qt.shutdown()
    shutdown_took = time.monotonic() - started

    assert flushed is False and flush_took < 1.5, f"force_flush: {flushed} after {flush_took:.2f}s"
    assert shut is True and shutdown_took < 0.5, f"shutdown: {shut} after {shutdown_took:.2f}s"
    assert qt.shutdown() is True  # a second shutdown is a no-op
    # The exporter keeps trying for its own bound once nobody produces any more, then ends by itself.
    assert exporter.wait(timeout=10) == 0


def test_local_mode_serves_prometheus_metrics_on_loopback_with_order_buckets() -> None:
    info = qt.init(mode="local", metrics_port=0, console=False)
    assert info is not None and info.metrics_url is not None
    assert info.metrics_url.startswith("http://127.0.0.1:")
    place("BTCUSDT", "buy", 1)

    def scrape() -> str | None:
        text = urllib.request.urlopen(info.metrics_url, timeout=5).read().decode()
        return text if "qt_order_latency_seconds_count{" in text else None

    body = wait_until(scrape, 15, "the order on /metrics")
    buckets = [line for line in body.splitlines() if line.startswith("qt_order_latency_seconds_bucket")]
    bounds = [line.split('le="')[1].split('"')[0] for line in buckets]
    assert bounds == [str(b) for b in semconv.LATENCY_BUCKETS_S] + ["+Inf"]
    assert 'qt_order_latency_seconds_count{' in body and 'venue="binance"' in body
    qt.shutdown()
    wait_until(lambda: not _serving(info.metrics_url), 15, "/metrics to go away after shutdown (the exporter "
               "serves its last state while it drains, then ends)")


def test_local_mode_port_in_use_is_a_configuration_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(qt.ConfigurationError, match="metrics_port"):
            qt.init(mode="local", metrics_port=busy.getsockname()[1])


def test_console_summary_prints_one_line_per_trade_with_stages_and_trace_id(cap) -> None:
    with qt.trade_flow(symbol="BTCUSDT", strategy="momo") as flow:
        with flow.signal():
            pass
        with flow.execution():
            place("BTCUSDT", "buy", 2)
    out = io.StringIO()
    TraceSummaryExporter(out).export(cap.spans())
    (line,) = out.getvalue().splitlines()
    assert line.startswith("[qt] trade BTCUSDT/momo ok")
    assert "signal" in line and "execution" in line and "order binance buy 2 BTCUSDT ok" in line
    assert f"trace={cap.span(semconv.SPAN_TRADE).context.trace_id:032x}" in line


def test_instruments_follow_the_provider_installed_after_import() -> None:
    place("BTCUSDT", "buy", 1)  # before init: no-op path
    reader = InMemoryMetricReader()
    qt.init(mode="none", metric_readers=[reader])
    place("BTCUSDT", "buy", 1)
    points = [p for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
              for m in sm.metrics if m.name == semconv.ORDER_LATENCY.name for p in m.data.data_points]
    assert [p.count for p in points] == [1]


_FREEZE_PROBE = """
import gc, json, qt_telemetry as qt
before = gc.get_freeze_count()
qt.init(mode="otlp", endpoint="http://127.0.0.1:9", service_name="gc-probe")
print(json.dumps([before, gc.get_freeze_count()]))
qt.shutdown()
"""


@pytest.mark.parametrize(("setting", "frozen"), [(None, True), ("false", False)])
def test_init_freezes_the_start_up_objects_so_full_collections_skip_them(setting: str | None, frozen: bool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY"))}
    if setting is not None:
        env["QT_TELEMETRY_GC_FREEZE"] = setting
    out = subprocess.run([sys.executable, "-c", _FREEZE_PROBE], env=env, capture_output=True, text=True,
                         timeout=60, check=True)
    before, after = json.loads(out.stdout.splitlines()[-1])
    assert before == 0
    assert (after > 1000) is frozen  # the imports alone are tens of thousands of objects


RESTARTED_BOT = """
import sys, urllib.request
import qt_telemetry as qt
info = qt.init(mode="local", metrics_port=int(sys.argv[1]))
@qt.traced_order(venue="v")
def place(symbol, side, quantity):
    return None
place("RESTART", "buy", 1)
print(info.metrics_url, flush=True)
"""


def test_a_bot_restarted_at_once_takes_its_metrics_port_over() -> None:
    """systemd's immediate restart, the demo run twice: the run before's exporter lets go of /metrics the moment its
    bot is gone, and init() waits that moment out instead of failing (no crash loop)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for run in range(3):
        out = subprocess.run([sys.executable, "-c", RESTARTED_BOT, str(port)], env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, f"run {run}: {out.stderr[-2000:]}"
        assert out.stdout.strip() == f"http://127.0.0.1:{port}/metrics"
        assert "[qt] order v buy 1 RESTART ok" in out.stderr, f"run {run}: the order line was lost: {out.stderr}"
