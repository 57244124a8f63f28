"""`opentelemetry-instrument python bot.py`: the real launcher runs qt-telemetry's distro and configurator.

Each scenario runs the launcher itself (it re-executes the bot with its sitecustomize), exporting to a real OTLP
receiver. The test environment also has `opentelemetry-distro`, so which distro the launcher finds first is the
file system's choice: the scenarios name one with OTEL_PYTHON_DISTRO, as the README says to. The plain command,
with no other distro installed, runs in a fresh venv in tests/unit/test_readme_commands.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.otlp_receiver import OtlpHttpReceiver, attributes

LAUNCHER = str(Path(sys.executable).with_name("opentelemetry-instrument"))

BOT = textwrap.dedent("""
    import json, sys
    from opentelemetry import trace
    import qt_telemetry as qt

    if sys.argv[1:] == ["init"]:
        qt.init(service_name="explicit-bot")
    elif sys.argv[1:] == ["init-same"]:
        qt.init()

    @qt.traced_order(venue="binance")
    def place_order(symbol, side, quantity):
        with trace.get_tracer("my.http.client").start_as_current_span("GET /api/v3/order"):
            return {"orderId": 1}

    with qt.trade_flow(symbol="BTCUSDT", strategy="auto") as flow, flow.execution():
        place_order("BTCUSDT", "buy", 1)
    info = qt.current()
    print(json.dumps({"engine": info and info.engine, "service_name": info and info.service_name}))
""")


def _launch(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    bot = tmp_path / "bot.py"
    bot.write_text(BOT)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
    return subprocess.run([LAUNCHER, sys.executable, str(bot), *args], cwd=tmp_path, env={**clean, **env},
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def receiver() -> OtlpHttpReceiver:
    r = OtlpHttpReceiver()
    yield r
    r.close()


def test_the_launcher_finds_the_distro_and_configurator_entry_points() -> None:
    from importlib.metadata import entry_points

    assert shutil.which(LAUNCHER), "opentelemetry-instrumentation provides the launcher"
    distros = {ep.name: ep.value for ep in entry_points(group="opentelemetry_distro")}
    configurators = {ep.name: ep.value for ep in entry_points(group="opentelemetry_configurator")}
    assert distros["qt_telemetry"] == "qt_telemetry._distro:QtTelemetryDistro"
    assert configurators["qt_telemetry"] == "qt_telemetry._distro:QtTelemetryConfigurator"


def test_the_launcher_runs_our_engine_with_our_names_and_buckets(tmp_path: Path, receiver: OtlpHttpReceiver) -> None:
    proc = _launch(tmp_path, OTEL_PYTHON_DISTRO="qt_telemetry", OTEL_SERVICE_NAME="auto-bot",
                   OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert '"engine": "process"' in proc.stdout and '"service_name": "auto-bot"' in proc.stdout
    receiver.wait_for(lambda: len(receiver.spans()) >= 4 and any(
        m.name == "qt.order.latency" for _, m in receiver.metrics()), what="the bot's spans and metrics")
    spans = {span.name: (resource, span) for resource, span in receiver.spans()}
    assert set(spans) == {"qt.trade", "qt.trade.execution", "qt.order.place", "GET /api/v3/order"}
    assert {resource["service.name"] for resource, _ in spans.values()} == {"auto-bot"}
    assert spans["GET /api/v3/order"][1].parent_span_id == spans["qt.order.place"][1].span_id  # one trace
    (latency,) = [m for _, m in receiver.metrics() if m.name == "qt.order.latency"][:1]
    assert latency.unit == "s"
    assert list(latency.histogram.data_points[0].explicit_bounds)[:3] == [0.001, 0.0025, 0.005]
    assert attributes(spans["qt.order.place"][1])["venue"] == "binance"


def test_init_with_arguments_under_the_launcher_replaces_its_setup(tmp_path: Path,
                                                                   receiver: OtlpHttpReceiver) -> None:
    proc = _launch(tmp_path, "init", OTEL_PYTHON_DISTRO="qt_telemetry", OTEL_SERVICE_NAME="auto-bot",
                   OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr and "already" not in proc.stderr, proc.stderr
    assert '"service_name": "explicit-bot"' in proc.stdout  # what init() says ...
    receiver.wait_for(lambda: len(receiver.spans()) >= 4, what="the bot's spans")
    assert {resource["service.name"] for resource, _ in receiver.spans()} == {"explicit-bot"}  # ... is the data


def test_init_without_arguments_under_the_launcher_keeps_its_setup_quietly(tmp_path: Path,
                                                                          receiver: OtlpHttpReceiver) -> None:
    proc = _launch(tmp_path, "init-same", OTEL_PYTHON_DISTRO="qt_telemetry", OTEL_SERVICE_NAME="auto-bot",
                   OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
    receiver.wait_for(lambda: len(receiver.spans()) >= 4, what="the bot's spans")
    assert {resource["service.name"] for resource, _ in receiver.spans()} == {"auto-bot"}


def test_the_launcher_with_the_collector_down_exits_at_once_with_no_traceback(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    started = time.monotonic()
    proc = _launch(tmp_path, OTEL_PYTHON_DISTRO="qt_telemetry", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{closed}")
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert took < 8, f"the launcher run took {took:.1f}s"  # the SDK's configurator took 16 s and 4 tracebacks


def test_a_configuration_error_under_the_launcher_is_one_line_and_the_bot_still_runs(tmp_path: Path) -> None:
    proc = _launch(tmp_path, OTEL_PYTHON_DISTRO="qt_telemetry", OTEL_EXPORTER_OTLP_ENDPOINT="collector:4318")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if "qt-telemetry" in line]
    assert "OTEL_EXPORTER_OTLP_ENDPOINT='collector:4318'" in line and "telemetry is off" in line
    assert '"engine": null' in proc.stdout  # the bot ran, uninstrumented by us


def test_under_the_sdk_configurator_init_says_which_service_name_the_data_carries(
        tmp_path: Path, receiver: OtlpHttpReceiver) -> None:
    proc = _launch(tmp_path, "init", OTEL_PYTHON_DISTRO="distro", OTEL_PYTHON_CONFIGURATOR="configurator",
                   OTEL_SERVICE_NAME="auto-bot", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                   OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", OTEL_METRICS_EXPORTER="none",
                   OTEL_LOGS_EXPORTER="none")
    assert proc.returncode == 0, proc.stderr
    assert "service_name='explicit-bot' is not applied" in proc.stderr and "OTEL_PYTHON_DISTRO" in proc.stderr
    assert '"engine": "sdk"' in proc.stdout and '"service_name": "auto-bot"' in proc.stdout
    receiver.wait_for(lambda: len(receiver.spans()) >= 4, what="the bot's spans")
    orders = [(res, span) for res, span in receiver.spans() if span.name == "qt.order.place"]
    assert len(orders) == 1, "exported exactly once, through the auto-instrumentation's pipeline"
    assert orders[0][0]["service.name"] == "auto-bot"


FLASK_BOT = textwrap.dedent("""
    import flask
    import qt_telemetry as qt
    from qt_telemetry.flask import instrument_app

    app = flask.Flask("bot")

    @app.post("/orders/<symbol>")
    def order(symbol):
        return "placed"

    instrument_app(app)
    assert app.test_client().post("/orders/BTCUSDT").status_code == 200
""")


def test_instrument_app_under_the_launcher_instruments_once_and_quietly(tmp_path: Path,
                                                                        receiver: OtlpHttpReceiver) -> None:
    bot = tmp_path / "flask_bot.py"
    bot.write_text(FLASK_BOT)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
    proc = subprocess.run([LAUNCHER, sys.executable, str(bot)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=False, env={**clean, "OTEL_PYTHON_DISTRO": "qt_telemetry",
                                                        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})
    assert proc.returncode == 0, proc.stderr
    assert "already instrumented" not in proc.stderr, proc.stderr
    receiver.wait_for(lambda: len(receiver.spans()) >= 1, what="the request span")
    time.sleep(0.5)
    assert [span.name for _, span in receiver.spans()] == ["POST /orders/<symbol>"]
