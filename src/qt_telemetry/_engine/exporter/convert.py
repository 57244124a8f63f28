"""Records -> OpenTelemetry: SDK spans and instrument calls, with secrets redacted and labels bounded.

The one place that decides what a finished span becomes: its exported attributes (redacted, secret names
refused), the metrics it yields (an order span -> the latency histogram, a stage -> the stage duration, ...),
the exemplar that links each measurement back to it, and whether a tail sampler must keep its trace. It runs in
the exporter process, on a thread of the trading process (``inline``) or, for spans that live in a user's own
SDK pipeline, applied to those live spans (``sdk``) — the same code in every case.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from qt_telemetry import semconv
from qt_telemetry._engine.exporter import rules
from qt_telemetry._engine.transport import records as R
from qt_telemetry._redaction import Redactor
from qt_telemetry._values import current_number
from qt_telemetry._version import __version__

SCOPE = InstrumentationScope("qt_telemetry", __version__)
_log = logging.getLogger("qt_telemetry")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
_NO_EXEMPLAR = Context()


class Instruments:
    """Every instrument of :mod:`semconv` on one meter; observable gauges read the boards of their producers."""

    def __init__(self, meter: Meter) -> None:
        self.producers: list[ProducerState] = []
        self._sync: dict[str, Any] = {}
        for spec in semconv.METRICS.values():
            if spec.kind == "gauge" or spec.observed:  # read from the producers' gauge boards
                observable = {"gauge": meter.create_observable_gauge, "counter": meter.create_observable_counter,
                              "updowncounter": meter.create_observable_up_down_counter}[spec.kind]
                observable(spec.name, [self._observer(spec)], spec.unit, spec.description)
            elif spec.kind == "counter":
                self._sync[spec.name] = meter.create_counter(spec.name, spec.unit, spec.description)
            elif spec.kind == "histogram":
                self._sync[spec.name] = meter.create_histogram(
                    spec.name, spec.unit, spec.description, explicit_bucket_boundaries_advisory=spec.buckets)

    def _observer(self, spec: semconv.MetricSpec) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            out: list[Observation] = []
            for producer in list(self.producers):
                out.extend(producer.observe(spec))
            return out

        return callback

    def measure(self, spec: semconv.MetricSpec, value: float, attributes: dict[str, str],
                context: Context | None) -> None:
        instrument = self._sync[spec.name]
        if spec.kind == "counter":
            instrument.add(value, attributes, context=context)
        else:
            instrument.record(value, attributes, context=context)


class ProducerState:
    """What the converter knows of one trading process: its resource, instruments, labels, gauges, drops."""

    def __init__(self, converter: Converter, pid: int, instance_id: str, resource: Resource,
                 instruments: Instruments) -> None:
        self.converter = converter
        self.pid = pid
        self.instance_id = instance_id
        self.resource = resource
        self.instruments = instruments
        self.labels = rules.LabelGuard(converter.settings_max_labels, self._label_overflow)
        self.gauges: dict[str, dict[tuple[tuple[str, Any], ...], Any]] = {}
        self.last_seen = time.time()
        self.dropped: dict[str, int] = {}
        self.goodbye = False
        instruments.producers.append(self)

    # --- metrics ----------------------------------------------------------------------------------------
    def measure(self, spec: semconv.MetricSpec, value: Any, attributes: Mapping[str, Any],
                context: Context | None = _NO_EXEMPLAR) -> None:
        number, problem = rules.measurement(spec, value)
        if problem is not None:
            self.error(problem)
        if number is not None:
            self.instruments.measure(spec, number, self.label_set(spec, attributes), context)

    def preaggregated(self, spec: semconv.MetricSpec, attributes: Mapping[str, Any], values: Sequence[Any]) -> None:
        """What records the producer could not hand over contributed: one label set, no span (so no exemplar)."""
        labels: dict[str, str] | None = None
        for value in values:
            number, problem = rules.measurement(spec, value)
            if problem is not None:
                self.error(problem)
            if number is not None:
                if labels is None:
                    labels = self.label_set(spec, attributes)
                self.instruments.measure(spec, number, labels, _NO_EXEMPLAR)

    def label_set(self, spec: semconv.MetricSpec, attributes: Mapping[str, Any]) -> dict[str, str]:
        return rules.label_set(spec, attributes, self.labels, self.converter.text)

    def error(self, kind: str) -> None:
        self.instruments.measure(semconv.TELEMETRY_ERRORS, 1, {semconv.TELEMETRY_ERROR_KIND: kind}, _NO_EXEMPLAR)

    def drop(self, signal: str, reason: str, count: int) -> None:
        if count > 0:
            self.instruments.measure(semconv.TELEMETRY_DROPPED, count,
                                     {semconv.TELEMETRY_SIGNAL: signal, semconv.TELEMETRY_REASON: reason},
                                     _NO_EXEMPLAR)

    def producer_drops(self, totals: Mapping[str, int]) -> None:
        """The trading process's cumulative drop totals (:func:`rules.new_drops`)."""
        for signal, reason, count in rules.new_drops(self.dropped, totals):
            self.drop(signal, reason, count)

    def _label_overflow(self, key: str) -> None:
        self.error("label_overflow")

    # --- gauges -----------------------------------------------------------------------------------------
    def set_gauge(self, name: str, attributes: Mapping[str, Any], value: Any) -> None:
        rules.set_gauge(self.gauges, name, attributes, value)

    def observe(self, spec: semconv.MetricSpec) -> list[Observation]:
        if spec is semconv.HEARTBEAT:
            return [Observation(self.last_seen if self.converter.remote else time.time())]
        out = []
        for key, value in list(self.gauges.get(spec.name, {}).items()):
            number, problem = current_number(value)  # in-process engines keep the user's callbacks
            if number is None:
                self.error(problem or "gauge_bad_value")
                continue
            out.append(Observation(number, self.label_set(spec, dict(key))))
        return out


class Converter:
    """Turns records into SDK spans (handed to ``spans``) and measurements (on the producer's meter provider)."""

    def __init__(self, *, redactor: Redactor, max_label_values: int, slow_order_seconds: float,
                 trace_keep_ratio: float, base_resource: Resource, meters: Callable[[Resource], MeterProvider],
                 spans: Callable[[ProducerState, ReadableSpan], None] | None, remote: bool,
                 spans_full: Callable[[ProducerState], bool] | None = None) -> None:
        self.redactor = redactor
        self.text = rules.redacted(redactor)
        self.settings_max_labels = max_label_values
        self.rules = rules.SpanRules(slow_order_seconds, trace_keep_ratio)
        self.base_resource = base_resource
        self._meters = meters
        #: Keyed by the provider itself, never ``id()``: a retired provider's id is reused by the next one.
        self._instruments: dict[Any, Instruments] = {}
        self._spans = spans
        self.remote = remote
        self.producers: dict[int, ProducerState] = {}
        self._scopes: dict[tuple[Any, ...], InstrumentationScope] = {}
        self.lock = threading.Lock()
        #: Whether a span of this producer would be dropped now (a bounded queue is full): then it is not built.
        self.spans_full: Callable[[ProducerState], bool] = spans_full or (lambda producer: False)

    # --- producers --------------------------------------------------------------------------------------
    def producer(self, pid: int, instance_id: str) -> ProducerState:
        state = self.producers.get(pid)
        if state is not None and state.instance_id == instance_id:
            return state
        resource = self.base_resource.merge(Resource({"service.instance.id": instance_id, "process.pid": pid}))
        provider = self._meters(resource)
        instruments = self._instruments.get(provider)
        if instruments is None:
            instruments = self._instruments[provider] = Instruments(
                provider.get_meter(SCOPE.name, SCOPE.version))
        state = self.producers[pid] = ProducerState(self, pid, instance_id, resource, instruments)
        return state

    def forget(self, state: ProducerState, provider: Any = None) -> None:
        """Drop a retired process (and its own meter provider, once that has made its final export)."""
        if provider is not None:
            self._instruments.pop(provider, None)
        if self.producers.get(state.pid) is state:
            self.producers.pop(state.pid, None)
        if state in state.instruments.producers:
            state.instruments.producers.remove(state)

    # --- records ----------------------------------------------------------------------------------------
    def accept(self, producer: ProducerState, records: Iterable[tuple[Any, ...]]) -> None:
        for record in records:
            try:
                kind = record[0]
                if kind == R.SPAN:
                    self.span(producer, record)
                elif kind == R.METRICS:
                    ops, attributes = rules.metrics_record(record)
                    for spec, value in ops:
                        producer.measure(spec, value, attributes)
                elif kind == R.GAUGE:
                    rules.check_gauge(record)
                    producer.set_gauge(record[1], record[2], record[3])
                elif kind == R.CONTROL:
                    self.control(producer, record[1], record[2])
                elif kind == R.PREAGG:
                    producer.preaggregated(*rules.preagg_record(record))
            except Exception as exc:  # noqa: BLE001 - one bad record must not stop the others
                producer.error("record_failed")
                _log.debug("qt-telemetry could not convert a record: %r", exc)

    def control(self, producer: ProducerState, operation: str, payload: Any) -> None:
        if operation == R.OP_SECRETS:
            self.redactor.add_values(payload)
        elif operation == R.OP_GOODBYE:
            producer.goodbye = True

    def span(self, producer: ProducerState, record: tuple[Any, ...], live: trace.Span | None = None) -> None:
        """Export one span record (or apply it to ``live``, the user's SDK span) and derive its metrics."""
        rules.check_span(record)
        name = rules.utf8(record[R.S_NAME])
        attributes = self.attributes(producer, record[R.S_ATTRS])
        sampled = record[R.S_SAMPLED]
        is_ours = record[R.S_SCOPE] is None
        keep = is_ours and self.rules.keep(name, attributes.get(semconv.OUTCOME), record)
        if keep:
            attributes[semconv.SAMPLING_KEEP] = True
        trace_id, span_id = int.from_bytes(record[R.S_TRACE], "big"), int.from_bytes(record[R.S_SPAN], "big")
        if is_ours:
            exemplar = _exemplar_context(trace_id, span_id, sampled and keep)
            for spec, value, labelled in rules.span_measurements(name, attributes,
                                                                 record[R.S_END] - record[R.S_START]):
                producer.measure(spec, value, labelled, exemplar)
        if not sampled:
            return
        code = record[R.S_STATUS]
        status = Status(StatusCode(code), rules.status_message(code, record[R.S_MESSAGE], self.text))
        events = [Event(rules.utf8(event_name), self.attributes(producer, event_attributes), timestamp)
                  for event_name, timestamp, event_attributes in record[R.S_EVENTS] or ()]
        if live is not None:
            live.set_attributes(attributes)
            for event in events:
                live.add_event(event.name, event.attributes, event.timestamp)
            if status.status_code is not StatusCode.UNSET:
                live.set_status(status)
            live.end(end_time=record[R.S_END])
            return
        if self._spans is None:
            return
        if self.spans_full(producer):  # the queue is full (the collector is down): do not build what goes
            producer.drop("spans", "queue_full", 1)
            return
        flags = _SAMPLED
        state = rules.trace_state(record[R.S_STATE]) if record[R.S_STATE] else None
        context = SpanContext(trace_id, span_id, False, flags, state)
        parent_id = record[R.S_PARENT]
        parent = SpanContext(trace_id, int.from_bytes(parent_id, "big"), record[R.S_REMOTE], flags, state) \
            if parent_id is not None else None
        links = [Link(SpanContext(int.from_bytes(t, "big"), int.from_bytes(s, "big"), False, flags))
                 for t, s in record[R.S_LINKS] or ()]
        self._spans(producer, ReadableSpan(
            name, context, parent, producer.resource, attributes, events, links, SpanKind(record[R.S_KIND]),
            status=status, start_time=record[R.S_START], end_time=record[R.S_END],
            instrumentation_scope=self._scope(rules.scope_key(record[R.S_SCOPE]))))

    # --- values -----------------------------------------------------------------------------------------
    def attributes(self, producer: ProducerState, raw: Mapping[str, Any] | None) -> dict[str, Any]:
        """Record attributes as exported (:func:`rules.attribute_key`, :func:`rules.attribute_value`)."""
        out: dict[str, Any] = {}
        if not raw:
            return out
        for key, value in raw.items():
            name, problem = rules.attribute_key(self.redactor, key)
            if name is None:
                producer.error(problem or "bad_attribute")
                continue
            clean, problem = rules.attribute_value(value, self.text)
            if problem is not None:
                producer.error(problem)
            elif clean is not None:
                out[name] = clean
        return out

    def _scope(self, key: tuple[str, str | None, str | None] | None) -> InstrumentationScope:
        if key is None:
            return SCOPE
        known = self._scopes.get(key)
        if known is None:
            known = self._scopes[key] = InstrumentationScope(*key)
        return known


def _exemplar_context(trace_id: int, span_id: int, keep: bool) -> Context:
    span = NonRecordingSpan(SpanContext(trace_id, span_id, False, _SAMPLED if keep else _UNSAMPLED))
    return trace.set_span_in_context(span, _NO_EXEMPLAR)
