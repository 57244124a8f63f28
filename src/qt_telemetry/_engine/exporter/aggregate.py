"""One producing process's metrics, aggregated with the OTel SDK 1.45's semantics, without its objects.

- Counters are sums and histograms have explicit buckets (``semconv`` bounds: count, sum, min, max, bucket counts);
  ``qt.order.latency`` and ``qt.trade.stage.duration`` are exponential histograms with ``native_histograms``
  (:mod:`.exponential`). A series is a metric and one label set; it starts when its first measurement is made.
- Cumulative temporality (the default, what Prometheus needs): every series every collection, its totals since
  it started (start time = its first measurement). Delta (``delta`` and ``lowmemory``, for counters and
  histograms): the series measured since the previous collection, with what they measured since then (start time
  = the previous collection, or the series' first measurement).
- Gauges are observed at collection from the producer's board: the last value per label set, no start time.
- Sums keep Python's number types as the SDK does (an integer count stays an integer: OTLP ``as_int``), and add in
  the SDK's order (interval first, then the running total), so floating-point sums are equal to the bit.
- Exemplars: :mod:`.exemplars`.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from qt_telemetry import semconv
from qt_telemetry._engine.exporter.exemplars import AlignedReservoir, Exemplar, SampledReservoir
from qt_telemetry._engine.exporter.exponential import ExponentialPoint, ExponentialSeries

#: A series' label set: (key, value) pairs in the metric's attribute order.
Labels = tuple[tuple[str, str], ...]
Number = int | float


class NumberPoint(NamedTuple):
    start_ns: int
    time_ns: int
    value: Number
    exemplars: list[Exemplar]


class HistogramPoint(NamedTuple):
    start_ns: int
    time_ns: int
    samples: int
    total: float
    counts: tuple[int, ...]
    low: float
    high: float
    exemplars: list[Exemplar]


Point = NumberPoint | HistogramPoint | ExponentialPoint


class MetricData(NamedTuple):
    """One metric's points of one collection. ``kind``: sum, histogram, exponential or gauge."""

    spec: semconv.MetricSpec
    kind: str
    delta: bool
    points: list[tuple[Labels, Point]]


class SumSeries:
    """A counter series (the SDK's ``_SumAggregation`` of a synchronous, monotonic instrument)."""

    __slots__ = ("_interval", "_previous_collection", "_total", "reservoir", "start_ns")

    def __init__(self, start_ns: int) -> None:
        self.start_ns = self._previous_collection = start_ns
        self._interval: Number | None = None
        self._total: Number = 0
        self.reservoir = SampledReservoir(1)

    def record(self, value: Number, exemplar: Exemplar | None) -> None:
        self._interval = (0 if self._interval is None else self._interval) + value
        if exemplar is not None:
            self.reservoir.offer(exemplar)

    def collect(self, delta: bool, now_ns: int) -> NumberPoint | None:
        value, self._interval = self._interval, None
        if delta:
            start, self._previous_collection = self._previous_collection, now_ns
            return None if value is None else NumberPoint(start, now_ns, value, self.reservoir.collect())
        self._total = (0 if value is None else value) + self._total
        return NumberPoint(self.start_ns, now_ns, self._total, self.reservoir.collect())


class HistogramSeries:
    """An explicit-bucket histogram series (the SDK's ``_ExplicitBucketHistogramAggregation``)."""

    __slots__ = ("_counts", "_high", "_low", "_prev_counts", "_prev_high", "_prev_low", "_prev_sum",
                 "_previous_collection", "_sum", "bounds", "reservoir", "start_ns")

    def __init__(self, start_ns: int, bounds: Sequence[float]) -> None:
        self.start_ns = self._previous_collection = start_ns
        self.bounds = tuple(bounds)
        self.reservoir = AlignedReservoir()
        self._counts: list[int] | None = None
        self._sum: float = 0
        self._low, self._high = math.inf, -math.inf
        self._prev_counts: list[int] | None = None
        self._prev_sum: float = 0
        self._prev_low, self._prev_high = math.inf, -math.inf

    def record(self, value: float, exemplar: Exemplar | None) -> None:
        counts = self._counts
        if counts is None:
            counts = self._counts = [0] * (len(self.bounds) + 1)
        self._sum += value
        self._low = min(self._low, value)
        self._high = max(self._high, value)
        bucket = bisect_left(self.bounds, value)
        counts[bucket] += 1
        if exemplar is not None:
            self.reservoir.offer(bucket, exemplar)

    def collect(self, delta: bool, now_ns: int) -> HistogramPoint | None:
        counts, total, low, high = self._counts, self._sum, self._low, self._high
        self._counts, self._sum, self._low, self._high = None, 0, math.inf, -math.inf
        if delta:
            start, self._previous_collection = self._previous_collection, now_ns
            if counts is None:
                return None
            return HistogramPoint(start, now_ns, sum(counts), total, tuple(counts), low, high,
                                  self.reservoir.collect())
        empty = [0] * (len(self.bounds) + 1)
        self._prev_counts = [a + b for a, b in zip(counts or empty, self._prev_counts or empty, strict=True)]
        self._prev_low = min(low, self._prev_low)
        self._prev_high = max(high, self._prev_high)
        self._prev_sum = total + self._prev_sum
        return HistogramPoint(self.start_ns, now_ns, sum(self._prev_counts), self._prev_sum,
                              tuple(self._prev_counts), self._prev_low, self._prev_high, self.reservoir.collect())


Series = SumSeries | HistogramSeries | ExponentialSeries


class Aggregates:
    """Every series of one producing process, and its collection."""

    def __init__(self, *, delta: bool, native: frozenset[str]) -> None:
        #: Counters and histograms as delta (``delta``/``lowmemory``), else cumulative.
        self.delta = delta
        self._native = native
        self._series: dict[str, tuple[semconv.MetricSpec, dict[Labels, Series]]] = {}

    def record(self, spec: semconv.MetricSpec, value: Number, labels: Labels, exemplar: Exemplar | None,
               now_ns: int) -> None:
        entry = self._series.get(spec.name)
        if entry is None:
            entry = self._series[spec.name] = (spec, {})
        by_labels = entry[1]
        series = by_labels.get(labels)
        if series is None:
            series = by_labels[labels] = self._new(spec, now_ns)
        series.record(value, exemplar)

    def _new(self, spec: semconv.MetricSpec, now_ns: int) -> Series:
        if spec.kind == "counter":
            return SumSeries(now_ns)
        if spec.name in self._native:
            return ExponentialSeries(now_ns)
        return HistogramSeries(now_ns, spec.buckets or ())

    def collect(self, now_ns: int) -> Iterator[MetricData]:
        """Every counter and histogram with a point in this collection."""
        for spec, by_labels in self._series.values():
            points: list[tuple[Labels, Point]] = []
            for labels, series in by_labels.items():
                point = series.collect(self.delta, now_ns)
                if point is not None:
                    points.append((labels, point))
            if points:
                kind = "sum" if spec.kind == "counter" else "exponential" if spec.name in self._native \
                    else "histogram"
                yield MetricData(spec, kind, self.delta, points)


class ObservedSums:
    """Observable counters and up-down counters (runtime metrics read from a producer's gauge board): the last
    value observed per label set is the sum; a counter under delta temporality reports what it grew since the
    last collection (the SDK's asynchronous sum aggregation)."""

    def __init__(self, *, delta: bool) -> None:
        self.delta = delta
        self._start: dict[tuple[str, Labels], int] = {}
        self._last: dict[tuple[str, Labels], float] = {}

    def points(self, spec: semconv.MetricSpec, observations: Sequence[tuple[Labels, float]], now_ns: int,
               exemplars: bool) -> MetricData | None:
        if not observations:
            return None
        monotonic = spec.kind == "counter"
        delta = self.delta and monotonic
        points: list[tuple[Labels, Point]] = []
        for labels, (value, reservoir) in _last_observed(observations, now_ns, exemplars).items():
            key = (spec.name, labels)
            start = self._start.setdefault(key, now_ns)
            reported = value
            if delta:
                reported = value - self._last.get(key, 0.0)
                self._start[key] = now_ns
            self._last[key] = value
            points.append((labels, NumberPoint(start, now_ns, reported,
                                               reservoir.collect() if reservoir is not None else [])))
        return MetricData(spec, "sum" if monotonic else "updown", delta, points)


def gauge_points(spec: semconv.MetricSpec, observations: Sequence[tuple[Labels, float]], now_ns: int,
                 exemplars: bool) -> MetricData | None:
    """One collection of an observable gauge: the last value observed per label set (the SDK's last-value
    aggregation), each offered to a one-slot reservoir when the filter offers every measurement (``always_on``)."""
    if not observations:
        return None
    points: list[tuple[Labels, Point]] = [
        (labels, NumberPoint(0, now_ns, value, reservoir.collect() if reservoir is not None else []))
        for labels, (value, reservoir) in _last_observed(observations, now_ns, exemplars).items()]
    return MetricData(spec, "gauge", False, points)


def _last_observed(observations: Sequence[tuple[Labels, float]], now_ns: int,
                   exemplars: bool) -> dict[Labels, tuple[float, SampledReservoir | None]]:
    """The last value observed per label set, each offered to a one-slot reservoir when the filter offers every
    measurement (``always_on``): the SDK's last-value and asynchronous-sum aggregations alike."""
    last: dict[Labels, tuple[float, SampledReservoir | None]] = {}
    for labels, value in observations:
        reservoir = last[labels][1] if labels in last else (SampledReservoir(1) if exemplars else None)
        if reservoir is not None:
            reservoir.offer(Exemplar(value, now_ns, None, None))
        last[labels] = (value, reservoir)
    return last
