"""Exemplars as the OTel SDK 1.45 keeps them (``opentelemetry.sdk.metrics._internal.exemplar``), without its objects.

- The filter (``OTEL_METRICS_EXEMPLAR_FILTER``) decides which measurements are offered: ``trace_based`` (default)
  those made inside a sampled span (ours: a span whose trace is marked to keep), ``always_on`` every measurement
  (those without a span give an exemplar without trace and span ids), ``always_off`` none.
- Explicit-bucket histograms keep the last measurement offered per bucket (the aligned-bucket reservoir); counters,
  gauges and exponential histograms keep a uniform sample of fixed size (1, 1 and 20) over the measurements
  offered since the last collection (the simple fixed-size reservoir: the first ``size`` offers fill it, then
  offer *n* replaces slot ``randrange(n)`` when that is below ``size``).
- Every collection hands the kept exemplars out in slot order and empties the reservoir. An exemplar's time is
  when its measurement was made; its filtered attributes are the measurement's attributes not on its point, which
  for our measurements is none.
"""

from __future__ import annotations

from random import randrange
from typing import Final, NamedTuple


class Exemplar(NamedTuple):
    value: float
    time_ns: int
    trace_id: bytes | None
    span_id: bytes | None


TRACE_BASED: Final = "trace_based"
ALWAYS_ON: Final = "always_on"
ALWAYS_OFF: Final = "always_off"


class SampledReservoir:
    """The SDK's ``SimpleFixedSizeExemplarReservoir``."""

    __slots__ = ("_kept", "_seen", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._seen = 0
        self._kept: dict[int, Exemplar] = {}

    def offer(self, exemplar: Exemplar) -> None:
        seen = self._seen = self._seen + 1
        if seen <= self._size:
            self._kept[seen - 1] = exemplar
            return
        slot = randrange(0, seen)
        if slot < self._size:
            self._kept[slot] = exemplar

    def collect(self) -> list[Exemplar]:
        kept = self._kept
        out = [kept[slot] for slot in sorted(kept)] if kept else []
        self._kept = {}
        self._seen = 0
        return out


class AlignedReservoir:
    """The SDK's ``AlignedHistogramBucketExemplarReservoir``: the last measurement offered per bucket."""

    __slots__ = ("_kept",)

    def __init__(self) -> None:
        self._kept: dict[int, Exemplar] = {}

    def offer(self, bucket: int, exemplar: Exemplar) -> None:
        self._kept[bucket] = exemplar

    def collect(self) -> list[Exemplar]:
        kept = self._kept
        if not kept:
            return []
        self._kept = {}
        return [kept[bucket] for bucket in sorted(kept)]
