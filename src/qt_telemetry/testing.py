"""Capture qt-telemetry's spans and metrics in memory, for your own tests and ours.

    from qt_telemetry.testing import capture_telemetry

    with capture_telemetry() as cap:
        place_order("BTCUSDT", "buy", 1)
    assert cap.span("qt.order.place").attributes["symbol"] == "BTCUSDT"

The capture converts every record synchronously with the very code the exporter process runs (redaction,
labels, exemplars, what each span yields), so a test sees its telemetry the moment the call returns. The pytest
plugin (installed with the package) offers the same as the ``qt_capture`` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class Capture:
    """Finished spans and collected metrics of one test."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self._exemplars: dict[str, list[tuple[dict[str, Any], Any]]] = {}

    # --- spans ------------------------------------------------------------------------------------------
    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """Finished spans, in end order; only those called ``name`` if given."""
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def span(self, name: str) -> ReadableSpan:
        """The one finished span called ``name`` (fails if there are none or several)."""
        found = self.spans(name)
        assert len(found) == 1, f"expected one {name!r} span, got {len(found)}: {[s.name for s in self.spans()]}"
        return found[0]

    # --- metrics ----------------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Metric]:
        """Collect now; every metric by name."""
        out: dict[str, Metric] = {}
        data = self.reader.get_metrics_data()
        for resource_metrics in (data.resource_metrics if data else []):
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    out[metric.name] = metric
                    for point in metric.data.data_points:
                        for exemplar in getattr(point, "exemplars", None) or ():
                            self._exemplars.setdefault(metric.name, []).append(
                                (dict(point.attributes or {}), exemplar))
        return out

    def exemplars(self, name: str, **attributes: Any) -> list[Any]:
        """Every exemplar of ``name`` seen so far (exemplars reset at each collection, so we keep them)."""
        self.metrics()
        wanted = {k.replace("__", "."): v for k, v in attributes.items()}
        return [e for attrs, e in self._exemplars.get(name, [])
                if all(attrs.get(k) == v for k, v in wanted.items())]

    def points(self, name: str, **attributes: Any) -> list[Any]:
        """Data points of metric ``name`` whose attributes include ``attributes`` (dots as ``__``)."""
        metric = self.metrics().get(name)
        if metric is None:
            return []
        wanted = {k.replace("__", "."): v for k, v in attributes.items()}
        return [p for p in metric.data.data_points
                if all(dict(p.attributes or {}).get(k) == v for k, v in wanted.items())]

    def point(self, name: str, **attributes: Any) -> Any:
        """The one data point of ``name`` matching ``attributes``."""
        found = self.points(name, **attributes)
        assert len(found) == 1, f"expected one {name!r} point matching {attributes}, got {len(found)}"
        return found[0]


def reset_globals() -> None:
    """Forget installed OTel providers and qt-telemetry state (tests only; OTel allows one provider per process)."""
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    from qt_telemetry import _setup, logs
    from qt_telemetry._engine.recorder.state import STATE

    _setup._reset_for_tests()
    logs.uninstall()
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    metrics_internal._PROXY_METER_PROVIDER = metrics_internal._ProxyMeterProvider()
    STATE.reset()


@contextmanager
def capture_telemetry(**settings: Any) -> Iterator[Capture]:
    """Capture everything recorded in the block; restore a clean slate afterwards.

    Keyword arguments are ``init()`` settings that shape the conversion (e.g. ``trace_keep_ratio=0.1``,
    ``secret_values=[...]``, ``native_histograms=True``).
    """
    from qt_telemetry import _config
    from qt_telemetry._engine.exporter.inprocess import SyncEngine
    from qt_telemetry._engine.exporter.pipeline import Pipeline, exemplar_filter, views
    from qt_telemetry._engine.recorder.engines import RecordingProcessor, error_counter
    from qt_telemetry._engine.recorder.sampling import HeadSampler
    from qt_telemetry._engine.recorder.state import STATE

    reset_globals()
    cap = Capture()
    resolved = _config.resolve(environ={}, mode="none", **settings)
    meter_provider = MeterProvider(metric_readers=[cap.reader], views=views(resolved),
                                   exemplar_filter=exemplar_filter(resolved), shutdown_on_exit=False)

    def sink(span: ReadableSpan) -> None:
        cap.exporter.export([span])

    pipeline = Pipeline(resolved, remote=False, span_exporters=[], meters=lambda _resource: meter_provider,
                        span_sink=sink)
    engine = SyncEngine(HeadSampler(), pipeline)
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(RecordingProcessor(engine.emit))  # other instrumentation, same path
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    STATE.engine = engine
    STATE.error_sink = error_counter(engine)
    engine.send_board(STATE.board)
    try:
        yield cap
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()
        reset_globals()
