"""The latency budget: tick -> decision -> order -> ack -> fill, as span attributes and ``qt.latency.segment``.

Delays are injected with explicit timestamps (the venue's stamps, the receive time); the one wait is for an ack to
be received no earlier than the venue stamped it (:func:`until`). Tick-to-trade also holds what the test's own
calls take between the trigger and the order, which the tests measure and expect.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

import qt_telemetry as qt
from qt_telemetry import latency, semconv
from qt_telemetry.testing import Capture

#: What the test's own calls may add to an injected segment (a loaded CI box; the segments are 20 ms .. 300 ms).
SLACK = 0.005
SEGMENT = semconv.LATENCY_SEGMENT.name


def exact_clock(venue: str, offset: float) -> None:
    """Tell the SDK the venue's clock exactly (a reply with no round trip): ``offset`` seconds ahead of ours."""
    now = time.monotonic()
    wall = time.time() - now
    latency.clock_sample(venue, sent_at=now, venue_time=now + wall + offset, received_at=now)


def until(moment: float) -> None:
    """Wait until ``time.monotonic()`` reaches ``moment``. The one wait these tests make: a reply cannot arrive
    before the venue stamped it, and the clock estimator rightly reads a stamp "from the future" as skew."""
    while (left := moment - time.monotonic()) > 0:
        time.sleep(left)


def segment_point(cap: Capture, segment: str, **labels: Any) -> Any:
    return cap.point(SEGMENT, segment=segment, **labels)


def trade(venue: str, *, feed: float, tick_to_trade: float, order_to_ack: float, ack_to_fill: float,
          offset: float = 0.0, cid: str = "c-1") -> dict[str, float]:
    """One trade with each segment's delay injected on a venue whose clock is ``offset`` ahead of ours. Returns
    each segment as it should read: the injected delays, and tick-to-trade plus what the test's own calls took."""
    received_at = time.monotonic() - tick_to_trade
    received_wall = time.time() - tick_to_trade
    event = qt.market_event("BTCUSDT", feed=f"{venue}.ticker", venue=venue,
                            exchange_time=received_wall - feed + offset, received_at=received_at)
    with qt.trade_flow(symbol="BTCUSDT", strategy="momo") as flow:
        with flow.signal(trigger=event, reference_price=100.0):
            pass
        with flow.execution():
            with qt.order_span(venue=venue, symbol="BTCUSDT", side="buy", quantity=1, client_order_id=cid) as order:
                pass
    assert order.sent_at is not None
    sent_wall = order.sent_at + time.time() - time.monotonic()
    ack_venue = sent_wall + order_to_ack + offset
    until(order.sent_at + order_to_ack)  # an ack is received after the venue stamped it, never before
    qt.order_acknowledged(cid, venue_time=ack_venue)
    qt.order_filled(cid, quantity=1, price=100.0, venue_time=ack_venue + ack_to_fill)
    elapsed = order.sent_at - event.received_at
    assert tick_to_trade <= elapsed < tick_to_trade + 1.0
    return {"feed": feed, "tick_to_trade": elapsed, "order_to_ack": order_to_ack, "ack_to_fill": ack_to_fill,
            "total": feed + elapsed + order_to_ack + ack_to_fill}


def test_each_injected_segment_is_a_span_attribute_and_a_histogram_point(cap: Capture) -> None:
    exact_clock("sim", 0.0)
    expected = trade("sim", feed=0.030, tick_to_trade=0.050, order_to_ack=0.020, ack_to_fill=0.200)

    signal = cap.span(semconv.SPAN_SIGNAL)
    order = cap.span(semconv.SPAN_ORDER)
    ack, fill = cap.spans(semconv.SPAN_ORDER_EVENT)
    assert signal.attributes[semconv.TRIGGER_FEED] == "sim.ticker"
    assert signal.attributes[semconv.TRIGGER_SYMBOL] == "BTCUSDT"
    assert signal.attributes[semconv.TRIGGER_EXCHANGE_TIME] == pytest.approx(
        signal.attributes[semconv.TRIGGER_RECEIVED_TIME] - 0.030, abs=SLACK)
    assert signal.attributes[semconv.LATENCY_FEED_S] == pytest.approx(0.030, abs=SLACK)
    assert order.attributes[semconv.LATENCY_TICK_TO_TRADE_S] == pytest.approx(expected["tick_to_trade"], abs=1e-6)
    assert ack.attributes[semconv.LATENCY_ORDER_TO_ACK_S] == pytest.approx(0.020, abs=SLACK)
    assert fill.attributes[semconv.LATENCY_ACK_TO_FILL_S] == pytest.approx(0.200, abs=1e-5)  # one clock: exact
    assert fill.attributes[semconv.LATENCY_TOTAL_S] == pytest.approx(expected["total"], abs=2 * SLACK)
    assert ack.attributes[semconv.VENUE_CLOCK_OFFSET_S] == pytest.approx(0.0, abs=1e-5)

    labels = {"venue": "sim", "symbol": "BTCUSDT", "strategy": "momo"}
    for segment, value in expected.items():
        point = segment_point(cap, segment, **labels)
        assert point.count == 1, segment
        assert point.sum == pytest.approx(value, abs=2 * SLACK), segment
    assert cap.metrics()[SEGMENT].unit == "s"
    assert tuple(segment_point(cap, "total").explicit_bounds) == semconv.LATENCY_BUDGET_BUCKETS_S


def test_segment_points_carry_the_trade_trace_as_exemplar(cap: Capture) -> None:
    exact_clock("sim", 0.0)
    trade("sim", feed=0.010, tick_to_trade=0.010, order_to_ack=0.010, ack_to_fill=0.010)
    trace_id = cap.span(semconv.SPAN_TRADE).context.trace_id
    order = cap.span(semconv.SPAN_ORDER)
    exemplars = cap.exemplars(SEGMENT, segment="tick_to_trade")
    assert exemplars and exemplars[0].trace_id == trace_id
    assert exemplars[0].span_id == order.context.span_id
    assert all(e.trace_id == trace_id for e in cap.exemplars(SEGMENT))


def test_the_placement_reply_as_ack_puts_order_to_ack_on_the_order_span_once(cap: Capture) -> None:
    exact_clock("sim", 0.0)
    with qt.order_span(venue="sim", symbol="ETHUSDT", side="sell", quantity=1, client_order_id="c-9") as order:
        order.acknowledged(order.start_ns / 1e9 + 0.015)
    qt.order_acknowledged("c-9", venue_time=order.start_ns / 1e9 + 0.5)  # a later ack message: not a second ack
    assert cap.span(semconv.SPAN_ORDER).attributes[semconv.LATENCY_ORDER_TO_ACK_S] == pytest.approx(0.015,
                                                                                                   abs=SLACK)
    assert semconv.LATENCY_ORDER_TO_ACK_S not in cap.span(semconv.SPAN_ORDER_EVENT).attributes
    assert segment_point(cap, "order_to_ack", venue="sim", symbol="ETHUSDT").count == 1
    assert not cap.points(SEGMENT, segment="tick_to_trade")  # no trigger, no tick-to-trade


def test_without_venue_stamps_the_local_clock_measures_ack_and_fill(cap: Capture) -> None:
    with qt.order_span(venue="sim", symbol="ETHUSDT", side="buy", quantity=1, client_order_id="c-2"):
        pass
    qt.order_acknowledged("c-2")
    qt.order_filled("c-2", quantity=1, price=10.0)
    ack, fill = cap.spans(semconv.SPAN_ORDER_EVENT)
    assert 0.0 <= ack.attributes[semconv.LATENCY_ORDER_TO_ACK_S] < 1.0
    assert 0.0 <= fill.attributes[semconv.LATENCY_ACK_TO_FILL_S] < 1.0
    assert semconv.LATENCY_TOTAL_S not in fill.attributes  # no trigger named
    assert semconv.VENUE_CLOCK_OFFSET_S not in fill.attributes
    assert not cap.points(semconv.VENUE_CLOCK_OFFSET.name)


@pytest.mark.parametrize("offset", [2.0, -2.0])
def test_a_venue_clock_two_seconds_off_is_estimated_within_its_uncertainty(cap: Capture, offset: float) -> None:
    """Acks stamped by a venue whose clock is 2 s ahead (behind): the NTP-style estimate holds the true offset
    within the uncertainty it reports, and no segment goes negative (uncorrected, the feed segment would read
    -1.97 s, and order_to_ack +2 s)."""
    for i in range(3):
        with qt.order_span(venue="skewed", symbol="BTCUSDT", side="buy", quantity=1, client_order_id=f"s-{i}"):
            pass
        qt.order_acknowledged(f"s-{i}", venue_time=time.time() + offset)  # stamped as the reply leaves
    estimate = cap.point(semconv.VENUE_CLOCK_OFFSET.name, venue="skewed").value
    uncertainty = cap.point(semconv.VENUE_CLOCK_OFFSET_UNCERTAINTY.name, venue="skewed").value
    assert 0.0 <= uncertainty < 0.05
    assert abs(estimate - offset) <= uncertainty + 1e-6

    expected = trade("skewed", feed=0.030, tick_to_trade=0.010, order_to_ack=0.020, ack_to_fill=0.050,
                     offset=offset, cid="t-1")
    assert segment_point(cap, "feed").sum == pytest.approx(0.030, abs=uncertainty + SLACK)
    assert segment_point(cap, "total").sum == pytest.approx(expected["total"], abs=uncertainty + 2 * SLACK)
    for segment in semconv.SEGMENTS:
        for point in cap.points(SEGMENT, segment=segment):
            assert point.min >= 0.0, segment
    assert not cap.points(semconv.LATENCY_SEGMENT_CLAMPED.name)


def test_the_least_uncertain_sample_in_the_window_is_the_estimate() -> None:
    clock = latency.VenueClock()
    clock.add(0.0, 1.00, 0.050)
    clock.add(1.0, 1.20, 0.002)  # a fast round trip: the best so far
    clock.add(2.0, 0.90, 0.030)
    assert clock.estimate() == (1.20, 0.002)
    clock.add(1.0 + latency.WINDOW_S + 1.0, 0.95, 0.040)  # the best has aged out of the window
    assert clock.estimate() == (0.90, 0.030)
    for i in range(latency.MAX_SAMPLES * 3):  # rising uncertainty: every sample stays a candidate, up to the bound
        clock.add(1000.0 + i * 0.001, 0.0, float(i))
    assert len(clock._samples) <= latency.MAX_SAMPLES


def test_a_negative_segment_is_recorded_as_zero_and_counted(cap: Capture) -> None:
    """An exchange time after our receipt on a venue whose clock we do not know: feed latency would be -1 s."""
    event = qt.market_event("BTCUSDT", feed="far.trades", venue="far", exchange_time=time.time() + 1.0)
    with qt.trade_flow(symbol="BTCUSDT", strategy="momo") as flow, flow.signal(trigger=event):
        pass
    assert cap.span(semconv.SPAN_SIGNAL).attributes[semconv.LATENCY_FEED_S] == 0.0
    point = segment_point(cap, "feed", venue="far")
    assert (point.count, point.sum) == (1, 0.0)
    assert cap.point(semconv.LATENCY_SEGMENT_CLAMPED.name, venue="far", segment="feed").value == 1
    assert cap.metrics()[semconv.LATENCY_SEGMENT_CLAMPED.name].unit == "{segment}"


def test_a_venue_stamp_an_hour_off_is_not_a_clock_sample(cap: Capture) -> None:
    with qt.order_span(venue="odd", symbol="BTCUSDT", side="buy", quantity=1, client_order_id="o-1"):
        pass
    qt.order_acknowledged("o-1", venue_time=time.time() - 7200.0)
    assert not cap.points(semconv.VENUE_CLOCK_OFFSET.name)
    assert cap.point(semconv.TELEMETRY_ERRORS.name, kind="venue_clock_implausible").value == 1
    assert 0.0 <= cap.span(semconv.SPAN_ORDER_EVENT).attributes[semconv.LATENCY_ORDER_TO_ACK_S] < 1.0  # local


HOSTILE = [float("nan"), float("inf"), -1.0, "soon", "1790000000", 10**400, 1.79e12, b"x", None, object()]


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_hostile_times_are_absorbed_and_counted(cap: Capture, value: Any) -> None:
    event = qt.market_event(value, feed=value, venue=value, exchange_time=value, received_at=value)
    assert isinstance(event, qt.MarketEvent)
    assert event.exchange_time is None or event.exchange_time == 1_790_000_000.0  # a numeric string is a number
    assert math.isfinite(event.received_at) and event.received_at <= time.monotonic()
    monitor_event = qt.FeedMonitor("ws").message(value, exchange_time=value, received_at=value)
    assert isinstance(monitor_event, qt.MarketEvent)
    with qt.trade_flow(symbol="X", strategy="s") as flow:
        with flow.signal(trigger=event):
            pass
        with flow.signal(trigger=value):
            pass
    qt.order_acknowledged("nobody", venue_time=value)
    if value is not None:
        kinds = {p.attributes["kind"] for p in cap.points(semconv.TELEMETRY_ERRORS.name)}
        assert kinds & {"bad_venue_time", "bad_received_at", "bad_trigger"}
    for point in cap.points(SEGMENT):
        assert point.min >= 0.0 and math.isfinite(point.sum)


def test_the_signal_names_a_trigger_that_is_a_market_event_only(cap: Capture) -> None:
    with qt.trade_flow(symbol="X", strategy="s") as flow, flow.signal(trigger={"exchange_time": 1.0}):
        pass
    assert cap.point(semconv.TELEMETRY_ERRORS.name, kind="bad_trigger").value == 1
    assert flow.trigger is None
    assert semconv.LATENCY_FEED_S not in cap.span(semconv.SPAN_SIGNAL).attributes


def test_feed_monitor_messages_are_triggers_with_both_receive_stamps(cap: Capture) -> None:
    feed = qt.FeedMonitor("binance-ws", venue="binance")
    before_wall, before = time.time(), time.monotonic()
    event = feed.message("BTCUSDT", exchange_time=before_wall - 0.004)
    assert event.feed == "binance-ws" and event.symbol == "BTCUSDT" and event.venue == "binance"
    assert before <= event.received_at <= time.monotonic()
    assert before_wall - 0.001 <= event.received_time <= time.time() + 0.001
    assert event.exchange_time == pytest.approx(before_wall - 0.004)
    with pytest.raises(AttributeError):
        event.symbol = "ETHUSDT"  # type: ignore[misc]  # immutable
    assert cap.point(semconv.FEED_MESSAGES.name, feed="binance-ws", symbol="BTCUSDT").value == 1


def test_venue_clocks_are_bounded(cap: Capture) -> None:
    for i in range(latency.MAX_VENUES + 5):
        exact_clock(f"v{i}", 0.0)
    assert len(cap.points(semconv.VENUE_CLOCK_OFFSET.name)) == latency.MAX_VENUES
    assert cap.point(semconv.TELEMETRY_ERRORS.name, kind="venue_clock_overflow").value == 5


def test_everything_works_and_records_nothing_before_init() -> None:
    event = qt.FeedMonitor("ws", venue="v").message("BTCUSDT", exchange_time=time.time())
    assert isinstance(event, qt.MarketEvent)
    with qt.trade_flow(symbol="BTCUSDT", strategy="s") as flow, flow.signal(trigger=event):
        pass
    qt.order_acknowledged("c", venue_time=time.time())
    latency.clock_sample("v", sent_at=time.monotonic(), venue_time=time.time(), received_at=time.monotonic())


def test_through_the_exporter_process_the_budget_reaches_the_wire_as_injected() -> None:
    """The e2e bot (tests/e2e/latency_bot.py) with the real exporter process (the lean path) and OTLP/HTTP."""
    import json
    import os
    import subprocess
    import sys

    from tests.e2e import latency_bot as bot
    from tests.support.otlp_receiver import OtlpHttpReceiver, attributes
    from tests.support.servers import REPO

    receiver = OtlpHttpReceiver()
    try:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
        env = {**clean, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_SERVICE_NAME": "budget-bot",
               "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
        proc = subprocess.run([sys.executable, "-m", "tests.e2e.latency_bot", "--trades", "5", "--offset", "-2"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        trades = [json.loads(line) for line in proc.stdout.splitlines()][:-1]

        def histogram() -> list[Any]:
            return [p for _, m in receiver.metrics() if m.name == SEGMENT for p in m.histogram.data_points]

        receiver.wait_for(lambda: sum(p.count for p in histogram()) == 5 * len(semconv.SEGMENTS),
                          what="every segment of the 5 trades")
        tick_to_trade = sum(t["tick_to_trade"] for t in trades)
        injected = {"feed": bot.FEED, "tick_to_trade": tick_to_trade / 5, "order_to_ack": bot.ORDER_TO_ACK,
                    "ack_to_fill": bot.ACK_TO_FILL}
        injected["total"] = sum(injected.values())
        for point in histogram():
            labels = attributes(point)
            assert set(labels) == {"venue", "symbol", "strategy", "segment"}
            assert (labels["venue"], labels["symbol"], labels["strategy"]) == ("sim", "BTCUSDT", "budget")
            assert point.sum / point.count == pytest.approx(injected[labels["segment"]], abs=SLACK)
            assert point.min >= 0.0
            assert tuple(point.explicit_bounds) == semconv.LATENCY_BUDGET_BUCKETS_S
        gauges = {m.name: m.gauge.data_points[-1].as_double for _, m in receiver.metrics()
                  if m.name.startswith("qt.venue.clock")}
        assert gauges[semconv.VENUE_CLOCK_OFFSET.name] == pytest.approx(-2.0, abs=0.0005 + 1e-6)
        assert gauges[semconv.VENUE_CLOCK_OFFSET_UNCERTAINTY.name] == pytest.approx(0.0005, abs=1e-6)
    finally:
        receiver.close()


def test_exit_orders_are_a_new_decision_measured_from_the_exit_s_own_trigger(cap: Capture) -> None:
    """Hours may lie between a trade's signal and its exit: the exit's orders are not measured from the signal."""
    signal_tick = qt.market_event("BTCUSDT", venue="sim", received_at=time.monotonic() - 3600.0)
    with qt.trade_flow(symbol="BTCUSDT", strategy="momo") as flow:
        with flow.signal(trigger=signal_tick):
            pass
        with flow.exit():
            with qt.order_span(venue="sim", symbol="BTCUSDT", side="sell", quantity=1, client_order_id="x-1"):
                pass
        exit_tick = qt.market_event("BTCUSDT", venue="sim", received_at=time.monotonic() - 0.040)
        with flow.exit(trigger=exit_tick):
            with qt.order_span(venue="sim", symbol="BTCUSDT", side="sell", quantity=1, client_order_id="x-2"):
                pass
    first, second = cap.spans(semconv.SPAN_ORDER)
    assert semconv.LATENCY_TICK_TO_TRADE_S not in first.attributes
    assert 0.040 <= second.attributes[semconv.LATENCY_TICK_TO_TRADE_S] < 1.0
    assert segment_point(cap, "tick_to_trade").count == 1
