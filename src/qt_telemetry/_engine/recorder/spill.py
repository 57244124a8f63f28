"""What the trading process keeps of records it could not hand over: their counts, never their detail.

When the exporter cannot take a batch (busy, stopped, being replaced), the batch's spans are shed — counted as
dropped span detail — but what each record contributes to metrics is folded into a compact pre-aggregate here:
a counter's sum, a histogram's values (8 bytes each), a gauge's latest value. They are sent as PREAGG records
once the exporter takes messages again, so order and trade counts and latency distributions stay exact under
overload. Which metrics a span yields is read from :data:`semconv.SPAN_METRICS`, the same table the exporter
uses; labels travel raw and get the exporter's label rules there. Bounded: past ``max_values`` histogram values
the rest is dropped and counted (then, and only then, a count is lost).
"""

from __future__ import annotations

import array
from collections.abc import Iterator, Mapping
from typing import Any

from qt_telemetry import semconv
from qt_telemetry._engine.transport import records as R

_SeriesKey = tuple[str, tuple[tuple[str, Any], ...]]


class Spill:
    """Pre-aggregates records; not thread-safe (the outbox holds its lock)."""

    def __init__(self, max_values: int = 1_000_000, max_controls: int = 64) -> None:
        self.max_values = max_values
        self.max_controls = max_controls
        self._sums: dict[_SeriesKey, float] = {}
        self._values: dict[_SeriesKey, array.array[float]] = {}
        self._gauges: dict[tuple[str, tuple[tuple[str, Any], ...]], tuple[Any, ...]] = {}
        self._controls: list[tuple[Any, ...]] = []
        self._held = 0

    def __bool__(self) -> bool:
        return bool(self._sums or self._values or self._gauges or self._controls)

    def add(self, records: list[tuple[Any, ...]]) -> tuple[int, int]:
        """Fold ``records`` in. Returns (spans whose detail was shed, records lost outright)."""
        shed = lost = 0
        for record in records:
            kind = record[0]
            try:
                if kind == R.SPAN:
                    shed += 1
                    if not self._span(record):
                        lost += 1
                elif kind == R.METRICS:
                    for name, value in record[1]:
                        if not self._measure(name, value, record[2]):
                            lost += 1
                elif kind == R.GAUGE:
                    self._gauges[(record[1], _key(record[2]))] = record
                elif kind == R.PREAGG:
                    lost += self._preagg(record)
                elif len(self._controls) < self.max_controls:
                    self._controls.append(record)
                else:
                    lost += 1
            except Exception:  # noqa: BLE001 - a record we cannot read is lost, and counted
                lost += 1
        return shed, lost

    def _span(self, record: tuple[Any, ...]) -> bool:
        if record[R.S_SCOPE] is not None:  # other instrumentation's spans yield no metrics of ours
            return True
        attributes = record[R.S_ATTRS] or {}
        kept = True
        for spec, value, labelled in semconv.span_measurements(record[R.S_NAME], attributes,
                                                               record[R.S_END] - record[R.S_START]):
            kept = self._measure(spec.name, value, labelled) and kept
        return kept

    def _measure(self, name: str, value: Any, attributes: Mapping[str, Any]) -> bool:
        spec = semconv.METRICS.get(name)
        if spec is None or value.__class__ not in (int, float):
            return spec is not None  # a bad value is the exporter's to count, as if it had arrived
        key = (name, tuple((k, attributes[k]) for k in spec.attributes if attributes.get(k) is not None))
        if spec.kind == "histogram":
            values = self._values.get(key)
            if values is None:
                values = self._values[key] = array.array("d")
            if self._held >= self.max_values:
                return False
            values.append(float(value))
            self._held += 1
        else:
            self._sums[key] = self._sums.get(key, 0.0) + value
        return True

    def _preagg(self, record: tuple[Any, ...]) -> int:
        """A PREAGG that could not be sent either (the exporter went away again): merge it back."""
        _, name, attributes, payload = record
        key = (name, tuple(sorted(attributes.items())))
        if isinstance(payload, bytes):
            values = self._values.setdefault(key, array.array("d"))
            incoming = array.array("d")
            incoming.frombytes(payload)
            room = max(0, self.max_values - self._held)
            values.extend(incoming[:room])
            self._held += min(room, len(incoming))
            return len(incoming) - min(room, len(incoming))
        self._sums[key] = self._sums.get(key, 0.0) + payload
        return 0

    def drain(self) -> Iterator[tuple[Any, ...]]:
        """Everything held, as records to send (controls first), and forget it."""
        controls, self._controls = self._controls, []
        yield from controls
        sums, self._sums = self._sums, {}
        for (name, labels), total in sums.items():
            yield (R.PREAGG, name, dict(labels), total)
        values, self._values = self._values, {}
        self._held = 0
        for (name, labels), held in values.items():
            for start in range(0, len(held), 1024):  # 8 KiB each: a batch of them fits any connection buffer
                yield (R.PREAGG, name, dict(labels), held[start:start + 1024].tobytes())
        gauges, self._gauges = self._gauges, {}
        yield from gauges.values()


def _key(attributes: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(attributes.items()))
