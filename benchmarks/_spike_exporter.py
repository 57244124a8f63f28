"""The exporter process of the spike's ``records`` engine: datagrams of records in, OTLP/HTTP out."""

from __future__ import annotations

import marshal
import socket
import sys
import threading
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags


def main() -> None:
    endpoint, fd = sys.argv[1], int(sys.argv[2])
    sock = socket.socket(fileno=fd)
    sock.settimeout(0.5)
    resource = Resource.create({"service.name": "spike"})
    scope = InstrumentationScope("spike")
    exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces")
    mp = MeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint + "/v1/metrics"), export_interval_millis=1000)])
    meter = mp.get_meter("spike")
    latency = meter.create_histogram("qt.order.latency", "s")
    orders = meter.create_counter("qt.orders")
    pending: list[ReadableSpan] = []
    lock = threading.Lock()
    done = threading.Event()
    sampled = TraceFlags(TraceFlags.SAMPLED)

    def ship() -> None:
        while not done.wait(0.2) or pending:
            with lock:
                batch = pending[:]
                pending.clear()
            for i in range(0, len(batch), 512):
                exporter.export(batch[i:i + 512])

    shipper = threading.Thread(target=ship)
    shipper.start()
    idle = 0
    while True:
        try:
            data = sock.recv(1 << 22)
        except TimeoutError:
            idle += 1
            if idle > 6:
                break
            continue
        except OSError:
            break
        idle = 0
        spans = []
        for (trace_id, span_id, parent_id, start, elapsed, venue, symbol, side, qty, price, cid) in marshal.loads(data):
            ctx = SpanContext(trace_id, span_id, False, sampled)
            labels = {"venue": venue, "symbol": symbol, "side": side, "order.type": "limit", "outcome": "ok"}
            parent = SpanContext(trace_id, parent_id, False, sampled) if parent_id else None
            spans.append(ReadableSpan("qt.order.place", ctx, parent, resource, {
                **labels, "order.quantity": qty, "order.price": price, "order.client_order_id": cid},
                kind=SpanKind.CLIENT, start_time=start, end_time=start + elapsed, instrumentation_scope=scope))
            exemplar_ctx = trace.set_span_in_context(NonRecordingSpan(ctx))
            latency.record(elapsed / 1e9, labels, context=exemplar_ctx)
            orders.add(1, labels)
        with lock:
            pending.extend(spans)
    done.set()
    shipper.join(10)
    mp.shutdown()
    time.sleep(0)


if __name__ == "__main__":
    main()
