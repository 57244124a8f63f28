"""Kill one gateway mid-run: the agent routes its trace ids to the other, loss is bounded in time and counted.

A fleet of its own (the main fleet's gateways stay whole). Every trace is kept (keep ratio 1.0), so every
trade is expected in Tempo, complete, and every shortfall is loss. What a SIGKILLed gateway had in memory
waiting for its verdict (up to decision_wait of traces) is gone; anything the agent had not delivered is
retried by the agent's load_balancing exporter over the gateways that are left once DNS drops the dead one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from tests.e2e.fleet.conftest import DECISION_WAIT_S, SLOW_S, fetch_traces, started_fleet, wait_for_pipeline_to_drain
from tests.e2e.fleet.harness import Fleet, finish_bot, spans_by_id, start_bot
from tests.e2e.stack import wait_until
from tests.support.servers import REPO

BOTS = ("failover-bot-1", "failover-bot-2", "failover-bot-3")
#: A trade whose spans reached the doomed gateway long enough before the kill has been decided and exported
#: by it: bot batch delay 0.2 s + agent batch 1 s + decision_wait 2 s + gateway batch 1 s, with slack.
SETTLED_BEFORE_KILL_S = 8.0
#: After the agent re-resolved to one gateway, everything must arrive (slack for in-flight batches).
REROUTED_SLACK_S = 1.0
#: How long a gateway holds a decided trace before it leaves for Tempo (collector/fleet/gateway.yaml).
BATCH_TIMEOUT_S = float(yaml.safe_load((REPO / "collector" / "fleet" / "gateway.yaml").read_text())
                        ["processors"]["batch"]["timeout"].rstrip("s"))


@pytest.fixture(scope="module")
def failover_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    yield from started_fleet(tmp_path_factory.mktemp("failover"))


def test_killing_a_gateway_reroutes_to_the_other_and_loss_is_bounded_and_counted(failover_fleet: Fleet) -> None:
    fleet = failover_fleet
    bots = {service: start_bot(fleet, service, "--duration", "0", "--rate", "20", "--seed", str(i),
                               keep_ratio=1.0, native=False, slow_s=SLOW_S) for i, service in enumerate(BOTS, 1)}
    records: dict[str, list[dict[str, Any]]] = {}
    try:
        wait_until(lambda: _accepted(fleet, "gateway-a") > 0 and _accepted(fleet, "gateway-b") > 0, 60,
                   "spans on both gateways")
        # The workload: trade long enough before the kill for the dead gateway to have finished some trades.
        trading_since = time.monotonic()
        wait_until(lambda: time.monotonic() - trading_since >= SETTLED_BEFORE_KILL_S + 2, SETTLED_BEFORE_KILL_S + 10,
                   "trading history before the kill")
        b_in_memory = fleet.metric_sum("gateway-b", "otelcol_processor_tail_sampling_sampling_traces_on_memory")

        t_kill = time.time()
        fleet.kill_gateway("gateway-b")
        wait_until(lambda: fleet.agent_backends() == 1, 30, "the agent to drop the dead gateway from its ring")
        t_rerouted = time.time()
        a_before = _accepted(fleet, "gateway-a")
        # About 100 trades' worth of spans on the survivor after the re-route.
        wait_until(lambda: _accepted(fleet, "gateway-a") >= a_before + 800
                   and time.time() > t_rerouted + REROUTED_SLACK_S + 5, 60, "trading after the re-route")
    finally:
        for service, proc in bots.items():
            records[service] = finish_bot(proc)

    every = [r for rs in records.values() for r in rs]
    wait_for_pipeline_to_drain(fleet, sum(len(r["spans"]) for r in every))
    traces = fetch_traces(fleet, every, timeout=60)

    def state(record: dict[str, Any]) -> str:
        spans = traces[record["trace_id"]]
        if spans is None:
            return "missing"
        return "complete" if spans_by_id(spans) == {s: (p, n) for s, p, n in record["spans"]} else "incomplete"

    before = [r for r in every if r["t1"] < t_kill - SETTLED_BEFORE_KILL_S]
    after = [r for r in every if r["t0"] > t_rerouted + REROUTED_SLACK_S]
    window = [r for r in every if t_kill - SETTLED_BEFORE_KILL_S <= r["t1"] and r["t0"] <= t_rerouted + REROUTED_SLACK_S]
    lost = [r for r in window if state(r) != "complete"]
    # What the dead gateway held: traces waiting for their verdict (decision_wait of its share of the traffic)
    # and a batch not yet exported to Tempo (the batch processor's 1 s timeout). Twice that is the bound.
    trades_per_s = len(every) / (max(r["t1"] for r in every) - min(r["t0"] for r in every))
    bound = 2 * (trades_per_s / 2) * (DECISION_WAIT_S + BATCH_TIMEOUT_S)
    failed_at_agent = fleet.metric_sum("agent", "otelcol_exporter_send_failed_spans", exporter="load_balancing")
    retried = fleet.metric_sum("agent", "otelcol_loadbalancer_backend_outcome", success="false")
    print(f"\ngateway kill: {len(every)} trades; the agent re-resolved {t_rerouted - t_kill:.1f} s after the kill\n"
          f"  window ({SETTLED_BEFORE_KILL_S:.0f} s before the kill .. {REROUTED_SLACK_S:.0f} s after the re-route): "
          f"{len(window)} trades, lost {len(lost)} ({sum(state(r) == 'missing' for r in lost)} missing, "
          f"{sum(state(r) == 'incomplete' for r in lost)} incomplete in Tempo; bound {bound:.0f})\n"
          f"  gateway-b traces waiting in memory at its last report before the kill: {b_in_memory:.0f}\n"
          f"  agent: sends to a gateway that failed and were routed again {retried:.0f}, "
          f"spans dropped after retries {failed_at_agent:.0f}")

    assert before and after and len(before) + len(window) + len(after) == len(every)
    # Outside the window nothing is lost: the survivor has every trade routed after the re-route, whole...
    assert [r["trace_id"] for r in after if state(r) != "complete"] == []
    assert {s["gateway"] for r in after for s in traces[r["trace_id"]]} == {"gateway-a"}
    # ...and the dead gateway had delivered everything it decided long enough before the kill.
    assert [r["trace_id"] for r in before if state(r) != "complete"] == []
    # The agent lost nothing itself: batches that failed on the dead gateway were routed again. What is lost
    # is what the dead gateway held, and no more.
    assert failed_at_agent == 0
    assert len(lost) <= bound
    # Metrics never go through the gateways: order counts stay exact across the kill.
    for service, rs in records.items():
        orders = sum(1 for r in rs if r["order_outcome"] is not None)
        wait_until(lambda s=service, n=orders: _orders(fleet, s) == n, 60, f"{service}: {orders} orders")


def _accepted(fleet: Fleet, gateway: str) -> float:
    return fleet.metric_sum(gateway, "otelcol_receiver_accepted_spans")


def _orders(fleet: Fleet, service: str) -> float:
    rows = fleet.prom_query(f'sum(qt_order_latency_seconds_count{{service_name="{service}"}})')
    return float(rows[0]["value"][1]) if rows else 0.0
