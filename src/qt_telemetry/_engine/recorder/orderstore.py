"""Order ids -> the order's span, so acks and fills join the order's trace whenever they arrive.

An order is found by the client order ids it is known by (the one we sent, the one the venue or its client
library reports: ccxt sends ``lim2`` to gate as ``t-lim2``) and by the venue's own order id (keyed with the
venue: order ids of two venues may collide), all pointing at one :class:`OrderRecord`. It is remembered when its
placement *starts*: a websocket fill routinely beats the REST response, and it must still find its parent.
Records leave, with every id they are known by, at the final event (fill, cancel, reject), when the placement
fails, or — oldest first — when the store is full, so it stays bounded whatever the venue does.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


def order_id_key(venue: Any, order_id: Any) -> str:
    """The store key of a venue's order id (never equal to a client order id: it holds a NUL)."""
    return f"{venue}\x00{order_id}"


@dataclass(slots=True, eq=False)
class OrderRecord:
    trace_id: int
    span_id: int
    sampled: bool
    #: The placement, until its attributes are known (they are read off the trading thread, once).
    order: Any = None
    #: Attributes the order's updates repeat (venue, symbol, side, quantity, strategy).
    carried: dict[str, Any] | None = None
    placed_ns: int = field(default_factory=time.perf_counter_ns)
    #: Quantity filled so far, as the updates recorded it.
    filled: float = 0.0
    reference_price: float | None = None
    venue: str | None = None
    #: The client order id the order's updates name (the one we sent, else the first one the venue reported).
    client_id: str | None = None
    order_id: str | None = None
    #: Trades already counted (ccxt trade ids) and their total: a fill reported twice is counted once.
    trade_ids: set[str] | None = None
    traded: float = 0.0
    #: The latency budget (:mod:`qt_telemetry.latency`): when the placement started and when the ack came, on the
    #: local monotonic clock; the venue's stamp of the ack (epoch seconds, its clock); the trade's trigger.
    sent_at: float | None = None
    ack_at: float | None = None
    ack_venue_time: float | None = None
    trigger: Any = None
    #: Left the store (final event, failed placement, evicted): ids found later must not bring it back.
    done: bool = False
    keys: list[str] = field(default_factory=list)

    @property
    def attributes(self) -> dict[str, Any]:
        """What the order's updates repeat, read from the order when its first update comes (any thread)."""
        carried = self.carried
        if carried is not None:
            return carried
        order = self.order
        if order is not None:
            found: dict[str, Any] = order.carried_attributes()
            self.carried = found
            return found
        return self.carried or {}


class OrderStore:
    """Bounded (``max_orders`` orders, whatever the number of ids each is known by), thread-safe."""

    def __init__(self, max_orders: int = 10_000) -> None:
        self.max_orders = max_orders
        self._index: dict[str, OrderRecord] = {}
        self._records: OrderedDict[int, OrderRecord] = OrderedDict()  # by id(record), oldest first
        self._lock = threading.Lock()

    def remember(self, key: str, record: OrderRecord) -> None:
        """Find ``record`` by ``key`` from now on (a re-used key moves to the newest order). A record that
        already left the store stays out."""
        with self._lock:
            if record.done:
                return
            previous = self._index.get(key)
            if previous is not None and previous is not record:
                previous.keys.remove(key)
            if previous is not record:
                self._index[key] = record
                record.keys.append(key)
            self._records[id(record)] = record
            self._records.move_to_end(id(record))
            while len(self._records) > self.max_orders:
                _, oldest = self._records.popitem(last=False)
                self._drop(oldest)

    def get(self, key: str) -> OrderRecord | None:
        with self._lock:
            return self._index.get(key)

    def forget(self, key: str, record: OrderRecord | None = None) -> None:
        """The order known by ``key`` leaves, with all its ids (only if it is still ``record``, when given: a
        re-used id keeps its new order)."""
        with self._lock:
            found = self._index.get(key)
            if found is not None and (record is None or found is record):
                self._records.pop(id(found), None)
                self._drop(found)

    def discard(self, record: OrderRecord) -> None:
        """``record`` leaves the store with all its ids (and cannot come back)."""
        with self._lock:
            self._records.pop(id(record), None)
            self._drop(record)

    def _drop(self, record: OrderRecord) -> None:
        record.done = True
        for key in record.keys:
            if self._index.get(key) is record:
                del self._index[key]
        record.keys.clear()

    def __len__(self) -> int:
        return len(self._records)

    def clear(self) -> None:
        with self._lock:
            for record in self._records.values():
                record.done = True
                record.keys.clear()
            self._index.clear()
            self._records.clear()

    def after_fork(self) -> None:
        self._lock = threading.Lock()  # the parent's may have been held by another thread at fork time
