"""Instruments bound to whichever OTel providers are global right now.

qt-telemetry never caches a tracer or instrument forever: before ``init()`` the API's proxies give the no-op
path; after ``init()`` (or under ``opentelemetry-instrument``, which installs its own providers) the same
calls reach the real SDK. A provider change is detected by identity on each use, which costs two global reads.

Gauges that describe *state* (kill switch, breakers, feeds, risk) are observable: their values live in
:class:`GaugeBoard` and are reported at every export, so a state set before ``init()`` is still exported
after it, and a stuck process keeps reporting its last known state with a fresh timestamp.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, NoOpMeterProvider, Observation
from opentelemetry.metrics import _internal as _metrics_internal
from opentelemetry.metrics._internal import _ProxyMeterProvider

from qt_telemetry import semconv
from qt_telemetry._safety import LabelGuard, finite, set_error_sink, telemetry_error
from qt_telemetry._version import __version__

SCOPE = "qt_telemetry"
_NOOP_TRACER_PROVIDER = trace.NoOpTracerProvider()
_NOOP_METER_PROVIDER = NoOpMeterProvider()

GaugeValue = float | Callable[[], Any]
_LabelKey = tuple[tuple[str, str], ...]


class GaugeBoard:
    """Current values of the observable gauges, keyed by metric name and attribute set."""

    def __init__(self) -> None:
        self._values: dict[str, dict[_LabelKey, GaugeValue]] = {}
        self._lock = threading.Lock()
        self.clear()

    def set(self, name: str, attributes: Mapping[str, str], value: GaugeValue) -> None:
        key = tuple(sorted(attributes.items()))
        with self._lock:
            self._values.setdefault(name, {})[key] = value

    def get(self, name: str, attributes: Mapping[str, str]) -> GaugeValue | None:
        return self._values.get(name, {}).get(tuple(sorted(attributes.items())))

    def remove(self, name: str, attributes: Mapping[str, str]) -> None:
        with self._lock:
            self._values.get(name, {}).pop(tuple(sorted(attributes.items())), None)

    def observe(self, name: str) -> list[Observation]:
        with self._lock:
            items = list(self._values.get(name, {}).items())
        out: list[Observation] = []
        for key, value in items:
            if callable(value):
                try:
                    value = value()
                except Exception as exc:  # noqa: BLE001 - a user callback must not break the export
                    telemetry_error("gauge_callback_failed", f"{name}: {exc!r}")
                    continue
                if value is None:
                    telemetry_error("gauge_callback_none", name)
                    continue
            number = finite(value, "gauge_bad_value")
            if number is not None:
                out.append(Observation(number, dict(key)))
        return out

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._values[semconv.HEARTBEAT.name] = {(): time.time}


class Instruments:
    """The tracer and every instrument of :mod:`qt_telemetry.semconv`, from one pair of providers."""

    def __init__(self, tracer_provider: trace.TracerProvider, meter_provider: metrics.MeterProvider,
                 board: GaugeBoard) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        #: False before any provider is installed: decorators then call straight through.
        self.enabled = not (tracer_provider is _NOOP_TRACER_PROVIDER and meter_provider is _NOOP_METER_PROVIDER)
        self.tracer = tracer_provider.get_tracer(SCOPE, __version__)
        meter = meter_provider.get_meter(SCOPE, __version__)
        self._sync: dict[str, Any] = {}
        for spec in semconv.METRICS.values():
            if spec.kind == "counter":
                self._sync[spec.name] = meter.create_counter(spec.name, spec.unit, spec.description)
            elif spec.kind == "histogram":
                self._sync[spec.name] = meter.create_histogram(
                    spec.name, spec.unit, spec.description,
                    explicit_bucket_boundaries_advisory=spec.buckets,
                )
            elif spec.kind == "gauge":
                meter.create_observable_gauge(
                    spec.name, [_observer(board, spec.name)], spec.unit, spec.description)

    def add(self, spec: semconv.MetricSpec, amount: float, attributes: Mapping[str, str]) -> None:
        self._sync[spec.name].add(amount, attributes)

    def record(self, spec: semconv.MetricSpec, value: float, attributes: Mapping[str, str]) -> None:
        self._sync[spec.name].record(value, attributes)


def _observer(board: GaugeBoard, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(_options: CallbackOptions) -> Iterable[Observation]:
        return board.observe(name)

    return callback


class Runtime:
    """Process-wide state: label guard, gauge board and the instruments for the current providers."""

    def __init__(self) -> None:
        self.labels = LabelGuard()
        self.board = GaugeBoard()
        self._instruments: Instruments | None = None
        self._key: tuple[object, object] = (None, None)
        self._lock = threading.Lock()
        set_error_sink(self._count_error)

    def instruments(self) -> Instruments:
        tp = _current_tracer_provider()
        mp = _current_meter_provider()
        current = self._instruments
        if current is not None and self._key[0] is tp and self._key[1] is mp:
            return current
        with self._lock:
            current = self._instruments
            if current is None or self._key[0] is not tp or self._key[1] is not mp:
                # Before any provider is installed the API hands out proxies that would later replay our
                # instruments onto the real provider as duplicates; use the no-op path until then.
                real_tp = _NOOP_TRACER_PROVIDER if isinstance(tp, trace.ProxyTracerProvider) else tp
                real_mp = _NOOP_METER_PROVIDER if isinstance(mp, _ProxyMeterProvider) else mp
                current = self._instruments = Instruments(real_tp, real_mp, self.board)  # type: ignore[arg-type]
                self._key = (tp, mp)
            return current

    def count(self, spec: semconv.MetricSpec, attributes: Mapping[str, Any], amount: float = 1) -> None:
        """Add to a counter with bounded labels. Never raises."""
        try:
            self.instruments().add(spec, amount, self.labels.attributes(attributes))
        except Exception as exc:  # noqa: BLE001
            telemetry_error("instrument_failed", repr(exc))

    def record(self, spec: semconv.MetricSpec, value: Any, attributes: Mapping[str, Any]) -> None:
        """Record a histogram value with bounded labels; NaN/None/inf are dropped and counted."""
        number = finite(value, "bad_measurement")
        if number is None:
            return
        if spec.unit == "s" and number < 0:
            telemetry_error("negative_duration")
            number = 0.0
        try:
            self.instruments().record(spec, number, self.labels.attributes(attributes))
        except Exception as exc:  # noqa: BLE001
            telemetry_error("instrument_failed", repr(exc))

    def gauge(self, spec: semconv.MetricSpec, attributes: Mapping[str, Any], value: GaugeValue) -> None:
        """Set an observable gauge's value (or callback) for one attribute set."""
        if not callable(value):
            number = finite(value, "bad_gauge_value")
            if number is None:
                return
            value = number
        self.board.set(spec.name, self.labels.attributes(attributes), value)
        self.instruments()  # make sure the observable instruments exist for the current provider

    def gauge_value(self, spec: semconv.MetricSpec, attributes: Mapping[str, Any]) -> GaugeValue | None:
        """The value (or callback) a gauge currently reports for these attributes, if any."""
        return self.board.get(spec.name, self.labels.attributes(attributes))

    def reset(self) -> None:
        """Forget every label and gauge value and drop cached instruments (tests only)."""
        with self._lock:
            self._instruments = None
        self.labels.reset()
        self.board.clear()

    def _count_error(self, kind: str) -> None:
        self.instruments().add(semconv.TELEMETRY_ERRORS, 1, {semconv.TELEMETRY_ERROR_KIND: kind})


def _current_tracer_provider() -> object:
    # The API's getter reads an environment variable on every call until a provider is set, which made the
    # no-op path cost more than the instrumented one; read the global it guards instead when we can.
    provider = getattr(trace, "_TRACER_PROVIDER", _MISSING)
    if provider is _MISSING:
        return trace.get_tracer_provider()
    return provider if provider is not None else trace.get_tracer_provider()


def _current_meter_provider() -> object:
    provider = getattr(_metrics_internal, "_METER_PROVIDER", _MISSING)
    if provider is _MISSING:
        return metrics.get_meter_provider()
    return provider if provider is not None else metrics.get_meter_provider()


_MISSING = object()
RUNTIME = Runtime()
