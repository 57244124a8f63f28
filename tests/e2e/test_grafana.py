"""Grafana itself, loaded with the shipped provisioning, asked through its own HTTP API what a user would see.

The Grafana here is the one version Go's module registry serves (a June 2023 main-branch build, API only);
compose runs 13.x, whose additions stay covered by the structural checks in tests/unit/test_stack_configs.py.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from tests.e2e.grafana import DASHBOARDS, PROVISIONING, Frame, Grafana, GrafanaError, instantiate, recent
from tests.e2e.stack import Stack, wait_until

SHIPPED_DATASOURCES = {d["uid"]: d for d in
                       yaml.safe_load((PROVISIONING / "datasources" / "datasources.yaml").read_text())["datasources"]}
SHIPPED_DASHBOARDS = {b["uid"]: b for b in (json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json")))}


def _expanded(value: Any) -> Any:
    """A provisioning value as Grafana stores it: "$$" in the file escapes its environment expansion."""
    if isinstance(value, str):
        return value.replace("$$", "$")
    if isinstance(value, dict):
        return {k: _expanded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expanded(v) for v in value]
    return value


def _provisioned_dashboards(grafana: Grafana) -> list[dict[str, Any]]:
    """Search hits once every shipped dashboard is there (the file provider runs just after startup)."""
    def hits() -> list[dict[str, Any]] | None:
        found = grafana.api("/api/search?type=dash-db")
        return found if {h["uid"] for h in found} >= set(SHIPPED_DASHBOARDS) else None

    found: list[dict[str, Any]] = wait_until(hits, 60, f"dashboards {sorted(SHIPPED_DASHBOARDS)} in Grafana")
    return found


def test_grafana_answers_nothing_without_the_generated_admin_password(grafana: Grafana) -> None:
    for auth in (False, ("admin", "admin"), ("admin", grafana.password + "x")):
        with pytest.raises(GrafanaError) as refused:
            grafana.api("/api/search", auth=auth)
        assert refused.value.status == 401, auth
    assert grafana.api("/api/user")["login"] == "admin"


def test_provisioned_datasources_are_the_shipped_ones_with_loopback_urls_and_links_intact(grafana: Grafana) -> None:
    listed = {d["uid"]: d for d in grafana.api("/api/datasources")}
    assert {uid: (d["name"], d["type"]) for uid, d in listed.items()} == {
        uid: (d["name"], d["type"]) for uid, d in SHIPPED_DATASOURCES.items()}
    assert {uid: d["url"] for uid, d in listed.items()} == grafana.datasource_urls()
    assert [uid for uid, d in listed.items() if d["isDefault"]] == ["prometheus"]
    for uid, shipped in SHIPPED_DATASOURCES.items():
        served = grafana.api(f"/api/datasources/uid/{uid}")
        assert served["jsonData"] == _expanded(shipped["jsonData"]), uid
        assert served["readOnly"] is True, uid  # editable: false
    links = grafana.api("/api/datasources/uid/prometheus")["jsonData"]["exemplarTraceIdDestinations"]
    assert [(link["name"], link["datasourceUid"]) for link in links] == [("trace_id", "tempo")]
    queries = grafana.api("/api/datasources/uid/tempo")["jsonData"]["tracesToMetrics"]["queries"]
    assert queries and all("{$__tags}" in q["query"] for q in queries)  # "$$__tags" in the file


def test_provisioned_dashboards_are_the_shipped_ones_in_the_trading_folder(grafana: Grafana) -> None:
    hits = _provisioned_dashboards(grafana)
    assert {h["uid"]: h["folderTitle"] for h in hits} == {uid: "Trading" for uid in SHIPPED_DASHBOARDS}
    for served in grafana.dashboards():
        board, meta = served["dashboard"], served["meta"]
        shipped = SHIPPED_DASHBOARDS[board["uid"]]
        assert meta["provisioned"] is True and meta["folderTitle"] == "Trading"
        assert board["title"] == shipped["title"]
        assert board["panels"] == shipped["panels"], board["uid"]
        assert board["templating"] == shipped["templating"], board["uid"]


def test_grafana_log_shows_provisioning_and_no_provisioning_errors(grafana: Grafana) -> None:
    _provisioned_dashboards(grafana)
    lines = grafana.log.read_text(errors="replace").splitlines()
    provisioning = [line for line in lines if "logger=provisioning" in line]
    for uid in SHIPPED_DATASOURCES:  # the log is the one we think it is: it shows each datasource provisioned
        assert any("inserting datasource from configuration" in line and f"uid={uid}" in line
                   for line in provisioning), uid
    errors = [line for line in provisioning if re.search(r"\blevel=(error|eror|crit)\b", line)]
    assert not errors, "\n".join(errors)
    assert grafana.password not in "\n".join(lines)


def test_every_datasource_answers_through_grafana(grafana: Grafana, stack: Stack) -> None:
    # what each datasource's "Save & test" asks in this Grafana version
    health = grafana.api("/api/datasources/uid/prometheus/health")
    assert health == {"status": "OK", "message": "Successfully queried the Prometheus API."}
    assert grafana.api("/api/datasources/proxy/uid/tempo/api/echo").strip() == "echo"
    status = grafana.api("/api/alertmanager/alertmanager/api/v2/status")  # what Grafana's alerting UI asks
    assert status["cluster"]["status"] == "disabled"  # our single Alertmanager runs without a cluster
    assert {r["name"] for r in status["config"]["receivers"]} == {"page", "notify", "null"}
    assert status["config"]["route"]["group_by"] == ["alertname", "service_name"]


#: Panels of the fleet topology (docker-compose.fleet.yml): their series come from the trace gateways and agents'
#: load balancer, which the single-box stack here does not run. Their queries must still run.
FLEET_ONLY = {"Fleet gateways: traces kept / not kept (tail sampling)",
              "Fleet gateways: traces in memory / dropped before a verdict", "Fleet agents: gateways in the ring"}


@dataclass
class PanelRun:
    queries: int = 0
    failed: list[str] = field(default_factory=list)  # queries Grafana could not run
    empty: list[str] = field(default_factory=list)  # queries that returned no values


def _run_every_panel(grafana: Grafana) -> PanelRun:
    """Every target of every panel of every dashboard Grafana serves, one /api/ds/query per panel (as a panel
    does), over the last 5 minutes with the dashboards' variables on "All"."""
    run = PanelRun()
    for served in grafana.dashboards():
        board = served["dashboard"]
        for panel in board["panels"]:
            targets = [instantiate(t, board["templating"]) for t in panel["targets"]]
            results = grafana.query(targets, *recent(300))
            assert sorted(results) == sorted(t["refId"] for t in targets), panel["title"]
            for target in targets:
                run.queries += 1
                result = results[target["refId"]]
                where = f"{board['title']} / {panel['title']} / {target['refId']}"
                if result.error or result.answer.get("status") != 200:
                    run.failed.append(f"{where}: {result.answer.get('status')} {result.error}")
                elif panel["title"] not in FLEET_ONLY and not result.data_frames():
                    run.empty.append(f"{where}: {target['expr']}")
    return run


def test_every_panel_query_runs_through_grafana_and_returns_values(
        grafana: Grafana, stack: Stack, live_bot: str, lossy_bot: str, workload: dict[str, Any]) -> None:
    # rate() panels need bots trading now: the live bot (and the lossy one) run for the whole session
    wait_until(lambda: stack.prom_query(f'rate(qt_order_latency_seconds_count{{service_name="{live_bot}"}}[1m]) > 0'),
               60, "live order rate")
    # a fresh stack has samples only since it started: wait for the first 15 s step that covers them, and for the
    # live bot's first safety events (its feed reconnects 21 s in, tests/e2e/workload.py Safety)
    deadline = time.monotonic() + 150
    run = _run_every_panel(grafana)
    while run.empty and not run.failed and time.monotonic() < deadline:
        time.sleep(2)
        run = _run_every_panel(grafana)
    assert run.queries == sum(len(p["targets"]) for b in SHIPPED_DASHBOARDS.values() for p in b["panels"])
    assert not run.failed, "queries Grafana could not run:\n" + "\n".join(run.failed)
    assert not run.empty, "panels without values:\n" + "\n".join(run.empty)


def _annotation_events(grafana: Grafana, board: dict[str, Any], annotation: dict[str, Any],
                       chosen: dict[str, str] | None = None) -> list[dict[str, str]]:
    """An annotation query as Grafana's Prometheus datasource runs it: a range query at the annotation's step;
    every series' non-zero steps are its events (consecutive ones join into one region). Returns each region's
    series labels."""
    target = instantiate({"refId": "Anno", "datasource": annotation["datasource"], "expr": annotation["expr"],
                          "range": True, "instant": False}, board["templating"], chosen)
    step_ms = int(annotation["step"].rstrip("s")) * 1000
    result = grafana.query([{**target, "intervalMs": step_ms, "interval": annotation["step"]}], *recent(600))["Anno"]
    assert not result.error, result.error
    regions = []
    for frame in result.frames:
        value_field = next((name for name in frame.columns if name not in ("Time", "time")), None)
        if value_field is None:
            continue
        previous = None
        times = frame.columns.get("Time") or frame.columns.get("time") or []
        for when, value in zip(times, frame.columns[value_field]):
            if value and (previous is None or when - previous > step_ms):
                regions.append(frame.labels[value_field])
            if value:
                previous = when
    return regions


def test_kill_switch_and_breaker_annotations_mark_the_latency_panels_with_events(
        grafana: Grafana, workload: dict[str, Any]) -> None:
    for served in grafana.dashboards():
        board = served["dashboard"]
        annotations = {a["name"]: a for a in board["annotations"]["list"]}
        if not annotations:
            continue
        panel_ids = {p["id"] for p in board["panels"]}
        for annotation in annotations.values():
            assert set(annotation["filter"]["ids"]) <= panel_ids and annotation["filter"]["exclude"] is False
        def events(name: str, service: str, board: dict[str, Any] = board,
                   annotations: dict[str, dict[str, Any]] = annotations) -> list[dict[str, str]]:
            return _annotation_events(grafana, board, annotations[name], {"service": service})

        kill = wait_until(lambda: events("Kill switch active", "e2e-halted-bot"), 60,
                          f"{board['title']}: kill switch annotation events")
        assert {(e["service_name"], e["kill_switch"]) for e in kill} == {("e2e-halted-bot", "main")}
        breaker = wait_until(lambda: events("Circuit breaker not closed", "e2e-halted-bot"), 60,
                             f"{board['title']}: breaker annotation events")
        assert {(e["service_name"], e["breaker"]) for e in breaker} == {("e2e-halted-bot", "binance-api")}
        # e2e-bot's switch and breakers stayed off and closed: nothing marked
        assert not events("Kill switch active", "e2e-bot")
        assert not events("Circuit breaker not closed", "e2e-bot")


def _overview_panel(grafana: Grafana, title: str) -> tuple[dict[str, Any], dict[str, Any]]:
    board = grafana.api("/api/dashboards/uid/qt-trading-overview")["dashboard"]
    panel = next(p for p in board["panels"] if p["title"].startswith(title))
    return board, panel


def _exemplars_on_the_panel(grafana: Grafana, title: str, field: str, since: float) -> dict[str, set[str]]:
    """A Trading Overview panel's exemplars for e2e-bot, as {value of ``field``: span ids}."""
    board, panel = _overview_panel(grafana, title)
    targets = [instantiate(t, board["templating"], {"service": "e2e-bot"}) for t in panel["targets"]]
    assert all(t["exemplar"] for t in targets)
    found: dict[str, set[str]] = {}
    for result in grafana.query(targets, since, time.time()).values():
        for frame in result.exemplar_frames():
            for value, span_id in zip(frame.columns.get(field, []), frame.columns.get("span_id", [])):
                found.setdefault(value, set()).add(span_id)
    return found


def _trace_through_grafana(grafana: Grafana, tempo_uid: str, trace_id: str, since: float) -> Frame:
    """A trace as Grafana's "Open trace in Tempo" link fetches it: a traceql query by id to the Tempo datasource."""
    def trace() -> Frame | None:
        query = {"refId": "A", "datasource": {"uid": tempo_uid}, "queryType": "traceql", "query": trace_id}
        result = grafana.query([query], since, time.time())["A"]
        assert not result.error, result.error
        return next((f for f in result.frames if f.columns.get("traceID")), None)

    spans: Frame = wait_until(trace, 60, f"trace {trace_id} from the {tempo_uid!r} datasource")
    return spans


def test_latency_panel_exemplar_opens_the_trades_trace_in_tempo_through_grafana(
        grafana: Grafana, workload: dict[str, Any]) -> None:
    (destination,) = grafana.api("/api/datasources/uid/prometheus")["jsonData"]["exemplarTraceIdDestinations"]
    field, tempo_uid = destination["name"], destination["datasourceUid"]
    since = workload["started"] - 60

    exemplars = wait_until(lambda: _exemplars_on_the_panel(grafana, "Order latency p50", field, since), 60,
                           f"exemplars with a {field!r} field on the latency panel")
    assert all(re.fullmatch(r"[0-9a-f]{32}", t) for t in exemplars), exemplars
    assert set(exemplars) <= {t["trace_id"] for t in workload["trades"]}  # each diamond is one of e2e-bot's trades

    trace_id = min(exemplars)
    spans = _trace_through_grafana(grafana, tempo_uid, trace_id, since)
    assert set(spans.columns["traceID"]) == {trace_id}
    names = spans.columns["operationName"]
    assert {"qt.trade", "qt.trade.execution", "qt.order.place"} <= set(names)
    assert set(spans.columns["serviceName"]) == {"e2e-bot"}
    span_of = {name: spans.columns["spanID"][i] for i, name in enumerate(names)}
    parent_of = {name: spans.columns["parentSpanID"][i] for i, name in enumerate(names)}
    assert parent_of["qt.order.place"] == span_of["qt.trade.execution"]
    assert parent_of["qt.trade.execution"] == span_of["qt.trade"]
    assert span_of["qt.order.place"] in exemplars[trace_id]  # the diamond points at the order span itself


def test_alertmanager_datasource_lists_the_firing_kill_switch_alert(grafana: Grafana, workload: dict[str, Any]) -> None:
    def kill_switch_alerts(service: str) -> list[dict[str, Any]]:
        return [a for a in grafana.api("/api/alertmanager/alertmanager/api/v2/alerts")
                if a["labels"].get("alertname") == "QtKillSwitchActive" and a["labels"].get("service_name") == service]

    # for: 30s, evaluated every second here, then sent to Alertmanager
    (alert,) = wait_until(lambda: kill_switch_alerts("e2e-halted-bot"), 120,
                          "e2e-halted-bot's QtKillSwitchActive in the Alertmanager datasource")
    assert not kill_switch_alerts("e2e-bot")  # its kill switch is off
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["kill_switch"] == "main"
    assert alert["status"]["state"] == "active"
    assert "ACTIVE" in alert["annotations"]["summary"]
    assert [r["name"] for r in alert["receivers"]] == ["page"]


@pytest.mark.parametrize("quantile", ["p50", "p99"])
def test_latency_budget_exemplar_opens_a_trade_whose_spans_carry_the_segments(
        grafana: Grafana, workload: dict[str, Any], quantile: str) -> None:
    (destination,) = grafana.api("/api/datasources/uid/prometheus")["jsonData"]["exemplarTraceIdDestinations"]
    field, tempo_uid = destination["name"], destination["datasourceUid"]
    since = workload["started"] - 60
    title = f"Latency budget {quantile}"
    exemplars = wait_until(lambda: _exemplars_on_the_panel(grafana, title, field, since), 60,
                           f"exemplars with a {field!r} field on the {title} panel")
    assert set(exemplars) <= {t["trace_id"] for t in workload["trades"]}  # each diamond is one of e2e-bot's trades

    trace_id = min(exemplars)
    spans = _trace_through_grafana(grafana, tempo_uid, trace_id, since)
    assert set(spans.columns["traceID"]) == {trace_id}
    assert "qt.trade" in spans.columns["operationName"]
    assert exemplars[trace_id] <= set(spans.columns["spanID"])  # the diamond points at a span of that trade
