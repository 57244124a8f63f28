"""Records -> OpenTelemetry: SDK spans and instrument calls, with secrets redacted and labels bounded.

The one place that decides what a finished span becomes: its exported attributes (redacted, secret names
refused), the metrics it yields (an order span -> the latency histogram, a stage -> the stage duration, ...),
the exemplar that links each measurement back to it, and whether a tail sampler must keep its trace. It runs in
the exporter process, on a thread of the trading process (``inline``) or, for spans that live in a user's own
SDK pipeline, applied to those live spans (``sdk``) — the same code in every case.
"""

from __future__ import annotations

import logging
import math
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
    TraceState,
)

from qt_telemetry import semconv
from qt_telemetry._engine.transport import records as R
from qt_telemetry._redaction import Redactor
from qt_telemetry._values import current_number, finite
from qt_telemetry._version import __version__

SCOPE = InstrumentationScope("qt_telemetry", __version__)
_log = logging.getLogger("qt_telemetry")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
_RATIO_BITS = (1 << 56) - 1
_NO_EXEMPLAR = Context()

#: Span events that make a trace worth keeping whole.
_KEEP_EVENTS = frozenset({semconv.EVENT_KILL_SWITCH, semconv.EVENT_BREAKER, semconv.EVENT_RISK_REJECTED})
_KEEP_OUTCOMES = frozenset({semconv.OUTCOME_ERROR, semconv.OUTCOME_REJECTED})


class LabelGuard:
    """Keeps metric attributes low-cardinality: each key accepts a bounded number of distinct values.

    The SDK has no cardinality limit, so an unbounded label (a symbol list from a feed gone wrong) would grow
    memory forever. Past ``max_values`` the value becomes ``_other`` and the overflow is counted.
    """

    def __init__(self, max_values: int, on_overflow: Callable[[str], None]) -> None:
        self.max_values = max_values
        self._seen: dict[str, set[str]] = {}
        self._on_overflow = on_overflow

    def value(self, key: str, text: str) -> str:
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = set()
        if text in seen:
            return text
        if len(seen) < self.max_values:
            seen.add(text)
            return text
        self._on_overflow(key)
        return semconv.OVERFLOW_VALUE


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
        self.labels = LabelGuard(converter.settings_max_labels, self._label_overflow)
        self.gauges: dict[str, dict[tuple[tuple[str, Any], ...], Any]] = {}
        self.last_seen = time.time()
        self.dropped: dict[str, int] = {}
        self.goodbye = False
        instruments.producers.append(self)

    # --- metrics ----------------------------------------------------------------------------------------
    def measure(self, spec: semconv.MetricSpec, value: Any, attributes: Mapping[str, Any],
                context: Context | None = _NO_EXEMPLAR) -> None:
        number = finite(value)
        if number is None:
            self.error("bad_measurement")
            return
        if spec.unit == "s" and number < 0:
            self.error("negative_duration")
            number = 0.0
        self.instruments.measure(spec, number, self.label_set(spec, attributes), context)

    def label_set(self, spec: semconv.MetricSpec, attributes: Mapping[str, Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in spec.attributes:
            raw = attributes.get(key)
            if raw is None:
                if key in spec.optional:
                    continue
                out[key] = semconv.UNKNOWN_VALUE
                continue
            out[key] = self.labels.value(key, self.converter.label_text(raw))
        return out

    def error(self, kind: str) -> None:
        self.instruments.measure(semconv.TELEMETRY_ERRORS, 1, {semconv.TELEMETRY_ERROR_KIND: kind}, _NO_EXEMPLAR)

    def drop(self, signal: str, reason: str, count: int) -> None:
        if count > 0:
            self.instruments.measure(semconv.TELEMETRY_DROPPED, count,
                                     {semconv.TELEMETRY_SIGNAL: signal, semconv.TELEMETRY_REASON: reason},
                                     _NO_EXEMPLAR)

    def producer_drops(self, totals: Mapping[str, int]) -> None:
        """The trading process reports its cumulative drops by ``"signal/reason"`` in every message; count what
        is new. A new exporter hears the whole total again and counts it all: the producer's count is the truth
        (its series only ever grows across exporter generations)."""
        for key, total in totals.items():
            new = total - self.dropped.get(key, 0)
            if new > 0:
                self.dropped[key] = total
                self.drop(*R.drop_key(key), new)

    def _label_overflow(self, key: str) -> None:
        self.error("label_overflow")

    # --- gauges -----------------------------------------------------------------------------------------
    def set_gauge(self, name: str, attributes: Mapping[str, Any], value: Any) -> None:
        key = tuple(sorted(attributes.items()))
        series = self.gauges.setdefault(name, {})
        if value is None:
            series.pop(key, None)
        else:
            series[key] = value

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
                 spans: Callable[[ReadableSpan], None] | None, remote: bool) -> None:
        self.redactor = redactor
        self.settings_max_labels = max_label_values
        self.slow_ns = int(slow_order_seconds * 1e9)
        self.keep_bound = int(trace_keep_ratio * (1 << 56))
        self.base_resource = base_resource
        self._meters = meters
        #: Keyed by the provider itself, never ``id()``: a retired provider's id is reused by the next one.
        self._instruments: dict[Any, Instruments] = {}
        self._spans = spans
        self.remote = remote
        self.producers: dict[int, ProducerState] = {}
        self._scopes: dict[tuple[Any, ...], InstrumentationScope] = {}
        self.lock = threading.Lock()
        #: Set by the pipeline when spans go to a bounded queue.
        self.spans_full: Callable[[], bool] = lambda: False

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
                    attributes = record[2]
                    for name, value in record[1]:
                        producer.measure(semconv.METRICS[name], value, attributes)
                elif kind == R.GAUGE:
                    producer.set_gauge(record[1], record[2], record[3])
                elif kind == R.PREAGG:
                    self.preaggregate(producer, record)
                elif kind == R.CONTROL:
                    self.control(producer, record[1], record[2])
            except Exception as exc:  # noqa: BLE001 - one bad record must not stop the others
                producer.error("record_failed")
                _log.debug("qt-telemetry could not convert a record: %r", exc)

    def preaggregate(self, producer: ProducerState, record: tuple[Any, ...]) -> None:
        """What records the producer could not hand over contributed: a counter's sum, or a histogram's values
        (little-endian float64), measured as if they had arrived, without exemplars."""
        _, name, attributes, payload = record
        spec = semconv.METRICS[name]
        if isinstance(payload, bytes):
            if len(payload) % 8 or len(payload) > 8 * 65536:
                raise ValueError("a histogram pre-aggregate is whole float64 values, at most 65536")
            for value in memoryview(payload).cast("d"):
                producer.measure(spec, value, attributes)
        else:
            producer.measure(spec, payload, attributes)

    def control(self, producer: ProducerState, operation: str, payload: Any) -> None:
        if operation == R.OP_SECRETS:
            self.redactor.add_values(payload)
        elif operation == R.OP_GOODBYE:
            producer.goodbye = True

    def span(self, producer: ProducerState, record: tuple[Any, ...], live: trace.Span | None = None) -> None:
        """Export one span record (or apply it to ``live``, the user's SDK span) and derive its metrics."""
        name = _utf8(record[R.S_NAME])
        attributes = self.attributes(producer, record[R.S_ATTRS])
        sampled = record[R.S_SAMPLED]
        trace_id, span_id = int.from_bytes(record[R.S_TRACE], "big"), int.from_bytes(record[R.S_SPAN], "big")
        is_ours = record[R.S_SCOPE] is None
        duration = record[R.S_END] - record[R.S_START]
        keep = is_ours and self._keep(name, attributes, record, trace_id, duration)
        if keep:
            attributes[semconv.SAMPLING_KEEP] = True
        exemplar = _exemplar_context(trace_id, span_id, sampled and keep)
        for spec, source in semconv.SPAN_METRICS.get(name, ()) if is_ours else ():
            if source == "duration":
                value: Any = duration / 1e9
            elif isinstance(source, str):
                value = attributes.get(source)
                if value is None:
                    continue
            elif isinstance(source, semconv.Magnitude):
                value = finite(attributes.get(source.key))
                if value is None:
                    continue
                value = abs(value)
            else:
                value = source
            producer.measure(spec, value, attributes, exemplar)
        if not sampled:
            return
        status = Status(StatusCode(record[R.S_STATUS]), self._text(record[R.S_MESSAGE]))
        events = [Event(_utf8(str(event_name)), self.attributes(producer, event_attributes), timestamp)
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
        if self.spans_full():  # the collector is down: count the drop, do not build what cannot be sent
            producer.drop("spans", "queue_full", 1)
            return
        flags = _SAMPLED
        state = TraceState.from_header([record[R.S_STATE]]) if record[R.S_STATE] else None
        context = SpanContext(trace_id, span_id, False, flags, state)
        parent_id = record[R.S_PARENT]
        parent = SpanContext(trace_id, int.from_bytes(parent_id, "big"), record[R.S_REMOTE], flags, state) \
            if parent_id else None
        links = [Link(SpanContext(int.from_bytes(t, "big"), int.from_bytes(s, "big"), False, flags))
                 for t, s in record[R.S_LINKS] or ()]
        self._spans(ReadableSpan(
            name, context, parent, producer.resource, attributes, events, links, SpanKind(record[R.S_KIND]),
            status=status, start_time=record[R.S_START], end_time=record[R.S_END],
            instrumentation_scope=self._scope(record[R.S_SCOPE])))

    def _keep(self, name: str, attributes: Mapping[str, Any], record: tuple[Any, ...], trace_id: int,
              duration: int) -> bool:
        if (trace_id & _RATIO_BITS) < self.keep_bound:
            return True
        if record[R.S_STATUS] == StatusCode.ERROR.value or attributes.get(semconv.OUTCOME) in _KEEP_OUTCOMES:
            return True
        if name == semconv.SPAN_ORDER and duration > self.slow_ns:
            return True
        if name in (semconv.SPAN_KILL_SWITCH, semconv.SPAN_BREAKER):
            return True
        return any(event[0] in _KEEP_EVENTS for event in record[R.S_EVENTS] or ())

    # --- values -----------------------------------------------------------------------------------------
    def attributes(self, producer: ProducerState, raw: Mapping[str, Any] | None) -> dict[str, Any]:
        """Record attributes as exported: secret-looking names refused, text scrubbed, values checked."""
        out: dict[str, Any] = {}
        if not raw:
            return out
        redactor = self.redactor
        for key, value in raw.items():
            if not isinstance(key, str) or not key:
                producer.error("bad_attribute")
                continue
            key = _utf8(key)
            if redactor.is_secret_key(key):
                producer.error("secret_attribute_dropped")
                continue
            if isinstance(value, str):
                out[key] = _utf8(redactor.text(value))
            elif isinstance(value, float):
                if math.isfinite(value):
                    out[key] = value
                else:
                    producer.error("bad_attribute")
            elif isinstance(value, tuple | list):
                out[key] = tuple(_utf8(redactor.text(v)) if isinstance(v, str) else v for v in value)
            elif value is not None:
                out[key] = value
        return out

    def label_text(self, raw: Any) -> str:
        if raw.__class__ is str:
            text = raw
        elif isinstance(raw, bool):
            text = "true" if raw else "false"
        else:
            text = str(raw)
        text = _utf8(self.redactor.text(text[:64])) if text else semconv.UNKNOWN_VALUE
        return text or semconv.UNKNOWN_VALUE

    def _text(self, value: Any) -> str | None:
        return _utf8(self.redactor.text(value)) if isinstance(value, str) else None

    def _scope(self, scope: Sequence[Any] | None) -> InstrumentationScope:
        if scope is None:
            return SCOPE
        key = tuple(scope)
        known = self._scopes.get(key)
        if known is None:
            known = self._scopes[key] = InstrumentationScope(*key)
        return known


def _utf8(text: str) -> str:
    """What protobuf can encode: a lone surrogate (from a bad decode upstream) becomes U+FFFD, not a lost batch."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _exemplar_context(trace_id: int, span_id: int, keep: bool) -> Context:
    span = NonRecordingSpan(SpanContext(trace_id, span_id, False, _SAMPLED if keep else _UNSAMPLED))
    return trace.set_span_in_context(span, _NO_EXEMPLAR)
