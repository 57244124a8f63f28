"""The SDK path behind the exporter loop's interface: records through :class:`Converter` into OTel SDK objects,
encoded with the official OTLP encoders into the same request bytes the lean path writes directly.

It is the reference the lean path is compared with (tests/unit/test_lean_differential.py) and what the exporter
runs when ``QT_TELEMETRY_EXPORTER_PATH=sdk``. No thread of its own: metrics are read from one in-memory reader
per producing process when the loop asks, spans wait in a bounded queue until the loop takes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan

from qt_telemetry._config import Settings
from qt_telemetry._engine.exporter.convert import Converter, ProducerState
from qt_telemetry._engine.exporter.pipeline import views
from qt_telemetry._engine.exporter.spanqueue import FairQueue
from qt_telemetry._redaction import Redactor


class SdkSink:
    """Records -> SDK spans and instruments -> OTLP request bytes (the loop's sink interface)."""

    def __init__(self, settings: Settings, *, base_resource: Resource) -> None:
        self.settings = settings
        self._readers: dict[ProducerState, tuple[MeterProvider, InMemoryMetricReader]] = {}
        self._spans: FairQueue[ProducerState, ReadableSpan] = FairQueue(settings.batch.max_queue_size)
        self._owner: dict[int, ProducerState] = {}
        self._retired: list[ProducerState] = []
        self.converter = Converter(
            redactor=Redactor(settings.secret_keys, settings.secret_patterns, settings.secret_values),
            max_label_values=settings.max_label_values, slow_order_seconds=settings.slow_order_seconds,
            trace_keep_ratio=settings.trace_keep_ratio, base_resource=base_resource, meters=self._meters,
            spans=self._queue_span, remote=True, spans_full=lambda producer: not self._spans.admits(producer))
        self.redactor = self.converter.redactor

    def _meters(self, resource: Resource) -> MeterProvider:
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader], resource=resource, views=views(self.settings),
                                 shutdown_on_exit=False)
        self._pending_reader = (provider, reader)
        return provider

    def producer(self, pid: int, instance_id: str) -> ProducerState:
        state = self.converter.producer(pid, instance_id)
        if state not in self._readers:
            self._readers[state] = self._pending_reader
        return state

    def _queue_span(self, producer: ProducerState, span: ReadableSpan) -> None:
        shed = self._spans.put(producer, span)
        if shed is not None:
            shed.drop("spans", "queue_full", 1)

    def accept(self, producer: ProducerState, records: Sequence[tuple[Any, ...]]) -> None:
        self.converter.accept(producer, records)

    def take_spans(self, max_spans: int) -> tuple[bytes, dict[Any, int]] | None:
        batch = self._spans.take(max_spans)
        if not batch:
            return None
        counts: dict[Any, int] = {}
        for producer, _ in batch:
            counts[producer] = counts.get(producer, 0) + 1
        return encode_spans([span for _, span in batch]).SerializeToString(), counts

    def queued_spans(self) -> int:
        return len(self._spans)

    def span_drop(self, count_by_producer: Mapping[Any, int], reason: str) -> None:
        for producer, count in count_by_producer.items():
            producer.drop("spans", reason, count)

    def collect_metrics(self, now_ns: int) -> bytes | None:
        resource_metrics: list[Any] = []
        for _, reader in list(self._readers.values()):
            data = reader.get_metrics_data()
            if data is not None:
                resource_metrics.extend(data.resource_metrics)
        for producer in self._retired:
            provider, _ = self._readers.pop(producer, (None, None))
            if provider is not None:
                provider.shutdown(timeout_millis=100)
            self.converter.forget(producer)
        self._retired.clear()
        if not resource_metrics:
            return None
        body: bytes = encode_metrics(MetricsData(resource_metrics=resource_metrics)).SerializeToString()
        return body

    def retire(self, producer: ProducerState) -> None:
        self.converter.producers.pop(producer.pid, None)
        self._retired.append(producer)

    def prometheus_collector(self) -> Any:
        raise NotImplementedError("local mode needs the lean path's collector")
