"""Per-call cost and memory of qt-telemetry versus the same telemetry hand-written with the raw OTel API.

    python benchmarks/bench_overhead.py [--calls 20000] [--repeats 5]

Both sides run in the same process against the same SDK providers (a BatchSpanProcessor whose exporter drops
everything, and a metric reader that is never collected), so the table isolates instrumentation cost. The
"collector down" rows export over OTLP to a closed port and report memory growth: it must stay bounded.
Speed targets live here, not in timed tests.
"""

from __future__ import annotations

import argparse
import gc
import socket
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

import qt_telemetry as qt
from qt_telemetry import semconv
from qt_telemetry.testing import reset_globals


class _Drop(SpanExporter):
    def export(self, spans: Sequence[object]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _work(symbol: str, side: str, quantity: float, order_type: str = "limit", price: float = 100.0,
          client_order_id: str = "c-1") -> dict[str, int]:
    return {"orderId": 1}


def _raw_order(tracer: trace.Tracer, latency: metrics.Histogram, orders: metrics.Counter) -> Callable[..., object]:
    """What a careful user writes by hand for the same span, attributes and metrics."""

    def place(symbol: str, side: str, quantity: float, order_type: str = "limit", price: float = 100.0,
              client_order_id: str = "c-1") -> object:
        started = time.perf_counter()
        attrs = {"venue": "binance", "symbol": symbol, "side": side, "order.type": order_type}
        with tracer.start_as_current_span("qt.order.place", kind=SpanKind.CLIENT, attributes={
                **attrs, "order.quantity": quantity, "order.price": price,
                "order.client_order_id": client_order_id}, record_exception=False) as span:
            try:
                result = _work(symbol, side, quantity, order_type, price, client_order_id)
                outcome = "ok"
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR))
                outcome = "error"
                raise
            finally:
                labels = {**attrs, "outcome": outcome}
                latency.record(time.perf_counter() - started, labels)
                orders.add(1, labels)
            span.set_attribute("order.id", result["orderId"])
            return result

    return place


def _timeit(fn: Callable[[], object], calls: int, repeats: int) -> float:
    """Median nanoseconds per call over ``repeats`` runs of ``calls`` calls."""
    runs = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter_ns() - start) / calls)
    return statistics.median(runs)


def _pair(raw: Callable[[], object], ours: Callable[[], object], calls: int, repeats: int) -> tuple[float, float]:
    """Median ns/call of both, measured alternately so that machine noise hits both sides alike."""
    raw_runs, our_runs = [], []
    for _ in range(repeats):
        raw_runs.append(_timeit(raw, calls, 1))
        our_runs.append(_timeit(ours, calls, 1))
    return statistics.median(raw_runs), statistics.median(our_runs)


def _install() -> tuple[TracerProvider, MeterProvider]:
    reset_globals()
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(BatchSpanProcessor(_Drop(), max_queue_size=2048))
    mp = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
    trace.set_tracer_provider(tp)
    metrics.set_meter_provider(mp)
    return tp, mp


def speed(calls: int, repeats: int) -> list[tuple[str, float, float | None]]:
    rows: list[tuple[str, float, float | None]] = []
    reset_globals()
    bare = _timeit(lambda: _work("BTCUSDT", "buy", 1.0), calls, repeats)
    traced = qt.traced_order(venue="binance")(_work)
    noop = _timeit(lambda: traced("BTCUSDT", "buy", 1.0), calls, repeats)
    rows.append(("bare function (no telemetry)", bare, None))
    rows.append(("@traced_order before init() (no-op path)", noop, None))

    tp, mp = _install()
    tracer = tp.get_tracer("bench")
    meter = mp.get_meter("bench")
    latency = meter.create_histogram("bench.order.latency", "s", explicit_bucket_boundaries_advisory=semconv.LATENCY_BUCKETS_S)
    counter = meter.create_counter("bench.orders", "{order}")
    raw = _raw_order(tracer, latency, counter)
    raw_ns, ours_ns = _pair(lambda: raw("BTCUSDT", "buy", 1.0), lambda: traced("BTCUSDT", "buy", 1.0), calls, repeats)
    rows.append(("order: raw OTel, hand-written", raw_ns, 1.0))
    rows.append(("order: @traced_order", ours_ns, ours_ns / raw_ns))

    def raw_flow() -> None:
        with tracer.start_as_current_span("qt.trade", attributes={"symbol": "BTCUSDT", "strategy": "s"}):
            for stage in ("signal", "entry", "execution", "exit"):
                t0 = time.perf_counter()
                with tracer.start_as_current_span(f"qt.trade.{stage}", attributes={"stage": stage}):
                    if stage == "execution":
                        raw("BTCUSDT", "buy", 1.0)
                    latency.record(time.perf_counter() - t0, {"stage": stage, "strategy": "s", "symbol": "BTCUSDT"})

    def our_flow() -> None:
        with qt.trade_flow(symbol="BTCUSDT", strategy="s") as flow:
            with flow.signal():
                pass
            with flow.entry():
                pass
            with flow.execution():
                traced("BTCUSDT", "buy", 1.0)
            with flow.exit():
                pass

    flow_calls = max(1, calls // 5)
    raw_flow_ns, our_flow_ns = _pair(raw_flow, our_flow, flow_calls, repeats)
    rows.append(("trade flow (4 stages + order): raw OTel", raw_flow_ns, 1.0))
    rows.append(("trade flow (4 stages + order): trade_flow()", our_flow_ns, our_flow_ns / raw_flow_ns))

    feed = qt.FeedMonitor("bench")
    gap = meter.create_histogram("bench.gap", "s")
    msgs = meter.create_counter("bench.msgs")
    last = [time.monotonic()]

    def raw_message() -> None:
        now = time.monotonic()
        gap.record(now - last[0], {"feed": "bench", "symbol": "BTCUSDT"})
        msgs.add(1, {"feed": "bench", "symbol": "BTCUSDT"})
        last[0] = now

    raw_msg, our_msg = _pair(raw_message, lambda: feed.message("BTCUSDT"), calls, repeats)
    rows.append(("feed message: raw OTel", raw_msg, 1.0))
    rows.append(("feed message: FeedMonitor.message()", our_msg, our_msg / raw_msg))
    tp.shutdown()
    mp.shutdown()
    reset_globals()
    return rows


def memory_collector_down(calls: int) -> list[tuple[str, float, float | None]]:
    """Memory after N orders with OTLP export to a closed port: must be bounded (queues drop, not grow)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reset_globals()
    qt.init(endpoint=f"http://127.0.0.1:{port}", service_name="bench", metric_export_interval=3600,
            shutdown_timeout=1.0)
    traced = qt.traced_order(venue="binance")(_work)
    rows = []
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    checkpoints = {}
    for i in range(1, calls * 2 + 1):
        with qt.trade_flow(symbol="BTCUSDT", strategy="s") as flow, flow.execution():
            traced("BTCUSDT", "buy", 1.0, client_order_id=f"c-{i}")
        if i in (calls // 2, calls, calls * 2):
            gc.collect()
            checkpoints[i] = (tracemalloc.get_traced_memory()[0] - baseline) / 1024 / 1024
    tracemalloc.stop()
    started = time.monotonic()
    qt.shutdown()
    shutdown_s = time.monotonic() - started
    for n, mib in checkpoints.items():
        rows.append((f"collector down: traced memory after {n} trades (MiB)", mib, None))
    rows.append(("collector down: qt.shutdown() seconds", shutdown_s, None))
    reset_globals()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = speed(args.calls, args.repeats)
    print(f"{'case':58} {'ns/call':>10} {'vs raw OTel':>12}")
    print("-" * 82)
    for name, ns, ratio in rows:
        print(f"{name:58} {ns:10.0f} {'' if ratio is None else f'{ratio:.2f}x':>12}")
    print()
    mem = memory_collector_down(args.calls)
    print(f"{'bounded memory / shutdown (collector down)':58} {'value':>10}")
    print("-" * 70)
    for name, value, _ in mem:
        print(f"{name:58} {value:10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
