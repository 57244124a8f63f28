"""The OTel SDK half: converter, span shipping, meter providers and exporters, built from the settings.

It runs in the exporter process (the default) or, for the ``inline`` engine and the test capture, inside the
trading process. Either way it is built here, once, from the same :class:`Settings`.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.metrics import MeterProvider as ApiMeterProvider
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    Counter,
    ExemplarFilter,
    Histogram,
    MeterProvider,
    ObservableGauge,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import DefaultAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter

from qt_telemetry import semconv
from qt_telemetry._config import Settings
from qt_telemetry._engine.exporter.convert import Converter
from qt_telemetry._engine.exporter.sdk_fixes import NativeHistogramAggregation, reservoir_factory
from qt_telemetry._engine.exporter.shipper import SpanShipper
from qt_telemetry._engine.resource import base_resource
from qt_telemetry._redaction import Redactor

_log = logging.getLogger("qt_telemetry")
#: Exponential histograms for the latency metrics a trader reads quantiles from (Prometheus native histograms).
NATIVE_HISTOGRAMS = (semconv.ORDER_LATENCY, semconv.STAGE_DURATION)


def views(settings: Settings) -> list[View]:
    """One view per instrument of ours: the fixed exemplar reservoirs (:mod:`.sdk_fixes`), and exponential
    histograms for :data:`NATIVE_HISTOGRAMS` with ``native_histograms``."""
    native = {spec.name for spec in NATIVE_HISTOGRAMS} if settings.native_histograms else set()
    return [View(instrument_name=spec.name, exemplar_reservoir_factory=reservoir_factory,
                 aggregation=NativeHistogramAggregation() if spec.name in native else DefaultAggregation())
            for spec in semconv.METRICS.values()]


def exemplar_filter(settings: Settings) -> ExemplarFilter:
    """``OTEL_METRICS_EXEMPLAR_FILTER`` as the settings resolved it (the SDK reads it case-sensitively itself)."""
    if settings.exemplar_filter == "always_on":
        return AlwaysOnExemplarFilter()
    if settings.exemplar_filter == "always_off":
        return AlwaysOffExemplarFilter()
    return TraceBasedExemplarFilter()


def temporality(settings: Settings) -> dict[type, AggregationTemporality]:
    """``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` for our instruments: counters and histograms are delta
    under ``delta`` and ``lowmemory``; observable gauges are cumulative under every preference."""
    delta = settings.metrics_temporality in ("delta", "lowmemory")
    chosen = AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
    return {Counter: chosen, Histogram: chosen, ObservableGauge: AggregationTemporality.CUMULATIVE}


class Pipeline:
    """Converter + span shipper + one meter provider per producing process (one in total in local mode)."""

    def __init__(self, settings: Settings, *, remote: bool, listen_socket: socket.socket | None = None,
                 span_exporters: Sequence[SpanExporter] | None = None,
                 meters: Callable[[Resource], ApiMeterProvider] | None = None,
                 span_sink: Callable[[ReadableSpan], None] | None = None) -> None:
        self.settings = settings
        self.providers: list[MeterProvider] = []
        self._shared: MeterProvider | None = None
        self.metrics_url: str | None = None
        self._stop_server: Callable[[], None] | None = None
        self._listen = listen_socket
        exporters = list(span_exporters) if span_exporters is not None else self._span_exporters()
        self.shipper = SpanShipper(exporters, settings.batch, self._span_drops) if exporters and span_sink is None \
            else None
        shipper = self.shipper
        sink: Callable[[Any, ReadableSpan], None] | None = None
        if span_sink is not None:
            sink = lambda _producer, span: span_sink(span)  # noqa: E731 - one process: no fairness to keep
        elif shipper is not None:
            sink = lambda _producer, span: shipper.put(span)  # noqa: E731
        self.converter = Converter(
            redactor=Redactor(settings.secret_keys, settings.secret_patterns, settings.secret_values),
            max_label_values=settings.max_label_values, slow_order_seconds=settings.slow_order_seconds,
            trace_keep_ratio=settings.trace_keep_ratio, base_resource=base_resource(settings),
            meters=meters or self._meter_provider, spans=sink, remote=remote,
            spans_full=(lambda _producer: shipper.full()) if shipper is not None and span_sink is None else None)

    # --- exporters --------------------------------------------------------------------------------------
    def _span_exporters(self) -> list[SpanExporter]:
        s = self.settings
        out: list[SpanExporter] = []
        if s.mode == "otlp" and s.traces.enabled:
            out.append(otlp_span_exporter(s))
        if s.mode == "otlp" and s.traces.console:  # OTEL_TRACES_EXPORTER=console (the inline engine: our stdout)
            out.append(console_span_exporter())
        if s.console:
            from qt_telemetry._engine.exporter.console import TraceSummaryExporter

            out.append(TraceSummaryExporter())
        return out

    def _meter_provider(self, resource: Resource) -> MeterProvider:
        s = self.settings
        if s.mode == "local":  # one /metrics for every process of the bot
            if self._shared is None:
                self._shared = self._new_provider(self.converter.base_resource, [self._local_reader()])
            return self._shared
        readers: list[MetricReader] = []
        if s.mode == "otlp" and s.metrics.enabled:
            readers.append(PeriodicExportingMetricReader(otlp_metric_exporter(s),
                                                         export_interval_millis=s.metric_export_interval_s * 1000))
        if s.mode == "otlp" and s.metrics.console:  # OTEL_METRICS_EXPORTER=console
            readers.append(PeriodicExportingMetricReader(console_metric_exporter(),
                                                         export_interval_millis=s.metric_export_interval_s * 1000))
        return self._new_provider(resource, readers)

    def _new_provider(self, resource: Resource, readers: list[MetricReader]) -> MeterProvider:
        provider = MeterProvider(metric_readers=readers, resource=resource, views=views(self.settings),
                                 exemplar_filter=exemplar_filter(self.settings), shutdown_on_exit=False)
        self.providers.append(provider)
        return provider

    def _local_reader(self) -> MetricReader:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry(auto_describe=True)
        reader = PrometheusMetricReader(registry=registry, scope_info_enabled=False)
        if self._listen is not None:
            from qt_telemetry._engine.exporter.metricsserver import serve

            self._stop_server = serve(registry, self._listen)
        return reader

    def _span_drops(self, spans: Sequence[ReadableSpan], reason: str) -> None:
        by_resource: dict[int, int] = {}
        for span in spans:
            by_resource[id(span.resource)] = by_resource.get(id(span.resource), 0) + 1
        for state in list(self.converter.producers.values()):
            count = by_resource.get(id(state.resource), 0)
            if count:
                state.drop("spans", reason, count)

    # --- lifecycle --------------------------------------------------------------------------------------
    def flush(self, deadline: float) -> bool:
        ok = self.shipper.flush(deadline) if self.shipper is not None else True
        for provider in list(self.providers):
            left = max(1.0, (deadline - time.monotonic()) * 1000)
            ok = bool(provider.force_flush(left)) and ok
        return ok

    def shutdown(self, deadline: float) -> bool:
        ok = self.shipper.shutdown(deadline) if self.shipper is not None else True
        for provider in list(self.providers):
            left = max(1.0, (deadline - time.monotonic()) * 1000)
            try:
                provider.shutdown(timeout_millis=left)
            except Exception:  # noqa: BLE001
                ok = False
        if self._stop_server is not None:
            self._stop_server()
        return ok


def otlp_span_exporter(settings: Settings) -> SpanExporter:
    sig = settings.traces
    headers = dict(settings.headers) if settings.headers is not None else None
    if sig.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        return GrpcSpanExporter(endpoint=sig.endpoint, headers=headers)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    return HttpSpanExporter(endpoint=sig.endpoint, headers=headers)


def console_span_exporter() -> SpanExporter:
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    return ConsoleSpanExporter()


def console_metric_exporter() -> Any:
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

    return ConsoleMetricExporter()


def otlp_metric_exporter(settings: Settings) -> Any:
    sig = settings.metrics
    headers = dict(settings.headers) if settings.headers is not None else None
    if sig.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        return Grpc(endpoint=sig.endpoint, headers=headers, preferred_temporality=temporality(settings))
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    return Http(endpoint=sig.endpoint, headers=headers, preferred_temporality=temporality(settings))
