"""Kill the collector mid-workload: the bot keeps trading without an exception; after a restart, data flows."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

from tests.e2e.conftest import bot_env
from tests.e2e.stack import Stack, wait_until
from tests.support.servers import REPO


def test_bot_survives_a_collector_outage_and_recovers(stack: Stack) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tests.e2e.workload", "--forever"], cwd=REPO,
                            env=bot_env(stack, "resilience-bot"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[dict] = []  # appended by the reader thread only
    threading.Thread(target=lambda: [lines.append(json.loads(line)) for line in proc.stdout], daemon=True).start()

    def trades_since(t0: float) -> list[dict]:
        return [x for x in list(lines) if x.get("t", 0) >= t0]

    try:
        wait_until(lambda: stack.prom_query('qt_trades_total{service_name="resilience-bot"}'), 60,
                   "resilience-bot metrics before the outage")
        stack.servers["otelcol"].stop(kill=True)
        outage = time.time()
        wait_until(lambda: len(trades_since(outage)) >= 20, 60, "trades during the outage")
        assert proc.poll() is None, "the bot must keep trading while the collector is down"

        stack.restart_collector()
        restarted = time.time()
        after = wait_until(lambda: trades_since(restarted + 2), 60, "trades after the restart")

        def counter_grew_after_restart() -> bool:
            rows = stack.prom_query('timestamp(qt_trades_total{service_name="resilience-bot"})')
            return bool(rows) and max(float(r["value"][1]) for r in rows) > restarted + 1

        wait_until(counter_grew_after_restart, 60, "fresh resilience-bot samples in Prometheus after the restart")
        trace_id = after[0]["trace_id"]
        assert wait_until(lambda: stack.trace(trace_id), 60, f"post-restart trace {trace_id} in Tempo")
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        stderr = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
