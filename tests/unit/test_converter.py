"""The exporter's converter, one producing process after another: each process's numbers land on its own
meter provider, however many have come and gone before it."""

from __future__ import annotations

import gc
import struct

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from qt_telemetry import semconv
from qt_telemetry._engine.exporter.convert import Converter
from qt_telemetry._engine.transport import records as R
from qt_telemetry._redaction import Redactor


def _order_count(reader: InMemoryMetricReader) -> int:
    data = reader.get_metrics_data()
    return sum(point.count for rm in (data.resource_metrics if data else []) for sm in rm.scope_metrics
               for metric in sm.metrics if metric.name == "qt.order.latency" for point in metric.data.data_points)


def test_every_retired_process_hands_its_successor_a_fresh_provider() -> None:
    readers: list[InMemoryMetricReader] = []
    providers: list[MeterProvider] = []

    def meters(resource: Resource) -> MeterProvider:
        readers.append(InMemoryMetricReader())
        providers.append(MeterProvider(metric_readers=[readers[-1]], resource=resource, shutdown_on_exit=False))
        return providers[-1]

    converter = Converter(redactor=Redactor(), max_label_values=100, slow_order_seconds=0.5, trace_keep_ratio=1.0,
                          base_resource=Resource.create({}), meters=meters, spans=None, remote=True)
    counts = []
    for pid in range(1000, 1100):  # worker processes exiting one after another, as a pool recycles them
        producer = converter.producer(pid, f"bot-{pid}")
        converter.accept(producer, [(R.METRICS, ((semconv.ORDER_LATENCY.name, 0.01),), {"venue": "v"})])
        counts.append(_order_count(readers[-1]))
        provider = providers.pop()  # the exporter retires it with the process
        provider.shutdown()
        converter.forget(producer, provider)
        del provider, producer
        gc.collect()  # its memory (and so its id()) is free for the next process's provider
    assert counts == [1] * 100
    assert converter.producers == {}


def _converter(reader: InMemoryMetricReader, spans: list | None = None) -> Converter:  # type: ignore[type-arg]
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    return Converter(redactor=Redactor(), max_label_values=100, slow_order_seconds=0.5, trace_keep_ratio=1.0,
                     base_resource=Resource.create({}), meters=lambda _resource: provider,
                     spans=(lambda _producer, span: spans.append(span)) if spans is not None else None, remote=True)


def _points(reader: InMemoryMetricReader, name: str) -> list:  # type: ignore[type-arg]
    data = reader.get_metrics_data()
    return [p for rm in (data.resource_metrics if data else []) for sm in rm.scope_metrics for m in sm.metrics
            if m.name == name for p in m.data.data_points]


def test_preaggregated_records_count_exactly_what_they_stand_for() -> None:
    reader = InMemoryMetricReader()
    converter = _converter(reader)
    producer = converter.producer(1, "bot")
    values = struct.pack("<3d", 0.002, 0.2, 3.0)
    converter.accept(producer, [
        (R.PREAGG, semconv.ORDER_LATENCY.name, {"venue": "v", "symbol": "S", "side": "buy"}, values),
        (R.PREAGG, semconv.TRADES.name, {"strategy": "s"}, 41.0),
    ])
    (latency,) = _points(reader, semconv.ORDER_LATENCY.name)
    assert latency.count == 3 and latency.sum == pytest.approx(3.202) and latency.exemplars == []
    assert dict(latency.attributes)["venue"] == "v" and dict(latency.attributes)["order.type"] == "unknown"
    (trades,) = _points(reader, semconv.TRADES.name)
    assert trades.value == 41.0


def test_a_malformed_record_costs_itself_only() -> None:
    reader = InMemoryMetricReader()
    spans: list = []  # type: ignore[type-arg]
    converter = _converter(reader, spans)
    producer = converter.producer(1, "bot")
    good = (R.SPAN, semconv.SPAN_ORDER, 2, b"\x01" * 16, b"\x02" * 8, None, False, True, 10, 20, 0, None,
            {"venue": "v", "outcome": "ok"}, None, None, None, None)
    bad_id = (*good[:3], b"\x01" * 17, *good[4:])
    bad_event = (*good[:13], [("e", None, {})], *good[14:])
    bad_preagg = (R.PREAGG, semconv.TRADES.name, {}, b"\x00" * 8)
    converter.accept(producer, [bad_id, bad_event, bad_preagg, good])
    assert [s.name for s in spans] == [semconv.SPAN_ORDER]
    assert [p.count for p in _points(reader, semconv.ORDER_LATENCY.name)] == [1]
    errors = {dict(p.attributes)["kind"]: p.value for p in _points(reader, semconv.TELEMETRY_ERRORS.name)}
    assert errors == {"record_failed": 3}


def test_negative_values_a_histogram_cannot_hold_are_counted() -> None:
    reader = InMemoryMetricReader()
    converter = _converter(reader)
    producer = converter.producer(1, "bot")
    converter.accept(producer, [(R.METRICS, ((semconv.SLIPPAGE.name, -3.0), (semconv.SLIPPAGE.name, 2.0)),
                                 {"venue": "v"})])
    assert [p.count for p in _points(reader, semconv.SLIPPAGE.name)] == [1]
    errors = {dict(p.attributes)["kind"]: p.value for p in _points(reader, semconv.TELEMETRY_ERRORS.name)}
    assert errors == {"negative_measurement": 1}
