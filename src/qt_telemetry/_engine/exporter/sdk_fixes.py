"""Fixes to OpenTelemetry SDK 1.45 metrics for the SDK path (inline and sdk engines, test kit), found by the
differential test against the lean path, which does the same (``tests/unit/test_lean_differential.py``).

Exponential histograms (``_ExponentialBucketHistogramAggregation``) under cumulative temporality:

1. An interval that saw only zeros (an order or stage whose clock stepped back is recorded as a 0 s duration)
   reports scale 0, and the running total is downscaled to it: from then on that series has factor-2 buckets
   (a latency quantile off by up to 100 %) for as long as the process lives.
2. Once that is fixed, the first values merged into a total that holds nothing yet keep its stale range (index 0)
   and raise "Incorrect merge scale", losing every later collection of the provider.

Here zeros fix no scale, and a total that holds nothing takes its range from the first bucket merged into it.

Exemplars (``ExemplarBucket``): a measurement made outside any span that replaces one made inside a span keeps
that span's trace and span ids (with ``OTEL_METRICS_EXEMPLAR_FILTER=always_on``: a drop count or a PREAGG value
then points at an unrelated trace). Here it has none.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any, cast

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import AlignedHistogramBucketExemplarReservoir, SimpleFixedSizeExemplarReservoir
from opentelemetry.sdk.metrics._internal.aggregation import (
    AggregationTemporality,
    _Aggregation,
    _ExplicitBucketHistogramAggregation,
    _ExponentialBucketHistogramAggregation,
)
from opentelemetry.sdk.metrics._internal.exemplar import ExemplarReservoirBuilder
from opentelemetry.sdk.metrics._internal.exemplar.exemplar_reservoir import ExemplarBucket
from opentelemetry.sdk.metrics._internal.exponential_histogram.buckets import Buckets
from opentelemetry.sdk.metrics._internal.instrument import _Instrument
from opentelemetry.sdk.metrics._internal.measurement import Measurement
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation
from opentelemetry.util.types import Attributes


class _FixedExponential(_ExponentialBucketHistogramAggregation):
    def aggregate(self, measurement: Measurement, should_sample_exemplar: bool = True) -> None:
        super().aggregate(measurement, should_sample_exemplar)
        if measurement.value == 0:
            with self._lock:
                if self._count == self._zero_count:
                    self._scale = None  # zeros only so far: no scale yet (the SDK says 0)

    def _merge(self, previous_buckets: Buckets, current_buckets: Buckets, current_scale: int, min_scale: int,
               aggregation_temporality: AggregationTemporality) -> None:
        if previous_buckets.counts == [0]:  # holds nothing: left out of the range the scale was chosen for
            shift = current_scale - min_scale
            for position, count in enumerate(current_buckets.counts):
                if count:
                    index = current_buckets.index_base + position
                    if index > current_buckets.index_end:
                        index -= len(current_buckets.counts)
                    previous_buckets.index_start = previous_buckets.index_end = index >> shift
                    previous_buckets.index_base = index >> shift
                    break
        super()._merge(previous_buckets, current_buckets, current_scale, min_scale,
                       aggregation_temporality)


class NativeHistogramAggregation(ExponentialBucketHistogramAggregation):
    """``ExponentialBucketHistogramAggregation(max_size=160, max_scale=20)`` with the fixes above."""

    def __init__(self) -> None:
        super().__init__(max_size=160, max_scale=20)

    def _create_aggregation(self, instrument: _Instrument, attributes: Attributes,
                            reservoir_factory: Callable[[type[_Aggregation[Any]]], ExemplarReservoirBuilder],
                            start_time_unix_nano: int) -> _Aggregation[Any]:
        return _FixedExponential(attributes, reservoir_factory(_ExponentialBucketHistogramAggregation),
                                 AggregationTemporality.DELTA, start_time_unix_nano, max_size=self._max_size,
                                 max_scale=self._max_scale, record_min_max=self._record_min_max)


class _Bucket(ExemplarBucket):
    def offer(self, value: float, time_unix_nano: int, attributes: Attributes, context: Context) -> None:
        super().offer(value, time_unix_nano, attributes, context)
        if trace.get_current_span(context) is trace.INVALID_SPAN:  # no span: no ids (the SDK keeps the last ones)
            self._ExemplarBucket__span_id = None
            self._ExemplarBucket__trace_id = None


class _Sampled(SimpleFixedSizeExemplarReservoir):
    def __init__(self, size: int = 1, **kwargs: Any) -> None:
        super().__init__(size, **kwargs)
        self._reservoir_storage = defaultdict(_Bucket)


class _Aligned(AlignedHistogramBucketExemplarReservoir):
    def __init__(self, boundaries: Any, **kwargs: Any) -> None:
        super().__init__(boundaries, **kwargs)
        self._reservoir_storage = defaultdict(_Bucket)


def reservoir_factory(aggregation_type: type[_Aggregation[Any]]) -> ExemplarReservoirBuilder:
    """The SDK's default reservoirs (aligned buckets for explicit histograms, else a fixed-size sample), fixed."""
    chosen = _Aligned if issubclass(aggregation_type, _ExplicitBucketHistogramAggregation) else _Sampled
    return cast(ExemplarReservoirBuilder, chosen)
