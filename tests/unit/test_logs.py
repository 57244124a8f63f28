"""Logs that carry the trace: a line written inside an order has that order's trace and span id, so a trader can
grep the log of the very order an exemplar pointed at."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
import threading

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


def test_a_fill_logged_on_the_venue_thread_carries_the_fill_s_ids(cap: Capture, lines: io.StringIO) -> None:
    logs.install()
    try:
        with qt.order_span(venue="binance", symbol="BTCUSDT", side="buy", quantity=1, client_order_id="c-1"):
            pass

        def venue_callback() -> None:  # the venue's websocket thread: no span of ours is current here
            with qt.order_filled("c-1", quantity=1, price=100.0):
                log.warning("filled c-1")
            log.warning("next message")

        worker = threading.Thread(target=venue_callback)
        worker.start()
        worker.join()
    finally:
        logs.uninstall()
    fill = cap.span(semconv.SPAN_ORDER_EVENT)
    inside, after = lines.getvalue().splitlines()
    assert f"[trace_id={fill.context.trace_id:032x} span_id={fill.context.span_id:016x}] filled c-1" in inside
    assert f"[trace_id={'0' * 32} span_id={'0' * 16}]" in after


def test_lifecycle_calls_before_init_give_a_block_that_does_nothing(lines: io.StringIO, clean_globals: None) -> None:
    with qt.order_filled("c-1", quantity=1, price=100.0) as update, qt.order_rejected("c-1"):
        log.warning("not traced")
    assert update is qt.order_acknowledged("c-1")  # one shared do-nothing update: nothing allocated
    assert "not traced" in lines.getvalue()


FORMAT_BOT = textwrap.dedent("""
    import logging
    import qt_telemetry as qt

    logging.basicConfig(format=qt.logs.FORMAT)
    log = logging.getLogger("bot")
    log.warning("before init")
    qt.init(mode="none")
    with qt.trade_flow(symbol="BTCUSDT", strategy="s") as flow:
        log.warning("inside %s", flow.trace_id)
    qt.shutdown()
    log.warning("after shutdown")
""")


def test_the_readme_format_works_before_init_and_after_shutdown() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
    proc = subprocess.run([sys.executable, "-c", FORMAT_BOT], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Logging error" not in proc.stderr, proc.stderr
    before, inside, after = [line for line in proc.stderr.splitlines() if " WARNING bot " in line]
    zeros = f"[trace_id={'0' * 32} span_id={'0' * 16}]"
    assert before.endswith(f"{zeros} before init") and after.endswith(f"{zeros} after shutdown")
    trace_id = inside.rsplit(" ", 1)[1]
    assert f"[trace_id={trace_id} span_id=" in inside and trace_id != "0" * 32


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
