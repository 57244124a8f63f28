"""Install the OTel providers once, export over OTLP (or locally), and shut down within a bounded time.

The stock SDK's ``force_flush``/``shutdown`` retry each export for several seconds and were measured at
28 s / 30 s with the collector down. A kill-switch exit must not hang, so both run on a daemon thread that
we wait on for at most ``shutdown_timeout`` seconds; whatever is still unexported then is dropped (and said).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from qt_telemetry import _config
from qt_telemetry._config import ConfigurationError, Settings
from qt_telemetry._runtime import RUNTIME

_log = logging.getLogger("qt_telemetry")


@dataclass(frozen=True)
class TelemetryInfo:
    """What ``init()`` set up: useful for logs, the demo's banner and ``doctor``."""

    mode: str
    service_name: str
    traces_endpoint: str | None
    metrics_endpoint: str | None
    metrics_url: str | None
    owns_providers: bool


@dataclass
class _Installed:
    info: TelemetryInfo
    settings: Settings
    tracer_provider: TracerProvider | None
    meter_provider: MeterProvider | None
    stop_server: Callable[[], None] | None


_lock = threading.Lock()
_installed: _Installed | None = None
_atexit_registered = False


def init(
    *,
    mode: str | None = None,
    service_name: str | None = None,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    metric_export_interval: float | None = None,
    shutdown_timeout: float | None = None,
    metrics_host: str | None = None,
    metrics_port: int | None = None,
    console: bool | None = None,
    max_label_values: int | None = None,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> TelemetryInfo | None:
    """Set up tracing and metrics once, at startup.

    Every option defaults to "look it up": the argument, then ``QT_TELEMETRY_*``, then the standard
    ``OTEL_*`` variable, then the default (OTLP/HTTP to ``http://localhost:4318``). ``mode="local"`` needs no
    collector: Prometheus ``/metrics`` on 127.0.0.1 plus a console trace summary. A provider that is already
    installed (e.g. by ``opentelemetry-instrument``) is used as it is; extra span processors are added to it.

    Returns what was set up, or None when ``OTEL_SDK_DISABLED=true``. Raises :class:`ConfigurationError` for
    an invalid setting. A second call warns and keeps the first setup.
    """
    global _installed
    settings = _config.resolve(
        mode=mode, service_name=service_name, endpoint=endpoint, protocol=protocol, headers=headers,
        resource_attributes=resource_attributes, metric_export_interval=metric_export_interval,
        shutdown_timeout=shutdown_timeout, metrics_host=metrics_host, metrics_port=metrics_port,
        console=console, max_label_values=max_label_values,
    )
    with _lock:
        if _installed is not None:
            warnings.warn("qt_telemetry.init() was already called; keeping the first setup",
                          RuntimeWarning, stacklevel=2)
            return _installed.info
        if settings.disabled:
            _log.info("OTEL_SDK_DISABLED is set: qt-telemetry records nothing")
            return None
        RUNTIME.labels.max_values = settings.max_label_values
        _installed = _install(settings, list(span_processors), list(metric_readers))
        _register_atexit()
        return _installed.info


def force_flush(timeout: float | None = None) -> bool:
    """Export everything recorded so far; gives up after ``timeout`` seconds (default: the shutdown bound)."""
    state = _installed
    if state is None:
        return True
    budget = state.settings.shutdown_timeout_s if timeout is None else timeout
    return _bounded(budget, "force_flush", lambda deadline: _flush(state, deadline))


def shutdown(timeout: float | None = None) -> bool:
    """Flush and close exporters within ``timeout`` seconds (default 2 s), even with the collector down.

    Returns False when the bound was hit and unexported telemetry was dropped. Safe to call twice.
    """
    global _installed
    with _lock:
        state, _installed = _installed, None
    if state is None:
        return True
    budget = state.settings.shutdown_timeout_s if timeout is None else timeout

    def work(deadline: float) -> bool:
        ok = _flush(state, deadline)
        if state.tracer_provider is not None:
            state.tracer_provider.shutdown()
        if state.meter_provider is not None:
            state.meter_provider.shutdown(timeout_millis=max(1.0, (deadline - time.monotonic()) * 1000))
        return ok

    try:
        return _bounded(budget, "shutdown", work)
    finally:
        if state.stop_server is not None:
            state.stop_server()


def current() -> TelemetryInfo | None:
    """What the active ``init()`` set up, or None."""
    state = _installed
    return state.info if state is not None else None


# --- internals ------------------------------------------------------------------------------------------

def _install(settings: Settings, span_processors: list[SpanProcessor],
             metric_readers: list[MetricReader]) -> _Installed:
    resource = _resource(settings)
    service = str(resource.attributes.get(SERVICE_NAME, _config.DEFAULT_SERVICE_NAME))
    stop_server: Callable[[], None] | None = None
    metrics_url: str | None = None

    existing_tp = trace.get_tracer_provider()
    tracer_provider: TracerProvider | None = None
    if isinstance(existing_tp, trace.ProxyTracerProvider):
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        for processor in _span_processors(settings) + span_processors:
            tracer_provider.add_span_processor(processor)
        trace.set_tracer_provider(tracer_provider)
    else:
        _log.info("qt-telemetry: using the TracerProvider already installed (%s)", type(existing_tp).__name__)
        for processor in span_processors:
            add = getattr(existing_tp, "add_span_processor", None)
            if add is None:
                raise ConfigurationError("span_processors: the installed TracerProvider cannot take processors")
            add(processor)

    existing_mp = metrics.get_meter_provider()
    meter_provider: MeterProvider | None = None
    if _is_proxy_meter_provider(existing_mp):
        readers = list(metric_readers)
        if settings.mode == "local":
            reader, stop_server, metrics_url = _local_metrics(settings)
            readers.append(reader)
        elif settings.mode == "otlp" and settings.metrics.enabled:
            readers.append(PeriodicExportingMetricReader(
                _metric_exporter(settings),
                export_interval_millis=settings.metric_export_interval_s * 1000,
            ))
        meter_provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
        metrics.set_meter_provider(meter_provider)
    else:
        _log.info("qt-telemetry: using the MeterProvider already installed (%s)", type(existing_mp).__name__)
        if metric_readers:
            warnings.warn("metric_readers are ignored: a MeterProvider was already installed and cannot take "
                          "readers after creation", RuntimeWarning, stacklevel=3)

    info = TelemetryInfo(
        mode=settings.mode,
        service_name=service,
        traces_endpoint=settings.traces.effective_endpoint if settings.mode == "otlp" and settings.traces.enabled else None,
        metrics_endpoint=settings.metrics.effective_endpoint if settings.mode == "otlp" and settings.metrics.enabled else None,
        metrics_url=metrics_url,
        owns_providers=tracer_provider is not None or meter_provider is not None,
    )
    _log.info("qt-telemetry initialised: %s", info)
    return _Installed(info, settings, tracer_provider, meter_provider, stop_server)


def _resource(settings: Settings) -> Resource:
    attributes: dict[str, Any] = dict(settings.resource_attributes)
    if settings.service_name:
        attributes[SERVICE_NAME] = settings.service_name
    resource = Resource.create(attributes)
    extra: dict[str, Any] = {}
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        extra[SERVICE_NAME] = _config.DEFAULT_SERVICE_NAME
    if SERVICE_INSTANCE_ID not in resource.attributes:
        # Two bots with the same service name must stay two series in Prometheus.
        extra[SERVICE_INSTANCE_ID] = str(uuid.uuid4())
    return resource.merge(Resource(extra)) if extra else resource


def _span_processors(settings: Settings) -> list[SpanProcessor]:
    processors: list[SpanProcessor] = []
    if settings.mode == "otlp" and settings.traces.enabled:
        processors.append(BatchSpanProcessor(_span_exporter(settings)))
    if settings.console:
        from qt_telemetry._console import TraceSummaryExporter

        processors.append(BatchSpanProcessor(TraceSummaryExporter(), schedule_delay_millis=500))
    return processors


def _headers(settings: Settings) -> dict[str, str] | None:
    """The ``headers`` argument, or None so the exporter reads OTEL_EXPORTER_OTLP_HEADERS itself."""
    return dict(settings.headers) if settings.headers is not None else None


def _span_exporter(settings: Settings) -> Any:
    sig = settings.traces
    if sig.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        return GrpcSpanExporter(endpoint=sig.endpoint, headers=_headers(settings))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    return HttpSpanExporter(endpoint=sig.endpoint, headers=_headers(settings))


def _metric_exporter(settings: Settings) -> Any:
    sig = settings.metrics
    if sig.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter(endpoint=sig.endpoint, headers=_headers(settings))
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter

    return HttpMetricExporter(endpoint=sig.endpoint, headers=_headers(settings))


def _local_metrics(settings: Settings) -> tuple[MetricReader, Callable[[], None], str]:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=True)
    reader = PrometheusMetricReader(registry=registry)
    try:
        server, thread = start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    except OSError as exc:
        raise ConfigurationError(
            f"metrics_port={settings.metrics_port}: cannot serve /metrics on {settings.metrics_host} ({exc}); "
            f"pick a free port with {_config.QT_TELEMETRY_METRICS_PORT}") from exc
    port = server.server_port
    host = settings.metrics_host
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/metrics"
    set_local_registry(registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=1)
        set_local_registry(None)

    return reader, stop, url


_local_registry: Any = None


def set_local_registry(registry: Any) -> None:
    global _local_registry
    _local_registry = registry


def local_registry() -> Any:
    """The prometheus_client registry the local mode serves (for the Flask ``/metrics`` route)."""
    return _local_registry


def _is_proxy_meter_provider(provider: object) -> bool:
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    return isinstance(provider, _ProxyMeterProvider)


def _flush(state: _Installed, deadline: float) -> bool:
    ok = True
    if state.tracer_provider is not None:
        ok = state.tracer_provider.force_flush(_millis_left(deadline)) and ok
    if state.meter_provider is not None:
        ok = bool(state.meter_provider.force_flush(_millis_left(deadline))) and ok
    return ok


def _millis_left(deadline: float) -> int:
    return max(1, int((deadline - time.monotonic()) * 1000))


def _bounded(budget: float, what: str, work: Callable[[float], bool]) -> bool:
    """Run ``work`` on a daemon thread; wait at most ``budget`` seconds for it."""
    deadline = time.monotonic() + budget
    result: list[bool] = []

    def run() -> None:
        try:
            result.append(work(deadline))
        except Exception as exc:  # noqa: BLE001 - shutdown must not raise into the kill-switch path
            _log.warning("qt-telemetry %s failed: %r", what, exc)
            result.append(False)

    worker = threading.Thread(target=run, name=f"qt-telemetry-{what}", daemon=True)
    worker.start()
    worker.join(budget)
    if worker.is_alive() or not result:
        _log.warning("qt-telemetry %s did not finish within %.1fs (collector unreachable?); unexported "
                     "telemetry was dropped", what, budget)
        return False
    return result[0]


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(shutdown)
        _atexit_registered = True


def _reset_for_tests() -> None:
    """Forget the installed state without touching OTel globals (the testing module resets those)."""
    global _installed
    with _lock:
        state, _installed = _installed, None
    if state is not None and state.stop_server is not None:
        state.stop_server()
