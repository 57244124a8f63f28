"""The latency budget through ccxt: the venue's own timestamps fill order-to-ack, ack-to-fill and its clock offset.

Real ccxt (sync and ccxt.pro) against tests/support/fake_binance.py, whose clock is set ``clock_offset`` seconds off
ours and whose matching engine takes ``order_delay`` seconds to accept an order (stamping ``transactTime`` then).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import ccxt
import ccxt.pro
import pytest

import qt_telemetry as qt
from qt_telemetry import semconv
from qt_telemetry.ccxt import instrument_ccxt, market_event, uninstrument_ccxt
from qt_telemetry.testing import Capture
from tests.support import fake_binance
from tests.support.fake_binance import FakeBinance, FakeBinanceStream

SECRET = "qt-planted-secret-9Zr"
#: Binance stamps whole milliseconds: a stamp is up to 1 ms before the moment it stands for.
STAMP = 0.001
#: The most a clock sample's uncertainty (half a fetch_time() round trip on loopback) may be, on a loaded CI box.
SLACK = 0.050


@pytest.fixture(autouse=True)
def _uninstrumented() -> Iterator[None]:
    yield
    uninstrument_ccxt()


@pytest.fixture
def venue() -> Iterator[FakeBinance]:
    server = FakeBinance(secret=SECRET)
    yield server
    server.close()


def _config() -> dict[str, Any]:
    return {"apiKey": "qt-planted-apikey-7Qx", "secret": SECRET, "enableRateLimit": False}


def _clock(cap: Capture, venue: str = "binance") -> tuple[float, float]:
    return (cap.point(semconv.VENUE_CLOCK_OFFSET.name, venue=venue).value,
            cap.point(semconv.VENUE_CLOCK_OFFSET_UNCERTAINTY.name, venue=venue).value)


@pytest.mark.parametrize("offset", [2.0, -2.0])
def test_a_skewed_venue_s_stamps_give_order_to_ack_and_ack_to_fill_without_negative_segments(
        venue: FakeBinance, cap: Capture, offset: float) -> None:
    venue.clock_offset = offset
    binance = instrument_ccxt(venue.point(ccxt.binance(_config())))
    binance.load_markets()
    for _ in range(3):
        binance.fetch_time()  # each one a clock sample: the least uncertain one wins
    estimate, uncertainty = _clock(cap)
    assert abs(estimate - offset) <= uncertainty + STAMP
    assert uncertainty < SLACK

    venue.order_delay = 0.080
    event = qt.market_event("BTC/USDT", feed="binance.ticker", venue="binance",
                            exchange_time=time.time() + offset - 0.030)
    with qt.trade_flow(symbol="BTC/USDT", strategy="momo") as flow:
        with flow.signal(trigger=event):
            pass
        with flow.execution():
            before = time.monotonic()
            order = binance.create_order("BTC/USDT", "limit", "buy", 0.5, 99.0, {"clientOrderId": "L-1"})
            took = time.monotonic() - before  # the order's whole round trip: bounds what ccxt and loopback add
    venue.fill(order["id"], at_ms=order["timestamp"] + 200)  # the venue says: filled 200 ms after it took it
    binance.fetch_order(order["id"], "BTC/USDT")

    error = uncertainty + STAMP
    placed = cap.span(semconv.SPAN_ORDER)
    order_to_ack = placed.attributes[semconv.LATENCY_ORDER_TO_ACK_S]
    assert 0.080 - error <= order_to_ack <= took + error
    assert placed.attributes[semconv.VENUE_CLOCK_OFFSET_S] == pytest.approx(offset, abs=error)
    updates = cap.spans(semconv.SPAN_ORDER_EVENT)
    assert [u.attributes[semconv.ORDER_EVENT] for u in updates] == ["ack", "fill"], updates
    ack, fill = updates
    assert semconv.LATENCY_ORDER_TO_ACK_S not in ack.attributes  # measured once: on the placement
    assert fill.attributes[semconv.LATENCY_ACK_TO_FILL_S] == pytest.approx(0.200, abs=1e-6)  # one clock: exact
    signal = cap.span(semconv.SPAN_SIGNAL)
    assert signal.attributes[semconv.LATENCY_FEED_S] == pytest.approx(0.030, abs=error + 0.002)
    tick_to_trade = placed.attributes[semconv.LATENCY_TICK_TO_TRADE_S]
    assert 0.0 <= tick_to_trade < 1.0  # what the test's own calls took: measured exactly by test_latency_budget
    assert fill.attributes[semconv.LATENCY_TOTAL_S] == pytest.approx(
        0.030 + tick_to_trade + order_to_ack + 0.200, abs=2 * error + 0.002)

    labels = {"venue": "binance", "symbol": "BTC/USDT", "strategy": "momo"}
    for segment in semconv.SEGMENTS:
        point = cap.point(semconv.LATENCY_SEGMENT.name, segment=segment, **labels)
        assert point.count == 1 and point.min >= 0.0, segment
    assert not cap.points(semconv.LATENCY_SEGMENT_CLAMPED.name)


def test_a_watched_ticker_is_a_trigger_received_when_the_watch_returned_it(venue: FakeBinance,
                                                                           cap: Capture) -> None:
    venue.clock_offset = 2.0

    async def trade() -> tuple[Any, Any, float, float]:
        stream = await FakeBinanceStream().start()
        exchange = instrument_ccxt(stream.point(venue.point(ccxt.pro.binance(_config()))))
        try:
            await exchange.fetch_time()  # async too: a clock sample
            watching = asyncio.create_task(exchange.watch_ticker("BTC/USDT"))
            connection = await stream.subscribed("btcusdt@miniTicker")
            sent = time.monotonic()
            await stream.send(connection, fake_binance.mini_ticker_event("BTCUSDT", "100.3",
                                                                         time_ms=venue.now_ms() - 25))
            ticker = await watching
            returned = time.monotonic()
            delivered.append(returned - sent)  # the stream's own delivery and ccxt's parsing: part of feed
            event = market_event(exchange, ticker)
            assert market_event(exchange, ticker) is event  # the one the watch recorded, however often asked
            unseen = market_event(exchange, {"symbol": "ETH/USDT", "timestamp": venue.now_ms()})
            with qt.trade_flow(symbol="BTC/USDT", strategy="momo") as flow, flow.signal(trigger=event):
                pass
            return ticker, event, returned, unseen.received_at
        finally:
            await exchange.close()
            await stream.close()

    delivered: list[float] = []
    ticker, event, returned, unseen_at = asyncio.run(trade())
    assert (event.feed, event.venue, event.symbol) == ("binance.ticker", "binance", "BTC/USDT")
    assert event.exchange_time == ticker["timestamp"] / 1000
    assert event.received_at <= returned <= unseen_at  # stamped by the watch, not by the later call
    _, uncertainty = _clock(cap)
    feed = cap.span(semconv.SPAN_SIGNAL).attributes[semconv.LATENCY_FEED_S]
    # the +2 s of the venue's clock taken off: 25 ms stamped before sending, plus the delivery
    assert 0.025 - uncertainty - STAMP <= feed <= 0.025 + delivered[0] + uncertainty + STAMP
    assert cap.point(semconv.LATENCY_SEGMENT.name, segment="feed", venue="binance").count == 1


def test_market_event_absorbs_what_is_not_a_ccxt_message(cap: Capture) -> None:
    for message in (None, 42, "BTC/USDT", [], [1, 2], {"timestamp": "soon"}, {"symbol": object()}):
        event = market_event(object(), message)
        assert isinstance(event, qt.MarketEvent) and event.exchange_time is None


def test_watched_trades_are_a_trigger_stamped_by_the_last_trade(venue: FakeBinance, cap: Capture) -> None:
    async def watch() -> tuple[Any, Any]:
        stream = await FakeBinanceStream().start()
        exchange = instrument_ccxt(stream.point(venue.point(ccxt.pro.binance(_config()))))
        try:
            watching = asyncio.create_task(exchange.watch_trades("BTC/USDT"))
            connection = await stream.subscribed("btcusdt@trade")
            await stream.send(connection, fake_binance.trade_event("BTCUSDT", 1, "100.0", "0.1"))
            trades = await watching
            return trades, market_event(exchange, trades)
        finally:
            await exchange.close()
            await stream.close()

    trades, event = asyncio.run(watch())
    assert (event.feed, event.venue, event.symbol) == ("binance.trades", "binance", "BTC/USDT")
    assert event.exchange_time == trades[-1]["timestamp"] / 1000
    assert cap.point(semconv.FEED_MESSAGES.name, feed="binance.trades", symbol="BTC/USDT").value == 1
