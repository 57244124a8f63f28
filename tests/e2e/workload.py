"""A realistic instrumented bot for the end-to-end tests, configured only by OTEL_* variables.

Trade flows with signals, risk checks (some rejected), orders on two venues (some failing), fills with
slippage, venue rejects after placement, cancels, the latency budget (ticks, acks and fills stamped on two venues'
clocks, one ahead of ours, one behind), a kill switch, circuit breakers, feeds and risk gauges. Prints one
JSON line per trade: {"trace_id", "order_ok", "rejected", "t"}; with --forever it runs until stdin closes (the
resilience test, and the live bot dashboards look at: it also flips its kill switch, a breaker and a feed now and
then, and moves its risk gauges). --flood polls order status in bursts (qt.order.query spans, no order metrics)
through a span queue too small for them, so the SDK drops (and counts) spans: what the "telemetry dropped" panels
and alert are about.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import threading
import time

import qt_telemetry as qt


class ExchangeTimeout(Exception):
    pass


#: How far each simulated venue's clock runs ahead of ours (s): its stamps on acks, fills and ticks carry it, and
#: the SDK estimates it from the acks (qt.venue.clock.offset) and takes it off the segments that mix clocks.
VENUE_CLOCK = {"binance": 0.8, "kraken": -0.3}


def venue_now(venue: str) -> float:
    """The venue's clock now, epoch seconds."""
    return time.time() + VENUE_CLOCK[venue]


class Safety:
    """The live bot's safety events, on a clock: the kraken-api breaker opens at 10 s of every 45 s (half-open at 18,
    closed at 24), the kill switch is active from 30 s to 36 s of every 90 s (no trading then), and ETHUSDT's feed
    drops for a second at 20 s of every 30 s. Each state is recorded when it changes, as a bot would."""

    def __init__(self, feed: qt.FeedMonitor) -> None:
        self.feed = feed
        self.breaker, self.kill_switch, self.feed_up = "closed", False, True

    def tick(self, elapsed: float) -> bool:
        """Record what changed at ``elapsed`` seconds; True while trading is allowed."""
        phase = elapsed % 45
        breaker = "open" if 10 <= phase < 18 else "half_open" if 18 <= phase < 24 else "closed"
        if breaker != self.breaker:
            qt.record_breaker_state("kraken-api", breaker)
            self.breaker = breaker
        kill_switch = 30 <= elapsed % 90 < 36
        if kill_switch != self.kill_switch:
            qt.record_kill_switch(kill_switch, name="main", reason="drawdown_pause" if kill_switch else None,
                                  actor="e2e-live")
            self.kill_switch = kill_switch
        feed_up = not 20 <= elapsed % 30 < 21
        if feed_up != self.feed_up:
            if feed_up:
                self.feed.reconnected("ETHUSDT")
            else:
                self.feed.disconnected("ETHUSDT", reason="ping timeout")
            self.feed_up = feed_up
        return not kill_switch


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=40)
    parser.add_argument("--forever", action="store_true")
    parser.add_argument("--kill-switch", action="store_true", help="activate the kill switch and keep it active")
    parser.add_argument("--flood", action="store_true", help="bursts of order queries, until stdin closes")
    args = parser.parse_args()

    qt.init()
    rng = random.Random(7)
    feeds = {venue: qt.FeedMonitor(f"{venue}-ws", venue=venue) for venue in VENUE_CLOCK}
    feed = feeds["binance"]
    qt.record_breaker_state("binance-api", "closed")
    qt.record_breaker_state("kraken-api", "closed")
    qt.record_kill_switch(False, name="main")
    qt.set_risk_gauges(strategy="momentum", daily_pnl_used=0.35, open_positions=2, max_positions=3,
                       gross_exposure=25_000.0)
    counter = iter(range(10**9))

    @qt.traced_order(venue="binance")
    def place_binance(symbol: str, side: str, quantity: float, order_type: str = "limit",
                      price: float | None = None, client_order_id: str | None = None, api_key: str = "AK-SECRET"):
        time.sleep(rng.uniform(0.002, 0.02))
        if rng.random() < 0.15:
            raise ExchangeTimeout("venue timeout signature=deadbeef")
        return {"orderId": next(counter)}

    @qt.traced_order(venue="kraken")
    def place_kraken(symbol: str, side: str, quantity: float, order_type: str = "market",
                     client_order_id: str | None = None):
        time.sleep(rng.uniform(0.01, 0.06))
        return {"orderId": next(counter)}

    def after_placement(i: int, venue: str, symbol: str, cid: str) -> None:
        """What the venue does next, stamped on its clock: an ack, then mostly a fill; sometimes a reject (two
        reasons) or a cancel we ask for. Now and then kraken stamps a fill before its ack (two matching engines'
        clocks): a negative ack_to_fill, which the SDK records as 0 and counts as clamped."""
        ack = venue_now(venue) - rng.uniform(0.0005, 0.002)  # stamped just before its reply reached us
        qt.order_acknowledged(cid, venue_time=ack)
        if i % 7 == 3:
            qt.order_rejected(cid, reason=("insufficient_margin", "price_out_of_band")[i % 2])
        elif i % 11 == 5:
            with qt.order_span(venue=venue, symbol=symbol, client_order_id=cid, operation="cancel"):
                time.sleep(rng.uniform(0.003, 0.03))
            qt.order_cancelled(cid, reason="user")
        else:
            ack_to_fill = -0.003 if venue == "kraken" and i % 13 == 7 else rng.uniform(0.005, 0.06)
            time.sleep(max(ack_to_fill, 0.0))
            qt.order_filled(cid, quantity=0.5, price=100.0 + rng.uniform(0, 0.05), venue_time=ack + ack_to_fill)

    def trade(i: int) -> dict:
        symbol = ("BTCUSDT", "ETHUSDT")[i % 2]
        venue = "kraken" if i % 3 == 2 else "binance"
        # the tick that triggers the trade, stamped by the venue 3-50 ms before it reached us
        tick = feeds[venue].message(symbol, exchange_time=venue_now(venue) - rng.uniform(0.003, 0.05))
        rejected, ok = False, True
        with qt.trade_flow(symbol=symbol, strategy="momentum", trade_id=f"t-{i}") as flow:
            with flow.signal(confidence=round(rng.uniform(0.5, 0.99), 2), direction="long", reference_price=100.0,
                             trigger=tick):
                time.sleep(0.04 if i % 150 == 149 else rng.uniform(0.001, 0.008))  # deciding (now and then slow)
            with flow.entry():
                with qt.risk_check("max_position") as check:
                    if i % 5 == 4:
                        check.reject("max_positions_reached", value=3, limit=3)
                        rejected = True
                with qt.risk_check("daily_loss"):
                    pass
            if not rejected:
                with flow.execution():
                    cid = f"c-{i}"
                    try:
                        if venue == "kraken":
                            place_kraken(symbol, "buy", 0.5, client_order_id=cid)
                        else:
                            place_binance(symbol, "buy", 0.5, price=100.0, client_order_id=cid)
                        after_placement(i, venue, symbol, cid)
                    except ExchangeTimeout:
                        ok = False
                with flow.exit():
                    pass
        return {"trace_id": flow.trace_id, "order_ok": ok and not rejected, "rejected": rejected, "t": time.time()}

    if args.kill_switch:
        qt.record_breaker_state("binance-api", "open")
        qt.record_kill_switch(True, name="main", reason="daily_loss_limit", actor="e2e")
        qt.set_risk_gauges(strategy="momentum", daily_pnl_used=0.92, open_positions=3)

    if args.flood:
        qt.set_risk_gauges(strategy="flood", open_positions=-1)  # a bad value: clamped to 0, counted as absorbed
        stop = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        i = 0
        while not stop.is_set():
            for _ in range(300):  # polling order status: spans only, no order metrics
                with qt.order_span(venue="binance", symbol="BTCUSDT", client_order_id=f"f-{i}", operation="query"):
                    i += 1
            stop.wait(3.0)
    elif args.forever:
        stop = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        started = time.monotonic()
        qt.set_risk_gauges(strategy="momentum",
                           daily_pnl_used=lambda: 0.35 + 0.25 * math.sin((time.monotonic() - started) / 120),
                           gross_exposure=lambda: 25_000.0 + 8_000.0 * math.sin((time.monotonic() - started) / 90))
        safety = Safety(feed)
        i = 0
        while not stop.is_set():
            if safety.tick(time.monotonic() - started):
                print(json.dumps(trade(i)), flush=True)
                i += 1
            time.sleep(0.05)
    else:
        for i in range(args.trades):
            print(json.dumps(trade(i)), flush=True)
    ok = qt.shutdown()
    print(json.dumps({"shutdown_ok": ok}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
