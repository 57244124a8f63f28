"""The latency budget of a trade: tick -> decision -> order -> ack -> fill, and the venue clocks it is read with.

A market-data event (:func:`market_event`, or what :meth:`FeedMonitor.message` returns) names a trade's trigger
(``flow.signal(trigger=event)``). From there each step the SDK already sees adds a segment, in seconds:

- ``feed``: the venue's timestamp of the event -> its local receipt (on the signal stage span),
- ``tick_to_trade``: receipt -> the order sent (the order span's start; on the order span),
- ``order_to_ack``: sent -> the venue's ack (its own timestamp where the reply has one; on the order span when the
  placement's reply is the ack, as ccxt's is, else on the ack update),
- ``ack_to_fill``: ack -> the final fill, and ``total``: the event -> the final fill (on the final fill's update).

Local times are ``time.monotonic()`` seconds. A venue timestamp (epoch seconds, the venue's clock) is brought onto
the local clock by the venue's estimated offset (:class:`VenueClock`); two venue timestamps are compared directly.
A segment that still comes out negative is recorded as 0 and counted in ``qt.latency.segment.clamped``: never a
negative latency, never silently. Everything here runs on the trading thread: a few float operations, no locks
held across calls into anything else, bounded state, and nothing raises.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Any, Final, NamedTuple

from qt_telemetry import semconv
from qt_telemetry._engine.recorder.safety import telemetry_error
from qt_telemetry._engine.recorder.state import STATE
from qt_telemetry._values import finite, text

_monotonic = time.monotonic
_time = time.time

#: Venue timestamps outside these epoch seconds (2000 .. 2100) are not times in seconds (milliseconds, a
#: sequence number): dropped and counted as ``bad_venue_time``.
EARLIEST: Final = 946_684_800.0
LATEST: Final = 4_102_444_800.0
#: A venue clock further than this from ours is a wrong timestamp, not skew: not used, counted.
MAX_OFFSET_S: Final = 3600.0
#: Offset samples are compared over this window: the one with the least uncertainty in it is the estimate.
WINDOW_S: Final = 300.0
#: Samples kept per venue at most (the window's candidates for "least uncertain"), and venues kept at most.
MAX_SAMPLES: Final = 64
MAX_VENUES: Final = 64


class MarketEvent(NamedTuple):
    """One market-data message, as a trade's trigger: immutable, cheap (a tuple).

    ``exchange_time``: the venue's timestamp (epoch seconds, the venue's clock) or None; ``received_time``: local
    receipt in epoch seconds; ``received_at``: the same moment in ``time.monotonic()`` seconds.
    """

    feed: str | None
    symbol: str | None
    venue: str | None
    exchange_time: float | None
    received_time: float
    received_at: float


def market_event(symbol: Any = None, *, feed: Any = None, venue: Any = None, exchange_time: Any = None,
                 received_at: Any = None) -> MarketEvent:
    """A market-data event to name as a trade's trigger, when you have no :class:`~qt_telemetry.FeedMonitor`.

    ``exchange_time``: the venue's timestamp of the message in epoch seconds; ``received_at``: when it arrived, in
    ``time.monotonic()`` seconds (default: now); ``venue``: whose clock ``exchange_time`` is (its offset is
    applied). Never raises: a value that is not a time is dropped and counted in ``qt.telemetry.errors``.
    """
    now = _monotonic()
    wall = _time()
    at = now
    if received_at is not None:
        given = received_at if type(received_at) is float else finite(received_at)
        if given is None or not given <= now:  # NaN too
            telemetry_error("bad_received_at")
        else:
            at = given
    # the hot path (a feed handler's every message): plain strings and a float time are taken as they are
    stamp = exchange_time if type(exchange_time) is float and EARLIEST <= exchange_time <= LATEST \
        else venue_seconds(exchange_time)
    return _event((feed if feed is None or (type(feed) is str and len(feed) <= 128) else text(feed, 128),
                   symbol if symbol is None or (type(symbol) is str and len(symbol) <= 64) else text(symbol),
                   venue if venue is None or (type(venue) is str and len(venue) <= 128) else text(venue, 128),
                   stamp, wall - (now - at), at))


def _event(fields: tuple[Any, ...]) -> MarketEvent:
    return tuple.__new__(MarketEvent, fields)  # NamedTuple.__new__ without its Python-level wrapper (half the cost)


def venue_seconds(value: Any) -> float | None:
    """A venue timestamp in epoch seconds, or None (counted as ``bad_venue_time`` unless it was None)."""
    if value is None:
        return None
    seconds = finite(value)
    if seconds is None or not EARLIEST <= seconds <= LATEST:
        telemetry_error("bad_venue_time")
        return None
    return seconds


# --- venue clocks ----------------------------------------------------------------------------------------

class VenueClock:
    """The offset of one venue's clock from ours (venue minus local, seconds), NTP-style.

    A venue timestamp in the reply to our request was taken between our send and our receipt, so the offset is
    ``venue_time - midpoint`` within half the round trip. Over :data:`WINDOW_S` the sample with the least
    uncertainty wins (a sliding-window minimum: candidates in order of age with rising uncertainty, so the best is
    at the front, O(1) per sample).
    """

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float, float]] = deque()  # (taken at, offset, uncertainty)
        self.observed = False

    def add(self, taken_at: float, offset: float, uncertainty: float) -> None:
        samples = self._samples
        while samples and samples[-1][2] >= uncertainty:
            samples.pop()
        samples.append((taken_at, offset, uncertainty))
        while len(samples) > MAX_SAMPLES or (len(samples) > 1 and samples[0][0] < taken_at - WINDOW_S):
            samples.popleft()

    def estimate(self) -> tuple[float, float] | None:
        """(offset, uncertainty) of the best sample in the window, or None before the first."""
        try:
            best = self._samples[0]  # read without the lock (a gauge callback, another thread): one indexing
        except IndexError:
            return None
        return best[1], best[2]


class VenueClocks:
    """Every venue's clock (``STATE.registry("clocks")``): at most :data:`MAX_VENUES`, then counted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.venues: dict[str, VenueClock] = {}

    def clear(self) -> None:
        self.lock = threading.Lock()
        self.venues = {}

    def clock(self, venue: str | None, create: bool) -> VenueClock | None:
        if venue is None:
            return None
        found = self.venues.get(venue)
        if found is not None or not create:
            return found
        with self.lock:
            found = self.venues.get(venue)
            if found is None:
                if len(self.venues) >= MAX_VENUES:
                    telemetry_error("venue_clock_overflow", venue)
                    return None
                found = self.venues[venue] = VenueClock()
        return found

    def sample(self, venue: str | None, sent: float, venue_time: float, received: float) -> bool:
        """One reply: our send and receipt (epoch seconds, ours) around the venue's timestamp. False when the
        sample is not believable (counted): received before sent, or the clocks an hour apart."""
        if received < sent:
            telemetry_error("negative_duration")
            return False
        offset = venue_time - (sent + received) / 2.0
        if abs(offset) > MAX_OFFSET_S:
            telemetry_error("venue_clock_implausible", venue or "")
            return False
        clock = self.clock(venue, True)
        if clock is not None and venue is not None:
            with self.lock:
                clock.add(_monotonic(), offset, (received - sent) / 2.0)
            if not clock.observed:
                clock.observed = True
                _observe(venue, clock)
        return True

    def estimate(self, venue: str | None) -> tuple[float, float] | None:
        clock = self.clock(venue, False)
        return clock.estimate() if clock is not None else None


def _observe(venue: str, clock: VenueClock) -> None:
    """The venue's offset and its uncertainty as gauges, read when metrics are exported."""
    labels = {semconv.VENUE: venue}

    def offset() -> float | None:
        found = clock.estimate()
        return found[0] if found is not None else None

    def uncertainty() -> float | None:
        found = clock.estimate()
        return found[1] if found is not None else None

    STATE.set_gauge(semconv.VENUE_CLOCK_OFFSET, labels, offset)
    STATE.set_gauge(semconv.VENUE_CLOCK_OFFSET_UNCERTAINTY, labels, uncertainty)


def clocks() -> VenueClocks:
    found: VenueClocks = STATE.registry("clocks", VenueClocks)
    return found


def _after_fork() -> None:
    found = STATE.registries.get("clocks")
    if isinstance(found, VenueClocks):
        found.lock = threading.Lock()  # the parent's may have been held by another thread at fork time


os.register_at_fork(after_in_child=_after_fork)


def clock_sample(venue: Any, *, sent_at: Any, venue_time: Any, received_at: Any) -> None:
    """One request to ``venue`` and the venue's timestamp in its reply (``sent_at``/``received_at`` in
    ``time.monotonic()`` seconds, ``venue_time`` in epoch seconds): a sample of the venue's clock offset. The ccxt
    integration takes one from every placement's reply and ``fetch_time()``; call this for other clients."""
    if STATE.active() is None:
        return
    try:
        sent, received, stamp = finite(sent_at), finite(received_at), venue_seconds(venue_time)
        if sent is None or received is None:
            telemetry_error("bad_clock_sample")
            return
        if stamp is not None:
            wall = _time() - _monotonic()
            clocks().sample(text(venue, 128), sent + wall, stamp, received + wall)
    except Exception as exc:  # noqa: BLE001
        telemetry_error("latency_failed", repr(exc))


# --- segments --------------------------------------------------------------------------------------------

def segment(value: float, venue: str | None, name: str) -> float:
    """A segment as recorded: a negative one is 0, counted in ``qt.latency.segment.clamped{venue, segment}``."""
    if value >= 0.0:
        return value
    engine = STATE.active()
    if engine is not None:
        engine.measure(((semconv.LATENCY_SEGMENT_CLAMPED.name, 1),),
                       {semconv.VENUE: venue, semconv.SEGMENT: name})
    return 0.0


def _local(venue: str | None, venue_time: float, wall: float, attributes: dict[str, Any] | None) -> float:
    """A venue timestamp on the local monotonic clock (``wall``: epoch minus monotonic, now): the venue's offset
    taken off (none known: taken as 0), noted on the span's ``attributes``."""
    found = clocks().estimate(venue)
    offset = 0.0
    if found is not None:
        offset = found[0]
        if attributes is not None:
            attributes[semconv.VENUE_CLOCK_OFFSET_S] = offset
            attributes[semconv.VENUE_CLOCK_UNCERTAINTY_S] = found[1]
    return venue_time - offset - wall


def trigger_attributes(event: Any) -> dict[str, Any]:
    """The signal stage's attributes for its trigger: what it was, and the ``feed`` segment. Never raises."""
    if type(event) is not MarketEvent:  # never isinstance: a hostile object may refuse to tell its __class__
        telemetry_error("bad_trigger")
        return {}
    try:
        attributes: dict[str, Any] = {semconv.TRIGGER_RECEIVED_TIME: event.received_time}
        for key, value in ((semconv.TRIGGER_FEED, event.feed), (semconv.TRIGGER_SYMBOL, event.symbol),
                           (semconv.VENUE, event.venue), (semconv.TRIGGER_EXCHANGE_TIME, event.exchange_time)):
            if value is not None:
                attributes[key] = value
        if event.exchange_time is not None:
            tick = _local(event.venue, event.exchange_time, event.received_time - event.received_at, attributes)
            attributes[semconv.LATENCY_FEED_S] = segment(event.received_at - tick, event.venue, semconv.SEGMENT_FEED)
        return attributes
    except Exception as exc:  # noqa: BLE001
        telemetry_error("latency_failed", repr(exc))
        return {}


def tick_to_trade(trigger: MarketEvent, sent_at: float, venue: str | None) -> float:
    """Receipt of the trigger -> the order sent (both on the local monotonic clock)."""
    return segment(sent_at - trigger.received_at, venue, semconv.SEGMENT_TICK_TO_TRADE)


def acknowledged(record: Any, venue_time: Any, attributes: dict[str, Any]) -> None:
    """The order ``record`` was acknowledged now (``venue_time``: the venue's stamp of it, epoch seconds): a clock
    sample, and ``order_to_ack`` on ``attributes`` (the span that carries the ack). Once per order. Never raises."""
    try:
        if record is None or record.sent_at is None or record.ack_at is not None:
            return
        now = _monotonic()
        wall = _time() - now
        venue = record.venue
        stamp = venue_seconds(venue_time)
        ack = now
        if stamp is not None and clocks().sample(venue, record.sent_at + wall, stamp, now + wall):
            ack = _local(venue, stamp, wall, attributes)
            record.ack_venue_time = stamp
        record.ack_at = ack
        attributes[semconv.LATENCY_ORDER_TO_ACK_S] = segment(ack - record.sent_at, venue,
                                                             semconv.SEGMENT_ORDER_TO_ACK)
    except Exception as exc:  # noqa: BLE001
        telemetry_error("latency_failed", repr(exc))


def filled(record: Any, venue_time: Any, attributes: dict[str, Any]) -> None:
    """The order ``record`` is filled (its final fill, now; ``venue_time``: the venue's stamp of it):
    ``ack_to_fill`` (when the ack was seen) and ``total`` (when the trade named its trigger). Never raises."""
    try:
        if record is None or record.sent_at is None:
            return
        now = _monotonic()
        wall = _time() - now
        venue = record.venue
        stamp = venue_seconds(venue_time)
        if stamp is not None and abs(stamp - (now + wall)) > MAX_OFFSET_S:
            telemetry_error("venue_clock_implausible", venue or "")
            stamp = None
        fill = _local(venue, stamp, wall, attributes) if stamp is not None else now
        if record.ack_at is not None:  # two venue stamps need no offset: one clock
            ack_to_fill = fill - record.ack_at if stamp is None or record.ack_venue_time is None \
                else stamp - record.ack_venue_time
            attributes[semconv.LATENCY_ACK_TO_FILL_S] = segment(ack_to_fill, venue, semconv.SEGMENT_ACK_TO_FILL)
        trigger = record.trigger
        if trigger is not None:
            tick = trigger.received_at if trigger.exchange_time is None else _local(
                trigger.venue, trigger.exchange_time, wall, None)
            attributes[semconv.LATENCY_TOTAL_S] = segment(fill - tick, venue, semconv.SEGMENT_TOTAL)
    except Exception as exc:  # noqa: BLE001
        telemetry_error("latency_failed", repr(exc))


__all__ = ["MarketEvent", "VenueClock", "VenueClocks", "acknowledged", "clock_sample", "clocks", "filled",
           "market_event", "segment", "tick_to_trade", "trigger_attributes", "venue_seconds"]
