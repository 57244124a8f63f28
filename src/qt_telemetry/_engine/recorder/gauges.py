"""Current values of the state gauges (kill switch, breakers, risk, feeds), kept where they are set.

State outlives instruments: a breaker opened before ``init()``, or before the exporter restarted, is still the
breaker's state afterwards. The trading process keeps the board; its values (and the values of the callbacks
in it, evaluated off the trading thread) reach whichever engine exports them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

GaugeValue = float | Callable[[], Any]
LabelKey = tuple[tuple[str, Any], ...]


class GaugeBoard:
    """metric name -> attribute set -> value or zero-argument callback."""

    def __init__(self) -> None:
        self._values: dict[str, dict[LabelKey, GaugeValue]] = {}
        self._lock = threading.Lock()

    def set(self, name: str, attributes: dict[str, Any], value: GaugeValue | None) -> LabelKey:
        key = tuple(sorted(attributes.items()))
        with self._lock:
            series = self._values.setdefault(name, {})
            if value is None:
                series.pop(key, None)
            else:
                series[key] = value
        return key

    def get(self, name: str, attributes: dict[str, Any]) -> GaugeValue | None:
        return self._values.get(name, {}).get(tuple(sorted(attributes.items())))

    def items(self, name: str) -> list[tuple[LabelKey, GaugeValue]]:
        with self._lock:
            return list(self._values.get(name, {}).items())

    def all(self) -> Iterator[tuple[str, LabelKey, GaugeValue]]:
        with self._lock:
            snapshot = [(name, key, value) for name, series in self._values.items() for key, value in series.items()]
        yield from snapshot

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (the parent's may have been held), and no inherited state."""
        self._lock = threading.Lock()
        self._values = {}
