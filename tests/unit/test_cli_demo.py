"""`qt-telemetry demo`: a realistic bot through the public API; reproducible by seed; stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

from tests.support.otlp_receiver import OtlpHttpReceiver, attributes


def _env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
    return {**clean, **extra}


def _demo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "qt_telemetry.cli", "demo", "--plain", *args], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _orders(receiver: OtlpHttpReceiver) -> list[tuple]:
    spans = sorted((span for _, span in receiver.spans() if span.name == "qt.order.place"),
                   key=lambda s: s.start_time_unix_nano)
    return [(a["symbol"], a["side"], a["venue"], a["order.quantity"], a["outcome"])
            for a in (attributes(s) for s in spans)]


def test_demo_exports_the_whole_trading_story_over_otlp() -> None:
    receiver = OtlpHttpReceiver()
    try:
        # 260 ticks as fast as orders allow: past kraken's outage (ticks 100-160) and the loss limit.
        out = _demo("--mode", "otlp", "--duration", "0", "--ticks", "260", "--rate", "1000", "--seed", "42",
                    "--loss-limit", "30",
                    env=_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint))
        assert "done: all telemetry flushed" in out.stdout
        spans = [span for _, span in receiver.spans()]
        names = {s.name for s in spans}
        assert {"qt.trade", "qt.trade.signal", "qt.trade.entry", "qt.trade.execution", "qt.trade.exit",
                "qt.order.place", "qt.order.update", "qt.risk.check"} <= names
        orders = _orders(receiver)
        assert len(orders) >= 20
        assert {o[2] for o in orders} == {"binance", "kraken"}
        assert any(o[4] == "error" for o in orders)  # venue failures happen
        checks = [attributes(s) for s in spans if s.name == "qt.risk.check"]
        assert any(c["outcome"] == "rejected" for c in checks)
        events = [e.name for s in spans for e in s.events]
        assert "qt.kill_switch.change" in events  # the loss limit trips the kill switch
        assert "qt.circuit_breaker.transition" in events  # kraken's outage trips its breaker
        fills = [attributes(s) for s in spans if s.name == "qt.order.update"]
        assert any(f["order.event"] == "partial_fill" for f in fills)
        assert all("slippage.bps" in f for f in fills if f["order.event"] in ("fill", "partial_fill"))
        assert "demo-key-never-exported" not in str(spans)
        metrics = {m.name for _, m in receiver.metrics()}
        assert {"qt.order.latency", "qt.kill_switch.active", "qt.circuit_breaker.state",
                "qt.feed.connected", "qt.risk.daily_pnl.used", "qt.order.slippage"} <= metrics
    finally:
        receiver.close()


def test_the_same_seed_places_the_same_orders() -> None:
    runs = []
    for _ in range(2):
        receiver = OtlpHttpReceiver()
        try:
            _demo("--mode", "otlp", "--duration", "0", "--ticks", "60", "--rate", "1000", "--seed", "11",
                  env=_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint))
            runs.append(_orders(receiver))
        finally:
            receiver.close()
    assert runs[0] and runs[0] == runs[1]


def test_local_mode_serves_metrics_while_running_and_ctrl_c_flushes_and_exits() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "qt_telemetry.cli", "demo", "--plain", "--mode", "local",
                             "--metrics-port", "0", "--duration", "0", "--rate", "20"],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()
        url = re.search(r"metrics at (http://127\.0\.0\.1:\d+/metrics)", banner)
        assert url, banner
        deadline = time.monotonic() + 30
        body = ""
        while "qt_order_latency_seconds_count{" not in body and time.monotonic() < deadline:
            time.sleep(0.5)
            body = urllib.request.urlopen(url.group(1), timeout=5).read().decode()
        assert "qt_order_latency_seconds_count{" in body and "qt_kill_switch_active" in body
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
        assert time.monotonic() - started < 5, "Ctrl-C must stop the demo promptly"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "done: all telemetry flushed" in out
    assert "Traceback" not in err
