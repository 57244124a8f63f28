"""Market-data feed health: connected gauge, gap histogram, reconnects and staleness per feed and symbol."""

from __future__ import annotations

import asyncio
import time

import pytest

import qt_telemetry as qt
from qt_telemetry import semconv
from qt_telemetry.testing import Capture


def test_connected_gauge_and_reconnect_counter(cap: Capture) -> None:
    feed = qt.FeedMonitor("binance-ws")
    feed.connected("BTCUSDT")
    assert cap.point(semconv.FEED_CONNECTED.name, feed="binance-ws", symbol="BTCUSDT").value == 1.0
    feed.disconnected("BTCUSDT", reason="ping timeout")
    assert cap.point(semconv.FEED_CONNECTED.name, symbol="BTCUSDT").value == 0.0
    feed.reconnected("BTCUSDT")
    assert cap.point(semconv.FEED_CONNECTED.name, symbol="BTCUSDT").value == 1.0
    assert cap.point(semconv.FEED_RECONNECTS.name, feed="binance-ws", symbol="BTCUSDT").value == 1
    events = [e for s in cap.spans("qt.feed") for e in s.events]
    assert [e.name for e in events] == ["qt.feed.connected", "qt.feed.disconnected", "qt.feed.connected"]
    assert events[1].attributes[semconv.REASON] == "ping timeout"


def test_message_gaps_are_recorded_in_seconds(cap: Capture) -> None:
    feed = qt.FeedMonitor("ws")
    for t in (100.0, 100.2, 100.7):
        feed.message("ETHUSDT", received_at=t)
    point = cap.point(semconv.FEED_GAP.name, feed="ws", symbol="ETHUSDT")
    assert point.count == 2
    assert point.sum == pytest.approx(0.7)
    assert tuple(point.explicit_bounds) == semconv.FEED_GAP_BUCKETS_S
    assert cap.metrics()[semconv.FEED_GAP.name].unit == "s"
    assert cap.point(semconv.FEED_MESSAGES.name, symbol="ETHUSDT").value == 3
    assert cap.point(semconv.FEED_CONNECTED.name, symbol="ETHUSDT").value == 1.0  # a message proves it


def test_staleness_grows_while_no_message_arrives(cap: Capture) -> None:
    feed = qt.FeedMonitor("ws")
    feed.message("SOLUSDT", received_at=time.monotonic() - 42.0)
    staleness = cap.point(semconv.FEED_STALENESS.name, feed="ws", symbol="SOLUSDT").value
    assert 42.0 <= staleness < 50.0
    feed.message("SOLUSDT")
    assert cap.point(semconv.FEED_STALENESS.name, symbol="SOLUSDT").value < 5.0


def test_works_from_asyncio_callbacks(cap: Capture) -> None:
    feed = qt.FeedMonitor("async-ws")

    async def on_messages() -> None:
        feed.connected("BTCUSDT")
        for _ in range(5):
            feed.message("BTCUSDT")
            await asyncio.sleep(0)

    asyncio.run(on_messages())
    assert cap.point(semconv.FEED_MESSAGES.name, feed="async-ws").value == 5


def test_none_symbol_and_symbol_flood_are_absorbed(cap: Capture) -> None:
    feed = qt.FeedMonitor("ws", max_symbols=3)
    feed.message(None)
    for i in range(10):
        feed.message(f"SYM{i}")
    symbols = {p.attributes[semconv.SYMBOL] for p in cap.points(semconv.FEED_MESSAGES.name)}
    assert symbols == {"unknown", "SYM0", "SYM1", semconv.OVERFLOW_VALUE}
    assert cap.point(semconv.TELEMETRY_ERRORS.name, kind="feed_symbol_overflow").value == 8


def test_a_feed_name_is_data_normalised_never_refused(cap: Capture) -> None:
    qt.FeedMonitor("binance ws").message("BTCUSDT")
    assert cap.point(semconv.FEED_MESSAGES.name).attributes[semconv.FEED] == "binance_ws"
    assert cap.point(semconv.TELEMETRY_ERRORS.name, kind="name_normalised").value == 1
