"""The public API configured only by standard OTEL_* variables, exporting to a real OTLP receiver.

Each scenario runs in a fresh interpreter (OTel providers are process-global), like a user's bot would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from tests.support.otlp_receiver import OtlpGrpcReceiver, OtlpHttpReceiver, attributes

BOT = textwrap.dedent("""
    import qt_telemetry as qt

    qt.init()

    @qt.traced_order(venue="binance")
    def place_order(symbol, side, quantity, client_order_id=None, api_key=None):
        return {"orderId": 1}

    with qt.trade_flow(symbol="BTCUSDT", strategy="momo") as flow:
        with flow.signal(confidence=0.9):
            pass
        with flow.execution():
            place_order("BTCUSDT", "buy", 0.25, client_order_id="c-1", api_key="SECRET-KEY")
    assert qt.shutdown(), "shutdown hands everything to the exporter, which exports it after we exit"
""")


@pytest.fixture(params=["http/protobuf", "grpc"])
def receiver(request: pytest.FixtureRequest) -> Iterator[OtlpHttpReceiver | OtlpGrpcReceiver]:
    r = OtlpHttpReceiver() if request.param == "http/protobuf" else OtlpGrpcReceiver()
    r.protocol = request.param  # type: ignore[attr-defined]
    yield r
    r.close()


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
    proc = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_otel_variables_alone_configure_export_of_traces_and_metrics(receiver) -> None:
    _run(BOT, {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": receiver.protocol,
        "OTEL_SERVICE_NAME": "paper-bot",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=paper",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=desk-7",
        "OTEL_METRIC_EXPORT_INTERVAL": "60000",
    })
    receiver.wait_for(lambda: len(receiver.spans()) >= 4 and any(
        m.name == "qt.order.latency" for _, m in receiver.metrics()), what="the bot's spans and metrics")

    spans = receiver.spans()
    names = sorted(span.name for _, span in spans)
    assert names == ["qt.order.place", "qt.trade", "qt.trade.execution", "qt.trade.signal"]
    resource = spans[0][0]
    assert resource["service.name"] == "paper-bot"
    assert resource["deployment.environment.name"] == "paper"
    by_name = {span.name: span for _, span in spans}
    order, execution = by_name["qt.order.place"], by_name["qt.trade.execution"]
    assert order.parent_span_id == execution.span_id
    assert {s.trace_id for s in by_name.values()} == {order.trace_id}
    order_attrs = attributes(order)
    assert order_attrs["symbol"] == "BTCUSDT" and order_attrs["order.quantity"] == 0.25
    assert all("SECRET-KEY" not in str(v) for _, s in spans for v in attributes(s).values())
    assert any(h.get("x-tenant") == "desk-7" for h in receiver.headers)

    latencies = [m for _, m in receiver.metrics() if m.name == "qt.order.latency"]
    assert latencies, "no order latency metric was exported"
    for latency in latencies:  # flush and shutdown each export once; cumulative both times
        assert latency.unit == "s"
        assert latency.histogram.aggregation_temporality == 2  # cumulative, what Prometheus needs
        (point,) = latency.histogram.data_points
        assert list(point.explicit_bounds)[:3] == [0.001, 0.0025, 0.005]
        assert point.count == 1
    # Exemplars belong to the collection interval that saw the measurement.
    (exemplar,) = [e for m in latencies for p in m.histogram.data_points for e in p.exemplars]
    assert exemplar.trace_id == order.trace_id and exemplar.span_id == order.span_id


def test_signal_specific_traces_endpoint_is_honoured() -> None:
    receiver = OtlpHttpReceiver()
    try:
        _run(BOT, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint + "/v1/traces",
                   "OTEL_METRICS_EXPORTER": "none"})
        receiver.wait_for(lambda: len(receiver.spans()) >= 4, what="the bot's spans")
        assert len(receiver.spans()) == 4
        assert receiver.metrics() == []
    finally:
        receiver.close()


def test_bad_endpoint_variable_fails_at_startup_with_the_variable_named() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
    proc = subprocess.run([sys.executable, "-c", "import qt_telemetry as qt; qt.init()"],
                          env={**clean, "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "ConfigurationError" in proc.stderr and "OTEL_EXPORTER_OTLP_ENDPOINT='collector:4318'" in proc.stderr


PRODUCER = textwrap.dedent("""
    import json, sys
    import qt_telemetry as qt
    qt.init(service_name="signal-service")
    with qt.trade_flow(symbol="ETHUSDT", strategy="xsvc") as flow:
        with flow.signal(confidence=0.7) as stage:
            message = {"symbol": "ETHUSDT", "side": "buy"}
            headers = qt.inject({})
    qt.shutdown()
    print(json.dumps({"message": message, "headers": headers, "trace_id": stage.trace_id}))
""")

CONSUMER = textwrap.dedent("""
    import json, sys
    import qt_telemetry as qt
    qt.init(service_name="execution-service")
    envelope = json.loads(sys.stdin.read())
    fields = {k.encode(): v.encode() for k, v in envelope["headers"].items()}  # as a Redis stream returns them

    @qt.traced_order(venue="binance")
    def place_order(symbol, side, quantity):
        return None

    with qt.trade_flow(symbol="ETHUSDT", strategy="xsvc", parent=qt.extract(fields)) as flow:
        with flow.execution():
            place_order(envelope["message"]["symbol"], envelope["message"]["side"], 1)
    qt.shutdown()
""")


def test_a_signal_from_one_process_and_its_execution_in_another_are_one_trace() -> None:
    receiver = OtlpHttpReceiver()
    try:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        produced = json.loads(_run(PRODUCER, env).stdout)
        assert "traceparent" in produced["headers"]
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
        consumer = subprocess.run([sys.executable, "-c", CONSUMER], input=json.dumps(produced),
                                  env={**clean, **env}, capture_output=True, text=True, timeout=60)
        assert consumer.returncode == 0, consumer.stderr
        receiver.wait_for(lambda: len(receiver.spans()) >= 5, what="both services' spans")

        spans = receiver.spans()
        services = {span.name + "@" + res["service.name"]: span for res, span in spans}
        trace_ids = {span.trace_id.hex() for _, span in spans}
        assert trace_ids == {produced["trace_id"]}
        signal = services["qt.trade.signal@signal-service"]
        remote_root = services["qt.trade@execution-service"]
        assert remote_root.parent_span_id == signal.span_id
        order = services["qt.order.place@execution-service"]
        assert order.parent_span_id == services["qt.trade.execution@execution-service"].span_id
    finally:
        receiver.close()


def test_extract_of_missing_or_malformed_headers_starts_a_new_trace() -> None:
    from opentelemetry import trace

    import qt_telemetry as qt

    for carrier in (None, {}, {"traceparent": "garbage"}, {b"traceparent": b"00-zz-zz-01"}):
        ctx = qt.extract(carrier)
        assert not trace.get_current_span(ctx).get_span_context().is_valid
