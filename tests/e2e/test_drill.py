"""SDK -> Collector -> Prometheus + Tempo: the series, the exemplars, and the drill from exemplar to trace."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.e2e.stack import Stack, wait_until
from tests.support.servers import REPO


def test_prometheus_has_the_trading_series_with_expected_labels(stack: Stack, workload: dict[str, Any]) -> None:
    placed = [t for t in workload["trades"] if not t["rejected"]]

    def orders_by_venue_outcome() -> dict[tuple[str, str], float] | None:
        rows = stack.prom_query('sum by (venue, outcome) (qt_order_latency_seconds_count{service_name="e2e-bot"})')
        by = {(r["metric"]["venue"], r["metric"]["outcome"]): float(r["value"][1]) for r in rows}
        return by if sum(by.values()) == len(placed) else None  # the bot's last export has landed

    by = wait_until(orders_by_venue_outcome, 60, f"{len(placed)} orders from e2e-bot in Prometheus")
    assert by[("binance", "error")] == sum(1 for t in placed if not t["order_ok"])
    assert ("kraken", "ok") in by
    series = stack.prom_query('qt_order_latency_seconds_count{service_name="e2e-bot", venue="kraken"}')
    assert {s["metric"]["symbol"] for s in series} == {"BTCUSDT", "ETHUSDT"}
    labels = series[0]["metric"]
    assert labels["symbol"] in ("BTCUSDT", "ETHUSDT") and labels["side"] == "buy"
    assert labels["order_type"] == "market" and labels["outcome"] == "ok"
    assert labels["job"] == "e2e-bot"  # service.name -> job
    assert "client_order_id" not in json.dumps(labels)  # high-cardinality data stays on spans
    buckets = {r["metric"]["le"] for r in stack.prom_query('qt_order_latency_seconds_bucket{service_name="e2e-bot"}')}
    assert {"0.001", "0.5", "10", "+Inf"} <= buckets  # our seconds buckets, not the SDK defaults
    rejected = stack.prom_query('sum(qt_risk_checks_total{service_name="e2e-bot", outcome="rejected"})')
    assert float(rejected[0]["value"][1]) == sum(1 for t in workload["trades"] if t["rejected"])
    assert stack.prom_query('qt_risk_daily_pnl_used_ratio{service_name="e2e-bot"}')[0]["value"][1] == "0.35"
    assert stack.prom_query('qt_telemetry_heartbeat_seconds{service_name="e2e-bot"}')


def test_otlp_grpc_bots_arrive_too(stack: Stack, workload: dict[str, Any]) -> None:
    expected = len(workload["grpc_trades"])

    def trades() -> float:
        rows = stack.prom_query('sum(qt_trades_total{service_name="e2e-grpc-bot"})')
        return float(rows[0]["value"][1]) if rows else 0.0

    wait_until(lambda: trades() == expected, 60, f"{expected} trades from the gRPC bot")
    trace_id = workload["grpc_trades"][0]["trace_id"]
    assert wait_until(lambda: stack.trace(trace_id), 60, f"gRPC trace {trace_id} in Tempo")


def test_span_metrics_are_derived_per_span_name(stack: Stack, workload: dict[str, Any]) -> None:
    calls = wait_until(lambda: stack.prom_query(
        'sum by (span_name) (traces_span_metrics_calls_total{service_name="e2e-bot"})'), 90,
        "span metrics from the collector's span_metrics connector")
    names = {r["metric"]["span_name"] for r in calls}
    assert {"qt.trade", "qt.trade.signal", "qt.trade.entry", "qt.trade.execution", "qt.order.place"} <= names
    assert stack.prom_query('traces_span_metrics_duration_seconds_bucket{span_name="qt.order.place"}')


def test_exemplar_drill_from_latency_histogram_to_the_trade_trace(stack: Stack, workload: dict[str, Any]) -> None:
    exemplars = wait_until(lambda: stack.exemplars('qt_order_latency_seconds_bucket{service_name="e2e-bot"}',
                                                   workload["started"]), 60, "order latency exemplars")
    trace_ids = {e["labels"]["trace_id"] for e in exemplars}
    assert all(re.fullmatch(r"[0-9a-f]{32}", t) for t in trace_ids)
    assert trace_ids <= {t["trace_id"] for t in workload["trades"]}  # every exemplar is one of our trades

    trace_id = sorted(trace_ids)[0]
    spans = wait_until(lambda: stack.trace(trace_id), 60, f"trace {trace_id} in Tempo")
    by_name = {s["name"]: s for s in spans}
    root = by_name["qt.trade"]
    assert root["parent_span_id"] == "" and root["service"] == "e2e-bot"
    for stage in ("qt.trade.signal", "qt.trade.entry", "qt.trade.execution"):
        assert by_name[stage]["parent_span_id"] == root["span_id"], stage
    order = by_name["qt.order.place"]
    assert order["parent_span_id"] == by_name["qt.trade.execution"]["span_id"]
    assert order["attributes"]["venue"] in ("binance", "kraken")
    assert order["attributes"]["order.client_order_id"].startswith("c-")
    assert order["attributes"]["symbol"] == root["attributes"]["symbol"]
    assert "AK-SECRET" not in json.dumps(spans)
    exemplar_span_ids = {e["labels"].get("span_id") for e in exemplars if e["labels"]["trace_id"] == trace_id}
    assert order["span_id"] in exemplar_span_ids  # the exemplar points at the order span itself


def test_failed_orders_are_error_spans_with_redacted_exception_in_tempo(stack: Stack, workload: dict[str, Any]) -> None:
    failed = next(t for t in workload["trades"] if not t["order_ok"] and not t["rejected"])
    spans = wait_until(lambda: stack.trace(failed["trace_id"]), 60, "a failed order's trace")
    order = next(s for s in spans if s["name"] == "qt.order.place")
    assert order["status"].get("code") in ("STATUS_CODE_ERROR", 2)
    assert order["attributes"]["outcome"] == "error"
    assert by_outcome_error(stack)
    assert "deadbeef" not in json.dumps(spans)


def by_outcome_error(stack: Stack) -> bool:
    rows = stack.prom_query('qt_order_latency_seconds_count{service_name="e2e-bot", outcome="error"}')
    return bool(rows) and rows[0]["metric"]["error_type"] == "ExchangeTimeout"


def _instantiate(expr: str) -> str:
    """Grafana's interval macros -> 1m, every dashboard variable ($service, $venue, ...) -> "All"."""
    return re.sub(r"\$\{?[a-z_]+\}?", ".*", re.sub(r"\$__(rate_interval|interval|range)\b", "1m", expr))


def _empty_trading_panels(stack: Stack) -> list[str]:
    """Trading Overview queries Prometheus answers with nothing (every query of every dashboard must run)."""
    empty: list[str] = []
    for path in sorted((REPO / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                result = stack.prom_query(_instantiate(target["expr"]))  # asserts status == success
                if board["uid"] == "qt-trading-overview" and not result:
                    empty.append(f"{panel['title']}: {target['expr']}")
    return empty


def test_every_dashboard_query_runs_and_trading_panels_have_data(stack: Stack, live_bot: str,
                                                                  lossy_bot: str) -> None:
    # Rate-based panels need bots that are trading now: the live bot (and the lossy one) run for the whole session.
    live = f'rate(qt_order_latency_seconds_count{{service_name="{live_bot}"}}[1m]) > 0'
    wait_until(lambda: stack.prom_query(live), 60, "live order rate")
    # the live bot's first feed reconnect comes 21 s in (tests/e2e/workload.py Safety)
    try:
        wait_until(lambda: not _empty_trading_panels(stack), 90, "every Trading Overview panel with data")
    except AssertionError:
        raise AssertionError("trading panels without data:\n" + "\n".join(_empty_trading_panels(stack))) from None


def test_pipeline_dashboard_series_exist_in_the_collector_self_telemetry(stack: Stack,
                                                                         workload: dict[str, Any]) -> None:
    for series in ("otelcol_receiver_accepted_spans", "otelcol_receiver_accepted_metric_points",
                   "otelcol_exporter_sent_spans", "otelcol_exporter_sent_metric_points",
                   "otelcol_exporter_queue_size", "otelcol_exporter_queue_capacity"):
        assert wait_until(lambda s=series: stack.prom_query(s), 60, series), series
    up = {r["metric"]["job"]: r["value"][1] for r in stack.prom_query("up")}
    assert up["otel-collector"] == "1" and up["tempo"] == "1" and up["alertmanager"] == "1"


def test_tempo_service_graph_draws_bot_to_venue_edges(stack: Stack, workload: dict[str, Any]) -> None:
    # Tempo's metrics generator (Grafana's service map) remote-writes into the same Prometheus; order spans name
    # their venue as peer.service, so each bot gets an edge to each venue it trades on.
    edges = wait_until(lambda: stack.prom_query('traces_service_graph_request_total{client="e2e-bot"}'), 90,
                       "service graph edges from e2e-bot")
    assert {e["metric"]["server"] for e in edges} == {"binance", "kraken"}
