"""A bot with a known latency budget, for the end-to-end test: every segment's delay injected, on a venue whose
clock runs ``--offset`` seconds ahead of ours. Configured only by OTEL_* variables (the real exporter process).

The venue is simulated with explicit timestamps (its clock, its stamps); the bot waits only for the venue's replies
to arrive no earlier than the venue stamped them (a reply from the future would read as clock skew). Tick-to-trade
also holds what the bot's own calls take between the trigger and the order, which it measures and reports. Prints
one JSON line per trade: {"trace_id", "tick_to_trade"}, then {"shutdown_ok": ...}.
"""

from __future__ import annotations

import argparse
import json
import time

import qt_telemetry as qt
from qt_telemetry import latency

VENUE = "sim"
#: Injected delays (s), each in the middle of a qt.latency.segment bucket so a quantile lands in a known bucket.
FEED = 0.025
TICK_TO_TRADE = 0.035
ORDER_TO_ACK = 0.0125
ACK_TO_FILL = 0.160
#: How far the clock estimate is off the venue's true offset (the sample's route is asymmetric): it shows in the
#: segments that mix clocks (feed -0.25 ms, order_to_ack +0.25 ms), and not in those on one clock (ack_to_fill,
#: total: both ends are venue stamps).
ROUTE_ERROR = 0.00025


def until(moment: float) -> None:
    """Wait until ``time.monotonic()`` reaches ``moment``."""
    while (left := moment - time.monotonic()) > 0:
        time.sleep(left)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=20)
    parser.add_argument("--offset", type=float, default=1.5)
    args = parser.parse_args()
    offset = args.offset

    qt.init()
    # One request to the venue with a 1 ms round trip, stamped a quarter of the way in (an asymmetric route: the
    # estimate is 0.25 ms off the true offset, within the 0.5 ms uncertainty it states).
    received = time.monotonic()
    wall = time.time() - received
    latency.clock_sample(VENUE, sent_at=received - 0.001, venue_time=received - ROUTE_ERROR - 0.0005 + wall + offset,
                         received_at=received)
    feed = qt.FeedMonitor("sim.ticker", venue=VENUE)
    for i in range(args.trades):
        received_at = time.monotonic() - TICK_TO_TRADE
        event = feed.message("BTCUSDT", received_at=received_at,
                             exchange_time=time.time() - TICK_TO_TRADE - FEED + offset)
        cid = f"lat-{i}"
        with qt.trade_flow(symbol="BTCUSDT", strategy="budget", trade_id=f"t-{i}") as flow:
            with flow.signal(trigger=event, reference_price=100.0):
                pass
            with flow.execution():
                with qt.order_span(venue=VENUE, symbol="BTCUSDT", side="buy", quantity=1,
                                   client_order_id=cid) as order:
                    pass
        assert order.sent_at is not None
        sent_wall = order.sent_at + time.time() - time.monotonic()
        ack = sent_wall + ORDER_TO_ACK + offset  # the venue's stamps, on its clock
        until(order.sent_at + ORDER_TO_ACK)  # its replies arrive after it stamped them, as a real venue's do
        qt.order_acknowledged(cid, venue_time=ack)
        until(order.sent_at + ORDER_TO_ACK + ACK_TO_FILL)
        qt.order_filled(cid, quantity=1, price=100.0, venue_time=ack + ACK_TO_FILL)
        print(json.dumps({"trace_id": flow.trace_id, "tick_to_trade": order.sent_at - event.received_at}),
              flush=True)
    print(json.dumps({"shutdown_ok": qt.shutdown()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
