"""Logs that carry the trace: a line written inside an order has that order's trace and span id, so a trader can
grep the log of the very order an exemplar pointed at."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap

import pytest

import qt_telemetry as qt
from qt_telemetry import logs, semconv
from qt_telemetry.testing import Capture

log = logging.getLogger("bot")


@qt.traced_order(venue="binance")
def place(symbol: str, side: str, quantity: float) -> None:
    log.warning("placing %s %s", side, symbol)


@pytest.fixture
def lines() -> io.StringIO:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(logs.FORMAT))
    log.addHandler(handler)
    yield stream
    log.removeHandler(handler)


def test_a_line_logged_inside_an_order_carries_its_trace_and_span_ids(cap: Capture, lines: io.StringIO) -> None:
    logs.install()
    try:
        with qt.trade_flow(symbol="BTCUSDT", strategy="s") as flow, flow.execution():
            place("BTCUSDT", "buy", 1)
        log.warning("between trades")
    finally:
        logs.uninstall()
    order = cap.span(semconv.SPAN_ORDER)
    inside, outside = lines.getvalue().splitlines()
    assert f"[trace_id={order.context.trace_id:032x} span_id={order.context.span_id:016x}]" in inside
    assert inside.endswith("placing buy BTCUSDT")
    assert f"[trace_id={'0' * 32} span_id={'0' * 16}]" in outside  # no trace: the format still works


def test_the_filter_adds_the_same_fields_for_a_handler_you_configure(cap: Capture) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(logs.TraceContextFilter())
    log.addHandler(handler)
    try:
        place("ETHUSDT", "sell", 2)
    finally:
        log.removeHandler(handler)
    order = cap.span(semconv.SPAN_ORDER)
    (record,) = records
    assert record.trace_id == f"{order.context.trace_id:032x}"  # type: ignore[attr-defined]
    assert record.otelSpanID == f"{order.context.span_id:016x}"  # type: ignore[attr-defined]
    assert record.trace_sampled is True  # type: ignore[attr-defined]


BOT = textwrap.dedent("""
    import logging
    import qt_telemetry as qt

    class Show(logging.Handler):
        def emit(self, record):
            print("LOG", getattr(record, "trace_id", "absent"))

    logging.getLogger("bot").addHandler(Show())
    qt.init(mode="none")
    with qt.trade_flow(symbol="BTCUSDT", strategy="s") as flow:
        logging.getLogger("bot").warning("trading")
        print("TRACE", flow.trace_id)
""")


@pytest.mark.parametrize(("value", "expected"), [("", "the trace"), ("true", "the trace"), ("false", "absent")])
def test_init_installs_it_unless_switched_off_by_its_variable(value: str, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
    if value:
        env["QT_TELEMETRY_LOG_CORRELATION"] = value
    proc = subprocess.run([sys.executable, "-c", BOT], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    shown = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert shown["LOG"] == (shown["TRACE"] if expected == "the trace" else "absent")
