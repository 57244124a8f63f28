"""The exporter's converter, one producing process after another: each process's numbers land on its own
meter provider, however many have come and gone before it."""

from __future__ import annotations

import gc

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
