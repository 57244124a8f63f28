"""A trading bot for the fleet tests: qt_telemetry configured by OTEL_* and QT_TELEMETRY_* variables only.

It is the SDK's sampling contract under test, end to end (README "Fleet"): ``qt.sampling.keep`` on a failed,
venue-rejected or slow order, a rejected risk check, kill-switch and circuit-breaker events, and on every span of
a trace whose trace id falls in ``QT_TELEMETRY_TRACE_KEEP_RATIO``; exemplars only from marked spans;
``QT_TELEMETRY_NATIVE_HISTOGRAMS`` for exponential histograms.

Trades follow a fixed 20-trade pattern (risk rejections, failed, venue-rejected, slow, breaker-trip orders; the
rest healthy); fills arrive on another thread. One JSON line per trade on stdout with the ground truth the tests
compare against: trace id, category, whether the SDK marks the trace because of what happened in it (``marked``),
whether its trace id falls in the keep ratio (``ratio_kept``), and every span the SDK emitted (id, parent id,
name) — read by a tap on the engine, not re-derived. ``--duration 0`` trades until stdin closes.
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

import qt_telemetry as qt
from qt_telemetry._engine.recorder.scope import SpanScope
from qt_telemetry._engine.recorder.state import STATE

LOW56 = (1 << 56) - 1
#: Position in the 20-trade cycle -> category (everything else is "healthy").
PATTERN = {4: "risk_rejected", 14: "risk_rejected", 7: "failed", 11: "venue_rejected", 17: "slow", 19: "breaker"}


class ExchangeTimeout(Exception):
    pass


class SpanTap:
    """Every span the engine is handed, by trace id: the ground truth of what this bot emitted."""

    def __init__(self) -> None:
        self.by_trace: dict[str, list[list[str]]] = {}
        self.lock = threading.Lock()
        engine = STATE.engine
        forward = engine.emit

        def tap(item: Any) -> None:
            if isinstance(item, SpanScope) and item.sampled:
                entry = [f"{item.sid:016x}", f"{item.psid:016x}" if item.psid else "", item.name]
                with self.lock:
                    self.by_trace.setdefault(f"{item.tid:032x}", []).append(entry)
            forward(item)

        engine.emit = tap


class Bot:
    def __init__(self, seed: int) -> None:
        qt.init()
        self.tap = SpanTap()
        self.ratio = float(os.environ.get("QT_TELEMETRY_TRACE_KEEP_RATIO", "1.0"))
        self.slow_s = float(os.environ.get("QT_TELEMETRY_SLOW_ORDER_SECONDS", "0.5"))
        self.rng = random.Random(seed)
        self.fills = ThreadPoolExecutor(max_workers=2, thread_name_prefix="venue")
        self.pending: list[Any] = []
        for venue in ("binance", "kraken"):
            qt.record_breaker_state(f"{venue}-api", "closed")

        @qt.traced_order(venue=None)
        def place(symbol: str, side: str, quantity: float, venue: str, client_order_id: str, delay: float,
                  fail: bool) -> dict[str, str]:
            time.sleep(delay)
            if fail:
                raise ExchangeTimeout("venue timeout")
            return {"orderId": client_order_id.upper()}

        self.place = place

    def ratio_kept(self, trace_id: str) -> bool:
        """The SDK's consistent decision: the trace id's low 56 bits against the keep ratio."""
        return (int(trace_id, 16) & LOW56) < int(self.ratio * (1 << 56))

    def trade(self, i: int) -> dict[str, Any]:
        category = PATTERN.get(i % 20, "healthy")
        symbol = ("BTCUSDT", "ETHUSDT")[i % 2]
        venue = ("binance", "kraken")[(i // 2) % 2]
        cid = f"c-{i}"
        record: dict[str, Any] = {"i": i, "category": category, "marked": category != "healthy", "venue": venue,
                                  "order_outcome": None, "t0": time.time()}
        with qt.trade_flow(symbol=symbol, strategy="momentum", trade_id=f"t-{i}") as flow:
            record["trace_id"] = flow.trace_id
            with flow.signal(reference_price=100.0):
                pass
            with flow.entry(), qt.risk_check("max_position") as check:
                if category == "risk_rejected":
                    check.reject("max_positions", value=3, limit=3)
            if category != "risk_rejected":
                with flow.execution():
                    delay = self.slow_s * 1.6 if category == "slow" else self.rng.uniform(0.001, 0.004)
                    try:
                        self.place(symbol, "buy", 1.0, venue=venue, client_order_id=cid, delay=delay,
                                   fail=category == "failed")
                        record["order_outcome"] = "ok"
                    except ExchangeTimeout:
                        record["order_outcome"] = "error"
                with flow.exit():
                    if category == "breaker":  # the venue's API trips its breaker: two events on this span
                        qt.record_breaker_state(f"{venue}-api", "open", reason="5 consecutive failures")
                        qt.record_breaker_state(f"{venue}-api", "closed")
        if record["order_outcome"] == "ok":
            event = "reject" if category == "venue_rejected" else "fill"
            self.pending.append(self.fills.submit(self.update, cid, event))
        record["ratio_kept"] = self.ratio_kept(record["trace_id"])
        record["t1"] = time.time()
        return record

    def update(self, cid: str, event: str) -> None:
        """A fill or a venue reject, later and on the venue's thread: it joins the order's trace."""
        time.sleep(self.rng.uniform(0.005, 0.03))
        if event == "reject":
            qt.order_rejected(cid, reason="insufficient_margin")
        else:
            qt.order_filled(cid, quantity=1.0, price=100.0 + self.rng.uniform(0, 0.05))

    def kill_switch(self) -> dict[str, Any]:
        """Kill switch activated outside any trade: a short span of its own carries the event."""
        before = set(self.tap.by_trace)
        t0 = time.time()
        qt.record_kill_switch(True, name="main", reason="daily_loss_limit", actor="fleet-bot")
        (trace_id,) = set(self.tap.by_trace) - before
        return {"i": -1, "category": "kill_switch", "marked": True, "trace_id": trace_id, "t0": t0,
                "t1": time.time(), "order_outcome": None, "ratio_kept": self.ratio_kept(trace_id)}

    def records_with_spans(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self.tap.lock:
            return [{**r, "spans": list(self.tap.by_trace.get(r["trace_id"], []))} for r in records]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=100)
    parser.add_argument("--duration", type=float, default=None, help="trade for N seconds; 0 = until stdin closes")
    parser.add_argument("--rate", type=float, default=25.0, help="trades per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-switch", action="store_true", help="activate the kill switch after the trades")
    args = parser.parse_args()

    bot = Bot(args.seed)
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
    for record in bot.records_with_spans(records):  # after the fills: every span of every trade is in its record
        print(json.dumps(record), flush=True)
    print(json.dumps({"shutdown_ok": qt.shutdown()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
