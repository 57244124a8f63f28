"""Exporter CPU per record: the lean path (records -> OTLP bytes) against the SDK path (records -> SDK objects ->
official encoders), over the same records, in one run.

    python benchmarks/bench_exporter.py [--orders 20000] [--trades 5000] [--rss-orders 200000] [--repeat 3]
                                        [--native-values 100000]

Single-threaded, CPU time (``time.process_time``) of everything the exporter process does per record except the
socket: convert a batch of 16 records as one datagram brings them, take/encode spans in requests of 512, and one
metric collection and encoding at the end. An order is one ``qt.order.place`` span with the attributes
``@traced_order`` records (venue, symbol, side, type, quantity, price, client order id, venue order id, ...) and its
order-latency measurement; a trade is six spans (``qt.trade`` and its four stages, the order inside the
execution stage) and their seven measurements. Peak RSS: each path alone in a fresh interpreter, after
``--rss-orders`` orders made as they are consumed (spans taken and dropped as a sender would, metrics collected
every 10,000 orders). Native histograms: the lean path's own exponential aggregation (:mod:`exponential`) against
the SDK's aggregation object kept for the two native instruments, inside the lean path and alone.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics._internal.measurement import Measurement
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from qt_telemetry import _config, semconv
from qt_telemetry._engine.exporter import aggregate, exponential
from qt_telemetry._engine.exporter.convert import Converter
from qt_telemetry._engine.exporter.lean import LeanConverter
from qt_telemetry._engine.exporter.pipeline import exemplar_filter, temporality, views
from qt_telemetry._engine.exporter.sdk_fixes import NativeHistogramAggregation
from qt_telemetry._engine.transport import records as R
from qt_telemetry._redaction import Redactor

BASE = Resource.create({"service.name": "bench-bot"})
VENUES, SYMBOLS, SIDES = ("binance", "kraken"), ("BTCUSDT", "ETHUSDT", "SOLUSDT"), ("buy", "sell")
T0 = 1_700_000_000_000_000_000


def order(i: int, parent: bytes | None = None, trace: bytes | None = None) -> tuple[Any, ...]:
    """An order span as ``@traced_order`` records it (5 % failures)."""
    failed = i % 20 == 0
    start = T0 + i * 1_000_000
    attributes = {
        "code.function.name": "place_order", "venue": VENUES[i % 2], "outcome": "error" if failed else "ok",
        "symbol": SYMBOLS[i % 3], "side": SIDES[i // 2 % 2], "order.quantity": 0.5 + i % 7, "order.type": "limit",
        "order.price": 100.0 + (i % 1000) / 100, "order.client_order_id": f"c-{i}", "strategy": "momentum",
        "peer.service": VENUES[i % 2], "order.id": str(1_000_000 + i)}
    if failed:
        attributes["error.type"] = "TimeoutError"
    return (R.SPAN, semconv.SPAN_ORDER, 2, trace or (i + 1).to_bytes(16, "big"), (i * 7 + 3).to_bytes(8, "big"),
            parent, False, True, start, start + 2_000_000 + (i * 7919) % 40_000_000, 2 if failed else 0,
            "TimeoutError: venue did not answer" if failed else None, attributes, None, None, None, None)


def trade(i: int) -> list[tuple[Any, ...]]:
    """A trade of six spans: the trade, its four stages, the order inside the execution stage."""
    trace, root = (i + 1).to_bytes(16, "big"), (i * 11 + 1).to_bytes(8, "big")
    start = T0 + i * 10_000_000
    common = {"symbol": SYMBOLS[i % 3], "strategy": "momentum", "outcome": "ok"}
    out = []
    for n, stage in enumerate(semconv.STAGES):
        sid = (i * 11 + 2 + n).to_bytes(8, "big")
        attrs = {"stage": stage, **common}
        if stage == "signal":
            attrs |= {"signal.confidence": 0.8, "signal.direction": "long", "signal.reference_price": 100.0}
        if stage == "execution":
            out.append(order(i, sid, trace))
        out.append((R.SPAN, f"qt.trade.{stage}", 0, trace, sid, root, False, True, start + n * 1_000_000,
                    start + n * 1_000_000 + 500_000, 0, None, attrs, None, None, None, None))
    out.append((R.SPAN, semconv.SPAN_TRADE, 0, trace, root, None, False, True, start, start + 5_000_000, 0, None,
                dict(common), None, None, None, None))
    return out


def settings(native: bool = False) -> _config.Settings:
    return _config.resolve(environ={"OTEL_BSP_MAX_QUEUE_SIZE": "1000000"}, mode="none", native_histograms=native,
                           trace_keep_ratio=0.05)


# --- the two paths: a datagram of 16 records at a time, span requests of 512, one metric collection ----------

def batches(records: Iterable[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    """Records as datagrams bring them: 16 at a time."""
    batch: list[tuple[Any, ...]] = []
    for record in records:
        batch.append(record)
        if len(batch) == 16:
            yield batch
            batch = []
    if batch:
        yield batch


def run_sdk(datagrams: Iterable[list[tuple[Any, ...]]], s: _config.Settings, collect_every: int = 0) -> None:
    spans: collections.deque[ReadableSpan] = collections.deque()
    readers: list[InMemoryMetricReader] = []

    def meters(resource: Resource) -> MeterProvider:
        readers.append(InMemoryMetricReader(preferred_temporality=temporality(s)))
        return MeterProvider(metric_readers=[readers[-1]], resource=resource, views=views(s),
                             exemplar_filter=exemplar_filter(s), shutdown_on_exit=False)

    converter = Converter(redactor=Redactor(), max_label_values=250, slow_order_seconds=s.slow_order_seconds,
                          trace_keep_ratio=s.trace_keep_ratio, base_resource=BASE, meters=meters,
                          spans=spans.append, remote=True)
    producer = converter.producer(100, "bench")
    for n, datagram in enumerate(datagrams):
        converter.accept(producer, datagram)
        while len(spans) >= 512:
            encode_spans([spans.popleft() for _ in range(512)]).SerializeToString()
        if collect_every and n % collect_every == collect_every - 1:
            for reader in readers:
                encode_metrics(reader.get_metrics_data()).SerializeToString()
    if spans:
        encode_spans(list(spans)).SerializeToString()
    for reader in readers:
        encode_metrics(reader.get_metrics_data()).SerializeToString()


def run_lean(datagrams: Iterable[list[tuple[Any, ...]]], s: _config.Settings, collect_every: int = 0) -> None:
    converter = LeanConverter(s, base_resource=BASE)
    producer = converter.producer(100, "bench")
    for n, datagram in enumerate(datagrams):
        converter.accept(producer, datagram)
        while converter.queued_spans() >= 512:
            converter.take_spans(512)
        if collect_every and n % collect_every == collect_every - 1:
            converter.collect_metrics(time.time_ns())
    while converter.take_spans(512) is not None:
        pass
    converter.collect_metrics(time.time_ns())


class SdkExponentialSeries:
    """The alternative to :class:`exponential.ExponentialSeries`: the SDK's aggregation object per series."""

    def __init__(self, start_ns: int) -> None:
        aggregation = NativeHistogramAggregation()
        reservoir = _sdk_reservoir()
        self._agg = aggregation._create_aggregation(_HISTOGRAM, {}, lambda _cls: reservoir, start_ns)

    def record(self, value: float, exemplar: Any) -> None:
        context = None
        if exemplar is not None and exemplar.trace_id is not None:
            context = set_span_in_context(NonRecordingSpan(SpanContext(
                int.from_bytes(exemplar.trace_id, "big"), int.from_bytes(exemplar.span_id, "big"), False,
                TraceFlags(TraceFlags.SAMPLED))))
        self._agg.aggregate(Measurement(value, time.time_ns(), _HISTOGRAM, context, None), exemplar is not None)

    def collect(self, delta: bool, now_ns: int) -> Any:
        point = self._agg.collect(AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE, now_ns)
        if point is None:
            return None
        return exponential.ExponentialPoint(point.start_time_unix_nano, point.time_unix_nano, point.count,
                                            point.sum, point.scale or 0, point.zero_count,
                                            (point.positive.offset, list(point.positive.bucket_counts)),
                                            (point.negative.offset, list(point.negative.bucket_counts)),
                                            point.min, point.max, [])


def _sdk_reservoir() -> Callable[..., Any]:
    from opentelemetry.sdk.metrics import SimpleFixedSizeExemplarReservoir

    return SimpleFixedSizeExemplarReservoir


_HISTOGRAM = MeterProvider(shutdown_on_exit=False).get_meter("bench").create_histogram("h")


def with_sdk_exponential(run: Callable[..., None]) -> Callable[..., None]:
    def patched(*args: Any, **kwargs: Any) -> None:
        original = aggregate.ExponentialSeries
        aggregate.ExponentialSeries = SdkExponentialSeries  # type: ignore[assignment,misc]
        try:
            run(*args, **kwargs)
        finally:
            aggregate.ExponentialSeries = original  # type: ignore[misc]

    return patched


def cpu_us(run: Callable[..., None], records: list[tuple[Any, ...]], s: _config.Settings, units: int,
           repeat: int) -> float:
    datagrams = list(batches(records))
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        run(datagrams, s)
        best = min(best, time.process_time() - start)
    return best / units * 1e6


def rss_child(path: str, orders: int) -> None:
    """RSS of a fresh interpreter running one path over ``orders`` orders made as they are consumed (VmHWM: the
    high-water mark of this process's own memory; ``ru_maxrss`` would include the parent's size at the fork)."""
    start = _memory()
    run = run_lean if path == "lean" else run_sdk
    run(batches(order(i) for i in range(orders)), settings(), collect_every=10_000 // 16)
    end = _memory()
    print(json.dumps({"start": start, "end": end}))


def _memory() -> dict[str, float]:
    """VmHWM and VmRSS in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmHWM", "VmRSS")}


def native_table(values: int, repeat: int) -> list[tuple[str, float, float]]:
    """One order-latency series: the lean port against the SDK's aggregation object, per measurement (each with
    an exemplar offered, as under trace_based with every trace kept) and per cumulative collection."""
    import random

    rng = random.Random(7)
    latencies = [rng.lognormvariate(-4.2, 0.6) if rng.random() < 0.97 else rng.lognormvariate(-1.6, 0.5)
                 for _ in range(values)]
    exemplar = aggregate.Exemplar(0.0, T0, b"\x01" * 16, b"\x02" * 8)
    rows = []
    for name, series_type in (("lean port (exponential.py)", exponential.ExponentialSeries),
                              ("SDK aggregation object", SdkExponentialSeries)):
        best_record = best_collect = float("inf")
        for _ in range(repeat):
            series = series_type(T0)
            start = time.process_time()
            for value in latencies:
                series.record(value, exemplar)
            best_record = min(best_record, (time.process_time() - start) / values * 1e6)
            start = time.process_time()
            for _ in range(100):
                series.record(0.01, None)
                series.collect(False, time.time_ns())
            best_collect = min(best_collect, (time.process_time() - start) / 100 * 1e6)
        rows.append((name, best_record, best_collect))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--trades", type=int, default=5_000)
    parser.add_argument("--rss-orders", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--native-values", type=int, default=100_000)
    parser.add_argument("--rss-child", choices=["lean", "sdk"])
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.rss_orders)
        return 0
    orders = [order(i) for i in range(args.orders)]
    trades = [span for i in range(args.trades) for span in trade(i)]
    rows = []
    for label, native in (("explicit histograms", False), ("native histograms", True)):
        s = settings(native)
        paths: list[tuple[str, Callable[..., None]]] = [("SDK path", run_sdk), ("lean path", run_lean)]
        if native:
            paths.append(("lean + SDK exponential", with_sdk_exponential(run_lean)))
        for name, run in paths:
            order_us = cpu_us(run, orders, s, args.orders, args.repeat)
            trade_us = cpu_us(run, trades, s, args.trades, args.repeat)
            rows.append((label, name, order_us, trade_us))
    print(f"exporter CPU per record, best of {args.repeat} ({args.orders} orders, {args.trades} trades of 6 spans)")
    print(f"{'histograms':20} {'path':24} {'order µs':>9} {'vs SDK':>7} {'trade µs':>9} {'vs SDK':>7}")
    for label, name, order_us, trade_us in rows:
        sdk = next(r for r in rows if r[0] == label and r[1] == "SDK path")
        print(f"{label:20} {name:24} {order_us:9.1f} {order_us / sdk[2]:6.2f}x {trade_us:9.1f} "
              f"{trade_us / sdk[3]:6.2f}x")
    print("\nnative histogram aggregation, one order-latency series (97 % around 15 ms, 3 % around 200 ms)")
    print(f"{'aggregation':28} {'µs/measurement':>15} {'µs/collection':>14}")
    for name, per_value, per_collection in native_table(args.native_values, args.repeat):
        print(f"{name:28} {per_value:15.2f} {per_collection:14.1f}")
    print(f"\npeak RSS after {args.rss_orders:,} orders, each path alone in a fresh interpreter")
    for path in ("sdk", "lean"):
        out = subprocess.run([sys.executable, __file__, "--rss-child", path, "--rss-orders", str(args.rss_orders)],
                             capture_output=True, text=True, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        start, end = result["start"], result["end"]
        print(f"{path + ' path':12} peak {end['VmHWM']:6.1f} MiB, at the end {end['VmRSS']:6.1f} MiB "
              f"(after imports {start['VmRSS']:5.1f} MiB: the path's own {end['VmHWM'] - start['VmRSS']:5.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
