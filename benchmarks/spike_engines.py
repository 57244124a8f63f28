"""The spike behind the engine choice (issue: take telemetry off the trading thread). Kept so the table can be re-run.

    python benchmarks/spike_engines.py [--seconds 8]

Three ways to trace an order, each exporting OTLP/HTTP to a local receiver, compared with the two anchors:

- ``sdk``       the OTel SDK in-process, hand-written (span + histogram inside it + counter), BatchSpanProcessor;
- ``fastotel``  the same, with fastotel's Rust ``OTLPSpanProcessor`` in place of the BatchSpanProcessor;
- ``records``   a prototype of the proposed design: the trading thread makes ids, a timestamp, the OTel context
                (a non-recording span, so other instrumentation parents to it) and one tuple on a deque; a pump
                thread ships batches over a Unix datagram socket to an exporter *process*, which builds the SDK
                spans and metrics (exemplars from the record's ids) and exports them;
- anchors: the bare call and prometheus_client ``observe`` + ``inc``.

Per-call cost is the median of alternating runs in one process per engine; "jitter" runs a 2000 ticks/s loop
(one order per tick) and reports how late ticks finish compared with the same loop without telemetry, GC on.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import marshal
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _work(symbol: str, side: str, quantity: float, price: float = 100.0, client_order_id: str = "c-1") -> dict:
    return {"orderId": 1}


# --- engines -------------------------------------------------------------------------------------------

def make_sdk(endpoint: str, processor: str) -> Any:
    from opentelemetry import metrics, trace
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind

    tp = TracerProvider()
    if processor == "fastotel":
        from fastotel import OTLPSpanProcessor

        tp.add_span_processor(OTLPSpanProcessor(endpoint=endpoint + "/v1/traces"))
    else:
        tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint + "/v1/traces")))
    mp = MeterProvider(metric_readers=[PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint + "/v1/metrics"), export_interval_millis=1000)])
    trace.set_tracer_provider(tp)
    metrics.set_meter_provider(mp)
    tracer = tp.get_tracer("spike")
    meter = mp.get_meter("spike")
    latency = meter.create_histogram("qt.order.latency", "s")
    orders = meter.create_counter("qt.orders")

    def place(symbol: str, side: str, quantity: float, price: float = 100.0, client_order_id: str = "c-1") -> Any:
        started = time.perf_counter()
        attrs = {"venue": "binance", "symbol": symbol, "side": side, "order.type": "limit"}
        with tracer.start_as_current_span("qt.order.place", kind=SpanKind.CLIENT, attributes={
                **attrs, "order.quantity": quantity, "order.price": price,
                "order.client_order_id": client_order_id}) as span:
            result = _work(symbol, side, quantity, price, client_order_id)
            labels = {**attrs, "outcome": "ok"}
            latency.record(time.perf_counter() - started, labels)
            orders.add(1, labels)
            span.set_attribute("order.id", result["orderId"])
            return result

    def stop() -> None:
        tp.shutdown()
        mp.shutdown()

    return place, stop


def make_records(endpoint: str) -> Any:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    queue: collections.deque[tuple[Any, ...]] = collections.deque()
    cap = 65_536
    dropped = [0]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    exporter = subprocess.Popen([sys.executable, str(HERE / "_spike_exporter.py"), endpoint, str(theirs.fileno())],
                                pass_fds=(theirs.fileno(),))
    theirs.close()
    sampled = TraceFlags(TraceFlags.SAMPLED)
    getrandbits, time_ns, perf_ns = random.getrandbits, time.time_ns, time.perf_counter_ns
    get_current_span, attach, detach = trace.get_current_span, otel_context.attach, otel_context.detach
    set_span_in_context = trace.set_span_in_context
    stop_event = threading.Event()

    def pump() -> None:
        while not stop_event.wait(0.002) or queue:
            batch = []
            while queue and len(batch) < 256:
                batch.append(queue.popleft())
            if batch:
                try:
                    ours.send(marshal.dumps(batch))
                except (BlockingIOError, OSError):
                    dropped[0] += len(batch)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()

    def place(symbol: str, side: str, quantity: float, price: float = 100.0, client_order_id: str = "c-1") -> Any:
        parent = get_current_span().get_span_context()
        if parent.is_valid:
            trace_id, parent_id = parent.trace_id, parent.span_id
        else:
            trace_id, parent_id = getrandbits(128), 0
        span_id = getrandbits(64)
        token = attach(set_span_in_context(NonRecordingSpan(SpanContext(trace_id, span_id, False, sampled))))
        start, t0 = time_ns(), perf_ns()
        try:
            result = _work(symbol, side, quantity, price, client_order_id)
        finally:
            elapsed = perf_ns() - t0
            detach(token)
            if len(queue) < cap:
                queue.append((trace_id, span_id, parent_id, start, elapsed, "binance", symbol, side, quantity,
                              price, client_order_id))
            else:
                dropped[0] += 1
        return result

    def stop() -> None:
        stop_event.set()
        thread.join(2)
        ours.close()
        exporter.wait(10)

    return place, stop


def make_prometheus_client() -> Any:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry()
    latency = Histogram("order_latency_seconds", "x", ["venue", "symbol", "side"], registry=registry)
    orders = Counter("orders", "x", ["venue", "symbol", "side", "outcome"], registry=registry)

    def place(symbol: str, side: str, quantity: float, price: float = 100.0, client_order_id: str = "c-1") -> Any:
        started = time.perf_counter()
        result = _work(symbol, side, quantity, price, client_order_id)
        latency.labels("binance", symbol, side).observe(time.perf_counter() - started)
        orders.labels("binance", symbol, side, "ok").inc()
        return result

    return place, lambda: None


def make(engine: str, endpoint: str) -> Any:
    if engine == "bare":
        return _work, lambda: None
    if engine == "prometheus_client":
        return make_prometheus_client()
    if engine == "records":
        return make_records(endpoint)
    return make_sdk(endpoint, engine)


# --- measurements (each engine in a process of its own) ------------------------------------------------

def per_call(place: Any, calls: int = 20_000, repeats: int = 7) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(calls):
            place("BTCUSDT", "buy", 0.5)
        runs.append((time.perf_counter_ns() - start) / calls)
        time.sleep(0.2)  # let the export side drain between runs
    return statistics.median(runs)


def jitter(place: Any, seconds: float, rate: int = 2000) -> dict[str, float]:
    period = 1e9 / rate
    late = []
    t0 = time.perf_counter_ns()
    for i in range(int(seconds * rate)):
        due = t0 + i * period
        while time.perf_counter_ns() < due:
            pass
        x = 0
        for k in range(200):  # a little strategy work
            x += k
        place("BTCUSDT", "buy", 0.5)
        late.append((time.perf_counter_ns() - due) / 1e6)
    late.sort()
    q = lambda p: late[min(len(late) - 1, int(p * len(late)))]
    return {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": late[-1]}


def child(engine: str, endpoint: str, seconds: float) -> None:
    place, stop = make(engine, endpoint)
    out = {"ns": per_call(place)}
    gc.collect()
    out.update(jitter(place, seconds))
    stop()
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.seconds)
        return
    from tests.support.otlp_receiver import OtlpHttpReceiver

    receiver = OtlpHttpReceiver()
    results = {}
    for engine in ("bare", "prometheus_client", "sdk", "fastotel", "records"):
        proc = subprocess.run([sys.executable, __file__, "--child", engine, receiver.endpoint,
                               "--seconds", str(args.seconds)], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            print(engine, "failed:", proc.stderr[-2000:])
            continue
        results[engine] = json.loads(proc.stdout.strip().splitlines()[-1])
        receiver.trace_requests.clear()
        receiver.metric_requests.clear()
    base = results["bare"]
    sdk = results["sdk"]["ns"]
    print(f"{'engine':<20}{'ns/order':>10}{'vs sdk':>8}{'p50 ms':>9}{'p99':>8}{'p99.9':>8}{'max':>8}"
          f"{'+p99.9':>8}{'+max':>8}")
    for name, r in results.items():
        print(f"{name:<20}{r['ns']:>10.0f}{r['ns'] / sdk:>7.2f}x{r['p50']:>9.2f}{r['p99']:>8.2f}{r['p999']:>8.2f}"
              f"{r['max']:>8.2f}{r['p999'] - base['p999']:>8.2f}{r['max'] - base['max']:>8.2f}")
    receiver.close()


if __name__ == "__main__":
    main()
