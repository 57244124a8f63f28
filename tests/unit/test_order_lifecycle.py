"""Order lifecycle after placement: ack, partial and full fills, cancels, rejects rejoin the order's trace."""

from __future__ import annotations

import threading

import pytest
from opentelemetry.trace import StatusCode

import qt_telemetry as qt
from qt_telemetry import semconv
from qt_telemetry.orders import ORDER_STORE
from qt_telemetry.testing import Capture
from tests.support.polling import wait_until


@qt.traced_order(venue="binance")
def place(symbol, side, quantity, client_order_id=None):
    return {"orderId": "V-1"}


def _updates(cap: Capture) -> list:
    return cap.spans(semconv.SPAN_ORDER_EVENT)


def test_fills_from_another_thread_join_the_order_trace_with_latency_and_slippage(cap: Capture) -> None:
    with qt.trade_flow(symbol="BTCUSDT", strategy="momo") as flow:
        with flow.signal(reference_price=100.0):
            pass
        with flow.execution():
            place("BTCUSDT", "buy", 2.0, client_order_id="c-1")

    def venue_callbacks() -> None:  # the venue's websocket thread
        qt.order_acknowledged("c-1", order_id="V-1")
        qt.order_filled("c-1", quantity=0.5, price=100.05)
        qt.order_filled("c-1", quantity=1.5, price=100.10)

    worker = threading.Thread(target=venue_callbacks)
    worker.start()
    worker.join()

    order = cap.span(semconv.SPAN_ORDER)
    updates = _updates(cap)
    assert [u.attributes[semconv.ORDER_EVENT] for u in updates] == ["ack", "partial_fill", "fill"]
    for update in updates:
        assert update.context.trace_id == order.context.trace_id
        assert update.parent.span_id == order.context.span_id
        assert update.attributes[semconv.SYMBOL] == "BTCUSDT"
    assert updates[1].attributes[semconv.SLIPPAGE_BPS] == pytest.approx(5.0)
    assert updates[2].attributes[semconv.SLIPPAGE_BPS] == pytest.approx(10.0)

    slippage = cap.point(semconv.SLIPPAGE.name, venue="binance", symbol="BTCUSDT", side="buy",
                         slippage__direction="adverse")
    assert slippage.count == 2 and slippage.sum == pytest.approx(15.0)
    fill_latency = cap.point(semconv.FILL_LATENCY.name)
    assert fill_latency.count == 1 and fill_latency.sum > 0
    exemplar_traces = {e.trace_id for e in cap.exemplars(semconv.FILL_LATENCY.name)}
    assert exemplar_traces == {order.context.trace_id}
    events = {p.attributes[semconv.ORDER_EVENT]: p.value for p in cap.points(semconv.ORDER_EVENTS.name)}
    assert events == {"ack": 1, "partial_fill": 1, "fill": 1}
    assert len(ORDER_STORE) == 0  # a completed order leaves the store


def test_sell_slippage_is_positive_when_receiving_less(cap: Capture) -> None:
    place("ETHUSDT", "sell", 1, client_order_id="s-1")
    qt.order_filled("s-1", quantity=1, price=99.0, reference_price=100.0)
    assert _updates(cap)[0].attributes[semconv.SLIPPAGE_BPS] == pytest.approx(100.0)


def test_favourable_slippage_is_counted_as_well_as_adverse(cap: Capture) -> None:
    """A histogram holds no negative values: the sign is a label, so count, mean and quantiles stay right."""
    place("BTCUSDT", "buy", 1, client_order_id="f-1")
    place("BTCUSDT", "buy", 1, client_order_id="f-2")
    qt.order_filled("f-1", quantity=1, price=99.0, reference_price=100.0)  # 100 bp better than signalled
    qt.order_filled("f-2", quantity=1, price=101.0, reference_price=100.0)  # 100 bp worse

    better, worse = _updates(cap)
    assert better.attributes[semconv.SLIPPAGE_BPS] == pytest.approx(-100.0)  # the span keeps the sign
    assert (better.attributes[semconv.SLIPPAGE_DIRECTION], worse.attributes[semconv.SLIPPAGE_DIRECTION]) == (
        "favourable", "adverse")
    points = {p.attributes[semconv.SLIPPAGE_DIRECTION]: p for p in cap.points(semconv.SLIPPAGE.name)}
    assert {d: (p.count, p.sum) for d, p in points.items()} == {
        "favourable": (1, pytest.approx(100.0)), "adverse": (1, pytest.approx(100.0))}
    signed_mean = (points["adverse"].sum - points["favourable"].sum) / (points["adverse"].count
                                                                        + points["favourable"].count)
    assert signed_mean == pytest.approx(0.0)
    assert cap.points(semconv.TELEMETRY_ERRORS.name) == []


def test_zero_slippage_is_adverse_zero(cap: Capture) -> None:
    place("BTCUSDT", "sell", 1, client_order_id="z-1")
    qt.order_filled("z-1", quantity=1, price=100.0, reference_price=100.0)
    point = cap.point(semconv.SLIPPAGE.name)
    assert (point.attributes[semconv.SLIPPAGE_DIRECTION], point.count, point.sum) == ("adverse", 1, 0.0)


def test_a_venue_reject_after_placement_reads_as_a_reject(cap: Capture) -> None:
    place("BTCUSDT", "buy", 1, client_order_id="late-r")
    qt.order_rejected("late-r", reason="insufficient_margin")

    (update,) = _updates(cap)
    assert update.attributes[semconv.OUTCOME] == "rejected"
    assert update.status.status_code is StatusCode.ERROR
    assert update.status.description == "order rejected: insufficient_margin"
    assert semconv.ERROR_TYPE not in update.attributes
    events = cap.point(semconv.ORDER_EVENTS.name)
    assert dict(events.attributes) == {"venue": "binance", "symbol": "BTCUSDT", "side": "buy",
                                       "order.event": "reject", "reason": "insufficient_margin"}
    # The placement itself was accepted (and is usually exported already): its span and latency stay "ok".
    assert cap.point(semconv.ORDER_LATENCY.name).attributes[semconv.OUTCOME] == "ok"
    assert len(ORDER_STORE) == 0


def test_the_venue_s_own_timestamps_go_on_the_ack_and_fill_spans(cap: Capture) -> None:
    place("BTCUSDT", "buy", 1, client_order_id="t-1")
    qt.order_acknowledged("t-1", order_id="V-1", venue_time=1_790_000_000.25)
    qt.order_filled("t-1", quantity=1, price=100.0, venue_time=1_790_000_001.5)
    qt.order_filled("t-1", quantity=1, price=100.0, venue_time="soon")  # not a time: dropped and counted

    ack, fill, _ = _updates(cap)
    assert (ack.attributes[semconv.ORDER_VENUE_TIME], fill.attributes[semconv.ORDER_VENUE_TIME]) == (
        1_790_000_000.25, 1_790_000_001.5)
    assert cap.point(semconv.TELEMETRY_ERRORS.name, kind="bad_venue_time").value == 1


def test_rejects_and_cancels_are_counted_by_reason(cap: Capture) -> None:
    place("BTCUSDT", "buy", 1, client_order_id="r-1")
    place("BTCUSDT", "buy", 1, client_order_id="x-1")
    qt.order_rejected("r-1", reason="insufficient_margin")
    qt.order_cancelled("x-1", reason="user")
    rejected = cap.point(semconv.ORDER_EVENTS.name, order__event="reject")
    assert rejected.attributes[semconv.REASON] == "insufficient_margin"
    assert cap.point(semconv.ORDER_EVENTS.name, order__event="cancel").attributes[semconv.REASON] == "user"
    reject_span = [u for u in _updates(cap) if u.attributes[semconv.ORDER_EVENT] == "reject"][0]
    assert reject_span.status.status_code is StatusCode.ERROR


def test_events_for_unknown_orders_still_count_and_link_to_the_current_trace(cap: Capture) -> None:
    with qt.trade_flow(symbol="BTCUSDT", strategy="s"):
        qt.order_filled("never-placed", quantity=1, price=1)
    update = _updates(cap)[0]
    root = cap.span(semconv.SPAN_TRADE)
    assert update.links[0].context.span_id == root.context.span_id
    assert cap.point(semconv.TELEMETRY_ERRORS.name, kind="order_not_tracked").value == 1


def test_the_order_store_is_bounded(cap: Capture) -> None:
    ORDER_STORE.max_orders = 5
    try:
        for i in range(20):
            place("BTCUSDT", "buy", 1, client_order_id=f"b-{i}")
        assert len(ORDER_STORE) == 5
        assert ORDER_STORE.get("b-19") is not None and ORDER_STORE.get("b-0") is None
    finally:
        ORDER_STORE.max_orders = 10_000


def test_bad_fill_values_never_raise(cap: Capture) -> None:
    place("BTCUSDT", "buy", 1, client_order_id="n-1")
    qt.order_filled("n-1", quantity=float("nan"), price=None)
    qt.order_filled(None, quantity="lots", price=object())
    qt.order_acknowledged(object())
    assert cap.point(semconv.TELEMETRY_ERRORS.name, kind="order_event_without_id").value == 1


def test_fills_that_race_the_placement_join_its_trace_before_during_and_after(cap: Capture) -> None:
    """A websocket fill routinely beats the REST response: it must still find the order it belongs to."""
    @qt.traced_order(venue="binance")
    def place_racing(symbol, side, quantity, client_order_id=None):
        during = threading.Thread(target=qt.order_filled, args=(client_order_id,),
                                  kwargs={"quantity": 1, "price": 100.0})
        during.start()
        during.join()
        return {"orderId": "R-1"}

    place_racing("BTCUSDT", "buy", 2, client_order_id="race-1")
    qt.order_filled("race-1", quantity=1, price=100.0)

    order = cap.span(semconv.SPAN_ORDER)
    updates = _updates(cap)
    assert [u.attributes[semconv.ORDER_EVENT] for u in updates] == ["partial_fill", "fill"]
    for update in updates:
        assert update.context.trace_id == order.context.trace_id
        assert update.parent.span_id == order.context.span_id
        assert update.attributes[semconv.SYMBOL] == "BTCUSDT"  # the order's attributes, read while it was in flight
    assert len(ORDER_STORE) == 0  # the final fill closed it


def test_many_racing_fills_from_many_threads_all_join_and_the_store_stays_bounded(cap: Capture) -> None:
    @qt.traced_order(venue="binance")
    def place_racing(symbol, side, quantity, client_order_id=None):
        threading.Thread(target=qt.order_filled, args=(client_order_id,),
                         kwargs={"quantity": quantity, "price": 10.0}).start()

    workers = [threading.Thread(target=lambda i=i: [place_racing("ETHUSDT", "buy", 1, client_order_id=f"m-{i}-{j}")
                                                    for j in range(50)]) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wait_until(lambda: len(_updates(cap)) == 200, 10, "200 fills")
    orders = {s.context.span_id: s for s in cap.spans(semconv.SPAN_ORDER)}
    assert len(orders) == 200
    assert all(u.parent is not None and u.parent.span_id in orders for u in _updates(cap))
    assert len(ORDER_STORE) == 0


def test_a_failed_placement_leaves_nothing_in_the_store(cap: Capture) -> None:
    @qt.traced_order(venue="binance")
    def place_failing(symbol, side, quantity, client_order_id=None):
        raise ConnectionError("venue down")

    for i in range(10):
        with pytest.raises(ConnectionError):
            place_failing("BTCUSDT", "buy", 1, client_order_id=f"f-{i}")
    assert len(ORDER_STORE) == 0
