"""The whole pipeline in one run, against hand-written OpenTelemetry measured in the same run (issue 19, part 5).

    python benchmarks/bench_pipeline.py            # the README's tables: a quiet phase and a busy phase, ~5 min
    python benchmarks/bench_pipeline.py --quick    # the same rows, 1 s steps, fewer repeats, ~2.5 min (development)
    python benchmarks/bench_pipeline.py --phases quiet --step-seconds 5

Prints markdown tables, one per phase, with a "ratio vs hand-written OTel" column; the header gives the machine
(CPU count, model) and its load average when each phase starts and ends. The **busy** phase runs one CPU burner
process per core (a spinning loop at nice 0, started and stopped here) alongside everything the phase measures.

What is measured, each engine in a process of its own (``Bot`` from ``bench_overhead.py``: the same span, latency
histogram and counter per order; a trade is 6 spans: the trade, its 4 stages, the order inside the execution stage):

- **qt_telemetry**: the default ``process`` engine (the bot writes records, the exporter process writes OTLP).
- **hand-written OTel**: ``TracerProvider`` + ``BatchSpanProcessor`` + OTLP/HTTP span exporter, ``MeterProvider`` +
  ``PeriodicExportingMetricReader`` + OTLP/HTTP metric exporter, all SDK defaults.
- **bare**: the same loop calling the undecorated function (what the load generator itself costs).

Both export OTLP/HTTP to a local receiver in this process that decodes every request (``bench_overhead.Sink``), so
"delivered" is counted, not assumed, and qt's ``qt.telemetry.dropped`` reaches it with the metrics. Rows:

- on-thread per order / per trade: the trading thread's CPU time (``time.thread_time``) per call, in bursts of
  ~0.1 s (at most ~1,000 spans) with pauses the export side catches up in (the median burst); and its wall time,
  which adds waiting for the GIL and the CPU.
- exporter CPU per order / per trade span, single-threaded: ``bench_exporter.py``'s measurement (the same records
  through the lean path, and through SDK objects + the official OTLP encoders, which is what hand-written OTel's
  export work is), CPU time, best of the repeats.
- delivered with 0 dropped: the offered rate is stepped (orders 1k, 2k, 5k, 10k, 20k, 50k, 100k/s; trades 200, 500,
  1k, 2k, 5k, 10k, 20k/s), each step for ``--step-seconds``; a step passes when the bot achieved >= 95 % of the offered
  rate, the receiver got every span made and nothing was dropped (the bot's own counters and the exporter's
  ``qt.telemetry.dropped``). Stepping stops at the first failure (but always runs the compare rate below); the
  highest step passed before the first failure is reported.
- process-tree CPU per order / per trade at the compare rate (2,000 orders/s, 500 trades/s, both engines pass it
  on a quiet box): utime + stime of the bot (``getrusage``) and its exporter (``/proc/<pid>/task/*/schedstat``,
  nanoseconds) over the step and its drain, less what the bare loop spent at the same rate (and less the bot's
  own polling of the receiver); and the exporter alone at the highest rate qt passed.
- RSS: ``VmHWM`` of the exporter and of each bot process at the end.
- idle CPU: the exporter (qt) and the bot's background threads (OTel) while no order is placed; both export
  metrics every second here (``OTEL_METRIC_EXPORT_INTERVAL=1000``, so qt's drop counts arrive within a step).
- import and setup: ``import qt_telemetry`` (and ``init()``) against importing and setting up the SDK, wall time
  in a fresh interpreter, median of several.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from benchmarks.bench_overhead import Bot, Sink  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
ORDER_RATES = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)
TRADE_RATES = (200, 500, 1_000, 2_000, 5_000, 10_000, 20_000)
COMPARE_ORDERS, COMPARE_TRADES = 2_000, 500
SPANS_PER_TRADE = 6
ENGINES = {"qt": "qt_process", "otel": "otel_sdk", "bare": "bare"}

QT_IMPORT = "import qt_telemetry"
OTEL_IMPORT = """
from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
"""
IMPORT_CHILD = """
import json, sys, time
sys.path.insert(0, {repo!r}); sys.path.insert(0, {src!r})
from benchmarks.bench_overhead import Bot
before = len(sys.modules)
t0 = time.perf_counter()
{imports}
t1 = time.perf_counter()
modules = len(sys.modules) - before
bot = Bot({engine!r}, {endpoint!r})
t2 = time.perf_counter()
sdk_metrics = "opentelemetry.sdk.metrics" in sys.modules
print(json.dumps({{"import_ms": (t1 - t0) * 1e3, "setup_ms": (t2 - t0) * 1e3, "modules": modules,
                  "sdk_metrics": sdk_metrics}}), flush=True)
bot.stop()
"""


# --- /proc --------------------------------------------------------------------------------------------------

def cpu_s(pid: int | str) -> float:
    """utime + stime of a process (every thread, live or gone), or a thread (``"<pid>/task/<tid>"``): clock ticks
    (10 ms)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_s(path: str) -> float:
    """Time on a CPU of one thread (``/proc/<pid>/task/<tid>/schedstat``: nanoseconds)."""
    try:
        with open(f"/proc/{path}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def process_run_s(pid: int) -> float:
    """Time on a CPU of every live thread of a process, in nanoseconds' precision (a thread that ends between two
    samples takes its time with it: :meth:`Tree.sample` falls back to the ticks then)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    return sum(run_s(f"{pid}/task/{task}") for task in tasks)


def self_cpu_s() -> float:
    """This process's CPU time, every thread, live or gone (``getrusage``: the kernel's precise runtime)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def status_mib(pid: int, key: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# --- the load generator and the measurements inside one engine's process ----------------------------------

def offer(call: Callable[[], Any], rate: int, seconds: float) -> tuple[int, float]:
    """``rate`` calls a second for ``seconds``, paced by the clock: what is due is made at once, then the loop
    sleeps (at least 1 ms, so pacing costs the same at any rate). Gives up at 1.5x the time (the thread cannot
    offer the rate). Returns (calls made, achieved rate)."""
    total = int(rate * seconds)
    done = 0
    start = time.perf_counter()
    limit = start + seconds * 1.5
    while done < total:
        now = time.perf_counter()
        if now > limit:
            break
        due = min(total, int((now - start) * rate) + 1)
        while done < due:
            call()
            done += 1
        wait = start + done / rate - time.perf_counter()
        if wait > 0:
            time.sleep(max(wait, 0.001))
    return done, done / (time.perf_counter() - start)


def on_thread_ns(call: Callable[[], Any], budget: float, bursts: int, max_calls: int) -> dict[str, float]:
    """CPU time of the calling thread per call (and wall time), median of ``bursts`` bursts of ~``budget`` s each
    (at most ``max_calls`` calls: ~1,000 spans, half the exporter's default span queue), with a pause after each so
    the export side catches up (a bot bursts, then waits on its market data)."""
    start = time.perf_counter()
    for _ in range(20):
        call()
    calls = max(20, min(max_calls, int(budget / max((time.perf_counter() - start) / 20, 1e-7))))
    cpu, wall = [], []
    for _ in range(bursts):
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        for _ in range(calls):
            call()
        cpu.append((time.thread_time_ns() - c0) / calls)
        wall.append((time.perf_counter_ns() - w0) / calls)
        time.sleep(max(0.05, budget))
    return {"cpu": statistics.median(cpu), "wall": statistics.median(wall), "calls": calls}


def sink_counts(endpoint: str) -> dict[str, float]:
    with urllib.request.urlopen(endpoint + "/count", timeout=10) as reply:
        return dict(json.loads(reply.read()))


class Tree:
    """CPU of the bot process and its exporter."""

    def __init__(self, exporter: Callable[[], int | None]) -> None:
        self.exporter = exporter
        self.main = f"{os.getpid()}/task/{threading.main_thread().native_id}"

    def sample(self) -> dict[str, float]:
        pid = self.exporter()
        return {"bot": self_cpu_s(), "main": run_s(self.main), "exporter": process_run_s(pid) if pid else 0.0,
                "exporter_loop": run_s(f"{pid}/task/{pid}") if pid else 0.0,
                "exporter_ticks": cpu_s(pid) if pid else 0.0, "exporter_pid": float(pid or 0),
                "t": time.perf_counter()}

    @staticmethod
    def exporter_delta(a: dict[str, float], b: dict[str, float]) -> float:
        if a["exporter_pid"] != b["exporter_pid"]:
            return float("nan")  # replaced: its CPU is not comparable
        precise, ticks = b["exporter"] - a["exporter"], b["exporter_ticks"] - a["exporter_ticks"]
        return precise if precise > ticks - 0.02 else ticks  # a thread that ended took its time with it


def quiesce(bot: Bot, endpoint: str, still: float = 1.0, timeout: float = 30.0) -> None:
    """Flush, then wait until the receiver's span count has not moved for ``still`` seconds."""
    getattr(bot, "flush", lambda: True)()
    deadline = time.monotonic() + timeout
    last, since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        spans = sink_counts(endpoint)["spans"]
        if spans != last:
            last, since = spans, time.monotonic()
        elif time.monotonic() - since >= still:
            return
        time.sleep(0.1)


def step(bot: Bot, tree: Tree, kind: str, rate: int, seconds: float, endpoint: str | None,
         settle: float) -> dict[str, Any]:
    """One offered rate: made, achieved, delivered, dropped, and the CPU it cost (over the step and its drain)."""
    call = (lambda: bot.place("BTCUSDT", "buy", 0.5)) if kind == "orders" else (lambda: bot.trade("BTCUSDT"))
    spans_per = 1 if kind == "orders" else SPANS_PER_TRADE
    before = sink_counts(endpoint) if endpoint else {"spans": 0, "dropped": 0}
    dropped_before = bot.dropped()
    cpu0 = tree.sample()
    made, achieved = offer(call, rate, seconds)
    expected = before["spans"] + made * spans_per
    received = before["spans"]
    polling = 0.0  # the main thread's CPU spent asking the receiver (the harness's, not the telemetry's)
    if endpoint:
        getattr(bot, "flush", lambda: True)()
        deadline = time.monotonic() + max(15.0, 3 * seconds)
        last, last_change = received, time.monotonic()
        while time.monotonic() < deadline:
            c0 = time.thread_time()
            received = sink_counts(endpoint)["spans"]
            polling += time.thread_time() - c0
            if received >= expected:
                break
            if received != last:
                last, last_change = received, time.monotonic()
            elif time.monotonic() - last_change > 3.0:
                break  # nothing arrives any more: the rest was dropped
            time.sleep(0.05)
    cpu1 = tree.sample()
    after = before
    if endpoint and settle:
        time.sleep(settle)  # qt.telemetry.dropped travels with the exporter's next metric export
        after = sink_counts(endpoint)
    producer = bot.dropped() - dropped_before
    reported = int(after["dropped"] - before["dropped"])
    n = made * spans_per
    delivered = int(received - before["spans"])
    return {"rate": rate, "made": made, "achieved": achieved, "spans": n, "delivered": delivered,
            "dropped": max(producer, reported), "producer_dropped": producer, "reported_dropped": reported,
            "ok": achieved >= 0.95 * rate and made == int(rate * seconds) and delivered >= n
            and not producer and not reported,
            "bot_cpu": cpu1["bot"] - cpu0["bot"] - polling, "main_cpu": cpu1["main"] - cpu0["main"] - polling,
            "exporter_cpu": Tree.exporter_delta(cpu0, cpu1), "seconds": cpu1["t"] - cpu0["t"],
            "exporter_loop_cpu": cpu1["exporter_loop"] - cpu0["exporter_loop"],
            "polling": polling}


def ladder(bot: Bot, tree: Tree, kind: str, rates: tuple[int, ...], seconds: float, endpoint: str | None,
           settle: float, compare: int) -> list[dict[str, Any]]:
    """The steps in turn, until one fails at or above the compare rate (which is always run: its CPU is compared)."""
    out = []
    for rate in rates:
        out.append(step(bot, tree, kind, rate, seconds, endpoint, settle))
        if not out[-1]["ok"] and rate >= compare:
            break
        if endpoint:
            quiesce(bot, endpoint, still=0.3)
    return out


def child(engine: str, endpoint: str, quick: bool, step_seconds: float) -> None:
    os.environ["OTEL_METRIC_EXPORT_INTERVAL"] = "1000"  # qt's drop counts arrive within a second of a step
    bot = Bot(ENGINES[engine], endpoint)
    exporter_pid: Callable[[], int | None] = lambda: None
    if engine == "qt":
        from qt_telemetry._engine.recorder.state import STATE

        channel = STATE.engine.outbox.channel  # type: ignore[union-attr]
        exporter_pid = lambda: channel.exporter_pid  # noqa: E731
        deadline = time.monotonic() + 10
        while exporter_pid() is None and time.monotonic() < deadline:
            bot.place("BTCUSDT", "buy", 0.5)
            bot.flush()
            time.sleep(0.1)
    elif engine == "otel":
        from opentelemetry import trace

        bot.flush = lambda: trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
    tree = Tree(exporter_pid)
    result: dict[str, Any] = {"engine": engine, "exporter_pid": exporter_pid(),
                              "bot_rss_start": status_mib(os.getpid(), "VmRSS")}
    budget, bursts = (0.05, 9) if quick else (0.1, 25)
    dropped = bot.dropped()
    result["order"] = on_thread_ns(lambda: bot.place("BTCUSDT", "buy", 0.5), budget, bursts, 1_000)
    result["trade"] = on_thread_ns(lambda: bot.trade("BTCUSDT"), budget, bursts, 1_000 // SPANS_PER_TRADE)
    result["on_thread_dropped"] = bot.dropped() - dropped  # by the bot: a shed batch would take another path
    if engine == "bare":
        result["orders"] = ladder(bot, tree, "orders", (COMPARE_ORDERS,), step_seconds, None, 0, COMPARE_ORDERS)
        result["trades"] = ladder(bot, tree, "trades", (COMPARE_TRADES,), step_seconds, None, 0, COMPARE_TRADES)
    else:
        quiesce(bot, endpoint)
        idle = 2.0 if quick else 5.0
        a = tree.sample()
        time.sleep(idle)
        b = tree.sample()
        result["idle"] = {"bot": (b["bot"] - a["bot"]) / (b["t"] - a["t"]),
                          "exporter": Tree.exporter_delta(a, b) / (b["t"] - a["t"])}
        settle = 1.5 if engine == "qt" else 0.0
        result["orders"] = ladder(bot, tree, "orders", ORDER_RATES, step_seconds, endpoint, settle, COMPARE_ORDERS)
        quiesce(bot, endpoint)
        result["trades"] = ladder(bot, tree, "trades", TRADE_RATES, step_seconds, endpoint, settle, COMPARE_TRADES)
    result["bot_hwm"] = status_mib(os.getpid(), "VmHWM")
    pid = exporter_pid()
    result["exporter_hwm"] = status_mib(pid, "VmHWM") if pid else None
    result["exporter_replaced"] = pid != result["exporter_pid"]
    bot.stop()
    print(json.dumps(result), flush=True)


# --- single-threaded exporter CPU (bench_exporter.py's measurement) ---------------------------------------

def micro_child(orders: int, trades: int, repeat: int) -> None:
    from benchmarks import bench_exporter as E

    order_records = [E.order(i) for i in range(orders)]
    trade_records = [span for i in range(trades) for span in E.trade(i)]
    s = E.settings()
    out = {}
    for name, run in (("lean", E.run_lean), ("sdk", E.run_sdk)):
        out[name] = {"order": E.cpu_us(run, order_records, s, orders, repeat),
                     "span": E.cpu_us(run, trade_records, s, trades, repeat) / SPANS_PER_TRADE}
    print(json.dumps(out), flush=True)


# --- the phases ---------------------------------------------------------------------------------------------

def _burn() -> None:
    while True:
        pass


def run_child(args: list[str], timeout: float = 900) -> dict[str, Any] | None:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        print(f"<!-- {' '.join(args[:2])}: not measured: {proc.stderr.strip().splitlines()[-3:]} -->", flush=True)
        return None
    return dict(json.loads(lines[-1]))


def import_times(engine: str, endpoint: str, runs: int) -> dict[str, float]:
    code = IMPORT_CHILD.format(repo=str(REPO), src=str(REPO / "src"), engine=ENGINES[engine], endpoint=endpoint,
                               imports=QT_IMPORT if engine == "qt" else OTEL_IMPORT)
    samples = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                             env={**os.environ, "OTEL_METRIC_EXPORT_INTERVAL": "60000"})
        samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {key: statistics.median(s[key] for s in samples) for key in ("import_ms", "setup_ms", "modules")} | {
        "sdk_metrics": float(samples[-1]["sdk_metrics"])}


def phase(name: str, args: argparse.Namespace) -> dict[str, Any]:
    burners: list[multiprocessing.Process] = []
    if name == "busy":
        for _ in range(os.cpu_count() or 1):
            p = multiprocessing.Process(target=_burn, daemon=True)
            p.start()
            burners.append(p)
        time.sleep(2.0)
    load_start = os.getloadavg()
    sink = Sink()
    try:
        runs = 3 if args.quick else 7
        data: dict[str, Any] = {"phase": name, "load_start": load_start}
        data["import"] = {e: import_times(e, sink.endpoint, runs) for e in ("qt", "otel")}
        micro = ["--micro", "--orders", "3000" if args.quick else "10000", "--trades", "500" if args.quick else "2000",
                 "--repeat", "1" if args.quick else "3"]
        data["micro"] = run_child(micro)
        common = ["--endpoint", sink.endpoint, "--step-seconds", str(args.step_seconds),
                  *(["--quick"] if args.quick else [])]
        for engine in ("bare", "qt", "otel"):
            spans0, cpu0 = sink.spans, self_cpu_s()
            data[engine] = run_child(["--child", engine, *common])
            if data[engine] is not None:
                data[engine]["receiver_us_per_span"] = (self_cpu_s() - cpu0) / max(1, sink.spans - spans0) * 1e6
            if engine == "qt":
                with sink.lock:
                    reasons: dict[str, float] = {}
                    for key, value in sink.dropped.items():
                        reason = key.split("|", 1)[1]
                        reasons[reason] = reasons.get(reason, 0) + value
                data["qt_dropped_by_reason"] = {k: v for k, v in reasons.items() if v}
        data["load_end"] = os.getloadavg()
    finally:
        sink.close()
        for p in burners:
            p.terminate()
            p.join(5)
    return data


# --- the tables ---------------------------------------------------------------------------------------------

def _fmt(value: float | None, digits: int = 1, none: str = "-") -> str:
    if value is None or value != value:
        return none
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _ratio(qt: float | None, otel: float | None) -> str:
    if qt is None or otel is None or qt != qt or otel != otel or not otel:
        return "-"
    return f"{qt / otel:.3f}x" if qt / otel < 0.1 else f"{qt / otel:.2f}x"


def _best(steps: list[dict[str, Any]]) -> int | None:
    """The highest step passed before the first failure."""
    best = None
    for s in steps:
        if not s["ok"]:
            break
        best = s["rate"]
    return best


def _at(steps: list[dict[str, Any]], rate: int) -> dict[str, Any] | None:
    return next((s for s in steps if s["rate"] == rate), None)


def _tree_us(r: dict[str, Any] | None, bare: dict[str, Any] | None, kind: str, rate: int) -> float | None:
    """Process-tree CPU per order (or trade) at ``rate``, less the bare loop's."""
    if r is None:
        return None
    s = _at(r[kind], rate)
    if s is None or not s["made"]:
        return None
    spent = s["bot_cpu"] + (s["exporter_cpu"] if s["exporter_cpu"] == s["exporter_cpu"] else 0.0)
    b = _at(bare[kind], rate) if bare else None
    harness = b["bot_cpu"] / b["made"] if b and b["made"] else 0.0
    return (spent / s["made"] - harness) * 1e6


def _met(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**not met**")


def table(data: dict[str, Any], args: argparse.Namespace) -> None:
    qt, otel, bare, micro = data.get("qt"), data.get("otel"), data.get("bare"), data.get("micro")
    la0 = " ".join(f"{x:.2f}" for x in data["load_start"])
    la1 = " ".join(f"{x:.2f}" for x in data["load_end"])
    burn = (f", {os.cpu_count()} CPU burner processes (nice 0) running throughout" if data["phase"] == "busy"
            else ", no burner")
    print(f"\n#### {data['phase']} phase{burn}; load average {la0} at the start, {la1} at the end\n")
    print("| measure | qt_telemetry | hand-written OTel | ratio vs hand-written OTel | target | met |")
    print("|---|---:|---:|---:|---|---|")

    def row(label: str, q: float | None, o: float | None, target: str = "", ok: bool | None = None,
            digits: int = 1, ratio: str | None = None, none: str = "-") -> None:
        print(f"| {label} | {_fmt(q, digits, none)} | {_fmt(o, digits, none)} | {ratio or _ratio(q, o)} | {target} "
              f"| {_met(ok) if target else ''} |")

    if qt and otel:
        for kind, label in (("order", "per order"), ("trade", "per trade (6 spans)")):
            q, o = qt[kind]["cpu"] / 1e3, otel[kind]["cpu"] / 1e3
            row(f"on-thread CPU µs {label}", q, o, "≤ 0.1x", q / o <= 0.1, 2)
        for kind, label in (("order", "per order"), ("trade", "per trade")):
            q, o = qt[kind]["wall"] / 1e3, otel[kind]["wall"] / 1e3
            row(f"on-thread wall µs {label} (CPU + waiting for the GIL and the CPU)", q, o, "≤ 0.1x", q / o <= 0.1, 2)
    if micro:
        q, o = micro["lean"]["order"], micro["sdk"]["order"]
        row("exporter CPU µs per order, single-threaded (OTel column: SDK objects + official encoders)", q, o,
            "≤ 15 µs", q <= 15)
        row("exporter CPU µs per trade span, single-threaded (same)", micro["lean"]["span"], micro["sdk"]["span"])
    if qt and otel:
        q, o = _tree_us(qt, bare, "orders", COMPARE_ORDERS), _tree_us(otel, bare, "orders", COMPARE_ORDERS)
        row(f"process-tree CPU µs per order at {COMPARE_ORDERS:,}/s (bot + exporter, less the bare loop)", q, o,
            "≤ 0.2x", None if q is None or o is None else q / o <= 0.2)
        q, o = _tree_us(qt, bare, "trades", COMPARE_TRADES), _tree_us(otel, bare, "trades", COMPARE_TRADES)
        row(f"process-tree CPU µs per trade at {COMPARE_TRADES:,}/s (same)", q, o)
        q_s, o_s = _at(qt["orders"], COMPARE_ORDERS), _at(otel["orders"], COMPARE_ORDERS)
        row(f"export work CPU µs per order at {COMPARE_ORDERS:,}/s: qt's exporter process; OTel: its span and "
            "metric threads", q_s["exporter_cpu"] / q_s["made"] * 1e6 if q_s and q_s["made"] else None,
            (o_s["bot_cpu"] - o_s["main_cpu"]) / o_s["made"] * 1e6 if o_s and o_s["made"] else None)
        for kind, unit, per in (("orders", "order", 1), ("trades", "trade span", SPANS_PER_TRADE)):
            best = _best(qt[kind])
            s = _at(qt[kind], best) if best else None
            row(f"qt's exporter CPU µs per {unit} at {_fmt(best, 0)} {kind}/s (the highest step it passed)",
                s["exporter_cpu"] / s["made"] / per * 1e6 if s and s["made"] else None, None)
        bq, bo = _best(qt["orders"]), _best(otel["orders"])
        row(f"orders/s delivered, 0 dropped (highest step passed; steps of {args.step_seconds:g} s)", bq, bo,
            "≥ 50,000", (bq or 0) >= 50_000, 0, none=f"< {ORDER_RATES[0]:,}")
        bq, bo = _best(qt["trades"]), _best(otel["trades"])
        row("trades/s (6 spans) delivered, 0 dropped (same)", bq, bo, "≥ 10,000", (bq or 0) >= 10_000, 0,
            none=f"< {TRADE_RATES[0]:,}")
        row("exporter peak RSS MiB (VmHWM)", qt["exporter_hwm"], None)
        row("bot peak RSS MiB (VmHWM); qt: bot + exporter", qt["bot_hwm"] + (qt["exporter_hwm"] or 0),
            otel["bot_hwm"])
        row("idle CPU ms/s: qt's exporter; OTel: its bot's background threads", qt["idle"]["exporter"] * 1e3,
            otel["idle"]["bot"] * 1e3, digits=2)
        row("idle CPU ms/s of the whole tree (bot + exporter)", (qt["idle"]["bot"] + qt["idle"]["exporter"]) * 1e3,
            otel["idle"]["bot"] * 1e3, digits=2)
    imp = data["import"]
    row("`import qt_telemetry` vs importing the SDK setup, ms", imp["qt"]["import_ms"], imp["otel"]["import_ms"])
    row("import + `init()` vs import + SDK setup, ms", imp["qt"]["setup_ms"], imp["otel"]["setup_ms"])
    row("modules imported", imp["qt"]["modules"], imp["otel"]["modules"], digits=0)
    print(f"\nopentelemetry.sdk.metrics imported by the qt bot after `init()`: "
          f"{'yes' if imp['qt']['sdk_metrics'] else 'no'}")
    print("\nsteps: offered rate, achieved, spans delivered/made, dropped (bot / exporter's qt.telemetry.dropped), "
          "CPU µs per order or trade (bot process, its main thread, exporter: all / its loop thread)\n")
    print("| engine | kind | offered/s | achieved/s | delivered/made | dropped | bot µs | main thread µs | "
          "exporter µs | pass |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for engine, label in (("qt", "qt_telemetry"), ("otel", "hand-written OTel"), ("bare", "bare loop")):
        r = data.get(engine)
        if not r:
            continue
        for kind in ("orders", "trades"):
            for s in r[kind]:
                made = s["made"] or 1
                exp = (f"{_fmt(s['exporter_cpu'] / made * 1e6)} / {_fmt(s['exporter_loop_cpu'] / made * 1e6)}"
                       if engine == "qt" else "-")
                dropped = f"{s['producer_dropped']:,} / {s['reported_dropped']:,}" if engine == "qt" else "-"
                delivered = f"{s['delivered']:,}/{s['spans']:,}" if engine != "bare" else "-"
                passed = "-" if engine == "bare" else "yes" if s["ok"] else "no"
                print(f"| {label} | {kind} | {s['rate']:,} | {s['achieved']:,.0f} | {delivered} | {dropped} | "
                      f"{_fmt(s['bot_cpu'] / made * 1e6)} | {_fmt(s['main_cpu'] / made * 1e6)} | {exp} | "
                      f"{passed} |")
    notes = []
    for engine in ("qt", "otel"):
        r = data.get(engine)
        if r:
            notes.append(f"{engine}: on-thread bursts of {r['order']['calls']:,} orders, {r['trade']['calls']:,} "
                         f"trades (records the bot shed meanwhile: {r['on_thread_dropped']:,}); bot RSS after setup "
                         f"{r['bot_rss_start']:.1f} MiB; the receiver (this process) spent "
                         f"{r['receiver_us_per_span']:.1f} µs CPU per span it decoded")
    if data.get("qt_dropped_by_reason"):
        notes.append("qt.telemetry.dropped at the receiver over the whole phase (on-thread bursts included), by "
                     "signal,reason: " + ", ".join(
            f"{k} {v:,.0f}" for k, v in data["qt_dropped_by_reason"].items()))
    if bare:
        notes.append(f"bare loop: on-thread CPU µs per order {bare['order']['cpu'] / 1e3:.2f}, per trade "
                     f"{bare['trade']['cpu'] / 1e3:.2f}")
    if qt and qt.get("exporter_replaced"):
        notes.append("qt: the exporter was replaced during the run (its CPU across the replacement is not counted)")
    print("\n" + "; ".join(notes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter steps and fewer repeats (development)")
    parser.add_argument("--phases", default="quiet,busy")
    parser.add_argument("--step-seconds", type=float, default=None, help="length of each offered-rate step")
    parser.add_argument("--child", choices=sorted(ENGINES))
    parser.add_argument("--endpoint")
    parser.add_argument("--micro", action="store_true")
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--trades", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.step_seconds is None:
        args.step_seconds = 1.0 if args.quick else 3.0
    if args.micro:
        micro_child(args.orders, args.trades, args.repeat)
        return
    if args.child:
        child(args.child, args.endpoint, args.quick, args.step_seconds)
        return
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    started = time.time()
    print(f"### bench_pipeline: {os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}{', --quick' if args.quick else ''}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    for name in args.phases.split(","):
        table(phase(name, args), args)
        sys.stdout.flush()
    print(f"\n(run took {time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
