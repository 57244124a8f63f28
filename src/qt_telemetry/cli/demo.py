"""``qt-telemetry demo``: a simulated but realistic trading bot, instrumented only through the public API.

It doubles as the reference example: random-walk prices, a momentum strategy emitting signals with a
confidence, risk checks that sometimes reject, orders on two venues with realistic latency (slow tails and
failures), fills that arrive later on the venue's thread (partial fills, slippage), a feed that drops, a home-made
circuit breaker that trips, and a daily loss limit that eventually trips the kill switch.
"""

from __future__ import annotations

import math
import queue
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import qt_telemetry as qt

NOTIONAL = 1_000.0  # account currency per trade
FEE_BPS = 4.0


class VenueError(Exception):
    """The venue refused or timed out an order."""


@dataclass(frozen=True)
class VenueProfile:
    name: str
    median_latency_s: float
    sigma: float
    slow_probability: float
    failure_probability: float
    slippage_bps: float


VENUES = (
    VenueProfile("binance", 0.035, 0.45, 0.03, 0.03, 1.5),
    VenueProfile("kraken", 0.110, 0.35, 0.05, 0.06, 3.0),
)


class Breaker:
    """A home-made circuit breaker (as many bots have), observed with qt.record_breaker_state.

    It runs on the bot's tick clock rather than wall time, so a seed fully determines a demo run.
    """

    def __init__(self, name: str, clock: Any, fail_max: int = 3, reset_after_ticks: int = 50) -> None:
        self.name, self.clock, self.fail_max, self.reset_after = name, clock, fail_max, reset_after_ticks
        self.failures = 0
        self.state = "closed"
        self.opened_at = 0
        qt.record_breaker_state(name, "closed")

    def allow(self) -> bool:
        if self.state == "open" and self.clock() - self.opened_at >= self.reset_after:
            self._set("half_open")
        return self.state != "open"

    def record(self, ok: bool) -> None:
        if ok:
            self.failures = 0
            if self.state != "closed":
                self._set("closed")
            return
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.fail_max:
            self.opened_at = self.clock()
            self._set("open", reason=f"{self.failures} consecutive failures")

    def _set(self, state: str, reason: str | None = None) -> None:
        self.state = state
        qt.record_breaker_state(self.name, state, reason=reason)


class KillSwitch:
    """The bot's own kill switch; qt-telemetry observes it (decorated methods)."""

    def __init__(self) -> None:
        self.active = False

    @qt.kill_switch_activation(name="main")
    def activate(self, reason: str, actor: str = "risk-engine") -> None:
        self.active = True

    @qt.kill_switch_deactivation(name="main")
    def deactivate(self, actor: str = "operator") -> None:
        self.active = False


@dataclass
class Position:
    symbol: str
    entry: float
    quantity: float
    opened_tick: int
    trace_context: dict[str, str]


@dataclass
class Stats:
    """What the live view shows; updated by the bot loop only."""

    started: float = field(default_factory=time.monotonic)
    orders: int = 0
    order_errors: int = 0
    risk_rejects: int = 0
    signals: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=500))
    order_times: deque[float] = field(default_factory=lambda: deque(maxlen=500))
    pnl: float = 0.0
    pnl_used: float = 0.0
    last_trace_id: str = ""


class DemoBot:
    def __init__(self, *, seed: int, symbols: list[str], loss_limit: float, max_positions: int = 2) -> None:
        self.rng = random.Random(seed)
        self.symbols = symbols
        self.loss_limit = loss_limit
        self.max_positions = max_positions
        self.prices = {s: 100.0 * (1 + i) for i, s in enumerate(symbols)}
        self.history: dict[str, deque[float]] = {s: deque(maxlen=20) for s in symbols}
        self.positions: dict[str, Position] = {}
        self.tick = 0
        self.stats = Stats()
        self.kill_switch = KillSwitch()
        self.halted_at = 0
        qt.record_kill_switch(False, name="main")
        self.breakers = {v.name: Breaker(f"{v.name}-api", lambda: self.tick, fail_max=2) for v in VENUES}
        self.feed = qt.FeedMonitor("exchange-ws")
        self.feed_down_until: dict[str, int] = {}
        self.fills: queue.Queue[tuple[float, Any]] = queue.Queue()
        self._ids = 0
        #: Ticks during which kraken is in trouble: most orders fail and its breaker trips.
        self.outage = (100, 160)
        qt.set_risk_gauges(strategy="momentum", daily_pnl_used=lambda: self.stats.pnl_used,
                           open_positions=lambda: len(self.positions), max_positions=max_positions,
                           gross_exposure=lambda: sum(abs(p.quantity) * self.prices[p.symbol]
                                                      for p in self.positions.values()))
        for symbol in symbols:
            self.feed.connected(symbol)
        self._venue_thread = threading.Thread(target=self._venue_callbacks, name="venue-ws", daemon=True)
        self._stop = threading.Event()
        self._venue_thread.start()
        self._place = {v.name: self._make_placer(v) for v in VENUES}

    # --- the venue side: orders with realistic latency, fills later on another thread -----------------
    def _make_placer(self, venue: VenueProfile) -> Any:
        rng = self.rng

        @qt.traced_order(venue=venue.name)
        def place_order(symbol: str, side: str, quantity: float, order_type: str, price: float,
                        client_order_id: str, api_key: str = "demo-key-never-exported") -> dict[str, Any]:
            latency = venue.median_latency_s * math.exp(rng.gauss(0, venue.sigma))
            if rng.random() < venue.slow_probability:
                latency = rng.uniform(0.6, 1.5)  # the slow tail the p95 alert is about
            time.sleep(min(latency, 2.0))
            failing = venue.failure_probability
            if venue.name == "kraken" and self.outage[0] <= self.tick < self.outage[1]:
                failing = 0.8
            if rng.random() < failing:
                raise VenueError(f"{venue.name}: order rejected (code -2010) signature=0x{rng.getrandbits(32):08x}")
            return {"orderId": f"{venue.name[:2].upper()}{rng.getrandbits(40)}", "status": "NEW"}

        return place_order

    def _venue_callbacks(self) -> None:
        while not self._stop.is_set():
            try:
                due, event = self.fills.get(timeout=0.1)
            except queue.Empty:
                continue
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            kind, args = event
            if kind == "ack":
                qt.order_acknowledged(args["cid"], order_id=args["order_id"])
            elif kind == "fill":
                qt.order_filled(args["cid"], quantity=args["quantity"], price=args["price"])

    # --- the strategy loop ---------------------------------------------------------------------------
    def step(self) -> None:
        self.tick += 1
        for symbol in self.symbols:
            self._move(symbol)
        symbol = self.symbols[self.tick % len(self.symbols)]
        if symbol in self.positions and self.tick - self.positions[symbol].opened_tick >= 6:
            self._close(symbol)
        elif symbol not in self.positions and len(self.history[symbol]) >= 5:
            self._maybe_trade(symbol)

    def _move(self, symbol: str) -> None:
        price = self.prices[symbol] * math.exp(self.rng.gauss(-0.00005, 0.0015))
        self.prices[symbol] = price
        self.history[symbol].append(price)
        down_until = self.feed_down_until.get(symbol)
        if down_until is not None:
            if self.tick >= down_until:
                del self.feed_down_until[symbol]
                self.feed.reconnected(symbol)
            return
        if self.rng.random() < 0.004:
            self.feed_down_until[symbol] = self.tick + self.rng.randint(10, 40)
            self.feed.disconnected(symbol, reason="ping timeout")
            return
        self.feed.message(symbol)

    def _maybe_trade(self, symbol: str) -> None:
        hist = self.history[symbol]
        ret = hist[-1] / hist[0] - 1
        z = ret / (0.0015 * math.sqrt(len(hist)))
        if abs(z) < 0.4 or self.kill_switch.active:
            return
        self.stats.signals += 1
        direction = "long" if z > 0 else "short"
        side = "buy" if z > 0 else "sell"
        reference = self.prices[symbol]
        with qt.trade_flow(symbol=symbol, strategy="momentum", trade_id=f"T{self.tick}") as flow:
            self.stats.last_trace_id = flow.trace_id
            with flow.signal(confidence=round(min(0.99, abs(z) / 3), 3), direction=direction,
                             reference_price=reference):
                pass
            with flow.entry():
                if not self._risk_checks(symbol):
                    self.stats.risk_rejects += 1
                    return
            with flow.execution():
                self._execute(symbol, side, reference)

    def _risk_checks(self, symbol: str) -> bool:
        with qt.risk_check("daily_loss") as check:
            if self.stats.pnl_used >= 0.95:
                check.reject("near_daily_loss_limit", value=self.stats.pnl_used, limit=1.0)
                return False
        with qt.risk_check("max_position") as check:
            if len(self.positions) >= self.max_positions:
                check.reject("max_positions_reached", value=len(self.positions), limit=self.max_positions)
                return False
        return True

    def _execute(self, symbol: str, side: str, reference: float) -> None:
        venue = VENUES[0] if self.rng.random() < 0.5 else VENUES[1]
        breaker = self.breakers[venue.name]
        if not breaker.allow():
            venue = VENUES[0] if venue is VENUES[1] else VENUES[1]
            breaker = self.breakers[venue.name]
            if not breaker.allow():
                return
        self._ids += 1
        cid = f"demo-{self._ids}"
        quantity = round(NOTIONAL / reference, 6)
        started = time.perf_counter()
        try:
            result = self._place[venue.name](symbol, side, quantity, "limit", round(reference, 2), cid)
        except VenueError:
            self.stats.order_errors += 1
            breaker.record(False)
            return
        finally:
            self.stats.orders += 1
            self.stats.latencies.append(time.perf_counter() - started)
            self.stats.order_times.append(time.monotonic())
        breaker.record(True)
        slip = abs(self.rng.gauss(venue.slippage_bps, venue.slippage_bps)) / 10_000
        fill_price = reference * (1 + slip if side == "buy" else 1 - slip)
        now = time.monotonic()
        self.fills.put((now + 0.01, ("ack", {"cid": cid, "order_id": result["orderId"]})))
        if self.rng.random() < 0.3:  # partial fills
            first = round(quantity * 0.4, 6)
            self.fills.put((now + 0.05, ("fill", {"cid": cid, "quantity": first, "price": fill_price})))
            self.fills.put((now + 0.15, ("fill", {"cid": cid, "quantity": quantity - first, "price": fill_price})))
        else:
            self.fills.put((now + 0.05, ("fill", {"cid": cid, "quantity": quantity, "price": fill_price})))
        signed = quantity if side == "buy" else -quantity
        # The exit happens ticks later: carry the trade's trace context so the exit joins the same trace.
        self.positions[symbol] = Position(symbol, fill_price, signed, self.tick, qt.inject({}))

    def _close(self, symbol: str) -> None:
        position = self.positions.pop(symbol)
        with qt.trade_flow(symbol=symbol, strategy="momentum", trade_id=f"X{self.tick}",
                           parent=position.trace_context) as flow, flow.exit(reason="time_stop"):
            exit_price = self.prices[symbol]
            pnl = position.quantity * (exit_price - position.entry)
            pnl -= 2 * FEE_BPS / 10_000 * abs(position.quantity) * exit_price
            self.stats.pnl += pnl
            self.stats.pnl_used = qt.daily_pnl_used(self.stats.pnl, self.loss_limit) or 0.0
        if self.stats.pnl_used >= 1.0 and not self.kill_switch.active:
            self.kill_switch.activate(reason="daily_loss_limit", actor="risk-engine")
            self.halted_at = self.tick

    def stop(self) -> None:
        self._stop.set()
        self._venue_thread.join(timeout=2)

    # --- numbers for the live view -------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        lat = sorted(self.stats.latencies)

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0.0

        recent = [t for t in self.stats.order_times if t > time.monotonic() - 10]
        return {
            "orders": self.stats.orders, "errors": self.stats.order_errors, "rejects": self.stats.risk_rejects,
            "orders_per_s": len(recent) / 10, "p50": pct(0.5), "p95": pct(0.95), "pnl": self.stats.pnl,
            "pnl_used": self.stats.pnl_used, "kill_switch": self.kill_switch.active,
            "breakers": {b.name: b.state for b in self.breakers.values()},
            "feeds_down": sorted(self.feed_down_until), "positions": len(self.positions),
            "trace_id": self.stats.last_trace_id, "signals": self.stats.signals, "tick": self.tick,
            "status": (f"HALTED since tick {self.halted_at}: the kill switch tripped at the daily loss limit; no new "
                       "trades by design (feeds, fills and gauges keep reporting)" if self.kill_switch.active
                       else "trading"),
        }


def run(*, duration: float, rate: float, seed: int, symbols: list[str], loss_limit: float,
        ticks: int = 0, on_tick: Any = None) -> dict[str, Any]:
    """Run the bot for ``duration`` seconds (0 = no limit) and/or ``ticks`` strategy ticks (0 = no limit), at
    ``rate`` ticks per second; with neither limit it runs until interrupted."""
    bot = DemoBot(seed=seed, symbols=symbols, loss_limit=loss_limit)
    interval = 1.0 / rate
    deadline = time.monotonic() + duration if duration > 0 else math.inf
    next_tick = time.monotonic()
    try:
        while time.monotonic() < deadline and (ticks <= 0 or bot.tick < ticks):
            bot.step()
            if on_tick is not None:
                on_tick(bot.snapshot())
            next_tick += interval
            pause = next_tick - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                next_tick = time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        bot.stop()
    return bot.snapshot()
