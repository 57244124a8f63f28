"""The lean exporter path against the SDK path, over the same records: byte-identical span requests and
point-identical metrics.

The SDK path is what the inline and sdk engines and the test kit keep: :class:`Converter` into SDK
``ReadableSpan``s encoded by the official ``encode_spans(...).SerializeToString()``, and one SDK ``MeterProvider``
per producing process read by an ``InMemoryMetricReader`` (encoded by the official ``encode_metrics``). The lean
path is :class:`LeanConverter`. Hypothesis generates the records: our spans and other instrumentation's (foreign
scopes), events, links, trace states, remote parents, errors, secrets in names and values, hostile strings (lone
surrogates, control characters, huge, unicode), malformed records, gauges, PREAGG, several producing processes
(a pid reused by a new process), retirements, queue overflow and failed deliveries, under every exemplar filter,
temporality and histogram kind. Metrics are compared point by point (series, counts, sums, min/max, buckets,
scale, exemplars with their trace/span ids and filtered attributes); timestamps differ between the paths (each reads
its own clock), so they are checked for order only. Where the SDK samples at random (the fixed-size exemplar
reservoir), both sides draw from the same deterministic function of the same arguments.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics._internal.exemplar import exemplar_reservoir
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan

from qt_telemetry import _config, semconv
from qt_telemetry._engine.exporter import lean as lean_module
from qt_telemetry._engine.exporter.convert import Converter, ProducerState
from qt_telemetry._engine.exporter.lean import LeanConverter, LeanProducer
from qt_telemetry._engine.exporter.pipeline import exemplar_filter, temporality, views
from qt_telemetry._engine.exporter.rules import KEEP_EVENTS
from qt_telemetry._engine.exporter.spanqueue import FairQueue
from qt_telemetry._engine.transport import records as R
from qt_telemetry._redaction import Redactor

BASE = Resource.create({"service.name": "diff-bot", "deployment.environment.name": "test"})
LAST_SEEN = 1_700_000_000.25


def fixed_randrange(start: int, stop: int) -> int:
    """What both reservoirs draw instead of ``random.randrange``: a function of its arguments only (so of the
    series' own count of measurements), which keeps every third offer and some others."""
    return start if stop % 3 == 0 else (stop * 7) % stop if stop % 5 else stop - 1


@pytest.fixture(autouse=True)
def _deterministic_reservoirs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(exemplar_reservoir, "randrange", fixed_randrange)
    for module in _lean_modules():
        if hasattr(module, "randrange"):
            monkeypatch.setattr(module, "randrange", fixed_randrange)
    yield


def _lean_modules() -> list[Any]:
    import importlib

    out = [lean_module]
    for name in ("aggregate", "exponential", "exemplars"):
        try:
            out.append(importlib.import_module(f"qt_telemetry._engine.exporter.{name}"))
        except ImportError:
            pass
    return out


# --- the two paths, driven the way the exporter process drives them ------------------------------------------

class SdkPath:
    """Converter + ReadableSpan + encode_spans; a MeterProvider and InMemoryMetricReader per producer."""

    def __init__(self, s: _config.Settings) -> None:
        self.settings = s
        self.queue: FairQueue[ProducerState, ReadableSpan] = FairQueue(s.batch.max_queue_size)
        #: By the resource's id: a process that comes back after retiring has an equal resource, not the same.
        self.readers: dict[int, tuple[MeterProvider, InMemoryMetricReader]] = {}
        self.retired: list[ProducerState] = []
        self.restarted: set[Any] = set()
        self.converter = Converter(
            redactor=Redactor(s.secret_keys, s.secret_patterns, s.secret_values), max_label_values=s.max_label_values,
            slow_order_seconds=s.slow_order_seconds, trace_keep_ratio=s.trace_keep_ratio, base_resource=BASE,
            meters=self._meters, spans=self._queue_span, remote=True,
            spans_full=lambda producer: not self.queue.admits(producer))

    def _queue_span(self, producer: ProducerState, span: ReadableSpan) -> None:
        shed = self.queue.put(producer, span)
        if shed is not None:
            shed.drop("spans", "queue_full", 1)

    def _meters(self, resource: Resource) -> MeterProvider:
        reader = InMemoryMetricReader(preferred_temporality=temporality(self.settings))
        provider = MeterProvider(metric_readers=[reader], resource=resource, views=views(self.settings),
                                 exemplar_filter=exemplar_filter(self.settings), shutdown_on_exit=False)
        self.readers[id(resource)] = (provider, reader)
        return provider

    def producer(self, pid: int, instance_id: str) -> ProducerState:
        old = self.converter.producers.get(pid)
        state = self.converter.producer(pid, instance_id)
        if old is not None and old is not state:
            self.retire(old)  # a new process with the pid of a gone one: the gone one is retired
            state.last_seen = LAST_SEEN
        elif old is None:
            state.last_seen = LAST_SEEN
        return state

    def accept(self, state: ProducerState, records: list[tuple[Any, ...]]) -> None:
        self.converter.accept(state, records)
        state.last_seen = LAST_SEEN
        if state.goodbye:
            self.retire(state)

    def retire(self, state: ProducerState) -> None:
        if self.converter.producers.get(state.pid) is state:
            self.converter.producers.pop(state.pid)
        self.retired.append(state)
        self.restarted.add(tuple(state.resource.attributes.items()))

    def take(self, max_spans: int) -> tuple[bytes, int] | None:
        batch = [span for _, span in self.queue.take(max_spans)]
        return (encode_spans(batch).SerializeToString(), len(batch)) if batch else None

    def span_drop(self, counts: Mapping[ProducerState, int], reason: str) -> None:
        for state, count in counts.items():
            state.drop("spans", reason, count)

    def collect(self) -> ExportMetricsServiceRequest:
        out = ExportMetricsServiceRequest()
        states = [*self.converter.producers.values(), *self.retired]
        for state in states:
            entry = self.readers.get(id(state.resource))
            data = entry[1].get_metrics_data() if entry is not None else None
            if data is not None:
                out.resource_metrics.extend(encode_metrics(data).resource_metrics)
        for state in self.retired:
            entry = self.readers.pop(id(state.resource), None)
            self.converter.forget(state, entry[0] if entry else None)
        self.retired = []
        return out


class LeanPath:
    def __init__(self, s: _config.Settings) -> None:
        self.converter = LeanConverter(s, base_resource=BASE)

    def producer(self, pid: int, instance_id: str) -> LeanProducer:
        known = self.converter.producers.get(pid)
        state = self.converter.producer(pid, instance_id)
        if state is not known:
            state.last_seen = LAST_SEEN
        return state

    def accept(self, producer: LeanProducer, records: list[tuple[Any, ...]]) -> None:
        self.converter.accept(producer, records)
        producer.last_seen = LAST_SEEN
        if producer.goodbye:
            self.converter.retire(producer)

    def take(self, max_spans: int) -> tuple[bytes, int] | None:
        taken = self.converter.take_spans(max_spans)
        return None if taken is None else (taken[0], sum(taken[1].values()))

    def span_drop(self, counts: Mapping[LeanProducer, int], reason: str) -> None:
        self.converter.span_drop(counts, reason)

    def collect(self, now_ns: int) -> ExportMetricsServiceRequest:
        out = ExportMetricsServiceRequest()
        data = self.converter.collect_metrics(now_ns)
        if data is not None:
            out.ParseFromString(data)
        return out


# --- metrics, point by point -------------------------------------------------------------------------------

def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    return getattr(value, which) if which else None


def _attrs(items: Sequence[KeyValue]) -> tuple[tuple[str, Any], ...]:
    return tuple((kv.key, _value(kv.value)) for kv in items)


def _exemplars(point: Any) -> list[tuple[Any, ...]]:
    out = []
    for e in point.exemplars:
        assert e.time_unix_nano <= point.time_unix_nano, "an exemplar after its point"
        out.append((e.WhichOneof("value"), e.as_double, e.trace_id, e.span_id, _attrs(e.filtered_attributes)))
    return out


def _point(kind: str, p: Any) -> tuple[Any, ...]:
    assert p.time_unix_nano > 0
    if kind != "gauge":
        assert 0 < p.start_time_unix_nano <= p.time_unix_nano, "start after time"
    if kind in ("gauge", "sum"):
        return (p.WhichOneof("value"), p.as_double, _exemplars(p))
    if kind == "histogram":
        return (p.count, p.sum, tuple(p.bucket_counts), tuple(p.explicit_bounds), p.HasField("min"), p.min,
                p.HasField("max"), p.max, _exemplars(p))
    return (p.count, p.sum, p.scale, p.zero_count, p.positive.offset, tuple(p.positive.bucket_counts),
            p.negative.offset, tuple(p.negative.bucket_counts), p.min, p.max, p.flags, _exemplars(p))


class Clock:
    """What a path's timestamps must say across its collections (they differ between the paths, their relations
    do not): a cumulative series keeps its start; a delta point starts at its producer's previous collection or
    later; every point is newer than its producer's previous collection."""

    def __init__(self) -> None:
        self.starts: dict[Any, int] = {}
        self.previous: dict[Any, int] = {}

    def check(self, request: ExportMetricsServiceRequest, restarted: set[Any]) -> None:
        """``restarted``: resources of processes retired so far (one may come back, its series starting anew)."""
        latest: dict[Any, int] = {}
        for rm in request.resource_metrics:
            resource = _attrs(rm.resource.attributes)
            previous = 0 if resource in restarted else self.previous.get(resource, 0)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    if kind == "gauge":
                        continue
                    data = getattr(m, kind)
                    for p in data.data_points:
                        latest[resource] = max(latest.get(resource, 0), p.time_unix_nano)
                        assert p.time_unix_nano > previous, "a point not newer than the previous collection"
                        if data.aggregation_temporality == 1:
                            assert p.start_time_unix_nano >= previous, "a delta point from before"
                        elif resource not in restarted:
                            key = (resource, m.name, _attrs(p.attributes))
                            assert self.starts.setdefault(key, p.start_time_unix_nano) == p.start_time_unix_nano
        self.previous.update(latest)


def canonical(request: ExportMetricsServiceRequest) -> list[Any]:
    """Every ResourceMetrics as a comparable value (metrics by name, points by attributes), sorted."""
    out = []
    for rm in request.resource_metrics:
        scopes = []
        for sm in rm.scope_metrics:
            metrics = {}
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                data = getattr(m, kind)
                points = {_attrs(p.attributes): _point(kind, p) for p in data.data_points}
                assert len(points) == len(data.data_points), f"{m.name}: two points with one label set"
                extra = (data.aggregation_temporality, getattr(data, "is_monotonic", None)) if kind != "gauge" else ()
                metrics[m.name] = (m.description, m.unit, kind, extra, sorted(points.items(), key=repr))
            scopes.append((sm.scope.name, sm.scope.version, sm.schema_url, sorted(metrics.items())))
        out.append((_attrs(rm.resource.attributes), rm.schema_url, sorted(scopes, key=repr)))
    return sorted(out, key=repr)


def _order(i: int, outcome: str = "ok", duration_ns: int = 4_000_000, venue: str | None = None) -> tuple[Any, ...]:
    start = 1_700_000_000_000_000_000 + i * 10_000_000
    return (R.SPAN, semconv.SPAN_ORDER, 2, (i + 1).to_bytes(16, "big"), (i + 7).to_bytes(8, "big"),
            (i + 9).to_bytes(8, "big"), False, True, start, start + duration_ns, 2 if outcome == "error" else 0,
            "TimeoutError: venue slow" if outcome == "error" else None,
            {"code.function.name": "place_order", "venue": ("binance", "kraken")[i % 2], "outcome": outcome,
             "symbol": "BTCUSDT", "side": ("buy", "sell")[i % 2], "order.quantity": 0.5, "order.type": "limit",
             "order.price": 100.0 + i, "order.client_order_id": f"c-{i}", "strategy": "momentum",
             "peer.service": "binance", "order.id": str(100000 + i),
             semconv.LATENCY_TICK_TO_TRADE_S: duration_ns / 7e9 * (i % 5), semconv.LATENCY_ORDER_TO_ACK_S: i % 3 / 50},
            None, None, None, None)


# --- records ---------------------------------------------------------------------------------------------

SECRET_VALUE = "sv-3141592653"
#: Two keys that differ only in a lone surrogate: one key once made encodable.
LONE_A, LONE_B = chr(0xDC80) + "k", chr(0xDC81) + "k"
HOSTILE = [
    "", " ", "\udc80", "a\udcff\ud800b", "\x00\x01\x7f", "\u202e\u200b", "é" * 3, "\U0001F680", "x" * 700,
    "password=hunter22", "Authorization: Bearer abcdefgh1234", "https://user:PASS@host/x",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "AKIAABCDEFGHIJKLMNOP", "k" * 40 + "9",
    f"key {SECRET_VALUE} leaked", "rejected", "error", "ok", "binance", "BTCUSDT",
]
texts = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=12))
KEYS = sorted(semconv.METRIC_ATTRIBUTE_KEYS | {
    semconv.ORDER_PRICE, semconv.ORDER_CLIENT_ID, semconv.SLIPPAGE_BPS, semconv.FILL_LATENCY_S,
    semconv.SAMPLING_KEEP, "api_key", "secretKey", "auth.token", LONE_A, LONE_B, "note", "",
    *semconv.SEGMENTS.values()})
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=6), st.integers(0, 3))
scalars = st.one_of(texts, st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
                    st.integers(-(2**70), 2**70), st.integers(-3, 3), st.binary(max_size=3))
values = st.one_of(
    scalars, st.sampled_from(["ok", "error", "rejected", "binance", "buy", "limit", 0.25, -3.0, 1e-9]),
    st.lists(st.one_of(texts, st.integers(-5, 5), st.floats(allow_nan=False)), max_size=3).map(tuple),
    st.lists(st.one_of(st.none(), st.floats()), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2),
)
attributes = st.one_of(st.none(), st.dictionaries(keys, values, max_size=6))
trace_ids = st.one_of(st.binary(min_size=16, max_size=16), st.sampled_from([b"\x00" * 16, b"\xff" * 16]))
span_ids = st.binary(min_size=8, max_size=8)
times = st.one_of(st.integers(0, 2**64 - 1), st.integers(1_700_000_000_000_000_000, 1_700_000_001_000_000_000))
OUR_SPANS = [*semconv.SPAN_METRICS, semconv.SPAN_KILL_SWITCH, semconv.SPAN_BREAKER, semconv.SPAN_FEED]
EVENT_NAMES = [*sorted(KEEP_EVENTS), "exception"]
scopes = st.sampled_from([None, None, None, ("opentelemetry.instrumentation.requests", "0.66b1", None),
                          ("http", "1.0", "https://opentelemetry.io/schemas/1.21.0"), ("unknown",),
                          ("\udc80scope", None, None)])


@st.composite
def span_records(draw: st.DrawFn) -> tuple[Any, ...]:
    start = draw(times)
    end = draw(st.one_of(times, st.integers(0, 2_000_000_000).map(lambda d: min(start + d, 2**64 - 1))))
    attrs = draw(attributes)
    if attrs is not None and draw(st.booleans()):
        attrs[semconv.OUTCOME] = draw(st.sampled_from(["ok", "error", "rejected", "passed"]))
        attrs[semconv.VENUE] = draw(st.sampled_from(["binance", "kraken", "v3", "v4"]))
    record = (
        R.SPAN, draw(st.one_of(st.sampled_from(OUR_SPANS), st.sampled_from(OUR_SPANS), texts)), draw(st.integers(0, 4)),
        draw(trace_ids),
        draw(span_ids), draw(st.one_of(st.none(), span_ids)), draw(st.booleans()), draw(st.booleans()), start, end,
        draw(st.integers(0, 2)), draw(st.one_of(st.none(), texts)), attrs,
        draw(st.one_of(st.none(), st.lists(st.tuples(st.one_of(st.sampled_from(EVENT_NAMES), texts), times,
                                                     attributes), max_size=3))),
        draw(st.one_of(st.none(), st.lists(st.tuples(trace_ids, span_ids), max_size=2))),
        draw(st.one_of(st.none(), st.sampled_from(["", "a=1", "vendor=x,b=2", "bad state", "k=v,k=w", "x" * 300]))),
        draw(scopes),
    )
    return record if draw(st.integers(0, 19)) else _malformed(draw, record)


def _malformed(draw: st.DrawFn, record: tuple[Any, ...]) -> tuple[Any, ...]:
    position, bad = draw(st.sampled_from([
        (R.S_KIND, 7), (R.S_TRACE, b"\x01" * 17), (R.S_PARENT, b""), (R.S_START, -1), (R.S_END, 1.5),
        (R.S_STATUS, 3), (R.S_EVENTS, [("e", None, {})]), (R.S_LINKS, [(b"x", b"y")]), (R.S_SCOPE, (1, 2)),
        (R.S_ATTRS, ("not", "a", "dict")), (R.S_SAMPLED, 2), (R.S_REMOTE, 1.0), (R.S_SAMPLED, 1)]))
    return (*record[:position], bad, *record[position + 1:])


COUNTERS = [m.name for m in semconv.METRICS.values() if m.kind == "counter"]
HISTOGRAMS = [m.name for m in semconv.METRICS.values() if m.kind == "histogram"]
GAUGES = [m.name for m in semconv.METRICS.values() if m.kind == "gauge" and m is not semconv.HEARTBEAT]
numbers = st.one_of(st.floats(-1e6, 1e6), st.sampled_from([0.0, -0.0, 0.001, 0.004, 0.3, 7.0, 1e-300, 5e-324]),
                    st.integers(-5, 10**6), st.sampled_from([float("nan"), float("inf"), "1.5", "x", None]))
latencies = st.one_of(st.floats(0, 20), st.sampled_from([0.0, 0.001, 0.0025, 1e-9, 2.0**-20, 3600.0]))
metrics_records = st.builds(
    lambda ops, attrs: (R.METRICS, tuple(ops), attrs),
    st.lists(st.tuples(st.one_of(st.sampled_from(COUNTERS + HISTOGRAMS), st.just("qt.nope")), numbers),
             min_size=1, max_size=3),
    st.dictionaries(keys, values, max_size=4))
gauge_records = st.builds(
    lambda name, attrs, value: (R.GAUGE, name, attrs, value), st.sampled_from(GAUGES),
    st.dictionaries(st.sampled_from(["strategy", "feed", "symbol", "breaker", "kill_switch"]),
                    st.sampled_from(["a", "b", "c", "d", "e"]), max_size=2),
    st.one_of(st.none(), numbers))
preagg_records = st.one_of(
    st.builds(lambda name, attrs, value: (R.PREAGG, name, attrs, value), st.sampled_from(COUNTERS),
              st.dictionaries(keys, values, max_size=3), numbers),
    st.builds(lambda name, attrs, xs: (R.PREAGG, name, attrs, struct.pack(f"<{len(xs)}d", *xs)),
              st.sampled_from(HISTOGRAMS), st.dictionaries(keys, values, max_size=3),
              st.lists(st.one_of(latencies, st.floats(allow_nan=True, allow_infinity=True)), max_size=5)),
    st.just((R.PREAGG, semconv.TRADES.name, {}, b"\x00")))
control_records = st.one_of(
    st.builds(lambda v: (R.CONTROL, R.OP_SECRETS, tuple(v)), st.lists(st.sampled_from([SECRET_VALUE, "binance"]))),
    st.builds(lambda n: (R.CONTROL, R.OP_GOODBYE, None), st.integers(0, 50)),
    st.just((R.CONTROL, R.OP_GOODBYE, None)))
orders = st.builds(
    lambda i, outcome, latency, venue: _order(i, outcome, latency, venue), st.integers(0, 10**6),
    st.sampled_from(["ok", "ok", "error", "rejected"]), st.one_of(st.integers(0, 3 * 10**9), st.just(0)),
    st.sampled_from(["binance", "kraken", "v3", "v4", "\udc80"]))
records = st.lists(st.one_of(span_records(), span_records(), orders, orders, metrics_records, gauge_records,
                             preagg_records, control_records), max_size=12)
PRODUCERS = [(101, "bot"), (102, "bot-102"), (103, "bot-103"), (101, "bot-101b")]
accepts = st.tuples(st.just("accept"), st.integers(0, len(PRODUCERS) - 1), records)
steps = st.lists(st.one_of(
    accepts, accepts, accepts,
    st.tuples(st.just("take"), st.integers(1, 6)),
    st.tuples(st.just("drop"), st.integers(0, len(PRODUCERS) - 1), st.integers(1, 4),
              st.sampled_from(["export_failed", "shutdown_deadline"])),
    st.tuples(st.just("retire"), st.integers(0, len(PRODUCERS) - 1)),
    st.just(("collect",)),
), min_size=1, max_size=14)
configs = st.fixed_dictionaries({
    "exemplar_filter": st.sampled_from(["trace_based", "always_on", "always_off"]),
    "metrics_temporality": st.sampled_from(["cumulative", "delta", "lowmemory"]),
    "native_histograms": st.booleans(),
    "max_label_values": st.sampled_from([2, 250]),
    "trace_keep_ratio": st.sampled_from([0.0, 0.5, 1.0]),
    "slow_order_seconds": st.sampled_from([0.0, 0.5]),
    "secret_values": st.sampled_from([(), ("binance",)]),
    "max_queue_size": st.integers(1, 12),
})


def make_settings(config: Mapping[str, Any]) -> _config.Settings:
    env = {"OTEL_METRICS_EXEMPLAR_FILTER": config["exemplar_filter"], "OTEL_BSP_MAX_QUEUE_SIZE":
           str(config["max_queue_size"]), "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1",
           "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": config["metrics_temporality"]}
    return _config.resolve(environ=env, mode="none", native_histograms=config["native_histograms"],
                           max_label_values=config["max_label_values"], trace_keep_ratio=config["trace_keep_ratio"],
                           slow_order_seconds=config["slow_order_seconds"],
                           secret_values=list(config["secret_values"]) or None)


def _note(what: str) -> None:
    """Coverage of the generated runs (``pytest --hypothesis-show-statistics``)."""
    if currently_in_test_context():
        event(what)


def run_both(s: _config.Settings, plan: Sequence[tuple[Any, ...]],
             on_spans: Callable[[bytes], None] | None = None) -> None:
    """Drive both paths through ``plan``; every span request byte-identical, every collection point-identical."""
    sdk, lean = SdkPath(s), LeanPath(s)
    clocks = (Clock(), Clock())
    now = time.time_ns()
    for step in [*plan, ("take", 10**9), ("collect",), ("collect",)]:
        if step[0] == "accept":
            pid, instance = PRODUCERS[step[1]]
            sdk.accept(sdk.producer(pid, instance), list(step[2]))
            lean.accept(lean.producer(pid, instance), list(step[2]))
        elif step[0] == "take":
            expected, got = sdk.take(step[1]), lean.take(step[1])
            assert got == expected
            _note(f"span requests compared: {'some' if got else 'none'}")
            if got is not None and on_spans is not None:
                on_spans(got[0])
        elif step[0] == "drop":
            pid, instance = PRODUCERS[step[1]]
            sdk.span_drop({sdk.producer(pid, instance): step[2]}, step[3])
            lean.span_drop({lean.producer(pid, instance): step[2]}, step[3])
        elif step[0] == "retire":
            pid, _ = PRODUCERS[step[1]]
            if pid in sdk.converter.producers:
                sdk.retire(sdk.converter.producers[pid])
                lean.converter.retire(lean.converter.producers[pid])
        else:
            now = max(now + 1, time.time_ns())
            got_request, expected_request = lean.collect(now), sdk.collect()
            clocks[0].check(got_request, sdk.restarted)
            clocks[1].check(expected_request, sdk.restarted)
            got = canonical(got_request)
            assert got == canonical(expected_request)
            text = repr(got)
            for what in ("exponential_histogram", "'histogram'", "as_int", "b'", "record_failed", "queue_full",
                         "label_overflow", "_other"):
                if what in text:
                    _note(f"collections with {what}")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(config=configs, plan=steps)
def test_lean_and_sdk_paths_agree_on_generated_records(config: dict[str, Any], plan: list[tuple[Any, ...]]) -> None:
    run_both(make_settings(config), plan)


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("temporality_preference", ["cumulative", "delta"])
def test_a_realistic_run_agrees_over_many_collections(native: bool, temporality_preference: str) -> None:
    """Thousands of orders over a spread of latencies (the exponential histogram rescales), several producers,
    collected between batches; every span request identical, every collection identical."""
    s = make_settings({"exemplar_filter": "trace_based", "metrics_temporality": temporality_preference,
                       "native_histograms": native, "max_label_values": 250, "trace_keep_ratio": 0.25,
                       "slow_order_seconds": 0.5, "secret_values": (), "max_queue_size": 2048})
    plan: list[tuple[Any, ...]] = []
    for batch in range(12):
        for producer in range(3):
            orders = [_order(batch * 1000 + producer * 100 + j, ("ok", "ok", "error", "rejected")[j % 4],
                             int(10 ** (3 + (j * 37 + batch * 11) % 70 / 10))) for j in range(60)]
            plan.append(("accept", producer, orders))
        plan.append(("take", 512))
        if batch % 3 == 2:
            plan.append(("collect",))
    run_both(s, plan)


def test_latency_segments_of_order_spans_agree_on_both_paths() -> None:
    """Each order span yields its tick-to-trade and order-to-ack points, ``segment`` added to its labels."""
    s = _settings()
    sdk, lean = SdkPath(s), LeanPath(s)
    orders = [_order(i, duration_ns=10**6 * (i + 1)) for i in range(30)]
    sdk.accept(sdk.producer(1, "a"), orders)
    lean.accept(lean.producer(1, "a"), orders)
    expected = canonical(sdk.collect())
    assert canonical(lean.collect(time.time_ns())) == expected
    points = [p for rm in sdk.collect().resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              if m.name == semconv.LATENCY_SEGMENT.name for p in m.histogram.data_points]
    segments = {a.value.string_value for p in points for a in p.attributes if a.key == semconv.SEGMENT}
    assert segments == {"tick_to_trade", "order_to_ack"}
    assert sum(p.count for p in points) == 60


def test_the_comparison_sees_a_difference() -> None:
    """The harness is not vacuous: a lean path that loses one measurement is caught."""
    s = make_settings({"exemplar_filter": "trace_based", "metrics_temporality": "cumulative",
                       "native_histograms": False, "max_label_values": 250, "trace_keep_ratio": 1.0,
                       "slow_order_seconds": 0.5, "secret_values": (), "max_queue_size": 10})
    sdk, lean = SdkPath(s), LeanPath(s)
    sdk.accept(sdk.producer(1, "a"), [_order(1), _order(2)])
    lean.accept(lean.producer(1, "a"), [_order(1)])
    assert canonical(lean.collect(time.time_ns())) != canonical(sdk.collect())


def _settings(**overrides: Any) -> _config.Settings:
    config = {"exemplar_filter": "trace_based", "metrics_temporality": "cumulative", "native_histograms": False,
              "max_label_values": 250, "trace_keep_ratio": 1.0, "slow_order_seconds": 0.5, "secret_values": (),
              "max_queue_size": 100}
    return make_settings({**config, **overrides})


def test_keys_that_encode_alike_and_a_keep_mark_already_there_keep_their_place() -> None:
    """Two keys that differ only in lone surrogates are one key once encodable: the later value wins, in the
    earlier one's place, as in a dict; a ``qt.sampling.keep`` the span already carries is set where it is."""
    span = (*_order(1, "error")[:12], {LONE_A: "first", semconv.SAMPLING_KEEP: False, "venue": "binance",
                                       LONE_B: "second", "outcome": "error"}, *_order(1)[13:])
    run_both(_settings(), [("accept", 0, [span]), ("take", 10), ("collect",)])


def test_secret_values_learnt_later_redact_values_encoded_before() -> None:
    said = (*_order(1)[:12], {"note": "pay sv-3141592653 now", "venue": "sv-3141592653"}, *_order(1)[13:])
    plan = [("accept", 0, [said]), ("collect",), ("accept", 0, [(R.CONTROL, R.OP_SECRETS, (SECRET_VALUE,)), said]),
            ("take", 10), ("collect",)]
    seen: list[bytes] = []
    run_both(_settings(), plan, on_spans=seen.append)
    assert SECRET_VALUE.encode() in seen[0] and SECRET_VALUE.encode() not in seen[0].split(b"qt.order.place")[2]


@pytest.mark.parametrize("temporality_preference", ["cumulative", "delta"])
def test_a_native_histogram_that_saw_only_zeros_keeps_its_scale(temporality_preference: str) -> None:
    """With the SDK as released, an interval of zeros only fixed scale 0 for the series for good."""
    zeros = [_order(i, duration_ns=0) for i in range(3)]
    spread = [_order(i, duration_ns=d) for i, d in enumerate((1_000_000, 1_200_000, 250_000_000, 3_000_000_000))]
    plan = [("accept", 0, zeros), ("collect",), ("accept", 0, spread), ("collect",), ("accept", 0, zeros),
            ("collect",)]
    seen: list[ExportMetricsServiceRequest] = []
    run_both(_settings(native_histograms=True, metrics_temporality=temporality_preference), plan)
    s = _settings(native_histograms=True, metrics_temporality=temporality_preference)
    lean = LeanPath(s)
    for step in plan:
        if step[0] == "accept":
            lean.accept(lean.producer(*PRODUCERS[0]), list(step[2]))
        else:
            seen.append(lean.collect(time.time_ns()))
    scales = [p.scale for m in seen[1].resource_metrics[0].scope_metrics[0].metrics
              if m.name == semconv.ORDER_LATENCY.name for p in m.exponential_histogram.data_points]
    assert scales and min(scales) >= 3


def test_label_overflow_queue_overflow_and_failed_deliveries_are_counted_alike() -> None:
    orders = [_order(i, ("ok", "error", "rejected")[i % 3], 1_000_000, f"venue-{i % 5}") for i in range(20)]
    plan = [("accept", 0, orders), ("accept", 1, orders[:5]), ("take", 3), ("drop", 0, 3, "export_failed"),
            ("collect",), ("accept", 0, orders), ("take", 100), ("collect",)]
    run_both(_settings(max_label_values=2, max_queue_size=7), plan)


@pytest.mark.parametrize("size", [512, 5000])
def test_a_value_referenced_20000_times_is_redacted_once(size: int) -> None:
    """A 0.1 MiB record whose tuple references one 512-character string 20,000 times cost 23 s of exporter CPU
    (scrubbed per reference, 1.1 ms each); it is scrubbed once, also when longer than any cache keeps."""
    text = "x" * (size - 17) + " password=hunter2"
    record = (*_order(1)[:12], {"big": (text,) * 20_000}, *_order(1)[13:])
    converter = LeanConverter(_settings(), base_resource=BASE)
    scrubbed: list[str] = []
    scrub = converter.redactor._scrub
    converter.redactor._scrub = lambda t: scrubbed.append(t) or scrub(t)  # type: ignore[method-assign]
    converter.accept(converter.producer(1, "a"), [record])
    request = converter.take_spans(10)
    assert request is not None and len(scrubbed) == 1 and b"hunter2" not in request[0]


def test_an_exemplar_without_a_span_carries_no_ids_of_the_one_it_replaced() -> None:
    """With every measurement offered (always_on), a PREAGG value replacing an order's exemplar in its bucket:
    the SDK as released kept the order's trace and span ids on it."""
    plan = [("accept", 0, [_order(1, duration_ns=0), (R.PREAGG, semconv.ORDER_LATENCY.name,
                                                      {"venue": "kraken", "symbol": "BTCUSDT", "side": "sell",
                                                       "order.type": "limit", "outcome": "ok"},
                                                      struct.pack("<d", 0.0))]), ("collect",)]
    run_both(_settings(exemplar_filter="always_on"), plan)
