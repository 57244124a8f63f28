"""ccxt on venues of different shapes: every update a venue reports joins the one order it belongs to.

Real ccxt against local venues that answer as the real ones do: Binance (tests/support/fake_binance.py) echoes the
client order id it was sent, or ccxt makes one up (``x-...``); gate (tests/support/fake_gate.py) gets ``lim2`` from
ccxt as ``t-lim2`` and reports that, and answers ``"text": "apiv4"`` for every order placed without one. Updates
come in replies, in later fetches (orders and trades), after a timeout, after an edit, in batches, and — through
ccxt.pro against gate's websocket — on the private streams.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import ccxt
import ccxt.pro
import pytest
from opentelemetry.sdk.trace import ReadableSpan

import qt_telemetry as qt
from qt_telemetry import semconv
from qt_telemetry._engine.recorder.state import STATE
from qt_telemetry.ccxt import instrument_ccxt, uninstrument_ccxt
from qt_telemetry.testing import Capture, capture_telemetry
from tests.support import fake_gate
from tests.support.fake_binance import FakeBinance
from tests.support.fake_gate import FakeGate, FakeGateStream

API_KEY = "qt-planted-apikey-7Qx"
SECRET = "qt-planted-secret-9Zr"


def _config() -> dict[str, Any]:
    return {"apiKey": API_KEY, "secret": SECRET, "enableRateLimit": False}


@pytest.fixture(autouse=True)
def _uninstrumented() -> Iterator[None]:
    yield
    uninstrument_ccxt()


@pytest.fixture
def venue() -> Iterator[FakeGate]:
    server = FakeGate(key=API_KEY, secret=SECRET)
    yield server
    server.close()


@pytest.fixture
def gate(venue: FakeGate, cap: Capture) -> ccxt.gate:
    exchange = instrument_ccxt(venue.point(ccxt.gate(_config())))
    exchange.load_markets()
    return exchange


def _updates(cap: Capture, order: ReadableSpan) -> list[tuple[str, float | None]]:
    """The updates that joined ``order``'s trace under it: (event, fill quantity)."""
    return [(u.attributes[semconv.ORDER_EVENT], u.attributes.get(semconv.FILL_QUANTITY))
            for u in cap.spans(semconv.SPAN_ORDER_EVENT)
            if u.parent is not None and u.parent.span_id == order.context.span_id
            and u.context.trace_id == order.context.trace_id]


def _placement(cap: Capture, **attributes: Any) -> ReadableSpan:
    (span,) = [s for s in cap.spans(semconv.SPAN_ORDER)
               if all(s.attributes.get(k.replace("__", ".")) == v for k, v in attributes.items())]
    return span


# --- gate's shapes: the placeholder, the rewritten id --------------------------------------------------------

def test_orders_placed_without_a_client_id_are_told_apart_by_the_venue_s_order_id(
        gate: ccxt.gate, venue: FakeGate, cap: Capture) -> None:
    d = gate.create_order("BTC/USDT", "limit", "buy", 0.5, 99.0)
    e = gate.create_order("BTC/USDT", "limit", "sell", 0.5, 101.0)
    assert d["clientOrderId"] == e["clientOrderId"] == "apiv4"  # gate's placeholder, the same for every order
    venue.fill(d["id"], "0.2")
    gate.fetch_order(d["id"], "BTC/USDT")
    gate.cancel_order(e["id"], "BTC/USDT")

    placed_d, placed_e = _placement(cap, side="buy"), _placement(cap, side="sell")
    assert _updates(cap, placed_d) == [("ack", None), ("partial_fill", 0.2)]
    assert _updates(cap, placed_e) == [("ack", None), ("cancel", None)]
    partial = cap.point(semconv.ORDER_EVENTS.name, order__event="partial_fill")
    assert partial.attributes[semconv.SIDE] == "buy"
    assert STATE.orders.get("apiv4") is None  # a placeholder never keys the store
    assert not [s for s in cap.spans() if s.attributes.get(semconv.ORDER_CLIENT_ID) == "apiv4"]


def test_a_client_id_ccxt_rewrites_is_known_by_both_spellings(gate: ccxt.gate, venue: FakeGate, cap: Capture) -> None:
    order = gate.create_order("BTC/USDT", "limit", "buy", 0.5, 99.0, {"clientOrderId": "lim2"})
    (sent,) = venue.received("POST", "/spot/orders")
    assert sent.body["text"] == order["clientOrderId"] == "t-lim2"
    venue.fill(order["id"], "0.2")
    gate.fetch_order(order["id"], "BTC/USDT")
    qt.order_filled("t-lim2", quantity=0.1, price=100.5)  # as a watch_orders handler names it: ccxt's spelling
    gate.cancel_order(order["id"], "BTC/USDT")

    placed = cap.span(semconv.SPAN_ORDER)
    assert placed.attributes[semconv.ORDER_CLIENT_ID] == "lim2"
    assert _updates(cap, placed) == [("ack", None), ("partial_fill", 0.2), ("partial_fill", 0.1), ("cancel", None)]
    assert cap.span(semconv.SPAN_ORDER_CANCEL).attributes[semconv.ORDER_CLIENT_ID] == "lim2"
    assert len(STATE.orders) == 0  # cancelled: gone, by every id it was known by


def test_after_a_timeout_the_order_found_later_joins_its_placement(gate: ccxt.gate, venue: FakeGate,
                                                                   cap: Capture) -> None:
    """The request timed out, but the venue took the order (as real ones do with late requests)."""
    gate.timeout = 300  # ms
    venue.script("POST", "/spot/orders", fake_gate.hang)
    with pytest.raises(ccxt.RequestTimeout):
        gate.create_order("BTC/USDT", "limit", "buy", 0.5, 99.0, {"clientOrderId": "late1"})
    (resting,) = venue.orders.values()
    venue.fill(resting["id"], "0.2")
    (found,) = gate.fetch_open_orders("BTC/USDT")  # the bot looks for what it cannot account for

    placed = cap.span(semconv.SPAN_ORDER)
    assert (placed.attributes[semconv.OUTCOME], placed.attributes[semconv.ERROR_TYPE]) == ("error", "RequestTimeout")
    assert found["clientOrderId"] == "t-late1"
    assert _updates(cap, placed) == [("partial_fill", 0.2)]
    query = cap.span(semconv.SPAN_ORDER_QUERY)
    assert query.attributes[semconv.CODE_FUNCTION] == "fetch_open_orders"


# --- calls bots use: batches, trades, edits -------------------------------------------------------------------

def test_create_orders_is_one_placement_per_order_each_with_its_own_lifecycle(
        gate: ccxt.gate, venue: FakeGate, cap: Capture) -> None:
    venue.script("POST", "/spot/batch_orders", fake_gate.refuse_batch_item("BALANCE_NOT_ENOUGH", "Not enough"))
    with qt.trade_flow(symbol="BTC/USDT", strategy="grid") as flow, flow.execution() as execution:
        placed = gate.create_orders([
            {"symbol": "BTC/USDT", "type": "limit", "side": "buy", "amount": 0.1, "price": 90, "params": {
                "clientOrderId": "b1"}},
            {"symbol": "ETH/USDT", "type": "limit", "side": "sell", "amount": 2, "price": 3100},
            {"symbol": "BTC/USDT", "type": "limit", "side": "buy", "amount": 50, "price": 91},
        ])
    assert [o["status"] for o in placed] == ["rejected", "open", "open"]  # ccxt sorts them: by time, none first
    btc, eth = (next(o for o in placed if o["symbol"] == symbol) for symbol in ("BTC/USDT", "ETH/USDT"))
    venue.fill(eth["id"])
    gate.fetch_order(eth["id"], "ETH/USDT")
    gate.cancel_orders([btc["id"]], "BTC/USDT")

    first, second, refused = (_placement(cap, order__price=p) for p in (90, 3100, 91))
    assert (first.attributes[semconv.SYMBOL], first.attributes[semconv.ORDER_CLIENT_ID]) == ("BTC/USDT", "b1")
    assert (second.attributes[semconv.SIDE], second.attributes[semconv.ORDER_QUANTITY]) == ("sell", 2)
    assert second.attributes[semconv.ORDER_CLIENT_ID] == eth["clientOrderId"]  # made up by ccxt: "t-..."
    for order in (first, second, refused):  # siblings in the trade, the later ones linked to the first
        assert order.parent.span_id == execution.get_span_context().span_id
    assert [link.context.span_id for s in (second, refused) for link in s.links] == [first.context.span_id] * 2
    assert (refused.attributes[semconv.OUTCOME], refused.attributes[semconv.REASON]) == ("rejected",
                                                                                         "balance_not_enough")
    assert cap.point(semconv.ORDER_LATENCY.name, outcome="ok", symbol="BTC/USDT").count == 1
    assert cap.point(semconv.ORDER_LATENCY.name, outcome="ok", symbol="ETH/USDT").count == 1
    assert cap.point(semconv.ORDER_LATENCY.name, outcome="rejected").count == 1
    assert _updates(cap, first) == [("ack", None), ("cancel", None)]
    assert _updates(cap, second) == [("ack", None), ("fill", 2.0)]
    assert _updates(cap, refused) == [("reject", None)]
    assert cap.span(semconv.SPAN_ORDER_CANCEL).attributes[semconv.CODE_FUNCTION] == "cancel_orders"
    assert len(STATE.orders) == 0


def test_fills_reported_by_trades_and_by_order_snapshots_are_counted_once(
        gate: ccxt.gate, venue: FakeGate, cap: Capture) -> None:
    order = gate.create_order("BTC/USDT", "limit", "buy", 0.5, 99.0, {"clientOrderId": "tr1"})
    venue.fill(order["id"], "0.2")
    gate.fetch_my_trades("BTC/USDT")  # the trade: a partial fill
    gate.fetch_order(order["id"], "BTC/USDT")  # the same 0.2 as a snapshot: nothing new
    gate.fetch_my_trades("BTC/USDT")  # the same trade again: nothing new
    venue.fill(order["id"])
    gate.fetch_order(order["id"], "BTC/USDT")  # the rest, as a snapshot: the final fill
    gate.fetch_my_trades("BTC/USDT")  # its trade: nothing new

    placed = cap.span(semconv.SPAN_ORDER)
    assert _updates(cap, placed) == [("ack", None), ("partial_fill", 0.2), ("fill", pytest.approx(0.3))]
    assert cap.point(semconv.FILL_LATENCY.name).count == 1
    ack, partial, _ = [u for u in cap.spans(semconv.SPAN_ORDER_EVENT)]
    for update in (ack, partial):  # the venue's own clock, from ccxt's timestamps (ms) in epoch seconds
        assert abs(update.attributes[semconv.ORDER_VENUE_TIME] - time.time()) < 60
    assert len(cap.spans(semconv.SPAN_ORDER_QUERY)) == 5


def test_after_an_amend_later_fills_stay_with_the_placement(gate: ccxt.gate, venue: FakeGate, cap: Capture) -> None:
    order = gate.create_order("BTC/USDT", "limit", "buy", 0.5, 99.0, {"clientOrderId": "ed1"})
    amended = gate.edit_order(order["id"], "BTC/USDT", "limit", "buy", 0.5, 98.0)
    venue.fill(order["id"])
    gate.fetch_order(order["id"], "BTC/USDT")

    assert amended["id"] == order["id"]  # gate amends in place
    placed, edit = _placement(cap, code__function__name="create_order"), _placement(
        cap, code__function__name="edit_order")
    assert _updates(cap, placed) == [("ack", None), ("fill", 0.5)]
    assert _updates(cap, edit) == []
    assert edit.attributes[semconv.ORDER_CLIENT_ID] == "ed1"
    assert cap.point(semconv.ORDER_LATENCY.name).count == 2  # an edit is a request to the venue like a placement


# --- every shape -----------------------------------------------------------------------------------------------

@dataclass
class Shape:
    """One way a venue treats client order ids, and how to drive it."""

    exchange: Any
    fill: Callable[[str, str], None]  # (order id, quantity traded now)
    close: Callable[[], None]


def _binance() -> Shape:
    server = FakeBinance(secret=SECRET)
    exchange = instrument_ccxt(server.point(ccxt.binance(_config())))
    exchange.load_markets()
    traded: dict[str, float] = {}

    def fill(order_id: str, quantity: str) -> None:
        traded[order_id] = traded.get(order_id, 0.0) + float(quantity)
        server.fill(order_id, str(traded[order_id]))

    return Shape(exchange, fill, server.close)


def _gate() -> Shape:
    server = FakeGate(key=API_KEY, secret=SECRET)
    exchange = instrument_ccxt(server.point(ccxt.gate(_config())))
    exchange.load_markets()

    def fill(order_id: str, quantity: str) -> None:
        server.fill(order_id, quantity)

    return Shape(exchange, fill, server.close)


#: (venue, client ids sent, how the venue reports them, does a public call with the reported id join?)
SHAPES = [
    pytest.param(_binance, {"clientOrderId": "A1"}, "A1", True, id="binance-echoed"),
    pytest.param(_binance, {}, "x-", True, id="binance-made-up-by-ccxt"),
    pytest.param(_gate, {"clientOrderId": "A1"}, "t-A1", True, id="gate-rewritten"),
    pytest.param(_gate, {}, "apiv4", False, id="gate-shared-placeholder"),
]


@pytest.mark.parametrize(("shape", "params", "reported", "public_call_joins"), SHAPES)
def test_every_update_joins_its_own_order_whatever_the_venue_does_with_client_ids(
        cap: Capture, shape: Callable[[], Shape], params: dict[str, str], reported: str,
        public_call_joins: bool) -> None:
    venue = shape()
    try:
        exchange = venue.exchange
        a = exchange.create_order("BTC/USDT", "limit", "buy", 0.5, 99.0, params)
        b = exchange.create_order("BTC/USDT", "limit", "sell", 0.5, 101.0, {k: "B1" for k in params})
        venue.fill(a["id"], "0.2")
        exchange.fetch_order(a["id"], "BTC/USDT")  # the partial fill, found by polling
        exchange.cancel_order(b["id"], "BTC/USDT")
        assert a["clientOrderId"].startswith(reported)
        qt.order_filled(a["clientOrderId"], quantity=0.1, price=99.0)  # as a watch_orders handler reports it
    finally:
        venue.close()

    placed_a, placed_b = _placement(cap, side="buy"), _placement(cap, side="sell")
    expected_a = [("ack", None), ("partial_fill", 0.2)] + ([("partial_fill", 0.1)] if public_call_joins else [])
    assert _updates(cap, placed_a) == expected_a
    assert _updates(cap, placed_b) == [("ack", None), ("cancel", None)]
    not_tracked = cap.points(semconv.TELEMETRY_ERRORS.name, kind="order_not_tracked")
    assert [p.value for p in not_tracked] == ([] if public_call_joins else [1])


# --- ccxt.pro: the order API and the private streams over gate's websocket ---------------------------------------

async def _until_watching(exchange: Any, message_hash: str, timeout: float = 10.0) -> None:
    """Wait until ccxt has a watcher waiting for ``message_hash`` (a message sent earlier would wake nobody)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not any(message_hash in client.futures for client in exchange.clients.values()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for a watcher of {message_hash}")
        await asyncio.sleep(0.005)


def test_websocket_orders_and_private_streams_join_each_order(venue: FakeGate, cap: Capture) -> None:
    async def trade() -> None:
        stream = await FakeGateStream(venue).start()
        exchange = instrument_ccxt(stream.point(venue.point(ccxt.pro.gate(_config()))))
        try:
            await exchange.load_markets()

            async def venue_acts(action: Callable[[], Any], trades: bool = True) -> None:
                """The private streams waiting, then the venue acts: each stream reports the update once."""
                watchers = [asyncio.create_task(exchange.watch_orders("BTC/USDT"))]
                await _until_watching(exchange, "orders:BTC_USDT")
                await stream.until_subscribed("spot.orders")
                if trades:
                    watchers.append(asyncio.create_task(exchange.watch_my_trades("BTC/USDT")))
                    await _until_watching(exchange, "myTrades:BTC/USDT")
                    await stream.until_subscribed("spot.usertrades")
                done = action()
                if asyncio.iscoroutine(done):
                    await done
                await asyncio.gather(*watchers)

            placed = await exchange.create_order_ws("BTC/USDT", "limit", "buy", 0.5, 99.0, {"clientOrderId": "ws1"})
            rested = await exchange.create_order("BTC/USDT", "limit", "sell", 0.5, 101.0)  # REST, placeholder id
            await venue_acts(lambda: venue.fill(placed["id"], "0.2"))  # on both streams: one partial fill
            await venue_acts(lambda: venue.fill(rested["id"]))  # found by its order id alone
            await venue_acts(lambda: exchange.edit_order_ws(placed["id"], "BTC/USDT", "limit", "buy", 0.5, 98.0),
                             trades=False)
            await venue_acts(lambda: venue.fill(placed["id"], "0.1"))
            await venue_acts(lambda: exchange.cancel_order_ws(placed["id"], "BTC/USDT"), trades=False)
        finally:
            await exchange.close()
            await stream.close()

    asyncio.run(trade())
    ws_placed = _placement(cap, code__function__name="create_order_ws")
    rest_placed = _placement(cap, code__function__name="create_order")
    edit = _placement(cap, code__function__name="edit_order_ws")
    assert ws_placed.attributes[semconv.ORDER_CLIENT_ID] == "ws1"
    assert _updates(cap, ws_placed) == [("ack", None), ("partial_fill", 0.2), ("partial_fill", pytest.approx(0.1)),
                                        ("cancel", None)]
    assert _updates(cap, rest_placed) == [("ack", None), ("fill", 0.5)]
    assert _updates(cap, edit) == []
    cancel = cap.span(semconv.SPAN_ORDER_CANCEL)
    assert (cancel.attributes[semconv.CODE_FUNCTION], cancel.attributes[semconv.ORDER_ID]) == (
        "cancel_order_ws", ws_placed.attributes[semconv.ORDER_ID])
    assert sum(p.count for p in cap.points(semconv.ORDER_LATENCY.name, outcome="ok")) == 3  # and the amend
    assert len(STATE.orders) == 0


# --- the integration's state ------------------------------------------------------------------------------------

def test_the_integration_s_state_lives_in_the_process_state_and_survives_a_reset_like_a_decorator(
        venue: FakeGate) -> None:
    instrument_ccxt()
    registry = STATE.registries["ccxt"]
    assert any(owner is ccxt.gate and name == "create_order" for owner, name, _ in registry.patched)  # type: ignore[attr-defined]
    with capture_telemetry() as cap:  # resets the state on the way in and out, as a user's test does
        exchange = venue.point(ccxt.gate(_config()))
        exchange.create_order("BTC/USDT", "limit", "buy", 0.5, 99.0)
        assert len(cap.spans(semconv.SPAN_ORDER)) == 1
    uninstrument_ccxt()
    assert registry.patched == []  # type: ignore[attr-defined]
    assert not hasattr(ccxt.gate.__dict__["create_order"], "__wrapped__")
