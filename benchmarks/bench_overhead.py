"""What telemetry costs a trading bot: per call, per trade, in loop jitter, throughput, exit time and memory.

    python benchmarks/bench_overhead.py [--quick]        (pip install -e ".[bench]" for ddtrace and fastotel)

Every engine runs in a process of its own (OTel providers are process-global), exporting OTLP/HTTP to a local
sink that decodes what it receives (so "nothing dropped" is checked, not assumed). Ratios are against the same
telemetry hand-written with the OTel SDK, measured in the same run:

- bare                  the function, no telemetry
- before init           ``@traced_order`` before ``qt.init()``
- prometheus_client     ``Histogram.observe`` + ``Counter.inc`` (the anchor the hand-built stacks use)
- ddtrace               ``tracer.wrap()`` (a tracer built for low overhead; no agent, so it buffers and drops)
- otel sdk              hand-written: span + histogram recorded inside it + counter, BatchSpanProcessor
- otel sdk + fastotel   the same with fastotel's Rust OTLPSpanProcessor (spans only; encodes off the GIL)
- qt process            qt_telemetry, default engine: records to the exporter process
- qt inline             qt_telemetry, the same records converted on a thread of the bot's own process
- qt sdk                qt_telemetry on SDK spans in-process (the path for your own providers/processors)

Speed targets live here, never in timed tests.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ENGINES = ["bare", "before_init", "prometheus_client", "ddtrace", "otel_sdk", "otel_fastotel", "qt_process",
           "qt_inline", "qt_sdk"]
LABELS = {"bare": "bare function", "before_init": "@traced_order before init()",
          "prometheus_client": "prometheus_client observe+inc", "ddtrace": "ddtrace tracer.wrap()",
          "otel_sdk": "hand-written OTel SDK", "otel_fastotel": "hand-written OTel + fastotel",
          "qt_process": "qt_telemetry (process engine)", "qt_inline": "qt_telemetry (inline engine)",
          "qt_sdk": "qt_telemetry (sdk engine)"}


# --- the sink: a collector stand-in that counts what it gets --------------------------------------------

class Sink:
    def __init__(self, port: int = 0) -> None:
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.spans = 0
        self.dropped: dict[str, float] = {}
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with sink.lock:
                    body = json.dumps({"spans": sink.spans, "dropped": sum(sink.dropped.values())}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/v1/traces":
                    req = trace_service_pb2.ExportTraceServiceRequest()
                    req.ParseFromString(body)
                    n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
                    with sink.lock:
                        sink.spans += n
                    reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                else:
                    req = metrics_service_pb2.ExportMetricsServiceRequest()
                    req.ParseFromString(body)
                    for rm in req.resource_metrics:
                        instance = next((a.value.string_value for a in rm.resource.attributes
                                         if a.key == "service.instance.id"), "")
                        for sm in rm.scope_metrics:
                            for m in sm.metrics:
                                if m.name == "qt.telemetry.dropped":
                                    for p in m.sum.data_points:
                                        key = instance + "|" + ",".join(f"{a.value.string_value}"
                                                                         for a in p.attributes)
                                        with sink.lock:
                                            sink.dropped[key] = max(sink.dropped.get(key, 0), p.as_int)
                    reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def dropped_total(self) -> float:
        with self.lock:
            return sum(self.dropped.values())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the engines, each in its own process ---------------------------------------------------------------

def _work(symbol: str, side: str, quantity: float, order_type: str = "limit", price: float = 100.0,
          client_order_id: str = "c-1") -> dict[str, int]:
    return {"orderId": 1}


class Bot:
    """One engine's ``place`` (an order) and ``trade`` (a trade flow: 4 stages and an order)."""

    def __init__(self, engine: str, endpoint: str) -> None:
        self.engine = engine
        self.stop: Callable[[], Any] = lambda: None
        self.dropped: Callable[[], int] = lambda: 0
        getattr(self, f"_{engine}")(endpoint)

    def _bare(self, endpoint: str) -> None:
        self.place = _work

        def trade(symbol: str) -> None:
            _work(symbol, "buy", 1.0)

        self.trade = trade

    def _before_init(self, endpoint: str) -> None:
        self._qt(None)

    def _prometheus_client(self, endpoint: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        registry = CollectorRegistry()
        latency = Histogram("order_latency_seconds", "x", ["venue", "symbol", "side", "outcome"], registry=registry)
        orders = Counter("orders", "x", ["venue", "symbol", "side", "outcome"], registry=registry)

        def place(symbol: str, side: str, quantity: float, *a: Any, **k: Any) -> Any:
            started = time.perf_counter()
            result = _work(symbol, side, quantity)
            latency.labels("binance", symbol, side, "ok").observe(time.perf_counter() - started)
            orders.labels("binance", symbol, side, "ok").inc()
            return result

        stage = Histogram("stage_seconds", "x", ["stage"], registry=registry)

        def trade(symbol: str) -> None:
            for name in ("signal", "entry", "execution", "exit"):
                started = time.perf_counter()
                if name == "execution":
                    place(symbol, "buy", 1.0)
                stage.labels(name).observe(time.perf_counter() - started)

        self.place, self.trade = place, trade

    def _ddtrace(self, endpoint: str) -> None:
        os.environ.setdefault("DD_TRACE_AGENT_URL", f"http://127.0.0.1:{free_port()}")
        try:
            from ddtrace.trace import tracer
        except ImportError:
            from ddtrace import tracer

        @tracer.wrap("qt.order.place", service="bot")
        def place(symbol: str, side: str, quantity: float, *a: Any, **k: Any) -> Any:
            return _work(symbol, side, quantity)

        def trade(symbol: str) -> None:
            with tracer.trace("qt.trade"):
                for name in ("signal", "entry", "execution", "exit"):
                    with tracer.trace(f"qt.trade.{name}"):
                        if name == "execution":
                            place(symbol, "buy", 1.0)

        self.place, self.trade = place, trade

    def _otel_sdk(self, endpoint: str, fastotel: bool = False) -> None:
        from opentelemetry import metrics, trace
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind

        tp = TracerProvider()
        if fastotel:
            from fastotel import OTLPSpanProcessor

            tp.add_span_processor(OTLPSpanProcessor(endpoint=endpoint + "/v1/traces"))
        else:
            tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint + "/v1/traces")))
        interval = float(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", 10_000))  # the same as qt's, when set
        mp = MeterProvider(metric_readers=[PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=endpoint + "/v1/metrics"), export_interval_millis=interval)])
        trace.set_tracer_provider(tp)
        metrics.set_meter_provider(mp)
        tracer = tp.get_tracer("bot")
        meter = mp.get_meter("bot")
        latency = meter.create_histogram("qt.order.latency", "s")
        orders = meter.create_counter("qt.orders")
        stage_duration = meter.create_histogram("qt.trade.stage.duration", "s")

        def place(symbol: str, side: str, quantity: float, order_type: str = "limit", price: float = 100.0,
                  client_order_id: str = "c-1") -> Any:
            started = time.perf_counter()
            attrs = {"venue": "binance", "symbol": symbol, "side": side, "order.type": order_type}
            with tracer.start_as_current_span("qt.order.place", kind=SpanKind.CLIENT, attributes={
                    **attrs, "order.quantity": quantity, "order.price": price,
                    "order.client_order_id": client_order_id}) as span:
                result = _work(symbol, side, quantity)
                labels = {**attrs, "outcome": "ok"}
                latency.record(time.perf_counter() - started, labels)
                orders.add(1, labels)
                span.set_attribute("order.id", result["orderId"])
                return result

        def trade(symbol: str) -> None:
            with tracer.start_as_current_span("qt.trade", attributes={"symbol": symbol, "strategy": "s"}):
                for name in ("signal", "entry", "execution", "exit"):
                    started = time.perf_counter()
                    with tracer.start_as_current_span(f"qt.trade.{name}", attributes={"stage": name}):
                        if name == "execution":
                            place(symbol, "buy", 1.0)
                        stage_duration.record(time.perf_counter() - started, {"stage": name, "symbol": symbol})

        self.place, self.trade = place, trade
        self.stop = lambda: (tp.shutdown(), mp.shutdown())

    def _otel_fastotel(self, endpoint: str) -> None:
        self._otel_sdk(endpoint, fastotel=True)

    def _qt_process(self, endpoint: str) -> None:
        self._qt(endpoint, "process")

    def _qt_inline(self, endpoint: str) -> None:
        self._qt(endpoint, "inline")

    def _qt_sdk(self, endpoint: str) -> None:
        self._qt(endpoint, "sdk")

    def _qt(self, endpoint: str | None, engine: str = "process") -> None:
        import qt_telemetry as qt
        from qt_telemetry._engine.recorder.state import STATE

        if endpoint is not None:
            qt.init(endpoint=endpoint, engine=engine, log_correlation=False)

        @qt.traced_order(venue="binance")
        def place(symbol: str, side: str, quantity: float, order_type: str = "limit", price: float = 100.0,
                  client_order_id: str = "c-1") -> Any:
            return {"orderId": 1}

        def trade(symbol: str) -> None:
            with qt.trade_flow(symbol=symbol, strategy="s") as flow:
                with flow.signal():
                    pass
                with flow.entry():
                    pass
                with flow.execution():
                    place(symbol, "buy", 1.0)
                with flow.exit():
                    pass

        self.place, self.trade = place, trade
        self.stop = lambda: qt.shutdown(5)
        outbox = getattr(STATE.engine, "outbox", None)
        if outbox is not None:
            self.dropped = lambda: sum(outbox.dropped.values())
        self.flush = lambda: qt.force_flush(30)


# --- measurements ---------------------------------------------------------------------------------------

def per_call(fn: Callable[[], Any], calls: int, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter_ns() - start) / calls)
        time.sleep(0.05)  # the export side catches up between runs, as it would between bursts
    return statistics.median(runs)


def jitter(place: Callable[..., Any], seconds: float, rate: int = 2000) -> list[float]:
    """A loop at ``rate`` ticks/s, one order per tick: how late each tick finishes (ms), GC on.

    Between ticks the loop sleeps, as a bot waiting on its market data does, and spins only the last 200 µs
    before a tick is due (so the tick starts on time to the microsecond when nothing interferes).
    """
    period = 1e9 / rate
    late = []
    t0 = time.perf_counter_ns()
    for i in range(int(seconds * rate)):
        due = t0 + i * period
        idle = (due - time.perf_counter_ns()) / 1e9 - 0.0002
        if idle > 0:
            time.sleep(idle)
        while time.perf_counter_ns() < due:
            pass
        x = 0
        for k in range(100):  # a little strategy work
            x += k
        place("BTCUSDT", "buy", 0.5)
        late.append((time.perf_counter_ns() - due) / 1e6)
    return late


def paired_jitter(place: Callable[..., Any], seconds: float) -> dict[str, dict[str, float]]:
    """This VM's own stalls come and go by the second, so the instrumented loop and the same loop calling the
    bare function run alternately, one-second slices, in the same process: both see the same weather."""
    late: dict[str, list[float]] = {"traced": [], "bare": []}
    for _ in range(max(1, round(seconds))):  # ``seconds`` of each, one second at a time
        late["bare"] += jitter(_work, 1.0)
        late["traced"] += jitter(place, 1.0)
    return {name: _quantiles(values) for name, values in late.items()}


def _quantiles(late: list[float]) -> dict[str, float]:
    late = sorted(late)
    q = lambda p: late[min(len(late) - 1, int(p * len(late)))]
    return {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": late[-1]}


def sink_counts(endpoint: str) -> dict[str, float]:
    with urllib.request.urlopen(endpoint + "/count", timeout=10) as reply:
        return dict(json.loads(reply.read()))


def throughput(bot: Bot, endpoint: str, seconds: float) -> list[dict[str, float]]:
    """Orders at fixed rates; a rate is sustained when nothing was dropped (by the bot or its exporter) and
    every span reached the sink."""
    out = []
    for rate in (2_000, 5_000, 10_000, 20_000, 50_000, 100_000):
        before = sink_counts(endpoint)
        before_dropped = bot.dropped()
        n = int(rate * seconds)
        period = 1.0 / rate
        start = time.perf_counter()
        for i in range(n):
            due = start + i * period
            while time.perf_counter() < due:
                pass
            bot.place("BTCUSDT", "buy", 0.5)
        achieved = n / (time.perf_counter() - start)
        getattr(bot, "flush", lambda: True)()
        deadline = time.monotonic() + 30
        while sink_counts(endpoint)["spans"] - before["spans"] < n and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.5)  # the exporter's drop counts travel with its metrics
        after = sink_counts(endpoint)
        received = int(after["spans"] - before["spans"])
        dropped = bot.dropped() - before_dropped + int(after["dropped"] - before["dropped"])
        out.append({"rate": rate, "achieved": achieved, "received": received, "made": n, "dropped": dropped})
        if received < n or dropped or achieved < rate * 0.9:
            break
    return out


def child(engine: str, endpoint: str, seconds: float, quick: bool) -> None:
    os.environ["OTEL_METRIC_EXPORT_INTERVAL"] = "1000"
    bot = Bot(engine, endpoint)
    gc.collect()
    calls, repeats = (5_000, 5) if quick else (20_000, 7)
    result: dict[str, Any] = {"engine": engine}
    result["order_ns"] = per_call(lambda: bot.place("BTCUSDT", "buy", 0.5), calls, repeats)
    result["trade_ns"] = per_call(lambda: bot.trade("BTCUSDT"), calls // 10, repeats)
    gc.collect()
    paired = paired_jitter(bot.place, seconds)
    result["jitter"], result["jitter_bare"] = paired["traced"], paired["bare"]
    if engine.startswith(("qt_process", "qt_inline", "otel")):
        result["throughput"] = throughput(bot, endpoint, 1.0 if quick else 2.0)
    bot.stop()
    print(json.dumps(result), flush=True)


# --- exit time and memory with the collector down -------------------------------------------------------

EXIT_BOT = """
import sys, time
sys.path.insert(0, {repo!r})
from benchmarks.bench_overhead import Bot
bot = Bot({engine!r}, {endpoint!r})
for _ in range(2000):
    bot.place("BTCUSDT", "buy", 0.5)
{shutdown}
print(time.time(), flush=True)
"""


def exit_time(engine: str, endpoint: str, shutdown: bool) -> float:
    code = EXIT_BOT.format(repo=str(REPO), engine=engine, endpoint=endpoint,
                           shutdown="bot.stop()" if shutdown else "")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None
    last_line = float(proc.stdout.readline())
    proc.wait(120)
    return time.time() - last_line


MEMORY_BOT = """
import os, sys, time
sys.path.insert(0, {repo!r})
from benchmarks.bench_overhead import Bot, rss_mib
import qt_telemetry as qt
from qt_telemetry._engine.recorder.state import STATE
bot = Bot("qt_process", {endpoint!r})
exporter = STATE.engine.outbox.channel._proc.pid
for _ in range(20000):
    bot.place("BTCUSDT", "buy", 0.5)
time.sleep(2)
base = rss_mib(os.getpid()) + rss_mib(exporter)
started = time.perf_counter()
for i in range({orders}):
    bot.place("BTCUSDT", "buy", 0.5)
elapsed = time.perf_counter() - started
time.sleep(3)
grown = rss_mib(os.getpid()) + rss_mib(exporter) - base
print(f"{{grown}} {{elapsed}} {{bot.dropped()}}", flush=True)
sys.stdin.readline()  # the collector comes back now
qt.shutdown()
"""


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def collector_down(orders: int) -> dict[str, float]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", MEMORY_BOT.format(repo=str(REPO), orders=orders,
                                                                     endpoint=f"http://127.0.0.1:{port}")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "OTEL_METRIC_EXPORT_INTERVAL": "2000"})
    assert proc.stdin is not None and proc.stdout is not None
    grown, elapsed, producer_drops = (float(x) for x in proc.stdout.readline().split())
    sink = Sink(port)  # the collector is back: the drop counts must reach it
    proc.stdin.write("\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while sink.dropped_total() < orders * 0.5 and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.wait(60)
    reported = sink.dropped_total()
    sink.close()
    return {"orders": orders, "grown_mib": grown, "orders_per_s": orders / elapsed,
            "producer_drops": producer_drops, "reported_drops": reported}


# --- the report -----------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--endpoint")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each jitter loop")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--down-orders", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.endpoint, args.seconds, args.quick)
        return
    results: dict[str, dict[str, Any]] = {}
    collector = Sink()  # in this process: its decoding never competes for a bot's GIL
    for engine in args.engines.split(","):
        proc = subprocess.run([sys.executable, __file__, "--child", engine, "--endpoint", collector.endpoint,
                               "--seconds", str(args.seconds),
                               *(["--quick"] if args.quick else [])], capture_output=True, text=True, cwd=REPO,
                              timeout=1800)
        if proc.returncode != 0 or not proc.stdout.strip():
            print(f"{engine}: not measured ({proc.stderr.strip().splitlines()[-1:] or proc.returncode})")
            continue
        results[engine] = json.loads(proc.stdout.strip().splitlines()[-1])
    report(results)
    collector.close()
    sink = Sink()
    down = f"http://127.0.0.1:{free_port()}"
    print("\nexit: seconds from the bot's last line to the process gone")
    print(f"{'engine':<32}{'up, shutdown()':>16}{'up, no shutdown':>17}{'down, shutdown()':>18}"
          f"{'down, none':>12}")
    for engine in ("otel_sdk", "qt_process"):
        times = [exit_time(engine, sink.endpoint, True), exit_time(engine, sink.endpoint, False),
                 exit_time(engine, down, True), exit_time(engine, down, False)]
        print(f"{LABELS[engine]:<32}" + "".join(f"{t:>{w}.2f}" for t, w in zip(times, (16, 17, 18, 12))))
    sink.close()
    if args.down_orders:
        d = collector_down(args.down_orders)
        print(f"\ncollector down for {d['orders']:,.0f} orders (qt process engine): memory growth of the bot and "
              f"its exporter {d['grown_mib']:.1f} MiB; {d['orders_per_s']:,.0f} orders/s, no stall; records dropped "
              f"by the bot {d['producer_drops']:,.0f}; drops reported in qt.telemetry.dropped once the collector "
              f"was back: {d['reported_drops']:,.0f}")


def report(results: dict[str, dict[str, Any]]) -> None:
    sdk = results.get("otel_sdk", {})
    base = results.get("bare", {})

    def ratio(r: dict[str, Any], key: str) -> str:
        return f"{r[key] / sdk[key]:.3f}x" if sdk else "-"

    print(f"{'per order / per trade':<32}{'order µs':>10}{'vs OTel':>9}{'trade µs':>10}{'vs OTel':>9}")
    for name, r in results.items():
        print(f"{LABELS[name]:<32}{r['order_ns'] / 1000:>10.2f}{ratio(r, 'order_ns'):>9}"
              f"{r['trade_ns'] / 1000:>10.2f}{ratio(r, 'trade_ns'):>9}")
    if "before_init" in results and base:
        print(f"before init(): +{(results['before_init']['order_ns'] - base['order_ns']) / 1000:.2f} µs over the "
              "bare call")
    print("\n2000 ticks/s, one order per tick: tick lateness (ms) and what telemetry adds to the same loop calling the"
          " bare function in the same process, in alternating one-second slices")
    print(f"{'engine':<32}{'p50':>7}{'p99':>7}{'p99.9':>7}{'max':>7}{'+p99.9':>8}{'+max':>8}")
    for name, r in results.items():
        j = r["jitter"]
        b = r.get("jitter_bare", j)
        print(f"{LABELS[name]:<32}{j['p50']:>7.2f}{j['p99']:>7.2f}{j['p999']:>7.2f}{j['max']:>7.2f}"
              f"{j['p999'] - b['p999']:>+8.2f}{j['max'] - b['max']:>+8.2f}")
    print("\nthroughput: highest rate sustained with every span delivered and nothing dropped")
    for name, r in results.items():
        if "throughput" not in r:
            continue
        ok = [t for t in r["throughput"] if t["received"] >= t["made"] and not t["dropped"]
              and t["achieved"] >= t["rate"] * 0.9]
        last = r["throughput"][-1]
        best = f"{ok[-1]['rate']:,} orders/s" if ok else "below 2,000 orders/s"
        print(f"{LABELS[name]:<32}{best:>22}  (at {last['rate']:,}/s: achieved {last['achieved']:,.0f}/s, "
              f"delivered {last['received']:,}/{last['made']:,}, dropped and counted {last['dropped']:,})")


if __name__ == "__main__":
    main()
