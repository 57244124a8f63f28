"""Sizing: synthetic bots through agent -> two tail-sampling gateways -> Tempo, at stepped offered loads.

    python benchmarks/bench_gateway.py [--rates 4000,8000,16000,32000] [--seconds 20] [--bots 8]

Runs the fleet of the end-to-end suite (tests/e2e/fleet/harness.py: the real agent, two gateways, Tempo and
Prometheus on loopback, built by scripts/build-servers.sh) with the production decision_wait (10 s). Synthetic
bots send what the SDK sends, pre-encoded so the load generator stays cheap: trades of 8 spans (trade, 4 stages,
risk check, order, fill) with the contract's qt.sampling.keep marks (10 % bad trades, plus --keep-ratio of the
healthy ones), and every second each bot's metric export (--points per bot). Each step reports, per process:
spans/s and metric points/s received, CPU (% of one core) and resident memory; and what was refused or dropped.
Everything shares this machine's cores, the generator included: the figures are a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from tests.e2e.fleet.harness import GATEWAYS, Fleet

SPANS_PER_TRADE = 8
TRADES_PER_REQUEST = 125


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


class Template:
    """A serialized request with sentinel ids and timestamps, and where they are, to patch in fresh values."""

    def __init__(self, payload: bytes, ids: list[tuple[int, list[int]]], times: list[tuple[int, int]]) -> None:
        self.payload, self.ids, self.times = payload, ids, times

    @staticmethod
    def offsets(payload: bytes, sentinel: bytes) -> list[int]:
        found, at = [], payload.find(sentinel)
        while at != -1:
            found.append(at)
            at = payload.find(sentinel, at + 1)
        return found

    def render(self, rng: random.Random, now_ns: int) -> bytes:
        buf = bytearray(self.payload)
        for length, offsets in self.ids:
            new = rng.randbytes(length)
            for at in offsets:
                buf[at:at + length] = new
        for at, delta in self.times:
            buf[at:at + 8] = (now_ns + delta).to_bytes(8, "little")
        return bytes(buf)


def trace_template(service: str, keep_ratio: float, rng: random.Random) -> Template:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", service))
    spans = rs.scope_spans.add().spans
    sentinels: list[tuple[bytes, int]] = []
    id_sentinels: list[bytes] = []
    for t in range(TRADES_PER_REQUEST):
        trace_id = rng.randbytes(16)
        id_sentinels.append(trace_id)
        bad = t % 10 == 0
        kept = bad or rng.random() < keep_ratio
        names = ["qt.trade", "qt.trade.signal", "qt.trade.entry", "qt.risk.check", "qt.trade.execution",
                 "qt.order.place", "qt.order.update", "qt.trade.exit"]
        parents = [None, 0, 0, 2, 0, 4, 5, 0]
        span_ids = [rng.randbytes(8) for _ in names]
        id_sentinels.extend(span_ids)
        for i, (name, parent) in enumerate(zip(names, parents)):
            span = spans.add(trace_id=trace_id, span_id=span_ids[i], name=name,
                             parent_span_id=span_ids[parent] if parent is not None else b"",
                             kind=Span.SPAN_KIND_CLIENT if name == "qt.order.place" else Span.SPAN_KIND_INTERNAL)
            start, end = rng.randbytes(8), rng.randbytes(8)
            span.start_time_unix_nano = int.from_bytes(start, "little")
            span.end_time_unix_nano = int.from_bytes(end, "little")
            sentinels += [(start, -50_000_000 + i * 1_000_000), (end, -50_000_000 + i * 1_000_000 + 800_000)]
            span.attributes.extend([_kv("symbol", "BTCUSDT"), _kv("strategy", "momentum"), _kv("venue", "binance")])
            if name == "qt.order.place":
                span.attributes.extend([_kv("side", "buy"), _kv("order.client_order_id", f"c-{t}"),
                                        _kv("order.quantity", 0.5), _kv("order.price", 100.0)])
                if bad:
                    span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="ExchangeTimeout"))
            if kept and (name == "qt.order.place" or not bad):
                span.attributes.append(_kv("qt.sampling.keep", True))
    payload = req.SerializeToString()
    ids = [(len(s), Template.offsets(payload, s)) for s in id_sentinels]
    times = [(at, delta) for s, delta in sentinels for at in Template.offsets(payload, s)]
    assert all(len(o) >= 1 for _, o in ids) and len(times) == len(sentinels), "sentinel collision: rerun"
    return Template(payload, ids, times)


def metrics_template(service: str, points: int, rng: random.Random) -> Template:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(_kv("service.name", service))
    metrics = rm.scope_metrics.add().metrics
    sentinels: list[tuple[bytes, int]] = []
    per_metric = 10
    for m in range(max(1, points // per_metric)):
        metric = metrics.add(name=f"qt.bench.counter{m}", unit="1")
        metric.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
        metric.sum.is_monotonic = True
        for p in range(per_metric):
            dp = metric.sum.data_points.add(as_double=float(p))
            dp.attributes.append(_kv("symbol", f"S{p}"))
            start, now = rng.randbytes(8), rng.randbytes(8)
            dp.start_time_unix_nano = int.from_bytes(start, "little")
            dp.time_unix_nano = int.from_bytes(now, "little")
            sentinels += [(start, -3_600_000_000_000), (now, 0)]
    payload = req.SerializeToString()
    times = [(at, delta) for s, delta in sentinels for at in Template.offsets(payload, s)]
    return Template(payload, [], times)


class Load:
    """Offered load from --workers processes: trace requests at a share of the rate spread over the bots, and
    one metric export per bot per second (from the first worker)."""

    def __init__(self, fleet: Fleet, bots: int, keep_ratio: float, points: int, workers: int) -> None:
        self.port = int(fleet.otlp_http.rsplit(":", 1)[1])
        self.workers = workers
        rng = random.Random(1)  # templates are built once, here; the forked workers inherit them
        self.templates = [(trace_template(f"bench-bot-{b}", keep_ratio, rng),
                           metrics_template(f"bench-bot-{b}", points, rng)) for b in range(bots)]

    def run(self, spans_per_s: float, seconds: float) -> None:
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_worker, args=(self.port, w, self.templates[w::self.workers],
                                                  spans_per_s / self.workers, seconds))
                 for w in range(self.workers)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()


def _worker(port: int, w: int, templates: list[tuple[Template, Template]], spans_per_s: float, seconds: float) -> None:
    rng = random.Random()
    traces = [t for t, _ in templates]
    metrics = [m for _, m in templates]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    interval = TRADES_PER_REQUEST * SPANS_PER_TRADE / spans_per_s
    deadline = time.monotonic() + seconds
    next_at = next_metrics = time.monotonic()
    i = 0
    while time.monotonic() < deadline:
        if time.monotonic() >= next_metrics:
            for template in metrics:
                _post(conn, "/v1/metrics", template.render(rng, time.time_ns()))
            next_metrics += 1.0
        _post(conn, "/v1/traces", traces[i % len(traces)].render(rng, time.time_ns()))
        i += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    conn.close()


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> None:
    conn.request("POST", path, body, {"Content-Type": "application/x-protobuf"})
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        print(f"{path}: HTTP {resp.status}", file=sys.stderr)


def proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds so far, resident MiB) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:")) / 1024
    return cpu, rss


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def counters(fleet: Fleet) -> dict[str, float]:
    out = {"agent_spans": fleet.metric_sum("agent", "otelcol_receiver_accepted_spans"),
           "agent_points": fleet.metric_sum("agent", "otelcol_receiver_accepted_metric_points"),
           "agent_refused": fleet.metric_sum("agent", "otelcol_receiver_refused_spans"),
           "agent_dropped": fleet.metric_sum("agent", "otelcol_exporter_send_failed_spans", exporter="load_balancing")
           + fleet.metric_sum("agent", "otelcol_exporter_enqueue_failed_spans", exporter="load_balancing")}
    for g in GATEWAYS:
        out[f"{g}_spans"] = fleet.metric_sum(g, "otelcol_receiver_accepted_spans")
        out[f"{g}_refused"] = fleet.metric_sum(g, "otelcol_receiver_refused_spans")
        out[f"{g}_kept"] = fleet.metric_sum(g, "otelcol_processor_tail_sampling_global_count_traces_sampled",
                                            sampled="true")
        out[f"{g}_decided"] = fleet.metric_sum(g, "otelcol_processor_tail_sampling_global_count_traces_sampled")
        out[f"{g}_too_early"] = fleet.metric_sum(g, "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early")
    return out


def step(fleet: Fleet, load: Load, rate: float, seconds: float) -> dict[str, Any]:
    names = ["agent", *GATEWAYS, "tempo"]
    pids = {n: fleet.servers[n].proc.pid for n in names}  # type: ignore[union-attr]
    c0, t0 = counters(fleet), time.monotonic()
    cpu0 = {n: proc_stats(p)[0] for n, p in pids.items()}
    peak = {n: 0.0 for n in names}
    stop = threading.Event()

    def sample_rss() -> None:
        while not stop.is_set():
            for n, p in pids.items():
                peak[n] = max(peak[n], proc_stats(p)[1])
            stop.wait(0.5)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    gen0, busy0 = os.times(), machine_busy()
    load.run(rate, seconds)
    gen1, busy1 = os.times(), machine_busy()
    stop.set()
    sampler.join()
    wall = time.monotonic() - t0
    c1 = counters(fleet)
    cpu = {n: (proc_stats(p)[0] - cpu0[n]) / wall * 100 for n, p in pids.items()}
    cpu["machine"] = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * 100 * (os.cpu_count() or 1)
    cpu["generator"] = ((gen1.children_user + gen1.children_system - gen0.children_user - gen0.children_system)
                        / wall * 100)
    d = {k: (c1[k] - c0[k]) / wall for k in c0}
    return {"rate": rate, "wall": wall, "cpu": cpu, "rss": peak, "d": d}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="4000,8000,16000,32000", help="offered spans/s, stepped")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--bots", type=int, default=8)
    parser.add_argument("--points", type=int, default=200, help="metric points per bot export (1/s)")
    parser.add_argument("--keep-ratio", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=3, help="load generator processes (at most --bots)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        fleet = Fleet(Path(tmp), decision_wait="10s")
        try:
            fleet.start()
            load = Load(fleet, args.bots, args.keep_ratio, args.points, args.workers)
            load.run(2000, 5)  # warm-up: connections, first traces through, JIT-free but caches warm
            rows = [step(fleet, load, float(rate), args.seconds) for rate in args.rates.split(",")]
        finally:
            fleet.stop()

    print(f"\n{args.bots} synthetic bots, {SPANS_PER_TRADE} spans per trade, "
          f"{args.points} metric points per bot per s, "
          f"keep ratio {args.keep_ratio} (+10 % bad trades kept), decision_wait 10 s, {os.cpu_count()} cores shared")
    head = (f"{'offered':>8} | {'agent spans/s':>13} {'points/s':>8} {'CPU%':>5} {'RSS':>5} | "
            + " | ".join(f"{g + ' spans/s':>16} {'kept':>5} {'CPU%':>5} {'RSS':>5}" for g in GATEWAYS)
            + f" | {'tempo CPU%':>10} {'gen CPU%':>8} {'machine%':>8} | refused/dropped")
    print(head)
    print("-" * len(head))
    for r in rows:
        d, cpu, rss = r["d"], r["cpu"], r["rss"]
        lost = d["agent_refused"] + d["agent_dropped"] + sum(
            d[f"{g}_refused"] + d[f"{g}_too_early"] * SPANS_PER_TRADE for g in GATEWAYS)
        kept = {g: d[f"{g}_kept"] / d[f"{g}_decided"] if d[f"{g}_decided"] else 0.0 for g in GATEWAYS}
        print(f"{r['rate']:8.0f} | {d['agent_spans']:13.0f} {d['agent_points']:8.0f} {cpu['agent']:5.0f} "
              f"{rss['agent']:5.0f} | "
              + " | ".join(f"{d[f'{g}_spans']:16.0f} {kept[g]:5.0%} {cpu[g]:5.0f} {rss[g]:5.0f}" for g in GATEWAYS)
              + f" | {cpu['tempo']:10.0f} {cpu['generator']:8.0f} {cpu['machine']:8.0f} | {lost:.0f}/s")
    print("RSS in MiB (peak during the step); CPU in % of one core (machine: all cores, from /proc/stat); rates per\n"
          "second of wall time; kept = share of the\n"
          "traces decided during the step that were kept; refused/dropped = spans refused by a receiver, "
          "dropped by the\n"
          "agent after retries, or dropped by a gateway before their verdict (num_traces full).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
