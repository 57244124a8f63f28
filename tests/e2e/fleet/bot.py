"""A small trading bot for the fleet tests, written against the SDK's sampling contract with the raw OTel SDK.

It stands in for ``qt_telemetry`` until the SDK implements the contract (then this file shrinks to a
qt_telemetry bot); everything the collector tiers see is what the contract says the SDK emits:

- ``qt.sampling.keep = true`` on an order span that failed (ERROR), was rejected by the venue or was slower
  than ``QT_TELEMETRY_SLOW_ORDER_SECONDS`` (default 0.5); on a risk check that rejected; on kill-switch and
  circuit-breaker event spans; and on every span of a trace whose trace id falls in
  ``QT_TELEMETRY_TRACE_KEEP_RATIO`` (default 1.0; decided from the trace id's low 56 bits).
- Exemplars only from measurements made inside a span carrying that mark.
- ``QT_TELEMETRY_NATIVE_HISTOGRAMS=true``: qt.order.latency and qt.trade.stage.duration as base-2 exponential
  histograms (max scale 20, at most 160 buckets); otherwise the explicit buckets of semconv.

Trades follow a fixed 20-trade pattern (risk rejections, failed, venue-rejected, slow, breaker-trip orders;
the rest healthy); fills arrive on another thread. One JSON line per trade on stdout with the ground truth the
tests compare against: trace id, category, whether the SDK marked the trace, and every span it emitted
(id, parent id, name). ``--duration 0`` trades until stdin closes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics._internal.exemplar import ExemplarFilter
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

KEEP = "qt.sampling.keep"
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
LOW56 = (1 << 56) - 1
#: Position in the 20-trade cycle -> category (everything else is "healthy").
PATTERN = {4: "risk_rejected", 14: "risk_rejected", 7: "failed", 11: "venue_rejected", 17: "slow", 19: "breaker"}


def env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def ratio_kept(trace_id: int, ratio: float) -> bool:
    """The contract's consistent decision: the trace id's low 56 bits against the keep ratio."""
    return (trace_id & LOW56) < round(ratio * (1 << 56))


class KeptTraceExemplarFilter(ExemplarFilter):
    """Exemplars only from measurements inside a span marked ``qt.sampling.keep``: they never point at a
    trace a gateway may drop."""

    def should_sample(self, value: float, time_unix_nano: int, attributes: Attributes, context: Context) -> bool:
        span = trace.get_current_span(context)
        return span.is_recording() and getattr(span, "attributes", {}).get(KEEP) is True


class Bot:
    def __init__(self, service: str, seed: int) -> None:
        self.ratio = float(os.environ.get("QT_TELEMETRY_TRACE_KEEP_RATIO", "1.0"))
        self.slow_s = float(os.environ.get("QT_TELEMETRY_SLOW_ORDER_SECONDS", "0.5"))
        native = env_bool("QT_TELEMETRY_NATIVE_HISTOGRAMS")
        histogram = (lambda buckets: ExponentialBucketHistogramAggregation(max_size=160, max_scale=20)) if native \
            else (lambda buckets: ExplicitBucketHistogramAggregation(list(buckets)))
        resource = Resource.create({"service.name": service})
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.meter_provider = MeterProvider(
            resource=resource, exemplar_filter=KeptTraceExemplarFilter(),
            metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())],
            views=[View(instrument_name="qt.order.latency", aggregation=histogram(LATENCY_BUCKETS_S)),
                   View(instrument_name="qt.trade.stage.duration", aggregation=histogram(STAGE_BUCKETS_S))])
        self.tracer = self.tracer_provider.get_tracer("qt_telemetry")
        meter = self.meter_provider.get_meter("qt_telemetry")
        self.order_latency = meter.create_histogram("qt.order.latency", unit="s")
        self.stage_duration = meter.create_histogram("qt.trade.stage.duration", unit="s")
        self.trades = meter.create_counter("qt.trades", unit="{trade}")
        self.rng = random.Random(seed)
        self.fills = ThreadPoolExecutor(max_workers=2, thread_name_prefix="venue")
        self.out = threading.Lock()
        self.pending: list[Any] = []

    # --- spans following the contract -------------------------------------------------------------------
    def start(self, name: str, record: dict[str, Any], parent: Any = None, kind: SpanKind = SpanKind.INTERNAL,
              start_time: int | None = None, **attributes: Any) -> Any:
        ctx = trace.set_span_in_context(parent) if parent is not None else None
        span = self.tracer.start_span(name, context=ctx, kind=kind, attributes=attributes, start_time=start_time)
        sc = span.get_span_context()
        if ratio_kept(sc.trace_id, self.ratio):
            span.set_attribute(KEEP, True)
        parent_id = format(parent.get_span_context().span_id, "016x") if parent is not None else ""
        record["spans"].append([format(sc.span_id, "016x"), parent_id, name])
        return span

    def mark(self, span: Any, record: dict[str, Any]) -> None:
        span.set_attribute(KEEP, True)
        record["marked"] = True

    def stage(self, name: str, root: Any, record: dict[str, Any], symbol: str) -> Any:
        return _Stage(self, name, root, record, symbol)

    # --- one trade ----------------------------------------------------------------------------------------
    def trade(self, i: int) -> dict[str, Any]:
        category = PATTERN.get(i % 20, "healthy")
        symbol = ("BTCUSDT", "ETHUSDT")[i % 2]
        venue = ("binance", "kraken")[(i // 2) % 2]
        record: dict[str, Any] = {"i": i, "category": category, "marked": False, "spans": [], "venue": venue,
                                  "order_outcome": None, "t0": time.time()}
        root = self.start("qt.trade", record, symbol=symbol, strategy="momentum", **{"trade.id": f"t-{i}"})
        record["trace_id"] = format(root.get_span_context().trace_id, "032x")
        record["ratio_kept"] = ratio_kept(root.get_span_context().trace_id, self.ratio)
        rejected = category == "risk_rejected"
        with trace.use_span(root, end_on_exit=True):
            with self.stage("signal", root, record, symbol):
                pass
            with self.stage("entry", root, record, symbol) as entry:
                check = self.start("qt.risk.check", record, entry, **{"risk.rule": "max_position"})
                if rejected:
                    check.add_event("qt.risk.rejected", {"risk.rule": "max_position", "reason": "max_positions"})
                    check.set_attribute("outcome", "rejected")
                    self.mark(check, record)
                else:
                    check.set_attribute("outcome", "passed")
                check.end()
            if not rejected:
                with self.stage("execution", root, record, symbol) as execution:
                    self.order(category, execution, record, symbol, venue)
                with self.stage("exit", root, record, symbol) as exit_span:
                    if category == "breaker":
                        with trace.use_span(exit_span):
                            exit_span.add_event("qt.circuit_breaker.transition",
                                                {"breaker": f"{venue}-api", "breaker.state": "open"})
                            self.mark(exit_span, record)
            outcome = "rejected" if rejected else ("error" if record["order_outcome"] == "error" else "ok")
            root.set_attribute("outcome", outcome)
            self.trades.add(1, {"strategy": "momentum", "symbol": symbol, "outcome": outcome})
        record["t1"] = time.time()
        return record

    def order(self, category: str, parent: Any, record: dict[str, Any], symbol: str, venue: str) -> None:
        start_ns = time.time_ns()
        order = self.start("qt.order.place", record, parent, kind=SpanKind.CLIENT, start_time=start_ns,
                           venue=venue, symbol=symbol,
                           side="buy", **{"order.client_order_id": f"c-{record['i']}", "peer.service": venue})
        with trace.use_span(order, end_on_exit=False):
            delay = self.slow_s * 1.6 if category == "slow" else self.rng.uniform(0.001, 0.004)
            time.sleep(delay)
            error_type = None
            if category == "failed":
                error_type = "ExchangeTimeout"
                order.record_exception(TimeoutError("venue timeout"))
                order.set_status(Status(StatusCode.ERROR, "ExchangeTimeout: venue timeout"))
            end_ns = time.time_ns()
            latency = (end_ns - start_ns) / 1e9
            # The contract: mark before recording, so the latency exemplar exists exactly when the trace is kept.
            # The span's own start/end timestamps are the latency: the gateways' slow-order policy sees the same.
            if error_type is not None or latency > self.slow_s:
                self.mark(order, record)
            outcome = "error" if error_type else "ok"
            order.set_attribute("outcome", outcome)
            labels = {"venue": venue, "symbol": symbol, "side": "buy", "order.type": "limit", "outcome": outcome}
            if error_type:
                labels["error.type"] = error_type
            self.order_latency.record(latency, labels)
        order.end(end_time=end_ns)
        record["order_outcome"], record["order_latency"] = outcome, latency
        record["slow"] = latency > self.slow_s
        if error_type is None:
            event = "reject" if category == "venue_rejected" else "fill"
            self.pending.append(self.fills.submit(self.update, order, record, event))

    def update(self, order: Any, record: dict[str, Any], event: str) -> None:
        """A fill or a venue reject, later and on the venue's thread: a child of the order span."""
        time.sleep(self.rng.uniform(0.005, 0.03))
        span = self.start("qt.order.update", record, order, **{"order.event": event})
        if event == "reject":
            span.set_status(Status(StatusCode.ERROR, "order rejected: insufficient_margin"))
            self.mark(span, record)
        span.end()

    def kill_switch(self) -> dict[str, Any]:
        """Kill switch activated outside any trade: a short span of its own carries the event."""
        record: dict[str, Any] = {"i": -1, "category": "kill_switch", "marked": True, "spans": [], "t0": time.time(),
                                  "order_outcome": None}
        span = self.start("qt.kill_switch", record, kill_switch="main")
        record["trace_id"] = format(span.get_span_context().trace_id, "032x")
        record["ratio_kept"] = ratio_kept(span.get_span_context().trace_id, self.ratio)
        span.add_event("qt.kill_switch.change", {"kill_switch": "main", "reason": "daily_loss_limit"})
        span.set_attribute(KEEP, True)
        span.end()
        record["t1"] = time.time()
        return record

    def emit(self, record: dict[str, Any]) -> None:
        with self.out:
            print(json.dumps(record), flush=True)

    def shutdown(self) -> bool:
        self.fills.shutdown(wait=True)
        self.tracer_provider.force_flush(10_000)
        self.tracer_provider.shutdown()
        return bool(self.meter_provider.force_flush(10_000)) and (self.meter_provider.shutdown() is None)


class _Stage:
    """A trade stage span whose duration is recorded inside it (exemplar only when the span is marked)."""

    def __init__(self, bot: Bot, name: str, root: Any, record: dict[str, Any], symbol: str) -> None:
        self.bot, self.name, self.root, self.record, self.symbol = bot, name, root, record, symbol

    def __enter__(self) -> Any:
        self.t0 = time.perf_counter()
        self.span = self.bot.start(f"qt.trade.{self.name}", self.record, self.root, stage=self.name)
        self.scope = trace.use_span(self.span, end_on_exit=False)
        self.scope.__enter__()
        return self.span

    def __exit__(self, *exc: object) -> None:
        self.bot.stage_duration.record(time.perf_counter() - self.t0, {
            "strategy": "momentum", "symbol": self.symbol, "stage": self.name, "outcome": "ok"})
        self.scope.__exit__(*exc)
        self.span.end()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=100)
    parser.add_argument("--duration", type=float, default=None, help="trade for N seconds; 0 = until stdin closes")
    parser.add_argument("--rate", type=float, default=25.0, help="trades per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-switch", action="store_true", help="activate the kill switch after the trades")
    args = parser.parse_args()

    bot = Bot(os.environ.get("OTEL_SERVICE_NAME", "fleet-bot"), args.seed)
    stop = threading.Event()
    if args.duration == 0:
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    deadline = None if not args.duration else time.monotonic() + args.duration
    records = []
    i = 0
    next_at = time.monotonic()
    while True:
        if args.duration is None and i >= args.trades:
            break
        if stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
            break
        records.append(bot.trade(i))
        i += 1
        next_at += 1.0 / args.rate
        time.sleep(max(0.0, next_at - time.monotonic()))
    if args.kill_switch:
        records.append(bot.kill_switch())
    for future in bot.pending:
        future.result()
    for record in records:  # after the fills: every span of every trade is in its record
        bot.emit(record)
    print(json.dumps({"shutdown_ok": bot.shutdown()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
