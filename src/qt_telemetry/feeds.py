"""Market-data feed health: connected, message gaps, reconnects and staleness, per feed and symbol.

Call the monitor from your websocket callbacks (sync or asyncio; nothing here blocks). ``message()`` is the hot
path: one record. Staleness is computed when metrics are exported, so a feed that silently stops sending shows
a growing number instead of a frozen "connected = 1".
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from qt_telemetry import semconv
from qt_telemetry._config import ConfigurationError, show
from qt_telemetry._engine.recorder.safety import telemetry_error, user_name
from qt_telemetry._engine.recorder.scope import record_event
from qt_telemetry._engine.recorder.state import STATE
from qt_telemetry._values import text
from qt_telemetry.latency import MarketEvent, market_event

_GAP_AND_MESSAGE = semconv.FEED_GAP.name
_MESSAGES = semconv.FEED_MESSAGES.name


@dataclass
class _SymbolState:
    labels: dict[str, str]
    last_message: float | None = None
    connected: bool = False
    staleness_observed: bool = False


class FeedMonitor:
    """Health of one market-data feed (e.g. ``FeedMonitor("binance-ws", venue="binance")``). ``venue``: whose
    clock the messages' exchange timestamps are on (that venue's estimated clock offset is applied to them)."""

    def __init__(self, feed: str, *, venue: str | None = None, max_symbols: int = 1000) -> None:
        self.feed = user_name(feed, "feed")
        if venue is not None and not isinstance(venue, str):
            raise ConfigurationError(f"venue={show(venue)}: expected a string")
        self.venue = venue
        if isinstance(max_symbols, bool) or not isinstance(max_symbols, int) or max_symbols < 1:
            raise ConfigurationError(f"max_symbols={show(max_symbols)}: expected a positive whole number")
        self.max_symbols = max_symbols
        self._symbols: dict[Any, _SymbolState] = {}
        self._lock = threading.Lock()

    def _state(self, symbol: Any) -> _SymbolState:
        state = self._symbols.get(symbol) if type(symbol) is str else None
        if state is not None:
            return state
        key = text(symbol) or semconv.UNKNOWN_VALUE
        with self._lock:
            state = self._symbols.get(key)
            if state is None:
                if len(self._symbols) >= self.max_symbols:
                    telemetry_error("feed_symbol_overflow", self.feed)
                    key = semconv.OVERFLOW_VALUE
                    state = self._symbols.get(key)
                if state is None:
                    state = self._symbols[key] = _SymbolState({semconv.FEED: self.feed, semconv.SYMBOL: key})
        return state

    def connected(self, symbol: Any = None) -> None:
        """The feed (for ``symbol``, or the whole feed when None) is connected."""
        self._set_connected(symbol, True, None)

    def disconnected(self, symbol: Any = None, *, reason: Any = None) -> None:
        """The feed dropped; staleness keeps growing until messages arrive again."""
        self._set_connected(symbol, False, reason)

    def reconnected(self, symbol: Any = None) -> None:
        """The feed came back after a drop: counts a reconnect and marks it connected."""
        try:
            engine = STATE.active()
            if engine is not None:
                engine.measure(((semconv.FEED_RECONNECTS.name, 1),), self._state(symbol).labels)
        except Exception as exc:  # noqa: BLE001
            telemetry_error("feed_failed", repr(exc))
        self._set_connected(symbol, True, "reconnected")

    def message(self, symbol: Any = None, *, received_at: float | None = None,
                exchange_time: float | None = None) -> MarketEvent:
        """One message arrived (``received_at``: ``time.monotonic()`` seconds, default now; ``exchange_time``: the
        venue's timestamp of it, epoch seconds); records the gap since the last. Returns the message as a
        :class:`~qt_telemetry.MarketEvent`, to name as a trade's trigger (``flow.signal(trigger=event)``)."""
        event = market_event(symbol, feed=self.feed, venue=self.venue, exchange_time=exchange_time,
                             received_at=received_at)
        try:
            now = event.received_at
            state = self._state(symbol)
            previous, state.last_message = state.last_message, now
            engine = STATE.active()
            if engine is not None:
                if previous is None:
                    engine.measure(((_MESSAGES, 1),), state.labels)
                elif now >= previous:
                    engine.measure(((_GAP_AND_MESSAGE, now - previous), (_MESSAGES, 1)), state.labels)
                else:
                    telemetry_error("negative_duration")
                    engine.measure(((_MESSAGES, 1),), state.labels)
            if not state.staleness_observed:
                self._observe_staleness(state)
            if not state.connected:  # a message proves the connection
                self._mark(state, True, None)
        except Exception as exc:  # noqa: BLE001
            telemetry_error("feed_failed", repr(exc))
        return event

    def _observe_staleness(self, state: _SymbolState) -> None:
        if not state.staleness_observed and state.last_message is not None:
            state.staleness_observed = True

            def seconds_since_last_message() -> float:
                last = state.last_message
                return max(0.0, time.monotonic() - last) if last is not None else 0.0

            STATE.set_gauge(semconv.FEED_STALENESS, state.labels, seconds_since_last_message)

    def _set_connected(self, symbol: Any, connected: bool, reason: Any) -> None:
        try:
            self._mark(self._state(symbol), connected, reason)
        except Exception as exc:  # noqa: BLE001
            telemetry_error("feed_failed", repr(exc))

    def _mark(self, state: _SymbolState, connected: bool, reason: Any) -> None:
        was = state.connected
        state.connected = connected
        if connected and state.last_message is None:
            state.last_message = time.monotonic()  # staleness counts from the connection
        self._observe_staleness(state)
        STATE.set_gauge(semconv.FEED_CONNECTED, state.labels, 1.0 if connected else 0.0)
        if was != connected:
            record_event(semconv.SPAN_FEED,
                         semconv.EVENT_FEED_CONNECTED if connected else semconv.EVENT_FEED_DISCONNECTED,
                         {**state.labels, semconv.REASON: text(reason)})
