"""A bot that forks workers after ``init()`` while other threads keep trading (gunicorn with preload does this).

    python -m tests.bots.forking --children 100 --orders 3

Configured only by OTEL_* variables. The parent places 5 orders before forking and 5 after; every child places
``--orders`` orders (with fills) and exits without calling ``shutdown()``. Prints one JSON line:
{"parent": pid, "children": [pids], "hung": [pids]}.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import threading
import time

import qt_telemetry as qt


@qt.traced_order(venue="forkex")
def place(symbol: str, side: str, quantity: float, client_order_id: str | None = None) -> dict[str, int]:
    return {"orderId": 1}


def child_work(label: str, orders: int) -> None:
    for i in range(orders):
        cid = f"{label}-{i}"
        with qt.trade_flow(symbol=label, strategy="fork") as flow, flow.execution():
            place(label, "buy", 1, client_order_id=cid)
        qt.order_filled(cid, quantity=1, price=100.0)


#: The load trades under an unsampled remote parent: every lock and queue of the hot path is busy at each fork,
#: while the exported volume stays small (metrics only), so the receiver is never the bottleneck.
_UNSAMPLED = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"}


def _load(stop: threading.Event) -> None:
    n = 0
    me = threading.get_ident()
    while not stop.is_set():
        n += 1
        with qt.trade_flow(symbol="LOAD", strategy="load", parent=_UNSAMPLED):
            place("LOAD", "sell", 1, client_order_id=f"load-{me}-{n}")
        qt.order_filled(f"load-{me}-{n}", quantity=1, price=1.0)
        qt.record_breaker_state("api", "open" if n % 2 else "closed")
        time.sleep(0.0002)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--children", type=int, default=10)
    parser.add_argument("--orders", type=int, default=3)
    parser.add_argument("--mode", choices=["fork", "mp-fork", "mp-spawn"], default="fork")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()

    qt.init()
    for i in range(5):
        place("PARENT", "buy", 1, client_order_id=f"parent-{i}")
    stop = threading.Event()
    loaders = [threading.Thread(target=_load, args=(stop,), daemon=True) for _ in range(2)]
    for t in loaders:
        t.start()

    children: list[int] = []
    hung: list[int] = []
    if args.mode == "fork":
        for n in range(args.children):
            pid = os.fork()
            if pid == 0:  # the child: trade, then leave the way a worker does (no shutdown())
                child_work(f"C{n}", args.orders)
                sys.exit(0)
            children.append(pid)
        deadline = time.monotonic() + args.timeout
        pending = set(children)
        while pending and time.monotonic() < deadline:
            for pid in list(pending):
                done, _status = os.waitpid(pid, os.WNOHANG)
                if done:
                    pending.discard(pid)
            time.sleep(0.01)
        for pid in pending:  # hung on a lock inherited from the parent
            hung.append(pid)
            os.kill(pid, 9)
    else:
        ctx = multiprocessing.get_context("fork" if args.mode == "mp-fork" else "spawn")
        procs = [ctx.Process(target=child_work, args=(f"C{n}", args.orders)) for n in range(args.children)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(args.timeout)
            if p.is_alive():
                hung.append(p.pid or 0)
                p.kill()
        children = [p.pid or 0 for p in procs]

    stop.set()
    for t in loaders:
        t.join(5)
    for i in range(5, 10):
        place("PARENT", "buy", 1, client_order_id=f"parent-{i}")
    print(json.dumps({"parent": os.getpid(), "children": children, "hung": hung}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
