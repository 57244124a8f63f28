"""Fleet fixtures: the two-tier topology on loopback, three bots trading through it, logs shown on failure."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from tests.e2e.fleet.harness import Fleet, finish_bot, start_bot
from tests.e2e.stack import wait_until

_FLEETS: list[Fleet] = []

#: The three bots of the main run: two on native histograms, one on explicit buckets (dashboards and rules
#: must work with both); one also activates its kill switch. Every bot keeps 25 % of its healthy trades.
BOTS = {"fleet-bot-1": {"native": True, "seed": 1}, "fleet-bot-2": {"native": True, "seed": 2},
        "fleet-bot-3": {"native": False, "seed": 3, "kill_switch": True}}
KEEP_RATIO = 0.25
#: SDK slow-order threshold (s) and the gateways' (ms): equal, as in docker-compose.fleet.yml.
SLOW_S = 0.1
TRADES_PER_BOT = 200
#: The gateways' decision_wait here (production default 10 s): short, so the suite is quick.
DECISION_WAIT_S = 2.0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and "tests/e2e/fleet" in str(item.fspath):
        for fleet in _FLEETS:
            report.sections.append((f"fleet server logs ({fleet.dir})", fleet.logs()))


def started_fleet(workdir: Any) -> Generator[Fleet, None, None]:
    fleet = Fleet(workdir, decision_wait=f"{DECISION_WAIT_S:g}s", gateway_slow_order_ms=int(SLOW_S * 1000))
    _FLEETS.append(fleet)
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()
        _FLEETS.remove(fleet)


@pytest.fixture(scope="package")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    yield from started_fleet(tmp_path_factory.mktemp("fleet"))


def wait_for_pipeline_to_drain(fleet: Fleet, spans_made: int, timeout: float = 90) -> None:
    """Every span the bots made was accepted by the agent, handed to a gateway, and has its verdict there."""
    def agent_accounted() -> bool:
        accepted = fleet.metric_sum("agent", "otelcol_receiver_accepted_spans")
        sent = fleet.metric_sum("agent", "otelcol_exporter_sent_spans", exporter="load_balancing")
        failed = fleet.metric_sum("agent", "otelcol_exporter_send_failed_spans", exporter="load_balancing")
        return accepted >= spans_made and sent + failed >= accepted

    wait_until(agent_accounted, timeout, f"the agent to accept and forward all {spans_made} spans")
    wait_until(fleet.gateways_settled, timeout, "every trace to have its verdict on the gateways")


def fetch_traces(fleet: Fleet, records: list[dict[str, Any]], timeout: float = 90) -> dict[str, Any]:
    """Tempo's view of every trade: kept ones polled until complete (or the deadline), the rest read once."""
    expected = {r["trace_id"]: len(r["spans"]) for r in records if r["marked"] or r["ratio_kept"]}
    deadline = time.monotonic() + timeout

    def read(trace_id: str) -> Any:
        while True:
            spans = fleet.trace(trace_id)
            n = expected.get(trace_id)
            if n is None or (spans is not None and len(spans) >= n) or time.monotonic() > deadline:
                return spans
            time.sleep(0.25)

    # Kept traces first (they set the pace), then the others; a few at a time, Tempo answers in parallel.
    order = sorted({r["trace_id"] for r in records}, key=lambda t: t not in expected)
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(order, pool.map(read, order)))


@pytest.fixture(scope="package")
def trading(fleet: Fleet) -> dict[str, Any]:
    """Three bots trading at once through agent -> gateways; then the pipeline drained and Tempo read."""
    started = time.time() - 5
    procs = {service: start_bot(fleet, service, "--trades", str(TRADES_PER_BOT), "--rate", "25",
                                "--seed", str(cfg["seed"]), *(["--kill-switch"] if cfg.get("kill_switch") else []),
                                keep_ratio=KEEP_RATIO, native=cfg["native"], slow_s=SLOW_S)
             for service, cfg in BOTS.items()}
    records = {service: finish_bot(proc) for service, proc in procs.items()}
    every = [r for rs in records.values() for r in rs]
    wait_for_pipeline_to_drain(fleet, sum(len(r["spans"]) for r in every))
    return {"started": started, "records": records, "all": every, "traces": fetch_traces(fleet, every)}
