"""Client order id -> the order's span, so acks and fills join the order's trace whenever they arrive.

An order is remembered when its placement *starts*: a websocket fill routinely beats the REST response, and it
must still find its parent. Entries leave at the final event (fill, cancel, reject), when the placement fails,
or — oldest first — when the store is full, so it stays bounded whatever the venue does.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class OrderRecord:
    trace_id: int
    span_id: int
    sampled: bool
    #: The placement, until its attributes are known (they are read off the trading thread, once).
    order: Any = None
    #: Attributes the order's updates repeat (venue, symbol, side, quantity, strategy).
    carried: dict[str, Any] | None = None
    placed_ns: int = field(default_factory=time.perf_counter_ns)
    filled: float = 0.0
    reference_price: float | None = None

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
    """Bounded, thread-safe; oldest entries go first."""

    def __init__(self, max_orders: int = 10_000) -> None:
        self.max_orders = max_orders
        self._orders: OrderedDict[str, OrderRecord] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, client_order_id: str, record: OrderRecord) -> None:
        with self._lock:
            self._orders[client_order_id] = record
            self._orders.move_to_end(client_order_id)
            while len(self._orders) > self.max_orders:
                self._orders.popitem(last=False)

    def get(self, client_order_id: str) -> OrderRecord | None:
        with self._lock:
            return self._orders.get(client_order_id)

    def forget(self, client_order_id: str, record: OrderRecord | None = None) -> None:
        """Forget the order (only if it is still ``record``, when given: a re-used id keeps its new order)."""
        with self._lock:
            if record is None or self._orders.get(client_order_id) is record:
                self._orders.pop(client_order_id, None)

    def __len__(self) -> int:
        return len(self._orders)

    def clear(self) -> None:
        with self._lock:
            self._orders.clear()

    def after_fork(self) -> None:
        self._lock = threading.Lock()  # the parent's may have been held by another thread at fork time
