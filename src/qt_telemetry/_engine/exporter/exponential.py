"""Base-2 exponential histograms (Prometheus native histograms) with the OTel SDK 1.45's scaling, without its objects.

What a series reports is what the SDK's ``_ExponentialBucketHistogramAggregation`` reports (checked point by point
by ``tests/unit/test_lean_differential.py`` against the SDK with :mod:`.sdk_fixes`'s two fixes):

- Each collection interval starts at the scale the previous one ended at (``max_scale`` at first) and lowers it
  whenever a value would not fit ``max_size`` buckets; each bucket index is computed at the scale current when its
  value arrives (the SDK's logarithm mapping above scale 0, its exponent mapping at 0 and below: same floats).
- Cumulative collection downscales the running total and the interval to the lower of their scales, lower still
  until both ranges fit together, and adds them. A bucket array grows in powers of two up to ``max_size`` and never
  shrinks: a point lists as many counts as its array holds (trailing zeros included), from its lowest index.
- Zeros are counted apart (``zero_count``) and never become exemplars.

Measured against keeping the SDK's own aggregation for these two instruments: README, Benchmarks, "Exporter cost
per record".
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

from qt_telemetry._engine.exporter.exemplars import Exemplar, SampledReservoir

MAX_SIZE: Final = 160
MAX_SCALE: Final = 20
_MIN_NORMAL: Final = 2.2250738585072014e-308  # sys.float_info.min
_MIN_NORMAL_EXPONENT: Final = -1022
_MAX_NORMAL_EXPONENT: Final = 1023
_INV_LN2: Final = 1 / math.log(2)


class ExponentialPoint(NamedTuple):
    start_ns: int
    time_ns: int
    samples: int
    total: float
    scale: int
    zero_count: int
    positive: tuple[int, list[int]]
    negative: tuple[int, list[int]]
    low: float
    high: float
    exemplars: list[Exemplar]


def bucket_index(value: float, scale: int) -> int:
    """The index of the bucket holding ``value`` (> 0, finite) at ``scale``: (base**i, base**(i+1)], where base is
    2**2**-scale."""
    mantissa, exponent = math.frexp(value)  # value = mantissa * 2**exponent, 0.5 <= mantissa < 1
    if scale > 0:
        if value <= _MIN_NORMAL:
            return (_MIN_NORMAL_EXPONENT << scale) - 1
        if mantissa == 0.5:  # an exact power of two is the upper bound of its bucket
            return ((exponent - 1) << scale) - 1
        return min(math.floor(math.log(value) * math.ldexp(_INV_LN2, scale)),
                   ((_MAX_NORMAL_EXPONENT + 1) << scale) - 1)
    if value < _MIN_NORMAL:
        return (_MIN_NORMAL_EXPONENT >> -scale) - (1 if -scale < 2 else 0)
    return (exponent - 1 - (1 if mantissa == 0.5 else 0)) >> -scale


def scale_change(low: int, high: int, max_size: int) -> int:
    """How many times to halve the scale until indices ``low`` .. ``high`` fit ``max_size`` buckets."""
    change = 0
    while high - low >= max_size:
        high >>= 1
        low >>= 1
        change += 1
    return change


class Buckets:
    """The counts of one sign: indices ``start`` .. ``end`` in an array of ``capacity`` slots (a power of two up to
    ``max_size``, grown when a new index does not fit, never shrunk)."""

    __slots__ = ("capacity", "counts", "end", "start")

    def __init__(self, start: int = 0, end: int = 0, capacity: int = 1) -> None:
        self.start = start
        self.end = end
        self.capacity = capacity
        self.counts: dict[int, int] = {}

    def empty(self) -> bool:
        """No index taken yet (the SDK's ``len() == 0``)."""
        return self.start == self.end and not self.counts.get(self.start)

    def untouched(self) -> bool:
        """A one-slot array with nothing in it (what the SDK leaves out of a merge's range)."""
        return self.capacity == 1 and not self.counts.get(self.start)

    def copy_empty(self) -> Buckets:
        return Buckets(self.start, self.end, self.capacity)

    def make_room(self, index: int, max_size: int) -> None:
        """Extend ``start`` .. ``end`` to ``index``, growing the array when the span no longer fits."""
        if index < self.start:
            self._fit(self.end - index + 1, max_size)
            self.start = index
        elif index > self.end:
            self._fit(index - self.start + 1, max_size)
            self.end = index

    def _fit(self, needed: int, max_size: int) -> None:
        if needed > self.capacity:
            self.capacity = min(1 << (needed - 1).bit_length(), max_size)

    def add(self, index: int, count: int = 1) -> None:
        counts = self.counts
        counts[index] = counts.get(index, 0) + count

    def downscale(self, change: int) -> None:
        if change <= 0:
            return
        merged: dict[int, int] = {}
        for index, count in self.counts.items():
            if count:
                merged[index >> change] = merged.get(index >> change, 0) + count
        self.counts = merged
        self.start >>= change
        self.end >>= change

    def low_high(self, shift: int) -> tuple[int, int]:
        """The index range at a scale ``shift`` below this one; (0, -1) when untouched."""
        if self.untouched():
            return 0, -1
        return self.start >> shift, self.end >> shift

    def offset_counts(self) -> tuple[int, list[int]]:
        counts = self.counts
        return self.start, [counts.get(index, 0) for index in range(self.start, self.start + self.capacity)]


def _union(previous: tuple[int, int], current: tuple[int, int]) -> tuple[int, int]:
    if current[0] > current[1]:
        return previous
    if previous[0] > previous[1]:
        return current
    return min(previous[0], current[0]), max(previous[1], current[1])


class ExponentialSeries:
    """One series of an exponential histogram (a synchronous instrument: measured per interval)."""

    __slots__ = ("_count", "_high", "_low", "_neg", "_pos", "_prev_count", "_prev_high", "_prev_low", "_prev_neg",
                 "_prev_pos", "_prev_scale", "_prev_sum", "_prev_zero", "_previous_collection", "_scale",
                 "_sum", "_zero", "max_size", "reservoir", "scale", "start_ns")

    def __init__(self, start_ns: int, max_size: int = MAX_SIZE, max_scale: int = MAX_SCALE) -> None:
        self.start_ns = self._previous_collection = start_ns
        self.max_size = max_size
        self.scale = max_scale  #: the mapping's scale: kept across collections
        self.reservoir = SampledReservoir(min(20, max_size))
        self._reset_interval()
        self._prev_pos: Buckets | None = None
        self._prev_neg: Buckets | None = None
        self._prev_scale: int | None = None
        self._prev_sum = 0.0
        self._prev_count = self._prev_zero = 0
        self._prev_low, self._prev_high = math.inf, -math.inf

    def _reset_interval(self) -> None:
        self._pos: Buckets | None = None
        self._neg: Buckets | None = None
        self._sum: float = 0
        self._count = self._zero = 0
        self._low, self._high = math.inf, -math.inf
        #: The interval's scale; None while it has seen zeros only (they fix no scale).
        self._scale: int | None = None

    def record(self, value: float, exemplar: Exemplar | None) -> None:
        if self._pos is None:
            self._pos, self._neg = Buckets(), Buckets()
        self._sum += value
        self._low = min(self._low, value)
        self._high = max(self._high, value)
        self._count += 1
        if value == 0:
            self._zero += 1
            return
        buckets = self._pos if value > 0 else self._neg
        assert buckets is not None and self._neg is not None
        magnitude = abs(value)
        index = bucket_index(magnitude, self.scale)
        start, end = buckets.start, buckets.end
        if start <= index <= end and (start != end or buckets.counts.get(start)):  # the common case: in range
            counts = buckets.counts
            counts[index] = counts.get(index, 0) + 1
        else:
            if buckets.empty():
                buckets.start = buckets.end = index
            else:
                low, high = min(index, start), max(index, end)
                if high - low >= self.max_size:
                    change = scale_change(low, high, self.max_size)
                    self._pos.downscale(change)
                    self._neg.downscale(change)
                    self.scale -= change
                    index = bucket_index(magnitude, self.scale)
            buckets.make_room(index, self.max_size)
            buckets.add(index)
        self._scale = self.scale
        if exemplar is not None:
            self.reservoir.offer(exemplar)

    def collect(self, delta: bool, now_ns: int) -> ExponentialPoint | None:
        pos, neg, total, count, zero, low, high, scale = (self._pos, self._neg, self._sum, self._count, self._zero,
                                                         self._low, self._high, self._scale)
        self._reset_interval()
        if delta:
            start, self._previous_collection = self._previous_collection, now_ns
            if pos is None or neg is None:
                return None
            return ExponentialPoint(start, now_ns, count, total, scale or 0, zero, pos.offset_counts(),
                                    neg.offset_counts(), low, high, self.reservoir.collect())
        if self._prev_pos is None or self._prev_neg is None:  # the first collection of this series
            pos, neg = pos or Buckets(), neg or Buckets()
            self._prev_pos, self._prev_neg = pos.copy_empty(), neg.copy_empty()
        if scale is None:
            scale = self.scale if self._prev_scale is None else self._prev_scale
        if self._prev_scale is None:
            self._prev_scale = scale
        prev_pos, prev_neg = self._prev_pos, self._prev_neg
        pos, neg = pos or prev_pos.copy_empty(), neg or prev_neg.copy_empty()
        merged = min(self._prev_scale, scale)
        ranges = [_union(prev.low_high(self._prev_scale - merged), cur.low_high(scale - merged))
                  for prev, cur in ((prev_pos, pos), (prev_neg, neg))]
        merged -= max(scale_change(low_index, high_index, self.max_size) for low_index, high_index in ranges)
        prev_pos.downscale(self._prev_scale - merged)
        prev_neg.downscale(self._prev_scale - merged)
        self._merge(prev_pos, pos, scale - merged)
        self._merge(prev_neg, neg, scale - merged)
        self._prev_low = min(low, self._prev_low)
        self._prev_high = max(high, self._prev_high)
        self._prev_sum = total + self._prev_sum
        self._prev_count += count
        self._prev_zero += zero
        self._prev_scale = merged
        return ExponentialPoint(self.start_ns, now_ns, self._prev_count, self._prev_sum, merged, self._prev_zero,
                                prev_pos.offset_counts(), prev_neg.offset_counts(), self._prev_low, self._prev_high,
                                self.reservoir.collect())

    def _merge(self, previous: Buckets, current: Buckets, shift: int) -> None:
        for index, count in current.counts.items():
            if not count:
                continue
            target = index >> shift
            if previous.untouched():  # nothing there yet: its range starts here, not at a stale 0
                previous.start = previous.end = target
            previous.make_room(target, self.max_size)
            previous.add(target, count)
