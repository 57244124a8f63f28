"""ccxt: the real ccxt package (sync, async_support, pro) against a local Binance, traced by instrument_ccxt().

Nothing of ccxt is mocked: the exchange objects are ccxt's own, their URLs point at tests/support/fake_binance.py,
which answers (and checks the signature of) every request as Binance's spot API does.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import ccxt
import ccxt.async_support
import ccxt.pro
import pytest
import tomllib
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.trace import SpanKind, StatusCode
from packaging.requirements import Requirement

import qt_telemetry as qt
from qt_telemetry import semconv
from qt_telemetry._engine.recorder.state import STATE
from qt_telemetry.ccxt import instrument_ccxt, uninstrument_ccxt
from qt_telemetry.testing import Capture
from tests.support import fake_binance
from tests.support.fake_binance import FakeBinance, FakeBinanceStream
from tests.support.otlp_receiver import OtlpHttpReceiver, attributes
from tests.support.servers import REPO

#: Planted credentials. Short and plain on purpose: no pattern rule would catch them, only the exact values
#: instrument_ccxt() registers from the exchange object.
API_KEY = "qt-planted-apikey-7Qx"
SECRET = "qt-planted-secret-9Zr"
ORDER_LATENCY = semconv.ORDER_LATENCY.name


@pytest.fixture
def venue() -> Iterator[FakeBinance]:
    server = FakeBinance(secret=SECRET)
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _uninstrumented() -> Iterator[None]:
    yield
    uninstrument_ccxt()


def _config(**extra: Any) -> dict[str, Any]:
    return {"apiKey": API_KEY, "secret": SECRET, "enableRateLimit": False, **extra}


@pytest.fixture
def binance(venue: FakeBinance, cap: Capture) -> ccxt.binance:
    exchange = instrument_ccxt(venue.point(ccxt.binance(_config())))
    exchange.load_markets()
    return exchange


@pytest.fixture
def http_spans(cap: Capture) -> Iterator[None]:
    """opentelemetry-instrumentation-requests active (bound to this test's capture), as a user would have it."""
    RequestsInstrumentor().instrument()
    yield
    RequestsInstrumentor().uninstrument()


def _order_events(cap: Capture) -> dict[str, float]:
    return {p.attributes[semconv.ORDER_EVENT]: p.value for p in cap.points(semconv.ORDER_EVENTS.name)}


def _everything_exported(cap: Capture) -> str:
    """Every string of every span (name, attributes, events, status) and every metric label, as one text."""
    parts: list[str] = []
    for span in cap.spans():
        parts += [span.name, span.status.description or "", json.dumps(dict(span.attributes), default=str)]
        parts += [json.dumps(dict(e.attributes), default=str) for e in span.events]
    for metric in cap.metrics().values():
        parts += [json.dumps(dict(p.attributes), default=str) for p in metric.data.data_points]
    return "\n".join(parts)


# --- placing orders -------------------------------------------------------------------------------------

def test_create_order_is_one_place_span_with_ccxt_arguments_and_the_returned_order(
        binance: ccxt.binance, cap: Capture) -> None:
    order = binance.create_order("BTC/USDT", "market", "buy", 0.5, params={"clientOrderId": "c-1"})

    span = cap.span(semconv.SPAN_ORDER)
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    attributes = dict(span.attributes)
    # the reply's venue timestamp is the ack: order-to-ack and the clock it was read with (test_ccxt_latency.py)
    assert 0.0 <= attributes.pop(semconv.LATENCY_ORDER_TO_ACK_S) < 5.0
    assert abs(attributes.pop(semconv.VENUE_CLOCK_OFFSET_S)) <= attributes.pop(semconv.VENUE_CLOCK_UNCERTAINTY_S)
    assert attributes == {
        semconv.VENUE: "binance", semconv.PEER_SERVICE: "binance", semconv.SYMBOL: "BTC/USDT",
        semconv.SIDE: "buy", semconv.ORDER_TYPE: "market", semconv.ORDER_QUANTITY: 0.5,
        semconv.ORDER_CLIENT_ID: "c-1", semconv.CODE_FUNCTION: "create_order",
        semconv.ORDER_ID: order["id"], semconv.ORDER_STATUS: "closed", semconv.ORDER_FILLED: 0.5,
        semconv.ORDER_AVERAGE: 100.5, semconv.OUTCOME: "ok", semconv.SAMPLING_KEEP: True,
    }
    assert binance.id == "binance" and order["id"] == "1001"
    point = cap.point(ORDER_LATENCY)
    assert point.count == 1
    assert dict(point.attributes) == {"venue": "binance", "symbol": "BTC/USDT", "side": "buy", "order.type": "market",
                                      "outcome": "ok"}


def test_client_order_id_made_up_by_ccxt_is_read_from_the_reply_and_nested_calls_are_one_span(
        binance: ccxt.binance, venue: FakeBinance, cap: Capture) -> None:
    order = binance.create_limit_order("ETH/USDT", "sell", 2, 3100.5)  # ccxt's base class calls create_order

    (span,) = cap.spans(semconv.SPAN_ORDER)
    (sent,) = venue.received("POST", "/api/v3/order")
    assert sent.params["newClientOrderId"].startswith("x-")  # ccxt's broker prefix + 22 random characters
    assert span.attributes[semconv.ORDER_CLIENT_ID] == sent.params["newClientOrderId"] == order["clientOrderId"]
    assert span.attributes[semconv.CODE_FUNCTION] == "create_limit_order"
    assert (span.attributes[semconv.ORDER_TYPE], span.attributes[semconv.ORDER_PRICE]) == ("limit", 3100.5)
    assert (span.attributes[semconv.SIDE], span.attributes[semconv.ORDER_QUANTITY]) == ("sell", 2)
    assert span.attributes[semconv.ORDER_STATUS] == "open"
    (ack,) = cap.spans(semconv.SPAN_ORDER_EVENT)  # found by the id ccxt made up
    assert ack.attributes[semconv.ORDER_EVENT] == "ack"
    assert ack.attributes[semconv.ORDER_ID] == order["id"]
    assert ack.parent.span_id == span.context.span_id


def test_market_order_filled_at_once_is_one_final_fill_joining_the_trade_flow(
        binance: ccxt.binance, cap: Capture) -> None:
    with qt.trade_flow(symbol="BTC/USDT", strategy="momo") as flow:
        with flow.signal(reference_price=100.0):
            pass
        with flow.execution() as execution:
            binance.create_market_order("BTC/USDT", "buy", 0.5, params={"newClientOrderId": "m-1"})

    order = cap.span(semconv.SPAN_ORDER)
    assert order.parent.span_id == execution.get_span_context().span_id
    (fill,) = cap.spans(semconv.SPAN_ORDER_EVENT)
    assert fill.context.trace_id == order.context.trace_id and fill.parent.span_id == order.context.span_id
    assert fill.attributes[semconv.ORDER_EVENT] == "fill"
    assert (fill.attributes[semconv.FILL_QUANTITY], fill.attributes[semconv.FILL_PRICE]) == (0.5, 100.5)
    assert fill.attributes[semconv.SLIPPAGE_BPS] == pytest.approx(50.0)  # 100.5 paid vs 100.0 signalled
    assert cap.point(semconv.FILL_LATENCY.name).count == 1
    assert _order_events(cap) == {"fill": 1}
    assert len(STATE.orders) == 0  # a filled order leaves the store


def test_partial_fill_then_the_rest_found_by_fetch_order(binance: ccxt.binance, venue: FakeBinance,
                                                         cap: Capture) -> None:
    venue.script("POST", "/api/v3/order", fake_binance.fills("PARTIALLY_FILLED", "0.2"))
    order = binance.create_order("BTC/USDT", "limit", "buy", 0.5, 101.0, {"clientOrderId": "p-1"})
    venue.fill(order["id"])  # the rest trades later
    polled = binance.fetch_order(order["id"], "BTC/USDT")

    assert polled["status"] == "closed"
    query = cap.span(semconv.SPAN_ORDER_QUERY)
    assert query.attributes[semconv.ORDER_ID] == order["id"]
    assert query.attributes[semconv.ORDER_CLIENT_ID] == "p-1"  # from the reply: fetch_order was not told
    assert query.attributes[semconv.ORDER_FILLED] == 0.5
    placed = cap.span(semconv.SPAN_ORDER)
    updates = cap.spans(semconv.SPAN_ORDER_EVENT)
    assert [(u.attributes[semconv.ORDER_EVENT], u.attributes[semconv.FILL_QUANTITY]) for u in updates] == [
        ("partial_fill", 0.2), ("fill", pytest.approx(0.3))]  # fetch_order reports what is new since
    assert {u.parent.span_id for u in updates} == {placed.context.span_id}
    assert cap.point(ORDER_LATENCY).count == 1  # a query is a span, not an order


def test_edit_order_is_a_request_of_its_own_and_later_fills_stay_with_the_placement(
        binance: ccxt.binance, venue: FakeBinance, cap: Capture) -> None:
    resting = binance.create_order("BTC/USDT", "limit", "sell", 0.1, 120.0)
    edited = binance.edit_order(resting["id"], "BTC/USDT", "limit", "sell", 0.1, 121.0)  # cancelReplace: a new id
    venue.fill(edited["id"])
    binance.fetch_order(edited["id"], "BTC/USDT")

    first, second = cap.spans(semconv.SPAN_ORDER)
    assert second.attributes[semconv.CODE_FUNCTION] == "edit_order"
    assert second.attributes[semconv.ORDER_ID] == edited["id"] != resting["id"]
    assert second.attributes[semconv.ORDER_PRICE] == 121.0
    assert cap.point(ORDER_LATENCY, outcome="ok").count == 2
    ack, fill = cap.spans(semconv.SPAN_ORDER_EVENT)
    assert [u.attributes[semconv.ORDER_EVENT] for u in (ack, fill)] == ["ack", "fill"]
    assert {ack.parent.span_id, fill.parent.span_id} == {first.context.span_id}  # the order, not its edit
    assert fill.attributes[semconv.ORDER_ID] == edited["id"]


# --- cancels ------------------------------------------------------------------------------------------

def test_cancel_order_is_a_cancel_span_and_cancels_the_order_in_its_own_trace(binance: ccxt.binance,
                                                                              cap: Capture) -> None:
    placed = binance.create_order("BTC/USDT", "limit", "buy", 0.5, 99.0, {"clientOrderId": "x-1"})
    binance.cancel_order(placed["id"], "BTC/USDT")

    cancel = cap.span(semconv.SPAN_ORDER_CANCEL)
    assert cancel.attributes[semconv.ORDER_ID] == placed["id"]
    # Binance calls the cancel request's own id clientOrderId; the order's is origClientOrderId.
    assert cancel.attributes[semconv.ORDER_CLIENT_ID] == "x-1"
    assert cancel.attributes[semconv.ORDER_STATUS] == "canceled"
    assert cap.point(semconv.ORDER_CANCEL_LATENCY.name, venue="binance", outcome="ok").count == 1
    order = cap.span(semconv.SPAN_ORDER)
    updates = cap.spans(semconv.SPAN_ORDER_EVENT)
    assert [u.attributes[semconv.ORDER_EVENT] for u in updates] == ["ack", "cancel"]
    assert updates[1].parent.span_id == order.context.span_id  # the order's trace, not the cancel's
    assert len(STATE.orders) == 0


def test_cancel_all_orders_cancels_each_order_placed_here(binance: ccxt.binance, cap: Capture) -> None:
    binance.create_order("BTC/USDT", "limit", "buy", 0.5, 99.0, {"clientOrderId": "a-1"})
    binance.create_order("BTC/USDT", "limit", "buy", 0.5, 98.0, {"clientOrderId": "a-2"})
    cancelled = binance.cancel_all_orders("BTC/USDT")

    assert len(cancelled) == 2
    assert cap.span(semconv.SPAN_ORDER_CANCEL).attributes[semconv.CODE_FUNCTION] == "cancel_all_orders"
    cancels = [u for u in cap.spans(semconv.SPAN_ORDER_EVENT) if u.attributes[semconv.ORDER_EVENT] == "cancel"]
    assert sorted(u.attributes[semconv.ORDER_CLIENT_ID] for u in cancels) == ["a-1", "a-2"]


# --- ccxt's exceptions as outcomes --------------------------------------------------------------------------

@pytest.mark.parametrize(("answer", "raised", "outcome", "reason"), [
    (fake_binance.INSUFFICIENT_BALANCE, ccxt.InsufficientFunds, "rejected", "insufficient_funds"),
    (fake_binance.LOT_SIZE_FAILURE, ccxt.InvalidOrder, "rejected", "invalid_order"),
    (fake_binance.RATE_LIMITED, ccxt.DDoSProtection, "error", None),
    (fake_binance.unavailable, ccxt.ExchangeNotAvailable, "error", None),
], ids=["insufficient-balance", "lot-size", "rate-limited", "unavailable"])
def test_ccxt_exceptions_are_outcomes_and_are_reraised_unchanged(
        binance: ccxt.binance, venue: FakeBinance, cap: Capture, answer: Any, raised: type, outcome: str,
        reason: str | None) -> None:
    venue.script("POST", "/api/v3/order", answer)
    with pytest.raises(raised) as caught:
        binance.create_order("BTC/USDT", "market", "buy", 0.5, params={"clientOrderId": "e-1"})

    assert type(caught.value) is raised  # ccxt's own exception, untouched
    span = cap.span(semconv.SPAN_ORDER)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[semconv.OUTCOME] == outcome
    assert span.attributes.get(semconv.REASON) == reason
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.type"] == raised.__name__
    point = cap.point(ORDER_LATENCY)
    assert (point.count, point.attributes[semconv.OUTCOME]) == (1, outcome)
    if outcome == "rejected":  # a decision of the venue: no error type, and a reject event like any other
        assert semconv.ERROR_TYPE not in span.attributes and semconv.ERROR_TYPE not in point.attributes
        (update,) = cap.spans(semconv.SPAN_ORDER_EVENT)
        assert update.parent.span_id == span.context.span_id
        assert (update.attributes[semconv.ORDER_EVENT], update.attributes[semconv.OUTCOME]) == ("reject", "rejected")
        assert cap.point(semconv.ORDER_EVENTS.name).attributes[semconv.REASON] == reason
    else:
        assert span.attributes[semconv.ERROR_TYPE] == point.attributes[semconv.ERROR_TYPE] == raised.__name__
        assert cap.spans(semconv.SPAN_ORDER_EVENT) == []  # no lifecycle for a failed placement
    assert len(STATE.orders) == 0


def test_an_order_whose_placement_timed_out_stays_tracked_and_its_later_fill_joins_it(
        binance: ccxt.binance, venue: FakeBinance, cap: Capture) -> None:
    """Venues execute requests that arrive late: the client's timeout says nothing about the order."""
    binance.timeout = 300  # ms: the hanging venue is given up on
    venue.script("POST", "/api/v3/order", fake_binance.hang)
    with pytest.raises(ccxt.RequestTimeout):
        binance.create_order("BTC/USDT", "limit", "buy", 0.5, 99.0, {"clientOrderId": "late-1"})
    qt.order_filled("late-1", quantity=0.5, price=99.0)  # reported later, e.g. by a watch_orders handler

    placed = cap.span(semconv.SPAN_ORDER)
    assert (placed.attributes[semconv.OUTCOME], placed.attributes[semconv.ERROR_TYPE]) == ("error", "RequestTimeout")
    (fill,) = cap.spans(semconv.SPAN_ORDER_EVENT)
    assert fill.parent.span_id == placed.context.span_id and fill.context.trace_id == placed.context.trace_id
    assert fill.attributes[semconv.ORDER_EVENT] == "fill"
    assert cap.points(semconv.TELEMETRY_ERRORS.name, kind="order_not_tracked") == []


def test_cancel_of_an_unknown_order_is_a_rejected_cancel(binance: ccxt.binance, cap: Capture) -> None:
    with pytest.raises(ccxt.OrderNotFound):
        binance.cancel_order("424242", "BTC/USDT")
    span = cap.span(semconv.SPAN_ORDER_CANCEL)
    assert (span.attributes[semconv.OUTCOME], span.attributes[semconv.REASON]) == ("rejected", "order_not_found")
    assert cap.point(semconv.ORDER_CANCEL_LATENCY.name).attributes[semconv.OUTCOME] == "rejected"


# --- the HTTP call under the order, and secrets ---------------------------------------------------------------

def test_requests_span_is_a_child_of_the_order_span(binance: ccxt.binance, cap: Capture, http_spans: None) -> None:
    binance.create_order("BTC/USDT", "market", "buy", 0.5)
    order = cap.span(semconv.SPAN_ORDER)
    (http,) = [s for s in cap.spans() if s.parent is not None and s.parent.span_id == order.context.span_id
               and s.name == "POST"]
    assert http.kind is SpanKind.CLIENT
    assert http.context.trace_id == order.context.trace_id
    assert http.attributes["http.url"].endswith("/api/v3/order")
    assert http.attributes["http.status_code"] == 200


def test_credentials_and_signatures_reach_no_exported_span_or_metric(
        binance: ccxt.binance, venue: FakeBinance, cap: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST", "X-MBX-APIKEY")
    RequestsInstrumentor().instrument()
    try:
        placed = binance.create_order("BTC/USDT", "limit", "buy", 0.5, 99.0)
        binance.cancel_order(placed["id"], "BTC/USDT")  # signed DELETE: the signature is in the URL
        venue.script("POST", "/api/v3/order", fake_binance.echo(f"rejected key {API_KEY} secret {SECRET}"))
        with pytest.raises(ccxt.BadRequest) as caught:  # a venue that repeats what it was given
            binance.create_order("BTC/USDT", "market", "buy", 0.5)
    finally:
        RequestsInstrumentor().uninstrument()

    assert API_KEY in str(caught.value) and SECRET in str(caught.value)  # ccxt's message holds both
    signatures = [r.params["signature"] for r in venue.requests if "signature" in r.params]
    assert len(signatures) >= 3
    exported = _everything_exported(cap)
    for secret in (API_KEY, SECRET, *signatures):
        assert secret not in exported
    # ... while they were there, redacted: in the exception message and in the DELETE's URL
    failed = cap.spans(semconv.SPAN_ORDER)[-1]
    (event,) = failed.events
    assert "rejected key [REDACTED] secret [REDACTED]" in event.attributes["exception.message"]
    (delete,) = [s for s in cap.spans() if s.name == "DELETE"]
    assert "signature=[REDACTED]" in delete.attributes["http.url"]
    assert not [k for s in cap.spans() for k in s.attributes if "apikey" in k.lower()]  # the header, dropped


# --- switching on and off -----------------------------------------------------------------------------------

def test_before_init_calls_pass_straight_through(venue: FakeBinance, clean_globals: None) -> None:
    exchange = instrument_ccxt(venue.point(ccxt.binance(_config())))
    assert STATE.active() is None
    order = exchange.create_order("BTC/USDT", "market", "buy", 0.5, params={"clientOrderId": "n-1"})
    assert order["status"] == "closed"
    assert len(STATE.orders) == 0  # nothing was recorded


def test_instrument_ccxt_without_argument_traces_every_exchange_class_until_undone(
        venue: FakeBinance, cap: Capture) -> None:
    instrument_ccxt()
    instrument_ccxt()  # idempotent
    exchange = instrument_ccxt(venue.point(ccxt.binance(_config())))  # already covered: not wrapped twice
    exchange.create_order("BTC/USDT", "market", "buy", 0.5)
    assert len(cap.spans(semconv.SPAN_ORDER)) == 1

    uninstrument_ccxt()
    assert ccxt.binance.create_order is ccxt.binance.__dict__["create_order"]
    assert not hasattr(ccxt.binance.__dict__["create_order"], "__wrapped__")
    venue.point(ccxt.binance(_config())).create_order("BTC/USDT", "market", "buy", 0.5)
    assert len(cap.spans(semconv.SPAN_ORDER)) == 1


def test_instrumenting_one_exchange_leaves_others_alone(venue: FakeBinance, cap: Capture) -> None:
    traced = instrument_ccxt(venue.point(ccxt.binance(_config())))
    assert instrument_ccxt(traced) is traced
    venue.point(ccxt.binance(_config())).create_order("BTC/USDT", "market", "buy", 0.5)
    assert cap.spans(semconv.SPAN_ORDER) == []
    traced.create_order("BTC/USDT", "market", "buy", 0.5)
    assert len(cap.spans(semconv.SPAN_ORDER)) == 1


def test_the_ccxt_extra_is_a_tested_range_with_the_http_instrumentations_of_our_otel_line() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    wanted = {r.name: r.specifier for r in map(Requirement, extras["ccxt"])}
    assert set(wanted) == {"ccxt", "opentelemetry-instrumentation-requests",
                           "opentelemetry-instrumentation-aiohttp-client"}
    assert ccxt.__version__ in wanted["ccxt"] and "4.5.76" in wanted["ccxt"] and "5.0.0" not in wanted["ccxt"]
    line = version("opentelemetry-semantic-conventions")  # the instrumentation line our OTel API is on
    for name in ("opentelemetry-instrumentation-requests", "opentelemetry-instrumentation-aiohttp-client"):
        assert version(name) == line and line in wanted[name]
        assert "0.67b0" not in wanted[name] and "1.0.0" not in wanted[name]  # never a release that moves the API


def test_something_else_than_an_exchange_is_a_configuration_error() -> None:
    with pytest.raises(qt.ConfigurationError, match="not a ccxt exchange"):
        instrument_ccxt(object())


# --- ccxt.async_support and ccxt.pro --------------------------------------------------------------------------

def test_async_exchange_orders_with_the_aiohttp_span_as_child(venue: FakeBinance, cap: Capture) -> None:
    async def trade() -> None:
        instrument_ccxt()  # the class-level switch covers ccxt.async_support
        exchange = venue.point(ccxt.async_support.binance(_config()))
        AioHttpClientInstrumentor().instrument()  # before ccxt opens its aiohttp session
        try:
            await exchange.load_markets()
            await exchange.create_order("BTC/USDT", "market", "buy", 0.5, params={"clientOrderId": "as-1"})
            venue.script("POST", "/api/v3/order", fake_binance.INSUFFICIENT_BALANCE)
            with pytest.raises(ccxt.InsufficientFunds):
                await exchange.create_order("BTC/USDT", "market", "buy", 50)
        finally:
            AioHttpClientInstrumentor().uninstrument()
            await exchange.close()

    asyncio.run(trade())
    filled, refused = cap.spans(semconv.SPAN_ORDER)
    assert filled.attributes[semconv.ORDER_STATUS] == "closed"
    assert refused.attributes[semconv.OUTCOME] == "rejected"
    for order in (filled, refused):
        (http,) = [s for s in cap.spans("POST") if s.parent.span_id == order.context.span_id]
        assert http.context.trace_id == order.context.trace_id
    assert _order_events(cap) == {"fill": 1, "reject": 1}


def _feed_points(cap: Capture, metric: semconv.MetricSpec, feed: str) -> Any:
    return cap.point(metric.name, feed=feed, symbol="BTC/USDT")


def test_pro_watch_methods_report_messages_gaps_disconnects_and_reconnects(
        venue: FakeBinance, cap: Capture) -> None:
    async def watch() -> None:
        stream = await FakeBinanceStream().start()
        exchange = instrument_ccxt(stream.point(venue.point(ccxt.pro.binance(_config()))))
        try:
            async def next_trades(connection: Any, trade_id: int) -> Any:
                task = asyncio.create_task(exchange.watch_trades("BTC/USDT"))
                await _until_watching(exchange, "trade::BTC/USDT")
                await stream.send(connection, fake_binance.trade_event("BTCUSDT", trade_id, "100.1", "0.1"))
                return await task

            first = asyncio.create_task(exchange.watch_trades("BTC/USDT"))
            connection = await stream.subscribed("btcusdt@trade")
            await stream.send(connection, fake_binance.trade_event("BTCUSDT", 1, "100.0", "0.1"))
            await first
            await next_trades(connection, 2)

            dropped = asyncio.create_task(exchange.watch_trades("BTC/USDT"))
            await _until_watching(exchange, "trade::BTC/USDT")
            await stream.drop(connection)
            with pytest.raises(ccxt.NetworkError):
                await dropped

            again = asyncio.create_task(exchange.watch_trades("BTC/USDT"))  # ccxt reconnects and resubscribes
            reconnected = await stream.subscribed("btcusdt@trade", count=2)
            await stream.send(reconnected, fake_binance.trade_event("BTCUSDT", 3, "100.2", "0.1"))
            assert len(await again) >= 1

            ticker = asyncio.create_task(exchange.watch_ticker("BTC/USDT"))
            minis = await stream.subscribed("btcusdt@miniTicker")
            await stream.send(minis, fake_binance.mini_ticker_event("BTCUSDT", "100.3"))
            assert (await ticker)["last"] == 100.3
        finally:
            await exchange.close()
            await stream.close()

    asyncio.run(watch())
    # watch_trades calls watch_trades_for_symbols, watch_ticker calls watch_tickers: each update counts once
    assert _feed_points(cap, semconv.FEED_MESSAGES, "binance.trades").value == 3
    assert _feed_points(cap, semconv.FEED_GAP, "binance.trades").count == 2
    assert _feed_points(cap, semconv.FEED_RECONNECTS, "binance.trades").value == 1
    assert _feed_points(cap, semconv.FEED_CONNECTED, "binance.trades").value == 1.0
    assert _feed_points(cap, semconv.FEED_MESSAGES, "binance.ticker").value == 1
    events = [e for s in cap.spans("qt.feed") if s.attributes[semconv.FEED] == "binance.trades" for e in s.events]
    assert [(e.name, e.attributes.get(semconv.REASON)) for e in events] == [
        ("qt.feed.connected", None), ("qt.feed.disconnected", "NetworkError"), ("qt.feed.connected", "reconnected")]


async def _until_watching(exchange: Any, message_hash: str, timeout: float = 10.0) -> None:
    """Wait until ccxt has a watcher waiting for ``message_hash`` (a message sent earlier would wake nobody)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not any(message_hash in client.futures for client in exchange.clients.values()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for a watcher of {message_hash}")
        await asyncio.sleep(0.005)


# --- through real OTLP export: nothing secret on the wire -----------------------------------------------------

BOT = textwrap.dedent("""
    import os
    import ccxt
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    import qt_telemetry as qt
    from qt_telemetry.ccxt import instrument_ccxt

    qt.init()
    RequestsInstrumentor().instrument()
    venue = os.environ["FAKE_BINANCE_URL"]
    exchange = instrument_ccxt(ccxt.binance({"apiKey": os.environ["BOT_API_KEY"], "secret": os.environ["BOT_SECRET"],
                                             "enableRateLimit": False}))
    for name, url in list(exchange.urls["api"].items()):
        if isinstance(url, str) and url.startswith("http"):
            exchange.urls["api"][name] = venue + "/" + url.split("/", 3)[3]
    exchange.load_markets()
    with qt.trade_flow(symbol="BTC/USDT", strategy="ccxt-bot") as flow, flow.execution():
        resting = exchange.create_order("BTC/USDT", "limit", "buy", 0.5, 99.0)
        exchange.cancel_order(resting["id"], "BTC/USDT")
        for timeout in (10_000, 300):  # scripted: a venue that echoes the credentials, then one that hangs
            exchange.timeout = timeout
            try:
                exchange.create_order("BTC/USDT", "market", "buy", 0.5)
            except ccxt.BaseError as exc:
                print(type(exc).__name__)
    assert qt.shutdown()
""")


def test_through_otlp_export_nothing_secret_reaches_the_wire(venue: FakeBinance) -> None:
    receiver = OtlpHttpReceiver()
    try:
        venue.script("POST", "/api/v3/order", fake_binance.fills("NEW", "0"),
                     fake_binance.echo(f"rejected key {API_KEY} secret {SECRET}"), fake_binance.hang)
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
        env = {**clean, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_SERVICE_NAME": "ccxt-bot",
               "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST": "X-MBX-APIKEY",
               "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
               "FAKE_BINANCE_URL": venue.url, "BOT_API_KEY": API_KEY, "BOT_SECRET": SECRET}
        proc = subprocess.run([sys.executable, "-c", BOT], env=env, capture_output=True, text=True, timeout=120,
                              check=False)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["BadRequest", "RequestTimeout"]
        receiver.wait_for(lambda: any(s.name == "qt.order.update" for _, s in receiver.spans()) and any(
            m.name == ORDER_LATENCY for _, m in receiver.metrics()), what="the bot's spans and metrics")

        spans = {span.span_id: span for _, span in receiver.spans()}
        places = [s for s in spans.values() if s.name == "qt.order.place"]
        assert [attributes(s)["outcome"] for s in places] == ["ok", "error", "error"]
        assert [attributes(s).get("error.type") for s in places] == [None, "BadRequest", "RequestTimeout"]
        cancel = next(s for s in spans.values() if s.name == "qt.order.cancel")
        (delete,) = [s for s in spans.values() if s.name == "DELETE"]
        assert delete.parent_span_id == cancel.span_id
        assert "signature=[REDACTED]" in attributes(delete)["http.url"]
        for place in places:  # besides the order's own updates (ack, cancel), its one HTTP call
            assert [s.name for s in spans.values() if s.parent_span_id == place.span_id
                    and s.name != "qt.order.update"] == ["POST"]

        signatures = [r.params["signature"] for r in venue.requests if "signature" in r.params]
        assert len(signatures) >= 6  # load_markets' signed calls, the order, the cancel, two failed orders
        with receiver.lock:
            wire = b"".join(r.SerializeToString() for r in [*receiver.trace_requests, *receiver.metric_requests])
        for secret in (API_KEY, SECRET, *signatures):
            assert secret.encode() not in wire
        assert b"[REDACTED]" in wire
    finally:
        receiver.close()
