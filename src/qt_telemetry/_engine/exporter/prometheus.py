"""Local mode's ``/metrics`` from the lean path's aggregates: a ``prometheus_client`` collector, no SDK reader.

Names are the ones the collector derives from the OTel names (:func:`semconv.prometheus_name`: ``qt.order.latency``
in seconds -> ``qt_order_latency_seconds``, counters gain ``_total``, ``1`` on a gauge ``_ratio``) and labels are the
attribute keys with dots as underscores, plus ``service_name`` and ``service_instance_id`` of the producing process
(several processes share one exporter). Every histogram has ``_bucket``, ``_sum`` and ``_count``: buckets from
``le`` 0 up (histograms refuse negative values, and beside a negative ``le`` OpenMetrics forbids ``_sum``: the
slippage histogram's first bounds); an exponential histogram is exposed as classic buckets at its own bounds
(``base**(index+1)``). Exemplars (a kept trace's ``trace_id``/``span_id``) ride on counter samples and histogram
buckets, in the OpenMetrics exposition.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar as PromExemplar
from prometheus_client.utils import floatToGoString

from qt_telemetry import semconv
from qt_telemetry._engine.exporter.aggregate import HistogramPoint, Labels, MetricData, NumberPoint
from qt_telemetry._engine.exporter.exemplars import Exemplar
from qt_telemetry._engine.exporter.exponential import ExponentialPoint

if TYPE_CHECKING:
    from qt_telemetry._engine.exporter.lean import LeanConverter, LeanProducer

PRODUCER_LABELS = ("service_name", "service_instance_id")
Bucket = tuple[str, float] | tuple[str, float, PromExemplar]


class LeanCollector(Collector):
    """Every producer's metrics at each scrape (a cumulative collection of the lean path)."""

    def __init__(self, converter: LeanConverter) -> None:
        self._converter = converter

    def describe(self) -> Iterable[Metric]:
        return ()  # registering must not collect (a collection hands out exemplars and retired processes)

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for producer, metrics in self._converter.metric_data(time.time_ns()):
            identity = _identity(producer)
            for data in metrics:
                family = families.get(data.spec.name)
                if family is None:
                    family = families[data.spec.name] = _family(data.spec)
                for labels, point in data.points:
                    _add(family, data, [*identity, *_values(data.spec, labels)], point)
        return list(families.values())


def _identity(producer: LeanProducer) -> list[str]:
    attributes = producer.resource.attributes
    return [str(attributes.get("service.name", "")), str(attributes.get("service.instance.id", ""))]


def _family(spec: semconv.MetricSpec) -> Metric:
    name = semconv.prometheus_name(spec.name, spec.unit, spec.kind)
    labels = [*PRODUCER_LABELS, *(semconv.prometheus_label(key) for key in spec.attributes)]
    if spec.kind == "counter":
        return CounterMetricFamily(name, spec.description, labels=labels)
    if spec.kind == "histogram":
        return HistogramMetricFamily(name, spec.description, labels=labels)
    return GaugeMetricFamily(name, spec.description, labels=labels)


def _values(spec: semconv.MetricSpec, labels: Labels) -> list[str]:
    """Label values in the family's order; an optional label the series lacks is empty (Prometheus: absent)."""
    present = dict(labels)
    return [present.get(key, "") for key in spec.attributes]


def _add(family: Metric, data: MetricData, values: list[str], point: Any) -> None:
    if isinstance(point, NumberPoint):
        if isinstance(family, CounterMetricFamily):
            family.add_metric(values, point.value, exemplar=_exemplar(point.exemplars[-1:]))
        elif isinstance(family, GaugeMetricFamily):
            family.add_metric(values, point.value)
        return
    if isinstance(point, HistogramPoint):
        buckets = _explicit(data.spec.buckets or (), point)
    else:
        buckets = _exponential(point)
    assert isinstance(family, HistogramMetricFamily)
    family.add_metric(values, buckets, point.total)


def _explicit(bounds: Sequence[float], point: HistogramPoint) -> list[Bucket]:
    by_bucket = {bisect_left(bounds, e.value): e for e in point.exemplars}
    return _cumulative([*(_le(b) for b in bounds), "+Inf"], point.counts, by_bucket)


def _exponential(point: ExponentialPoint) -> list[Bucket]:
    """An exponential histogram as classic buckets: bucket ``i`` holds (base**i, base**(i+1)], so its ``le`` is
    ``base**(i+1)`` (negative ones mirrored), and the zero bucket's is 0."""
    base = 2.0 ** (2.0 ** -point.scale)
    neg_offset, neg_counts = point.negative
    pos_offset, pos_counts = point.positive
    uppers, counts = [], []
    for i in reversed(range(len(neg_counts))):
        uppers.append(-(base ** (neg_offset + i)))
        counts.append(neg_counts[i])
    uppers.append(0.0)
    counts.append(point.zero_count)
    for i, count in enumerate(pos_counts):
        uppers.append(base ** (pos_offset + i + 1))
        counts.append(count)
    while len(counts) > 1 and counts[-1] == 0:  # trailing empty slots of the bucket array
        uppers.pop()
        counts.pop()
    by_bucket = {bisect_left(uppers, e.value): e for e in point.exemplars}
    return _cumulative([*(_le(u) for u in uppers), "+Inf"], [*counts, 0], by_bucket)


def _cumulative(les: Sequence[str], counts: Sequence[int], exemplars: dict[int, Exemplar]) -> list[Bucket]:
    """Cumulative buckets from ``le`` 0 up: buckets below zero never hold anything (histograms refuse negative
    values), and OpenMetrics forbids ``_sum`` beside them, which prometheus_client would then leave out."""
    out: list[Bucket] = []
    running = 0
    for i, (le, count) in enumerate(zip(les, counts, strict=True)):
        running += count
        if float(le) < 0:
            continue
        exemplar = _exemplar([exemplars[i]] if i in exemplars else [])
        out.append((le, running, exemplar) if exemplar is not None else (le, running))
    return out


def _le(bound: float) -> str:
    """An ``le`` as prometheus_client's own histograms write it."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


def _exemplar(exemplars: Sequence[Exemplar]) -> PromExemplar | None:
    """The OpenMetrics exemplar of a sample: only one that points at a trace."""
    if not exemplars or exemplars[0].trace_id is None or exemplars[0].span_id is None:
        return None
    e = exemplars[0]
    assert e.trace_id is not None and e.span_id is not None
    return PromExemplar({"trace_id": e.trace_id.hex(), "span_id": e.span_id.hex()}, e.value, e.time_ns / 1e9)
