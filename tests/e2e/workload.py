"""A realistic instrumented bot for the end-to-end tests, configured only by OTEL_* variables.

Trade flows with signals, risk checks (some rejected), orders on two venues (some failing), fills with
slippage, a kill switch, a circuit breaker, feeds and risk gauges. Prints one JSON line per trade:
{"trace_id", "order_ok", "rejected", "t"}; with --forever it runs until stdin closes (the resilience test).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time

import qt_telemetry as qt


class ExchangeTimeout(Exception):
    pass


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=40)
    parser.add_argument("--forever", action="store_true")
    parser.add_argument("--kill-switch", action="store_true", help="activate the kill switch and keep it active")
    args = parser.parse_args()

    qt.init()
    rng = random.Random(7)
    feed = qt.FeedMonitor("binance-ws")
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

    def trade(i: int) -> dict:
        symbol = ("BTCUSDT", "ETHUSDT")[i % 2]
        feed.message(symbol)
        rejected, ok = False, True
        with qt.trade_flow(symbol=symbol, strategy="momentum", trade_id=f"t-{i}") as flow:
            with flow.signal(confidence=round(rng.uniform(0.5, 0.99), 2), direction="long", reference_price=100.0):
                pass
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
                        if i % 3 == 2:
                            place_kraken(symbol, "buy", 0.5, client_order_id=cid)
                        else:
                            place_binance(symbol, "buy", 0.5, price=100.0, client_order_id=cid)
                        qt.order_filled(cid, quantity=0.5, price=100.0 + rng.uniform(0, 0.05))
                    except ExchangeTimeout:
                        ok = False
                with flow.exit():
                    pass
        return {"trace_id": flow.trace_id, "order_ok": ok and not rejected, "rejected": rejected, "t": time.time()}

    if args.kill_switch:
        qt.record_breaker_state("binance-api", "open")
        qt.record_kill_switch(True, name="main", reason="daily_loss_limit", actor="e2e")
        qt.set_risk_gauges(strategy="momentum", daily_pnl_used=0.92, open_positions=3)

    if args.forever:
        stop = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        i = 0
        while not stop.is_set():
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
