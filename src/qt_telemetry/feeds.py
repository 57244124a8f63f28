"""Market-data feed health: connected, message gaps, reconnects and staleness, per feed and symbol.

Call the monitor from your websocket callbacks (sync or asyncio; nothing here blocks). Staleness is computed
when metrics are exported, so a feed that silently stops sending shows a growing number instead of a frozen
"connected = 1".
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from qt_telemetry import semconv
from qt_telemetry._config import ConfigurationError, checked_name
from qt_telemetry._runtime import RUNTIME
from qt_telemetry._safety import span_attributes, telemetry_error
from qt_telemetry._spans import event_on_trace


@dataclass
class _SymbolState:
    last_message: float | None = None
    connected: bool = False
    staleness_observed: bool = False
    labels: dict[str, str] | None = None  # bounded once, reused for every message


class FeedMonitor:
    """Health of one market-data feed (e.g. ``FeedMonitor("binance-ws")``)."""

    def __init__(self, feed: str, *, max_symbols: int = 1000) -> None:
        self.feed = checked_name(feed, "feed")
        if max_symbols < 1:
            raise ConfigurationError(f"max_symbols={max_symbols!r}: expected a positive number")
        self.max_symbols = max_symbols
        self._symbols: dict[str, _SymbolState] = {}
        self._lock = threading.Lock()

    def _state(self, symbol: Any) -> tuple[str, _SymbolState]:
        key = semconv.UNKNOWN_VALUE if symbol is None else str(symbol)
        state = self._symbols.get(key)
        if state is not None:
            return key, state
        with self._lock:
            state = self._symbols.get(key)
            if state is None:
                if len(self._symbols) >= self.max_symbols:
                    telemetry_error("feed_symbol_overflow", self.feed)
                    key = semconv.OVERFLOW_VALUE
                    state = self._symbols.setdefault(key, _SymbolState())
                else:
                    state = self._symbols[key] = _SymbolState()
        return key, state

    def _observe_staleness(self, key: str, state: _SymbolState) -> None:
        if not state.staleness_observed and state.last_message is not None:
            state.staleness_observed = True
            RUNTIME.gauge(semconv.FEED_STALENESS, {semconv.FEED: self.feed, semconv.SYMBOL: key}, _staleness(state))

    def connected(self, symbol: Any = None) -> None:
        """The feed (for ``symbol``, or the whole feed when None) is connected."""
        self._set_connected(symbol, True, None)

    def disconnected(self, symbol: Any = None, *, reason: str | None = None) -> None:
        """The feed dropped; staleness keeps growing until messages arrive again."""
        self._set_connected(symbol, False, reason)

    def reconnected(self, symbol: Any = None) -> None:
        """The feed came back after a drop: counts a reconnect and marks it connected."""
        try:
            key, _ = self._state(symbol)
            RUNTIME.count(semconv.FEED_RECONNECTS, {semconv.FEED: self.feed, semconv.SYMBOL: key})
        except Exception as exc:  # noqa: BLE001
            telemetry_error("feed_failed", repr(exc))
        self._set_connected(symbol, True, "reconnected")

    def message(self, symbol: Any = None, *, received_at: float | None = None) -> None:
        """One message arrived: records the gap since the previous one (the hot path: two instrument calls)."""
        try:
            now = time.monotonic() if received_at is None else received_at
            key, state = self._state(symbol)
            labels = state.labels
            if labels is None:
                labels = state.labels = RUNTIME.labels.attributes({semconv.FEED: self.feed, semconv.SYMBOL: key})
            previous, state.last_message = state.last_message, now
            inst = RUNTIME.instruments()
            if previous is not None:
                gap = now - previous
                if gap >= 0:
                    inst.record(semconv.FEED_GAP, gap, labels)
                else:
                    telemetry_error("negative_duration")
            inst.add(semconv.FEED_MESSAGES, 1, labels)
            if not state.staleness_observed:
                self._observe_staleness(key, state)
            if not state.connected:  # a message proves the connection
                self._mark(key, state, True, None)
        except Exception as exc:  # noqa: BLE001
            telemetry_error("feed_failed", repr(exc))

    def _set_connected(self, symbol: Any, connected: bool, reason: str | None) -> None:
        try:
            key, state = self._state(symbol)
            self._mark(key, state, connected, reason)
        except Exception as exc:  # noqa: BLE001
            telemetry_error("feed_failed", repr(exc))

    def _mark(self, key: str, state: _SymbolState, connected: bool, reason: str | None) -> None:
        try:
            was = state.connected
            state.connected = connected
            if connected and state.last_message is None:
                state.last_message = time.monotonic()  # staleness counts from the connection
            self._observe_staleness(key, state)
            labels = {semconv.FEED: self.feed, semconv.SYMBOL: key}
            RUNTIME.gauge(semconv.FEED_CONNECTED, labels, 1.0 if connected else 0.0)
            if was != connected:
                event_on_trace("qt.feed", "qt.feed.connected" if connected else "qt.feed.disconnected",
                                span_attributes([(semconv.FEED, self.feed), (semconv.SYMBOL, key),
                                                 (semconv.REASON, reason)]))
        except Exception as exc:  # noqa: BLE001
            telemetry_error("feed_failed", repr(exc))


def _staleness(state: _SymbolState) -> Any:
    def seconds_since_last_message() -> float:
        return max(0.0, time.monotonic() - (state.last_message or time.monotonic()))

    return seconds_since_last_message
