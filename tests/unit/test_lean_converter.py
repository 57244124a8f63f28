"""The lean converter's own contract with the exporter process loop: producers, the span queue, retirement."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from qt_telemetry import _config, semconv
from qt_telemetry._engine.exporter.lean import LeanConverter, LeanProducer
from qt_telemetry._engine.resource import base_resource
from qt_telemetry._engine.transport import records as R


def _converter(**env: str) -> LeanConverter:
    settings = _config.resolve(environ=env, mode="none", service_name="lean-bot")
    return LeanConverter(settings, base_resource=base_resource(settings))


def _span(i: int) -> tuple[Any, ...]:
    return (R.SPAN, semconv.SPAN_ORDER, 2, i.to_bytes(16, "big"), i.to_bytes(8, "big"), None, False, True, 1, 2, 0,
            None, {"venue": "binance", "outcome": "ok"}, None, None, None, None)


def _counts(converter: LeanConverter, metric: str) -> dict[tuple[str, tuple[tuple[str, Any], ...]], Any]:
    request = ExportMetricsServiceRequest()
    request.ParseFromString(converter.collect_metrics(time.time_ns()) or b"")
    out = {}
    for rm in request.resource_metrics:
        instance = next(kv.value.string_value for kv in rm.resource.attributes if kv.key == "service.instance.id")
        for m in rm.scope_metrics[0].metrics:
            if m.name == metric:
                for p in m.sum.data_points:
                    labels = tuple((kv.key, kv.value.string_value) for kv in p.attributes)
                    out[(instance, labels)] = p.as_int or p.as_double
    return out


def test_a_pid_keeps_its_producer_until_another_process_takes_it() -> None:
    converter = _converter()
    first = converter.producer(7, "bot")
    assert converter.producer(7, "bot") is first
    second = converter.producer(7, "bot-7")
    assert second is not first and converter.producers == {7: second}
    request = ExportMetricsServiceRequest()
    request.ParseFromString(converter.collect_metrics(time.time_ns()) or b"")
    assert len(request.resource_metrics) == 2  # the gone process's last points, then it is forgotten
    request.ParseFromString(converter.collect_metrics(time.time_ns()) or b"")
    assert len(request.resource_metrics) == 1


def test_spans_beyond_the_queue_are_dropped_counted_and_never_encoded() -> None:
    converter = _converter(OTEL_BSP_MAX_QUEUE_SIZE="3", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="2")
    producer = converter.producer(1, "bot")
    converter.accept(producer, [_span(i) for i in range(1, 6)])
    assert converter.queued_spans() == 3
    taken = converter.take_spans(2)
    assert taken is not None and sum(taken[1].values()) == 2
    request = ExportTraceServiceRequest()
    request.ParseFromString(taken[0])
    assert [s.span_id for s in request.resource_spans[0].scope_spans[0].spans] == [(1).to_bytes(8, "big"),
                                                                                   (2).to_bytes(8, "big")]
    assert converter.take_spans(0) is None and converter.take_spans(10) is not None
    assert converter.take_spans(10) is None
    assert _counts(converter, semconv.TELEMETRY_DROPPED.name) == {
        ("bot", (("signal", "spans"), ("reason", "queue_full"))): 2}


def test_a_delivery_failure_reported_after_its_producer_was_forgotten_still_counts() -> None:
    converter = _converter()
    producer = converter.producer(1, "bot")
    converter.accept(producer, [_span(1), (R.CONTROL, R.OP_GOODBYE, None)])
    assert producer.goodbye
    converter.retire(producer)
    assert converter.take_spans(10) is not None
    assert ("bot", (("kind", "record_failed"),)) not in _counts(converter, semconv.TELEMETRY_ERRORS.name)
    converter.span_drop({producer: 1}, "export_failed")  # the request failed after the final collection
    assert _counts(converter, semconv.TELEMETRY_DROPPED.name) == {
        ("bot", (("signal", "spans"), ("reason", "export_failed"))): 1}
    assert _counts(converter, semconv.TELEMETRY_DROPPED.name) == {}


def test_accept_never_raises_whatever_it_is_given() -> None:
    converter = _converter()
    producer: LeanProducer = converter.producer(1, "bot")
    converter.accept(producer, None)  # type: ignore[arg-type]
    converter.accept(producer, [None, (), (R.SPAN,), (R.GAUGE, "qt.nope", {}, 1), (99,), _span(1)])
    errors = _counts(converter, semconv.TELEMETRY_ERRORS.name)
    assert errors == {("bot", (("kind", "record_failed"),)): 5}
    assert converter.queued_spans() == 1


def test_producer_drop_totals_count_what_is_new() -> None:
    converter = _converter()
    producer = converter.producer(1, "bot")
    producer.producer_drops({"socket_full": 5})
    producer.producer_drops({"socket_full": 8})
    producer.drop("records", "exporter_busy", 2)
    assert _counts(converter, semconv.TELEMETRY_DROPPED.name) == {
        ("bot", (("signal", "records"), ("reason", "socket_full"))): 8,
        ("bot", (("signal", "records"), ("reason", "exporter_busy"))): 2}
