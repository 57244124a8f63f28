"""The latency budget end to end: a bot with known delays in each segment, on a venue whose clock is 1.5 s ahead,
through the real Collector into Prometheus (histograms, the clock gauges, exemplars) and Tempo (span attributes).

The measured errors (observed minus injected, per segment) are printed (``pytest -s``) for the record.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from qt_telemetry import semconv
from tests.e2e import latency_bot as bot
from tests.e2e.conftest import bot_env
from tests.e2e.stack import Stack, wait_until
from tests.support.servers import REPO

SERVICE = "e2e-latency-bot"
TRADES = 20
OFFSET = 1.5
#: What may separate a segment from its injected delay: the 1 ms clock sample's 0.5 ms uncertainty and the wall/
#: monotonic pairing of a few clock reads (microseconds; a preempted read on a loaded box: a few ms).
TOLERANCE = 0.003
SELECT = f'service_name="{SERVICE}", venue="sim", symbol="BTCUSDT", strategy="budget"'


@pytest.fixture(scope="module")
def budget_bot(stack: Stack) -> dict[str, Any]:
    started = time.time() - 5
    proc = subprocess.run([sys.executable, "-m", "tests.e2e.latency_bot", "--trades", str(TRADES), "--offset",
                           str(OFFSET)], cwd=REPO, env=bot_env(stack, SERVICE), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[-1] == {"shutdown_ok": True}, proc.stderr
    trades = lines[:-1]
    tick_to_trade = sum(t["tick_to_trade"] for t in trades) / len(trades)
    expected = {"feed": bot.FEED, "tick_to_trade": tick_to_trade, "order_to_ack": bot.ORDER_TO_ACK,
                "ack_to_fill": bot.ACK_TO_FILL}
    expected["total"] = sum(expected.values())
    slowest = dict(expected, tick_to_trade=max(t["tick_to_trade"] for t in trades))
    slowest["total"] = expected["total"] - tick_to_trade + slowest["tick_to_trade"]
    return {"started": started, "trades": trades, "expected": expected, "slowest": slowest}


def _bucket(value: float) -> tuple[float, float]:
    """The (lower, upper] bounds of the qt.latency.segment bucket that holds ``value``."""
    bounds = (0.0, *semconv.LATENCY_BUDGET_BUCKETS_S)
    upper = next(b for b in bounds if b >= value)
    return bounds[bounds.index(upper) - 1], upper


def _by_segment(stack: Stack, expr: str) -> dict[str, float]:
    return {r["metric"]["segment"]: float(r["value"][1]) for r in stack.prom_query(expr)}


def test_each_segment_s_mean_and_quantile_in_prometheus_is_the_injected_delay(stack: Stack,
                                                                             budget_bot: dict[str, Any]) -> None:
    counts = wait_until(
        lambda: (found := _by_segment(stack, f"sum by (segment) (qt_latency_segment_seconds_count{{{SELECT}}})"))
        and found == dict.fromkeys(semconv.SEGMENTS, float(TRADES)) and found, 60,
        f"{TRADES} measurements of every segment in Prometheus")
    assert set(counts) == {"feed", "tick_to_trade", "order_to_ack", "ack_to_fill", "total"}
    sums = _by_segment(stack, f"sum by (segment) (qt_latency_segment_seconds_sum{{{SELECT}}})")
    medians = _by_segment(stack, "histogram_quantile(0.5, sum by (le, segment) "
                                 f"(qt_latency_segment_seconds_bucket{{{SELECT}}}))")
    p99 = _by_segment(stack, "histogram_quantile(0.99, sum by (le, segment) "
                             f"(qt_latency_segment_seconds_bucket{{{SELECT}}}))")
    errors = {}
    for segment, injected in budget_bot["expected"].items():
        mean = sums[segment] / counts[segment]
        errors[segment] = {"injected_ms": round(injected * 1e3, 3), "mean_ms": round(mean * 1e3, 3),
                           "error_ms": round((mean - injected) * 1e3, 3), "p50_ms": round(medians[segment] * 1e3, 3),
                           "p99_ms": round(p99[segment] * 1e3, 3)}
        assert mean == pytest.approx(injected, abs=TOLERANCE), segment
        # the quantiles fall in the bucket that holds the injected delay (histogram_quantile interpolates in it)
        assert _bucket(injected)[0] <= medians[segment] <= _bucket(injected)[1], segment
        assert _bucket(injected)[0] <= p99[segment] <= _bucket(budget_bot["slowest"][segment])[1], segment
    print("\nlatency budget, injected vs observed (Prometheus):", json.dumps(errors, indent=1))


def test_the_venue_clock_offset_is_exported_and_no_segment_was_clamped(stack: Stack,
                                                                     budget_bot: dict[str, Any]) -> None:
    offset = wait_until(lambda: stack.prom_query(f'qt_venue_clock_offset_seconds{{service_name="{SERVICE}"}}'), 60,
                        "the venue clock offset gauge")
    uncertainty = stack.prom_query(f'qt_venue_clock_offset_uncertainty_seconds{{service_name="{SERVICE}"}}')
    assert offset[0]["metric"]["venue"] == "sim"
    assert float(offset[0]["value"][1]) == pytest.approx(OFFSET, abs=float(uncertainty[0]["value"][1]) + 1e-6)
    assert float(uncertainty[0]["value"][1]) == pytest.approx(0.0005, abs=1e-6)
    assert not stack.prom_query(f'qt_latency_segment_clamped_total{{service_name="{SERVICE}"}} > 0')


def test_the_trace_carries_each_segment_and_the_exemplars_point_at_it(stack: Stack,
                                                                      budget_bot: dict[str, Any]) -> None:
    trade = budget_bot["trades"][0]
    spans = wait_until(lambda: stack.trace(trade["trace_id"]), 60, f"trace {trade['trace_id']} in Tempo")
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    (signal,) = by_name["qt.trade.signal"]
    (order,) = by_name["qt.order.place"]
    ack, fill = sorted(by_name["qt.order.update"], key=lambda s: s["attributes"]["order.event"])
    assert signal["attributes"]["trigger.feed"] == "sim.ticker" and signal["attributes"]["trigger.symbol"] == "BTCUSDT"
    assert signal["attributes"]["latency.feed"] == pytest.approx(bot.FEED, abs=TOLERANCE)
    assert order["attributes"]["latency.tick_to_trade"] == pytest.approx(trade["tick_to_trade"], abs=1e-6)
    assert ack["attributes"]["latency.order_to_ack"] == pytest.approx(bot.ORDER_TO_ACK, abs=TOLERANCE)
    assert ack["attributes"]["venue.clock.offset"] == pytest.approx(OFFSET, abs=0.0005 + 1e-6)
    assert fill["attributes"]["latency.ack_to_fill"] == pytest.approx(bot.ACK_TO_FILL, abs=1e-5)
    assert fill["attributes"]["latency.total"] == pytest.approx(
        bot.FEED + trade["tick_to_trade"] + bot.ORDER_TO_ACK + bot.ACK_TO_FILL, abs=2 * TOLERANCE)
    assert order["parent_span_id"] in {s["span_id"] for s in by_name["qt.trade.execution"]}

    exemplars = wait_until(lambda: stack.exemplars(f"qt_latency_segment_seconds_bucket{{{SELECT}}}",
                                                   budget_bot["started"]), 60, "latency segment exemplars")
    ours = {t["trace_id"] for t in budget_bot["trades"]}
    assert {e["labels"]["trace_id"] for e in exemplars} <= ours
