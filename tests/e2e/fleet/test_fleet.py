"""Fleet topology: agent -> two tail-sampling gateways -> Tempo; metrics agent -> Prometheus, unsampled.

Three bots trade at once (see conftest.BOTS). Ground truth is what each bot emitted: every span (id, parent,
name) of every trade, its category and whether the SDK contract marked the trace ``qt.sampling.keep``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import yaml
from tests.e2e.fleet.conftest import BOTS, KEEP_RATIO
from tests.e2e.fleet.harness import GATEWAYS, Fleet, spans_by_id
from tests.e2e.stack import wait_until
from tests.support.servers import REPO

#: Tolerances below are this many binomial standard deviations: a false failure has probability < 1e-6.
SIGMAS = 5.0


def expected_kept(record: dict[str, Any]) -> bool:
    return bool(record["marked"] or record["ratio_kept"])


def binomial_band(n: int, p: float) -> tuple[float, float]:
    sd = math.sqrt(n * p * (1 - p))
    return n * p - SIGMAS * sd, n * p + SIGMAS * sd


def test_every_kept_trace_is_complete_and_was_sampled_by_exactly_one_gateway(trading: dict[str, Any]) -> None:
    kept = [r for r in trading["all"] if expected_kept(r)]
    assert len(kept) > 100
    per_gateway: Counter[str] = Counter()
    for record in kept:
        spans = trading["traces"][record["trace_id"]]
        assert spans is not None, f"{record['category']} trade {record['trace_id']} missing from Tempo"
        # Exactly the spans the bot emitted: same ids, same parents, same names (root, stages, risk checks,
        # the order and its fill or reject). Nothing missing, nothing extra, nothing duplicated.
        assert len(spans) == len(record["spans"])
        assert spans_by_id(spans) == {sid: (parent, name) for sid, parent, name in record["spans"]}
        gateways = {s["gateway"] for s in spans}
        assert len(gateways) == 1 and gateways <= set(GATEWAYS), (record["trace_id"], gateways)
        per_gateway[gateways.pop()] += 1
    # Trace ids are random, so the split between the two gateways is binomial(n, 1/2).
    low, high = binomial_band(len(kept), 0.5)
    assert all(low <= per_gateway[g] <= high for g in GATEWAYS), per_gateway


def test_every_failed_rejected_slow_and_safety_event_trace_is_kept(trading: dict[str, Any]) -> None:
    table: dict[str, list[int]] = {}
    for record in trading["all"]:
        must_keep = record["category"] != "healthy" or record["marked"]
        if not must_keep:
            continue
        label = record["category"] if record["category"] != "healthy" else "healthy but slow (measured)"
        row = table.setdefault(label, [0, 0])
        row[1] += 1
        row[0] += trading["traces"][record["trace_id"]] is not None
    print("\ncategory                          kept / expected")
    for label, (kept, expected) in sorted(table.items()):
        print(f"{label:32} {kept:5} / {expected}")
    for category in ("risk_rejected", "failed", "venue_rejected", "slow", "breaker", "kill_switch"):
        assert table[category][1] > 0, f"the workload made no {category} trade"
    assert {label: kept for label, (kept, _) in table.items()} == {label: n for label, (_, n) in table.items()}


def test_healthy_trades_are_kept_exactly_when_the_bot_keep_ratio_says_so(trading: dict[str, Any]) -> None:
    healthy = [r for r in trading["all"] if r["category"] == "healthy" and not r["marked"]]
    kept = {r["trace_id"] for r in healthy if trading["traces"][r["trace_id"]] is not None}
    # The decision is the bot's (consistent, from the trace id): the gateways keep exactly those traces...
    assert kept == {r["trace_id"] for r in healthy if r["ratio_kept"]}
    # ...and those are the configured share of healthy trades, within the binomial tolerance.
    low, high = binomial_band(len(healthy), KEEP_RATIO)
    print(f"\nhealthy trades kept: {len(kept)} / {len(healthy)} = {len(kept) / len(healthy):.3f} "
          f"(keep ratio {KEEP_RATIO}; {SIGMAS:.0f}-sigma band {low:.0f}..{high:.0f})")
    assert low <= len(kept) <= high


def test_latency_histogram_counts_equal_every_order_made_not_only_the_sampled(fleet: Fleet,
                                                                             trading: dict[str, Any]) -> None:
    for service, records in trading["records"].items():
        made = Counter(r["order_outcome"] for r in records if r["order_outcome"] is not None)
        # The same expression works for explicit buckets (_count) and native histograms (histogram_count).
        expr = (f'sum by (outcome) (qt_order_latency_seconds_count{{service_name="{service}"}}) '
                f'or sum by (outcome) (histogram_count(qt_order_latency_seconds{{service_name="{service}"}}))')

        def counts(e: str = expr) -> dict[str, float]:
            return {r["metric"]["outcome"]: float(r["value"][1]) for r in fleet.prom_query(e)}

        wait_until(lambda m=made: counts() == m, 60, f"{service}: order counts {dict(made)} in Prometheus")
        native = bool(fleet.prom_query(f'qt_order_latency_seconds{{service_name="{service}"}}'))
        classic = bool(fleet.prom_query(f'qt_order_latency_seconds_bucket{{service_name="{service}"}}'))
        assert (native, classic) == (BOTS[service]["native"], not BOTS[service]["native"]), service


def test_span_metrics_count_every_span_before_sampling(fleet: Fleet, trading: dict[str, Any]) -> None:
    for service, records in trading["records"].items():
        made = Counter(name for r in records for _, _, name in r["spans"])

        def calls(s: str = service) -> dict[str, float]:
            rows = fleet.prom_query(f'sum by (span_name) (traces_span_metrics_calls_total{{service_name="{s}"}})')
            return {r["metric"]["span_name"]: float(r["value"][1]) for r in rows}

        wait_until(lambda m=made: calls() == m, 90, f"{service}: RED calls per span name {dict(made)}")


def test_exemplars_point_only_at_kept_traces(fleet: Fleet, trading: dict[str, Any]) -> None:
    kept = {r["trace_id"] for r in trading["all"] if expected_kept(r)}
    healthy_kept = {r["trace_id"] for r in trading["all"] if r["category"] == "healthy" and r["ratio_kept"]}
    failed = {r["trace_id"] for r in trading["all"] if r["category"] == "failed"}
    selectors = {
        "native order latency": 'qt_order_latency_seconds{service_name=~"fleet-bot-.*"}',
        "explicit order latency": 'qt_order_latency_seconds_bucket{service_name=~"fleet-bot-.*"}',
        "native stage duration": 'qt_trade_stage_duration_seconds{service_name=~"fleet-bot-.*"}',
        "explicit stage duration": 'qt_trade_stage_duration_seconds_bucket{service_name=~"fleet-bot-.*"}',
    }
    seen: set[str] = set()
    for what, selector in selectors.items():
        exemplars = wait_until(lambda s=selector: fleet.exemplars(s, trading["started"]), 60, f"{what} exemplars")
        ids = {e["labels"]["trace_id"] for e in exemplars}
        assert ids <= kept, f"{what}: exemplars point at traces the gateways dropped: {sorted(ids - kept)[:5]}"
        seen |= ids
    # Not vacuous: exemplars exist for healthy trades inside the keep ratio and for failed orders, and every
    # one of them opens in Tempo.
    assert seen & healthy_kept and seen & failed
    assert all(trading["traces"][t] is not None for t in seen)
    # The agent's span_metrics connector would exemplify any span (most are dropped): it must not.
    assert fleet.exemplars('traces_span_metrics_duration_seconds_bucket{service_name=~"fleet-bot-.*"}',
                           trading["started"]) == []


def test_dashboards_and_alert_queries_work_on_native_histograms(fleet: Fleet, trading: dict[str, Any]) -> None:
    native_bot = next(s for s, cfg in BOTS.items() if cfg["native"])
    latency_panels = 0
    for path in sorted((REPO / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                if "qt_order_latency_seconds" not in target["expr"] and "qt_trade_stage_duration" not in target["expr"]:
                    continue
                expr = target["expr"].replace("$__rate_interval", "5m").replace("$service", native_bot)
                for variable in ("$venue", "$strategy", "$symbol"):  # "All", as Grafana sends it for a regex
                    expr = expr.replace(variable, ".*")
                latency_panels += 1
                assert wait_until(lambda e=expr: fleet.prom_query(e), 30, f"{panel['title']}: {expr}"), expr
    assert latency_panels >= 5
    # The order alerts, with their thresholds lowered to "any value", evaluate on the native bot too.
    rules = {r["alert"]: r["expr"] for g in yaml.safe_load((REPO / "prometheus" / "rules" / "trading.yml").read_text())
             ["groups"] for r in g["rules"]}
    for alert, threshold in (("QtOrderLatencyP95High", "> 0.5"), ("QtOrderRejectRateHigh", "> 0.1")):
        assert threshold in rules[alert], alert
        expr = rules[alert].replace(threshold, ">= 0")
        services = {r["metric"]["service_name"] for r in fleet.prom_query(expr)}
        assert set(BOTS) <= services, (alert, services)


def test_pipeline_dashboard_fleet_panels_and_alerts_see_the_gateways(fleet: Fleet, trading: dict[str, Any]) -> None:
    board = json.loads((REPO / "grafana" / "dashboards" / "telemetry-pipeline.json").read_text())
    fleet_panels = [p for p in board["panels"] if p["title"].startswith("Fleet ")]
    assert len(fleet_panels) == 3
    for panel in fleet_panels:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "5m")
            assert wait_until(lambda e=expr: fleet.prom_query(e), 60, f"{panel['title']}: {expr}"), expr
    up = {r["metric"]["instance"]: r["value"][1] for r in fleet.prom_query('up{job="otel-gateway"}')}
    assert sorted(up.values()) == ["1", "1"]
    assert fleet.prom_query('ALERTS{alertname=~"QtGatewayDown|QtTailSamplingOverflow"}') == []
