"""Records -> OTLP protobuf bytes without the OTel SDK: the exporter process's lean path.

The SDK path (:mod:`.convert`: SDK spans, SDK instruments, the official encoders) cost ~62 µs per order in the
exporter, most of it building objects only to encode them. Here a span record becomes its ``Span`` message bytes
directly (:mod:`.otlp`), an attribute is checked, redacted and encoded once per distinct (key, value) and spliced
into every span that carries it, and metrics are aggregated by :mod:`.aggregate` with the SDK's semantics. What a
record means (:mod:`.rules`) is shared with the SDK path; ``tests/unit/test_lean_differential.py`` holds the two
to byte-identical span requests and point-identical metrics.

The surface the exporter process loop calls::

    converter = LeanConverter(settings, base_resource=base_resource(settings))
    producer = converter.producer(pid, instance_id)   # per datagram header; same identity rules as Converter
    producer.last_seen = time.time()                  # the heartbeat gauge reports it
    producer.producer_drops(header_drops)             # cumulative {reason: count} the producer dropped
    producer.drop("records", "exporter_busy", n)      # anything else dropped on its behalf
    converter.accept(producer, records)               # never raises; a bad record counts record_failed
    if producer.goodbye:
        converter.retire(producer)                    # its last points go out at the next collection
    converter.queued_spans()                          # spans waiting: a full batch (or the delay) -> take them
    converter.take_spans(max_spans)                   # -> (ExportTraceServiceRequest bytes, {producer: spans}) | None
    converter.span_drop({producer: n}, reason)        # spans the sender could not deliver
    converter.collect_metrics(time.time_ns())         # -> ExportMetricsServiceRequest bytes | None
    converter.prometheus_collector()                  # local mode's /metrics (switches to cumulative)

Every method, and a producer's ``drop``/``producer_drops``, holds ``converter.lock`` (reentrant). Spans wait in
a bounded queue (``settings.batch.max_queue_size`` spans, and at most 64 MiB): beyond it they are dropped and
counted (``qt.telemetry.dropped{signal=spans, reason=queue_full}``) before being encoded. A pid that comes back
with another ``service.instance.id`` (a new process) retires the old producer; a retired producer whose spans
fail delivery after its last collection reports once more.
"""

from __future__ import annotations

import logging
import math
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from opentelemetry.sdk.resources import Resource
from prometheus_client.registry import Collector

from qt_telemetry import semconv
from qt_telemetry._config import Settings
from qt_telemetry._engine.exporter import otlp, rules
from qt_telemetry._engine.exporter.aggregate import (
    Aggregates,
    Labels,
    MetricData,
    Number,
    ObservedSums,
    gauge_points,
)
from qt_telemetry._engine.exporter.exemplars import ALWAYS_ON, TRACE_BASED, Exemplar
from qt_telemetry._engine.exporter.spanqueue import FairQueue
from qt_telemetry._engine.transport import records as R
from qt_telemetry._redaction import Redactor
from qt_telemetry._values import MAX_STRING, current_number
from qt_telemetry._version import __version__

_log = logging.getLogger("qt_telemetry")
_pack_d = struct.Struct("<d").pack
_finite = math.isfinite
#: What this path exports as: the scope of our spans and of every metric (the SDK path's ``convert.SCOPE``).
SCOPE_NAME: Final = "qt_telemetry"
_SCOPE: Final = otlp.scope(SCOPE_NAME, __version__)
_OUR_SCOPE: Final = ((SCOPE_NAME, __version__, ""), _SCOPE, "")
_NATIVE: Final = frozenset({semconv.ORDER_LATENCY.name, semconv.STAGE_DURATION.name})
_GAUGES: Final = tuple(spec for spec in semconv.METRICS.values() if spec.kind == "gauge")
#: Observable counters and up-down counters (runtime metrics): read from the producer's board like gauges.
_OBSERVED: Final = tuple(spec for spec in semconv.METRICS.values() if spec.observed and spec.kind != "gauge")
#: Encoded attribute values cached per key (a key past it starts over: high-cardinality ids churn, venues stay)
#: and in total; strings longer than the trading side keeps are encoded each time (linear scrubbing, and once per
#: object within a batch).
_CACHE_PER_KEY: Final = 1024
_CACHE_BYTES: Final = 16 << 20
_MAX_QUEUE_BYTES: Final = 64 << 20
_SMALL_CACHE: Final = 4096
_KEEP_FIELD: Final = otlp.field(b"\x4a", otlp.key_value(semconv.SAMPLING_KEEP, True))
_KEEP_CLEAN: Final = (_KEEP_FIELD, otlp.key_value(semconv.SAMPLING_KEEP, True), True)
_POINT_TAGS: Final = {"sum": b"\x3a", "updown": b"\x3a", "gauge": b"\x3a", "histogram": b"\x4a", "exponential": b"\x0a"}

_Entry = tuple[bytes, bytes, Any]  # (Span.attributes field, KeyValue, exported value)
#: (exported key or None, error, KeyValue.key field, encoded values by string value, float KeyValue prefix,
#: float Span.attributes field prefix)
_Key = tuple[str | None, str | None, bytes, dict[str, _Entry], bytes, bytes]
_Scope = tuple[tuple[str, str | None, str], bytes, str]  # (grouping key, InstrumentationScope, schema_url)


class LeanProducer:
    """One trading process as the lean path knows it: resource, labels, gauge board, metrics, drops."""

    def __init__(self, converter: LeanConverter, pid: int, instance_id: str, resource: Resource) -> None:
        self.converter = converter
        self.pid = pid
        self.instance_id = instance_id
        self.resource = resource
        self.resource_message = otlp.resource(resource.attributes.items())
        self.group = (self.resource_message, resource.schema_url)
        self.last_seen = time.time()
        self.goodbye = False
        self.retired = False
        self.forgotten = False
        self.labels = rules.LabelGuard(converter.settings.max_label_values, self._label_overflow)
        self.label_cache: dict[str, dict[str, str]] = {}
        #: metric -> the raw values of its attributes (strings or None) -> the label set, once every value is known
        self.label_sets: dict[str, dict[tuple[Any, ...], Labels]] = {}
        self.gauges: dict[str, dict[tuple[tuple[str, Any], ...], Any]] = {}
        self.dropped: dict[str, int] = {}
        self.metrics = Aggregates(delta=converter.delta, native=converter.native)
        self.observed = ObservedSums(delta=converter.settings.metrics_temporality == "delta")
        #: The time of the batch or collection in progress (a count made during a collection belongs to it).
        self.now_ns: int | None = None

    # --- metrics ---------------------------------------------------------------------------------------
    def measure(self, spec: semconv.MetricSpec, value: Any, attributes: Mapping[str, Any],
                span: tuple[bytes, bytes, bool] | None, now_ns: int) -> None:
        """``span``: (trace id, span id, whether the trace-based filter offers it) of the span it comes from."""
        number, problem = rules.measurement(spec, value)
        if problem is not None:
            self.error(problem)
        if number is not None:
            labels = self.label_set(spec, attributes)
            self.metrics.record(spec, number, labels, self.converter.exemplar(number, span, now_ns), now_ns)

    def preaggregated(self, spec: semconv.MetricSpec, attributes: Mapping[str, Any], values: Sequence[Any],
                      now_ns: int) -> None:
        labels: Labels | None = None
        for value in values:
            number, problem = rules.measurement(spec, value)
            if problem is not None:
                self.error(problem)
            if number is not None:
                if labels is None:
                    labels = self.label_set(spec, attributes)
                self.metrics.record(spec, number, labels, self.converter.exemplar(number, None, now_ns), now_ns)

    def label_set(self, spec: semconv.MetricSpec, attributes: Mapping[str, Any]) -> Labels:
        """:func:`rules.label_set` as a tuple; a label set of admitted strings is one lookup."""
        raws = tuple(map(attributes.get, spec.attributes))
        sets = self.label_sets.get(spec.name)
        if sets is None:
            sets = self.label_sets[spec.name] = {}
        try:
            known = sets.get(raws)
        except TypeError:  # an unhashable value
            return self._label_set(spec, attributes)
        if known is not None:
            return known
        labels = self._label_set(spec, attributes)
        cache = self.label_cache
        if all(raw is None or (raw.__class__ is str and cache.get(key, {}).get(raw) == label)
               for raw, (key, label) in zip(raws, _with_missing(spec, labels), strict=True)):
            if len(sets) >= _CACHE_PER_KEY:
                sets.clear()
            sets[raws] = labels
        return labels

    def _label_set(self, spec: semconv.MetricSpec, attributes: Mapping[str, Any]) -> Labels:
        out = []
        for key in spec.attributes:
            raw = attributes.get(key)
            if raw is None:
                if key not in spec.optional:
                    out.append((key, semconv.UNKNOWN_VALUE))
                continue
            cache = self.label_cache.get(key)
            label = cache.get(raw) if cache is not None and raw.__class__ is str else None
            if label is None:
                text = rules.label_text(raw, self.converter.text)
                label = self.labels.value(key, text)
                if raw.__class__ is str and label == text and self.labels.known(key, text):
                    self.label_cache.setdefault(key, {})[raw] = label
            out.append((key, label))
        return tuple(out)

    def error(self, kind: str) -> None:
        now = self.now_ns or time.time_ns()
        self.metrics.record(semconv.TELEMETRY_ERRORS, 1, ((semconv.TELEMETRY_ERROR_KIND, kind),),
                            self.converter.exemplar(1, None, now), now)

    def drop(self, signal: str, reason: str, count: int) -> None:
        """``count`` items of ``signal`` lost for ``reason``: ``qt.telemetry.dropped``."""
        if count > 0:
            with self.converter.lock:
                now = self.now_ns or time.time_ns()
                labels = ((semconv.TELEMETRY_SIGNAL, signal), (semconv.TELEMETRY_REASON, reason))
                self.metrics.record(semconv.TELEMETRY_DROPPED, count, labels,
                                    self.converter.exemplar(count, None, now), now)

    def producer_drops(self, totals: Mapping[str, int]) -> None:
        """The trading process's cumulative drop totals (:func:`rules.new_drops`)."""
        with self.converter.lock:
            for signal, reason, count in rules.new_drops(self.dropped, totals):
                self.drop(signal, reason, count)

    def _label_overflow(self, key: str) -> None:
        self.error("label_overflow")

    # --- gauges ----------------------------------------------------------------------------------------
    def set_gauge(self, name: str, attributes: Mapping[str, Any], value: Any) -> None:
        rules.set_gauge(self.gauges, name, attributes, value)

    def observe(self, spec: semconv.MetricSpec) -> list[tuple[Labels, float]]:
        """The gauge's values now, labelled (what the SDK path's observable-gauge callback yields)."""
        if spec is semconv.HEARTBEAT:
            return [((), self.last_seen)]
        out = []
        for key, value in list(self.gauges.get(spec.name, {}).items()):
            number, problem = current_number(value)
            if number is None:
                self.error(problem or "gauge_bad_value")
                continue
            out.append((self.label_set(spec, dict(key)), number))
        return out

    def collect(self, now_ns: int, exemplars: bool) -> list[MetricData]:
        """Gauges first (observing them may count errors, which this collection then reports), then the rest."""
        self.now_ns = now_ns
        try:
            gauges = [gauge_points(spec, self.observe(spec), now_ns, exemplars) for spec in _GAUGES]
            observed = [self.observed.points(spec, self.observe(spec), now_ns, exemplars) for spec in _OBSERVED]
        finally:
            self.now_ns = None
        return [*self.metrics.collect(now_ns), *(g for g in (*gauges, *observed) if g is not None)]


class LeanConverter:
    """Records of every producing process -> queued span bytes and aggregated metrics (see the module docstring)."""

    def __init__(self, settings: Settings, *, base_resource: Resource) -> None:
        self.settings = settings
        self.base_resource = base_resource
        self.redactor = Redactor(settings.secret_keys, settings.secret_patterns, settings.secret_values)
        self.rules = rules.SpanRules(settings.slow_order_seconds, settings.trace_keep_ratio)
        self.delta = settings.metrics_temporality in ("delta", "lowmemory")
        self.native = _NATIVE if settings.native_histograms else frozenset()
        self.producers: dict[int, LeanProducer] = {}
        #: Held by every method; reentrant, so a loop may also hold it around several calls (as it does the SDK
        #: converter's).
        self.lock = threading.RLock()
        self._filter = settings.exemplar_filter
        self._retired: list[LeanProducer] = []
        self._queue: FairQueue[LeanProducer, tuple[_Scope, bytes]] = FairQueue(settings.batch.max_queue_size,
                                                                              _MAX_QUEUE_BYTES)
        #: Raw attribute key -> (exported key or None, error, encoded key field, encoded values by string value).
        self._keys: dict[Any, _Key] = {}
        self._fills: dict[str, int] = {}
        self._ids: set[str] = set()
        self._cached_bytes = 0
        self._long: dict[int, tuple[str, str]] = {}
        self._names: dict[str, bytes] = {}
        self._states: dict[str, str] = {}
        self._scopes: dict[tuple[str, str | None, str | None], _Scope] = {}

    # --- producers --------------------------------------------------------------------------------------
    def producer(self, pid: int, instance_id: str) -> LeanProducer:
        """The producer for a datagram header: the known one, or a new one (retiring a gone process's pid)."""
        with self.lock:
            state = self.producers.get(pid)
            if state is not None and state.instance_id == instance_id:
                return state
            if state is not None:
                self._retire(state)
            resource = self.base_resource.merge(Resource({"service.instance.id": instance_id, "process.pid": pid}))
            state = self.producers[pid] = LeanProducer(self, pid, instance_id, resource)
            return state

    def retire(self, producer: LeanProducer) -> None:
        """The process is gone: its last points go out at the next collection, then it is forgotten."""
        with self.lock:
            self._retire(producer)

    def _retire(self, producer: LeanProducer) -> None:
        if self.producers.get(producer.pid) is producer:
            del self.producers[producer.pid]
        if not producer.retired or producer.forgotten:
            producer.retired, producer.forgotten = True, False
            self._retired.append(producer)

    # --- records ----------------------------------------------------------------------------------------
    def accept(self, producer: LeanProducer, records: Sequence[tuple[Any, ...]]) -> None:
        """Convert a batch of records of ``producer``. Never raises: a record that fails counts
        ``qt.telemetry.errors{kind=record_failed}`` and costs itself only."""
        with self.lock:
            now = producer.now_ns = time.time_ns()
            try:
                for record in records:
                    try:
                        kind = record[0]
                        if kind == R.SPAN:
                            self._span(producer, record, now)
                        elif kind == R.METRICS:
                            ops, attributes = rules.metrics_record(record)
                            for spec, value in ops:
                                producer.measure(spec, value, attributes, None, now)
                        elif kind == R.GAUGE:
                            rules.check_gauge(record)
                            producer.set_gauge(record[1], record[2], record[3])
                        elif kind == R.CONTROL:
                            self._control(producer, record[1], record[2])
                        elif kind == R.PREAGG:
                            producer.preaggregated(*rules.preagg_record(record), now)
                    except Exception as exc:  # noqa: BLE001 - one bad record must not stop the others
                        producer.error("record_failed")
                        _log.debug("qt-telemetry could not convert a record: %r", exc)
            except Exception as exc:  # noqa: BLE001 - not even a sequence of records
                producer.error("record_failed")
                _log.debug("qt-telemetry could not read a batch: %r", exc)
            finally:
                self._long.clear()
                producer.now_ns = None

    def _control(self, producer: LeanProducer, operation: Any, payload: Any) -> None:
        if operation == R.OP_SECRETS:
            self.redactor.add_values(payload)
            self._forget_encodings()
        elif operation == R.OP_GOODBYE:
            producer.goodbye = True

    def _forget_encodings(self) -> None:
        """New secret values: every cached text may hold one."""
        for known in self._keys.values():
            known[3].clear()
        self._cached_bytes = 0
        self._fills.clear()
        self._ids.clear()
        for producer in (*self.producers.values(), *self._retired):
            producer.label_cache.clear()
            producer.label_sets.clear()

    def exemplar(self, value: Number, span: tuple[bytes, bytes, bool] | None, now_ns: int) -> Exemplar | None:
        """The exemplar a measurement offers its reservoir, per the filter (or None)."""
        if span is None:
            return Exemplar(value, now_ns, None, None) if self._filter == ALWAYS_ON else None
        if self._filter == ALWAYS_ON or (self._filter == TRACE_BASED and span[2]):
            return Exemplar(value, now_ns, span[0], span[1])
        return None

    def _span(self, producer: LeanProducer, record: tuple[Any, ...], now: int) -> None:
        """The SDK path's ``Converter.span``, step for step, into bytes."""
        rules.check_span(record)
        (_, raw_name, kind, trace_id, span_id, parent_id, remote, sampled, start, end, code, message, raw_attributes,
         raw_events, raw_links, state, raw_scope) = record[:17]
        name = self._name(raw_name)
        fields, attributes = self._attributes(producer, raw_attributes, False)
        if raw_scope is None:  # ours: the keep mark, the metrics it yields
            keep = self.rules.keep(name, attributes.get(semconv.OUTCOME), record)
            if keep:
                self._put(fields, attributes, semconv.SAMPLING_KEEP, _KEEP_CLEAN)
            if name in semconv.SPAN_METRICS:
                span = (trace_id, span_id, sampled and keep)
                for spec, value, labelled in rules.span_measurements(name, attributes, end - start):
                    producer.measure(spec, value, labelled, span, now)
        if not sampled:
            return
        status = otlp.STATUS[code] if message is None else otlp.status(code, rules.status_message(code, message,
                                                                                                    self.text))
        events = [otlp.event(timestamp, rules.utf8(event_name), self._attributes(producer, event_attributes, True)[0])
                  for event_name, timestamp, event_attributes in raw_events] if raw_events else ()
        if not self._queue.admits(producer):
            producer.drop("spans", "queue_full", 1)
            return
        links = [otlp.link(t, s) for t, s in raw_links] if raw_links else ()
        encoded = otlp.field(b"\x12", otlp.span(
            trace_id, span_id, self._trace_state(state), parent_id, self._names[name], kind, start, end, fields,
            events, links, status, parent_id is not None and remote))
        shed = self._queue.put(producer, (_OUR_SCOPE if raw_scope is None else self._scope(raw_scope), encoded),
                               len(encoded))
        if shed is not None:
            shed.drop("spans", "queue_full", 1)

    # --- attributes -------------------------------------------------------------------------------------
    def text(self, value: str) -> str:
        """Free text as exported (redacted, encodable); a string longer than the redactor caches is scrubbed once
        per object within a batch."""
        if len(value) <= MAX_STRING:
            return rules.utf8(self.redactor.text(value))
        known = self._long.get(id(value))
        if known is None or known[0] is not value:
            known = self._long[id(value)] = (value, rules.utf8(self.redactor.text(value)))
        return known[1]

    def _attributes(self, producer: LeanProducer, raw: Mapping[str, Any] | None,
                    event: bool) -> tuple[list[bytes], dict[str, Any]]:
        """(encoded attribute fields, exported values by key): :meth:`Converter.attributes`, as bytes. The hot
        path: a string seen before is one dict lookup; a float is packed in place."""
        fields: list[bytes] = []
        exported: dict[str, Any] = {}
        if not raw:
            return fields, exported
        keys = self._keys
        for key, value in raw.items():
            known = keys.get(key)
            if known is None:
                known = self._key(key)
            name = known[0]
            if name is None:
                producer.error(known[1] or "bad_attribute")
                continue
            cls = value.__class__
            entry: _Entry | None
            if cls is str:
                entry = known[3].get(value)
                if entry is None:
                    entry = self._encode_text(known, value)
            elif cls is float and _finite(value):
                kv = known[4] + _pack_d(value)
                entry = (known[5] + kv, kv, value)
            else:
                entry = self._encode(producer, known, value)
            if entry is None:
                continue
            if name in exported:
                self._put(fields, exported, name, entry, event)
                continue
            fields.append(otlp.field(b"\x1a", entry[1]) if event else entry[0])
            exported[name] = entry[2]
        return fields, exported

    def _encode_text(self, known: _Key, value: str) -> _Entry:
        """A string attribute (:func:`rules.attribute_value` of a string: its text as exported), remembered unless
        its key has proved to hold ids (a new value each time)."""
        ids = known[0] in self._ids
        clean = rules.utf8(self.redactor.scrub(value)) if ids and len(value) <= MAX_STRING else self.text(value)
        kv = known[2] + otlp.field(b"\x12", otlp.field(b"\x0a", clean.encode("utf-8")))
        entry = (otlp.field(b"\x4a", kv), kv, clean)
        if len(value) <= MAX_STRING and not ids:
            self._remember(known, value, entry)
        return entry

    def _encode(self, producer: LeanProducer, known: _Key, value: Any) -> _Entry | None:
        """An attribute as exported (:func:`rules.attribute_value`), or None when it is left out (and counted if
        it is bad); a string short enough is remembered."""
        clean, problem = rules.attribute_value(value, self.text)
        if problem is not None:
            producer.error(problem)
            return None
        if clean is None:
            return None
        kv = known[2] + otlp.field(b"\x12", otlp.any_value(clean))
        entry = (otlp.field(b"\x4a", kv), kv, clean)
        if value.__class__ is str and len(value) <= MAX_STRING and known[0] not in self._ids:
            self._remember(known, value, entry)
        return entry

    def _put(self, fields: list[bytes], exported: dict[str, Any], name: str, entry: _Entry,
             event: bool = False) -> None:
        """Set attribute ``name`` as a dict does: a key already there keeps its place and takes the new value."""
        field = otlp.field(b"\x1a", entry[1]) if event else entry[0]
        if name in exported:
            fields[list(exported).index(name)] = field
        else:
            fields.append(field)
        exported[name] = entry[2]

    def _key(self, key: Any) -> _Key:
        name, problem = rules.attribute_key(self.redactor, key)
        key_field = otlp.field(b"\x0a", name.encode("utf-8")) if name is not None else b""
        float_kv = key_field + b"\x12\x09\x21"  # value: AnyValue{double_value}, 9 bytes
        known: _Key = (name, problem, key_field, {}, float_kv, b"\x4a" + otlp.varint(len(float_kv) + 8))
        if len(self._keys) >= _SMALL_CACHE:
            self._keys.clear()
        self._keys[key] = known
        return known

    def _remember(self, known: _Key, value: str, entry: _Entry) -> None:
        """Cache an encoded value: at most ``_CACHE_PER_KEY`` per key and ``_CACHE_BYTES`` in all (past either,
        that cache starts over). A key whose cache filled up three times holds ids, not labels: not cached again
        (until new secret values clear every cache)."""
        by_value = known[3]
        if len(by_value) >= _CACHE_PER_KEY:
            by_value.clear()
            name = known[0] or ""
            self._fills[name] = self._fills.get(name, 0) + 1
            if self._fills[name] >= 3:
                self._ids.add(name)
                return
        if self._cached_bytes >= _CACHE_BYTES:
            for other in self._keys.values():
                other[3].clear()
            self._cached_bytes = 0
        by_value[value] = entry
        self._cached_bytes += len(entry[0]) + len(value)

    def _name(self, raw: str) -> str:
        name = rules.utf8(raw)
        if name not in self._names:
            if len(self._names) >= _SMALL_CACHE:
                self._names.clear()
            self._names[name] = name.encode("utf-8")
        return name

    def _trace_state(self, header: str | None) -> str:
        if not header:
            return ""
        text = self._states.get(header)
        if text is None:
            if len(self._states) >= _SMALL_CACHE:
                self._states.clear()
            text = self._states[header] = rules.trace_state_text(header)
        return text

    def _scope(self, raw: Any) -> _Scope:
        key = rules.scope_key(raw)
        if key is None:
            return _OUR_SCOPE
        known = self._scopes.get(key)
        if known is None:
            name, version, schema_url = key
            if len(self._scopes) >= _SMALL_CACHE:
                self._scopes.clear()
            known = self._scopes[key] = ((name, version, schema_url or ""), otlp.scope(name, version),
                                         schema_url or "")
        return known

    # --- spans out --------------------------------------------------------------------------------------
    def queued_spans(self) -> int:
        """Spans waiting for :meth:`take_spans` (send a request once a batch is full or the delay is up)."""
        return len(self._queue)

    def take_spans(self, max_spans: int) -> tuple[bytes, dict[LeanProducer, int]] | None:
        """One ExportTraceServiceRequest of up to ``max_spans`` queued spans, oldest first, grouped by resource
        (one per producing process) and instrumentation scope as ``encode_spans`` groups them; None when none."""
        with self.lock:
            count = min(max_spans, len(self._queue))
            if count <= 0:
                return None
            groups: dict[tuple[bytes, str | None], dict[tuple[str, str | None, str], tuple[_Scope, list[bytes]]]]
            groups = {}
            counts: dict[LeanProducer, int] = {}
            for producer, (scope, encoded) in self._queue.take(count):
                counts[producer] = counts.get(producer, 0) + 1
                scopes = groups.get(producer.group)
                if scopes is None:
                    scopes = groups[producer.group] = {}
                entry = scopes.get(scope[0])
                if entry is None:
                    entry = scopes[scope[0]] = (scope, [])
                entry[1].append(encoded)
            request = b"".join(
                otlp.resource_spans(resource, [otlp.scope_spans(scope[1], spans, scope[2])
                                               for scope, spans in scopes.values()], schema_url)
                for (resource, schema_url), scopes in groups.items())
            return request, counts

    def span_drop(self, count_by_producer: Mapping[LeanProducer, int], reason: str) -> None:
        """Spans taken but not delivered: ``qt.telemetry.dropped{signal=spans,reason}`` of their producers (one
        already forgotten reports once more)."""
        with self.lock:
            for producer, count in count_by_producer.items():
                producer.drop("spans", reason, count)
                if producer.forgotten:
                    self._retire(producer)

    # --- metrics out ------------------------------------------------------------------------------------
    def collect_metrics(self, now_ns: int) -> bytes | None:
        """One ExportMetricsServiceRequest: a ResourceMetrics per producer (retired ones for the last time)."""
        out = []
        for producer, data in self.metric_data(now_ns):
            fields = [_metric(m) for m in data]
            if fields:
                out.append(otlp.resource_metrics(producer.resource_message, _SCOPE, fields,
                                                 producer.resource.schema_url))
        return b"".join(out) or None

    def metric_data(self, now_ns: int) -> list[tuple[LeanProducer, list[MetricData]]]:
        """One collection of every producer's metrics (retired producers for the last time)."""
        with self.lock:
            exemplars = self._filter == ALWAYS_ON
            out = [(p, p.collect(now_ns, exemplars)) for p in (*self.producers.values(), *self._retired)]
            for producer in self._retired:
                producer.forgotten = True
            self._retired = []
            return out

    def prometheus_collector(self) -> Collector:
        """A ``prometheus_client`` collector of every producer's metrics for local mode's ``/metrics``. Prometheus
        reads cumulative totals: from here on, every collection is cumulative."""
        from qt_telemetry._engine.exporter.prometheus import LeanCollector

        with self.lock:
            self.delta = False
            for producer in (*self.producers.values(), *self._retired):
                producer.metrics.delta = False
        return LeanCollector(self)


def _with_missing(spec: semconv.MetricSpec, labels: Labels) -> list[tuple[str, str]]:
    """``labels`` with an entry for each of the spec's keys (an optional key left out as ``(key, "")``)."""
    present = dict(labels)
    return [(key, present.get(key, "")) for key in spec.attributes]


def _metric(data: MetricData) -> bytes:
    spec, tag = data.spec, _POINT_TAGS[data.kind]
    points = [_point(data.kind, otlp.attributes(tag, labels), point, spec.buckets or ())
              for labels, point in data.points]
    temporality = otlp.DELTA if data.delta else otlp.CUMULATIVE
    return otlp.metric(spec.name, spec.description, spec.unit, data.kind, points, temporality)


def _point(kind: str, attributes: bytes, point: Any, bounds: Sequence[float]) -> bytes:
    exemplars = [otlp.exemplar(e.time_ns, e.value, e.trace_id, e.span_id) for e in point.exemplars]
    if kind in ("sum", "updown", "gauge"):
        return otlp.number_point(attributes, point.start_ns, point.time_ns, point.value, exemplars)
    if kind == "histogram":
        return otlp.histogram_point(attributes, point.start_ns, point.time_ns, point.samples, point.total,
                                    point.counts, bounds, exemplars, point.low, point.high)
    return otlp.exponential_point(attributes, point.start_ns, point.time_ns, point.samples, point.total, point.scale,
                                  point.zero_count, point.positive, point.negative, exemplars, point.low, point.high)
