"""The shipped stack configs, checked by the real tools and against the names the SDK emits."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from qt_telemetry import semconv
from tests.support.servers import REPO, binary, debian_tool

DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = sorted((REPO / "prometheus" / "rules").glob("*.yml"))
#: Series our SDK produces (histograms: _bucket/_sum/_count) and the ones the pipeline itself exposes.
#: A histogram is also one series under its own name when it arrives as a Prometheus native histogram.
OUR_SERIES = {s.prometheus + sfx for s in semconv.METRICS.values()
              for sfx in (("_bucket", "_sum", "_count", "") if s.kind == "histogram" else ("",))}
PIPELINE_PREFIXES = ("otelcol_", "prometheus_", "tempo_", "traces_span_metrics_", "up", "ALERTS")
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "rate", "increase", "irate", "histogram_quantile",
    "time", "absent", "max_over_time", "label_values", "and", "or", "unless", "on", "ignoring", "group_left",
    "bool", "offset", "le", "timestamp", "histogram_count", "histogram_sum",
}


def _run(*cmd: str, cwd: Path = REPO) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _metric_names(expr: str) -> set[str]:
    """Identifiers used as series names in a PromQL expression (not functions, labels or keywords)."""
    stripped = re.sub(r'\{[^}]*\}', "", expr)  # label matchers
    stripped = re.sub(r'"[^"]*"', "", stripped)
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)  # ranges
    stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped)
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", stripped))
    return {n for n in names if n not in PROMQL_WORDS and not n.startswith("$")}


def _known(name: str) -> bool:
    return name in OUR_SERIES or name.startswith(PIPELINE_PREFIXES)


def _dashboard_exprs() -> list[tuple[str, str, str]]:
    """(board, panel or annotation title, PromQL) for every panel target and every annotation query."""
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                out.append((path.name, panel["title"], target["expr"]))
        for annotation in board["annotations"]["list"]:
            out.append((path.name, f"annotation {annotation['name']}", annotation["expr"]))
    return out


def _substituted(expr: str) -> str:
    """A dashboard query as Prometheus receives it: variables on "All", Grafana's interval macros resolved."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "1m", expr)
    return re.sub(r"\$\{?[a-z_]+\}?", ".*", expr)


def _rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


# --- Prometheus rules ----------------------------------------------------------------------------------

@pytest.mark.parametrize("promtool", [pytest.param("debian", marks=pytest.mark.servers("debian:promtool")),
                                      pytest.param("compose-version", marks=pytest.mark.servers("promtool"))])
def test_promtool_accepts_config_and_rules_and_every_rule_unit_test_passes(promtool: str) -> None:
    tool = debian_tool("promtool") if promtool == "debian" else binary("promtool")
    prom_dir = REPO / "prometheus"
    assert "SUCCESS" in _run(tool, "check", "config", "prometheus.yml", cwd=prom_dir)
    _run(tool, "check", "rules", *[str(p) for p in RULE_FILES])
    out = _run(tool, "test", "rules", *[str(p) for p in sorted((prom_dir / "tests").glob("*.yml"))], cwd=prom_dir)
    assert out.count("SUCCESS") == 2


def test_order_alerts_fire_on_native_histograms_too() -> None:
    """prometheus/tests/native/: the same alerts on native-histogram input (promtool 3 only: Debian's 2.42
    cannot read native histograms in test series)."""
    tests = sorted((REPO / "prometheus" / "tests" / "native").glob("*.yml"))
    out = _run(binary("promtool"), "test", "rules", *[str(p) for p in tests], cwd=REPO / "prometheus")
    assert tests and out.count("SUCCESS") == len(tests)
    text = "\n".join(p.read_text() for p in tests)
    for alert in ("QtOrderLatencyP95High", "QtOrderRejectRateHigh"):
        assert f"alertname: {alert}\n        exp_alerts: []" in text, alert
        assert re.search(rf"alertname: {alert}\n\s+exp_alerts:\n\s+- exp_labels", text), alert


def test_every_alert_has_severity_summary_description_runbook_and_a_unit_test() -> None:
    tests_text = "\n".join(p.read_text() for p in (REPO / "prometheus" / "tests").glob("*.yml"))
    required = {"QtKillSwitchActive", "QtCircuitBreakerOpen", "QtFeedDisconnected", "QtFeedStale",
                "QtOrderLatencyP95High", "QtDailyLossLimitApproaching", "QtMaxPositionsReached",
                "QtOrderRejectRateHigh", "QtCollectorDown", "QtBotSilent", "QtNoBotReporting", "QtTelemetryDropped",
                "QtTickToTradeP99High"}
    names = set()
    for rule in _rules():
        names.add(rule["alert"])
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
        # firing *and* not firing are both specified for every alert
        assert f"alertname: {rule['alert']}\n        exp_alerts: []" in tests_text, rule["alert"]
        assert re.search(rf"alertname: {rule['alert']}\n\s+exp_alerts:\n\s+- exp_labels", tests_text), rule["alert"]
    assert required <= names


def test_alert_rules_only_query_series_the_sdk_or_pipeline_produces() -> None:
    for rule in _rules():
        unknown = {n for n in _metric_names(rule["expr"]) if not _known(n)}
        assert not unknown, f"{rule['alert']} queries unknown series {unknown}"


# --- Alertmanager --------------------------------------------------------------------------------------

ALERTMANAGER = REPO / "alertmanager"


@pytest.mark.servers("amtool")
@pytest.mark.parametrize("config", ["alertmanager.yml", "alertmanager.quiet.yml"])
def test_amtool_accepts_the_alertmanager_configs(config: str) -> None:
    out = _run(binary("amtool"), "check-config", f"alertmanager/{config}")
    assert "SUCCESS" in out and "3 receivers" in out


@pytest.mark.servers("amtool")
@pytest.mark.parametrize("config", ["alertmanager.yml", "alertmanager.quiet.yml"])
def test_routing_pages_critical_notifies_warning_and_only_shows_info(config: str) -> None:
    amtool, cfg = binary("amtool"), f"alertmanager/{config}"
    for labels, receiver in ((["severity=critical", "alertname=QtKillSwitchActive"], "page"),
                             (["severity=warning", "alertname=QtFeedStale"], "notify"),
                             (["severity=info", "alertname=QtMaxPositionsReached"], "null")):
        out = _run(amtool, "config", "routes", "test", f"--config.file={cfg}", *labels)
        assert out.strip() == receiver, (labels, out)


def test_no_webhook_url_is_written_in_the_alertmanager_config() -> None:
    text = (ALERTMANAGER / "alertmanager.yml").read_text()
    assert not re.search(r"^\s*-?\s*url:\s", text, re.MULTILINE) and "http" not in text.split("receivers:")[1]
    assert text.count("url_file: /run/secrets/") == 2


def test_the_quiet_config_compose_starts_is_the_paging_one_without_its_webhooks() -> None:
    paging = yaml.safe_load((ALERTMANAGER / "alertmanager.yml").read_text())
    quiet = yaml.safe_load((ALERTMANAGER / "alertmanager.quiet.yml").read_text())
    assert quiet["route"] == paging["route"] and quiet["inhibit_rules"] == paging["inhibit_rules"]
    assert quiet["receivers"] == [{"name": r["name"]} for r in paging["receivers"]]  # no integration: nobody paged
    assert {k for r in paging["receivers"] for k in r} == {"name", "webhook_configs"}


# --- Grafana -------------------------------------------------------------------------------------------

def test_dashboards_are_exactly_what_the_generator_produces_from_semconv() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import generate_dashboards
    finally:
        sys.path.pop(0)
    rendered = generate_dashboards.render()
    assert sorted(rendered) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        assert path.read_text() == rendered[path.name], f"{path.name} is stale: run scripts/generate_dashboards.py"


def test_every_dashboard_query_uses_known_prometheus_names() -> None:
    exprs = _dashboard_exprs()
    assert len(exprs) >= 30
    for board, title, expr in exprs:
        unknown = {n for n in _metric_names(expr) if not _known(n)}
        assert not unknown, f"{board} / {title}: unknown series {unknown} in {expr}"


@pytest.mark.servers("debian:promtool")
def test_every_dashboard_query_and_annotation_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query (as a recording rule), so a typo fails here rather than in a browser."""
    rules = [{"record": f"dashboard:query_{i}", "expr": _substituted(expr)}
             for i, (_, _, expr) in enumerate(_dashboard_exprs())]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    out = _run(debian_tool("promtool"), "check", "rules", str(path))
    assert f"SUCCESS: {len(rules)} rules found" in out


def _board(name: str) -> dict[str, Any]:
    return dict(json.loads((REPO / "grafana" / "dashboards" / name).read_text()))


def _panel(board: dict[str, Any], title: str) -> dict[str, Any]:
    found = [p for p in board["panels"] if p["title"] == title]
    assert len(found) == 1, f"{board['title']}: no single panel {title!r} in {[p['title'] for p in board['panels']]}"
    return found[0]


#: The desk's overview (issue 18): panel title -> (unit, series it must query).
DESK_PANELS = {
    "Order latency p99 by venue": ("s", "qt_order_latency_seconds_bucket"),
    "Fill rate by venue": ("percentunit", 'qt_order_events_total{service_name=~"$service", venue=~"$venue", '
                                          'symbol=~"$symbol", order_event="fill"}'),
    "Venue reject rate by reason": ("percentunit", 'order_event="reject"'),
    "Trades by outcome": ("suffix: trades", "qt_trades_total"),
    "Trade duration p50 / p95 by strategy": ("s", "qt_trade_duration_seconds_bucket"),
    "Gross exposure": ("currencyUSD", "qt_risk_exposure_gross"),
    "Kill switch timeline": (None, "qt_kill_switch_active"),
    "Circuit breaker timeline": (None, "qt_circuit_breaker_state"),
    "Feed messages and reconnects": ("ops", "qt_feed_reconnects_total"),
    "Cancel latency p95 by venue": ("s", "qt_order_cancel_latency_seconds_bucket"),
    "Risk-check latency p95 by rule": ("s", "qt_risk_check_latency_seconds_bucket"),
    "Telemetry dropped": ("suffix: items", "qt_telemetry_dropped_total"),
    "Latency budget p50: tick to fill by segment ($venue)": ("s", "qt_latency_segment_seconds_bucket"),
    "Latency budget p99: tick to fill by segment ($venue)": ("s", "qt_latency_segment_seconds_bucket"),
    "Tick-to-trade p99 by venue": ("s", 'segment="tick_to_trade"'),
    "Venue clock offset ± uncertainty": ("s", "qt_venue_clock_offset_uncertainty_seconds"),
    "Latency segments clamped to 0": ("suffix: segments", "qt_latency_segment_clamped_total"),
}


def test_latency_budget_stacks_the_segments_per_venue_with_exemplars_beside_the_measured_total() -> None:
    board = _board("trading-overview.json")
    for name in ("p50", "p99"):
        panel = _panel(board, f"Latency budget {name}: tick to fill by segment ($venue)")
        assert panel["repeat"] == "venue" and all(t["exemplar"] for t in panel["targets"])
        assert panel["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
        segments, total = panel["targets"]
        assert 'segment!="total"' in segments["expr"] and "by (venue, segment, le)" in segments["expr"]
        assert 'segment="total"' in total["expr"]
        (override,) = panel["fieldConfig"]["overrides"]
        assert override["matcher"] == {"id": "byFrameRefID", "options": total["refId"]}
        assert {"id": "custom.stacking", "value": {"mode": "none", "group": "total"}} in override["properties"]
    alert = next(r for r in _rules() if r["alert"] == "QtTickToTradeP99High")
    threshold = float(re.search(r"\) > ([0-9.]+)", alert["expr"]).group(1))  # type: ignore[union-attr]
    panel = _panel(board, "Tick-to-trade p99 by venue")
    assert {"color": "red", "value": threshold} in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert threshold in semconv.LATENCY_SEGMENT.buckets  # the p99 is read exactly at the threshold


@pytest.mark.parametrize("title", sorted(DESK_PANELS))
def test_trading_overview_has_the_desk_panel_with_its_unit(title: str) -> None:
    unit, series = DESK_PANELS[title]
    panel = _panel(_board("trading-overview.json"), title)
    assert panel["fieldConfig"]["defaults"].get("unit") == unit
    assert any(series in t["expr"] for t in panel["targets"]), (title, series)


def test_every_query_filters_by_each_board_variable_its_metric_carries() -> None:
    """A venue, strategy or symbol chosen at the top narrows every panel whose series have that label."""
    labels = {s.prometheus + sfx: {semconv.prometheus_label(a) for a in s.attributes}
              for s in semconv.METRICS.values() for sfx in ("_bucket", "_sum", "_count", "")}
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        variables = {v["name"] for v in board["templating"]["list"]} - {"service"}
        for panel in board["panels"]:
            for target in panel["targets"]:
                for selector in re.finditer(r"\b([a-z_]+)\{([^}]*)\}", target["expr"]):
                    name, matchers = selector.groups()
                    if name not in labels:
                        continue
                    assert 'service_name=~"$service"' in matchers, (panel["title"], selector.group(0))
                    for variable in variables & labels[name]:
                        assert f'{variable}=~"${variable}"' in matchers, (path.name, panel["title"], selector.group(0))
    assert {v["name"] for v in _board("trading-overview.json")["templating"]["list"]} == {
        "service", "venue", "strategy", "symbol"}


def test_safety_changes_annotate_exactly_the_latency_panels() -> None:
    for name in ("trading-overview.json", "order-execution.json"):
        board = _board(name)
        annotations = {a["name"]: a for a in board["annotations"]["list"]}
        assert set(annotations) == {"Kill switch active", "Circuit breaker not closed"}
        latency = {p["id"] for p in board["panels"] if p["fieldConfig"]["defaults"].get("unit") == "s"
                   and re.search(r"latency|tick-to-trade", p["title"], re.IGNORECASE)}
        assert latency
        for annotation in annotations.values():
            assert annotation["datasource"]["uid"] == "prometheus" and annotation["enable"] is True
            assert annotation["filter"] == {"exclude": False, "ids": sorted(latency)}, (name, annotation["name"])
        assert "qt_kill_switch_active" in annotations["Kill switch active"]["expr"]
        assert "qt_circuit_breaker_state" in annotations["Circuit breaker not closed"]["expr"]


def test_every_panel_states_its_unit() -> None:
    """Units everywhere (s, bp, percent, currency): a state panel's unit is its value mappings."""
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            defaults = panel["fieldConfig"]["defaults"]
            if path.name != "telemetry-pipeline.json" or "qt_" in json.dumps(panel["targets"]):
                assert defaults.get("unit") or defaults.get("mappings"), (path.name, panel["title"])


def test_trading_overview_covers_the_eight_desk_panels_and_latency_shows_exemplars() -> None:
    board = json.loads((REPO / "grafana" / "dashboards" / "trading-overview.json").read_text())
    text = json.dumps(board)
    for series in ("qt_risk_daily_pnl_used_ratio", "qt_risk_positions_open", "qt_kill_switch_active",
                   "qt_circuit_breaker_state", "qt_order_latency_seconds_bucket", "qt_feed_connected",
                   "qt_order_latency_seconds_count", "qt_feed_message_gap_seconds_bucket"):
        assert series in text, series
    latency = next(p for p in board["panels"] if p["title"].startswith("Order latency"))
    assert all(t["exemplar"] for t in latency["targets"])
    pnl = next(p for p in board["panels"] if p["title"].startswith("Daily PnL"))
    assert {"color": "red", "value": 0.8} in pnl["fieldConfig"]["defaults"]["thresholds"]["steps"]


def test_datasources_link_exemplars_to_tempo_and_traces_back_to_prometheus() -> None:
    doc = yaml.safe_load((REPO / "grafana" / "provisioning" / "datasources" / "datasources.yaml").read_text())
    by_uid = {d["uid"]: d for d in doc["datasources"]}
    prom, tempo = by_uid["prometheus"], by_uid["tempo"]
    (link,) = prom["jsonData"]["exemplarTraceIdDestinations"]
    assert link == {"name": "trace_id", "datasourceUid": "tempo", "urlDisplayLabel": "Open trace in Tempo"}
    assert tempo["type"] == "tempo"
    assert tempo["jsonData"]["tracesToMetrics"]["datasourceUid"] == "prometheus"
    assert tempo["jsonData"]["serviceMap"]["datasourceUid"] == "prometheus"
    assert tempo["jsonData"]["nodeGraph"]["enabled"] is True
    for query in tempo["jsonData"]["tracesToMetrics"]["queries"]:
        assert "$$__tags" in query["query"]  # $$ survives Grafana's env expansion as $__tags
        assert all(_known(n) for n in _metric_names(query["query"].replace("$$__tags", "")))


# --- collector, tempo ----------------------------------------------------------------------------------

@pytest.mark.servers("otelcol")
def test_collector_binary_validates_the_shipped_config() -> None:
    _run(binary("otelcol"), "validate", "--config=collector/config.yaml")


def test_collector_config_uses_current_component_names_and_exactly_the_built_components() -> None:
    config = yaml.safe_load((REPO / "collector" / "config.yaml").read_text())
    manifest = yaml.safe_load((REPO / "collector" / "builder-config.yaml").read_text())
    used = {k.split("/")[0] for section in ("receivers", "processors", "exporters", "connectors", "extensions")
            for k in config[section]}
    assert {"otlp_grpc", "span_metrics", "prometheus_remote_write", "health_check"} <= used
    assert not used & {"otlphttp", "spanmetrics", "prometheusremotewrite", "healthcheck"}  # deprecated names
    assert not {k.split("/")[0] for k in config["exporters"]} & {"otlp"}  # the gRPC exporter is otlp_grpc now
    modules = [m["gomod"] for kind in ("receivers", "processors", "exporters", "connectors", "extensions")
               for m in manifest[kind]]
    assert len(modules) == len(used)
    versions = {m.split()[1] for m in modules}
    assert versions == {"v" + manifest["dist"]["version"]}, "every component must match the core version"


def test_tempo_config_receives_otlp_and_reports_no_usage() -> None:
    config = yaml.safe_load((REPO / "tempo" / "tempo.yaml").read_text())
    assert "grpc" in config["distributor"]["receivers"]["otlp"]["protocols"]
    assert config["usage_report"]["reporting_enabled"] is False
    assert config["storage"]["trace"]["backend"] == "local"


# --- docker compose ------------------------------------------------------------------------------------

def _compose(env: dict[str, str] | None, tmp_path: Path,
             files: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [binary("compose_check")]
    if env is not None:
        env_file = tmp_path / "test.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        cmd += ["--env-file", str(env_file)]
    clean = {k: v for k, v in __import__("os").environ.items()
             if not k.startswith(("GRAFANA_", "ALERTMANAGER_"))}
    return subprocess.run([*cmd, *(files or ["docker-compose.yml"])], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env=clean, check=False)


SECRETS = {"GRAFANA_ADMIN_PASSWORD": "s3cret-test"}
WEBHOOKS = {"ALERTMANAGER_PAGE_WEBHOOK_URL": "http://hook/page", "ALERTMANAGER_NOTIFY_WEBHOOK_URL": "http://hook/notify"}
PAGING = ["docker-compose.yml", "docker-compose.paging.yml"]


@pytest.mark.servers("compose_check")
def test_compose_needs_only_the_grafana_password(tmp_path: Path) -> None:
    proc = _compose(None, tmp_path)
    assert proc.returncode != 0
    assert "required variable GRAFANA_ADMIN_PASSWORD is missing a value" in proc.stderr
    assert "ALERTMANAGER" not in proc.stderr  # no webhook URL to invent before the first `up`
    proc = _compose(SECRETS, tmp_path)
    assert proc.returncode == 0, proc.stderr
    alertmanager = json.loads(proc.stdout)["services"]["alertmanager"]
    assert "--config.file=/etc/alertmanager/alertmanager.quiet.yml" in alertmanager["command"]
    assert not alertmanager.get("secrets")


@pytest.mark.servers("compose_check")
def test_paging_needs_both_webhook_urls_and_passes_them_as_secret_files(tmp_path: Path) -> None:
    proc = _compose(SECRETS, tmp_path, files=PAGING)
    assert proc.returncode != 0
    for name in WEBHOOKS:
        assert f"required variable {name} is missing a value" in proc.stderr
    proc = _compose({**SECRETS, **WEBHOOKS}, tmp_path, files=PAGING)
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    alertmanager = services["alertmanager"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in alertmanager["command"]
    assert {s["target"] for s in alertmanager["secrets"]} == {"/run/secrets/alertmanager_page_webhook_url",
                                                              "/run/secrets/alertmanager_notify_webhook_url"}
    for url in WEBHOOKS.values():
        assert url not in json.dumps(services)  # secrets reach containers as files, not in the definition


@pytest.mark.servers("compose_check")
@pytest.mark.parametrize("files", [["docker-compose.yml"], PAGING], ids=["default", "paging"])
def test_compose_project_is_locked_down(tmp_path: Path, files: list[str]) -> None:
    proc = _compose({**SECRETS, **WEBHOOKS}, tmp_path, files=files)
    assert proc.returncode == 0, proc.stderr
    project = json.loads(proc.stdout)
    services = project["services"]
    assert {"otel-collector", "prometheus", "tempo", "grafana", "alertmanager"} <= set(services)
    for name, svc in services.items():
        image = svc["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), f"{name}: image not pinned: {image}"
        for port in svc.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond loopback"
        if name != "tempo-init":
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
            assert svc.get("restart") == "unless-stopped", name
        for volume in svc.get("volumes", []):
            if volume["type"] == "volume":
                assert volume["source"] in project["volumes"], name
    grafana_env = services["grafana"]["environment"]
    assert grafana_env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana_env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert "--web.enable-remote-write-receiver" in services["prometheus"]["command"]
    assert "--enable-feature=exemplar-storage" in services["prometheus"]["command"]
    assert "--enable-feature=native-histograms" in services["prometheus"]["command"]
    for path in files:
        assert "0.0.0.0" not in (REPO / path).read_text()
    for secret in SECRETS.values():
        assert secret not in json.dumps(services)  # secrets reach containers as files, not in the definition


def test_compose_images_are_the_versions_the_tests_build() -> None:
    images = {s["image"].split(":")[0]: s["image"].split(":")[1]
              for s in yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"].values()}
    manifest = yaml.safe_load((REPO / "collector" / "builder-config.yaml").read_text())
    assert images["otel/opentelemetry-collector-contrib"] == manifest["dist"]["version"]
    prom_mod = (REPO / "prometheus" / "build" / "go.mod").read_text()
    module_version = re.search(r"github.com/prometheus/prometheus v0\.(\d+)\.(\d+)", prom_mod)
    assert module_version is not None
    major_minor = int(module_version.group(1))
    assert images["prom/prometheus"] == f"v{major_minor // 100}.{major_minor % 100}.{module_version.group(2)}"
    build_script = (REPO / "scripts" / "build-servers.sh").read_text()
    assert f"ALERTMANAGER_VERSION={images['prom/alertmanager']}" in build_script


# --- fleet topology (README "Fleet") --------------------------------------------------------------------

FLEET = REPO / "collector" / "fleet"
FLEET_COMPOSE = ["docker-compose.yml", "docker-compose.fleet.yml"]


def _components(*configs: Path) -> set[str]:
    """Component types the collector configs define (all kinds)."""
    out: set[str] = set()
    for path in configs:
        config = yaml.safe_load(path.read_text())
        for kind in ("receivers", "processors", "exporters", "connectors", "extensions"):
            out.update(k.split("/")[0] for k in config.get(kind) or {})
    return out


AGENT = FLEET / "agent.yaml"
GATEWAY = FLEET / "gateway.yaml"


@pytest.mark.servers("otelcol_fleet")
@pytest.mark.parametrize("config", [AGENT, GATEWAY], ids=["agent", "gateway"])
def test_fleet_binary_validates_the_agent_and_gateway_configs(config: Path) -> None:
    _run(binary("otelcol_fleet"), "validate", f"--config={config}")


def test_fleet_manifest_builds_exactly_the_components_both_tiers_use_at_one_version() -> None:
    manifest = yaml.safe_load((FLEET / "builder-config.yaml").read_text())
    modules = [m["gomod"] for kind in ("receivers", "processors", "exporters", "connectors", "extensions")
               for m in manifest[kind]]
    used = _components(AGENT, GATEWAY)
    assert {"load_balancing", "tail_sampling", "span_metrics", "prometheus_remote_write"} <= used
    assert len(modules) == len(used)
    assert {m.split()[1] for m in modules} == {"v" + manifest["dist"]["version"]}


def test_agent_is_the_single_box_config_with_exactly_the_documented_changes() -> None:
    single = yaml.safe_load((REPO / "collector" / "config.yaml").read_text())
    agent = yaml.safe_load(AGENT.read_text())
    expected = copy.deepcopy(single)
    # 1. Traces go to the gateways, routed by trace id, instead of straight to Tempo.
    del expected["exporters"]["otlp_grpc/tempo"]
    expected["exporters"]["load_balancing"] = agent["exporters"]["load_balancing"]
    expected["service"]["pipelines"]["traces"]["exporters"] = ["span_metrics", "load_balancing"]
    # 2. span_metrics would exemplify spans of traces the gateways drop.
    expected["connectors"]["span_metrics"]["exemplars"]["enabled"] = False
    # 3. The 0.159.0 exporter has no resource_constant_labels: a transform copies the same attributes.
    included = expected["exporters"]["prometheus_remote_write"].pop("resource_constant_labels")["included"]
    expected["processors"]["transform/resource_labels"] = agent["processors"]["transform/resource_labels"]
    expected["service"]["pipelines"]["metrics"]["processors"] = ["memory_limiter", "transform/resource_labels", "batch"]
    assert agent == expected
    (statements,) = [c["statements"] for c in agent["processors"]["transform/resource_labels"]["metric_statements"]]
    assert [re.findall(r'resource\.attributes\["([^"]+)"\]', st)[0] for st in statements] == included
    assert all(f'set(datapoint.attributes["{k}"], resource.attributes["{k}"])' in st
               for k, st in zip(included, statements))
    # Metrics, RED included, go straight to Prometheus: never through a sampling tier.
    assert agent["service"]["pipelines"]["metrics"]["receivers"] == ["otlp", "span_metrics"]
    lb = agent["exporters"]["load_balancing"]
    assert lb["routing_key"] == "traceID" and "dns" in lb["resolver"]
    # Each span at most once: the top-level retry re-sends whole requests (duplicates in Tempo), a per-gateway
    # retry cannot route elsewhere, a per-gateway queue hides its drops; one queue keeps the pipeline moving.
    assert lb["retry_on_failure"] == {"enabled": False}
    assert lb["protocol"]["otlp"]["retry_on_failure"] == {"enabled": False}
    assert lb["protocol"]["otlp"]["sending_queue"] == {"enabled": False}
    assert lb["sending_queue"]["enabled"] is True


def test_gateway_keeps_every_trace_the_sdk_marked_and_exports_only_to_tempo() -> None:
    gateway = yaml.safe_load(GATEWAY.read_text())
    policies = {p["name"]: p for p in gateway["processors"]["tail_sampling"]["policies"]}
    assert policies["sdk-keep-mark"] == {"name": "sdk-keep-mark", "type": "boolean_attribute",
                                         "boolean_attribute": {"key": "qt.sampling.keep", "value": True}}
    assert policies["errors"]["status_code"]["status_codes"] == ["ERROR"]
    assert policies["extra-percentage"]["type"] == "probabilistic"
    # No policy may drop: a "drop" or inverted policy could veto a marked trace and orphan its exemplars.
    assert not [p for p in policies.values() if p["type"] in ("drop", "not") or any(
        isinstance(v, dict) and v.get("invert_match") for v in p.values())]
    slow = " ".join(policies["slow-orders"]["ottl_condition"]["span"])
    assert "${env:QT_GATEWAY_SLOW_ORDER_MS:-500}" in slow  # the SDK's default slow threshold, 0.5 s
    traces = gateway["service"]["pipelines"]["traces"]
    assert traces["processors"][0] == "memory_limiter" and "tail_sampling" in traces["processors"]
    assert traces["exporters"] == ["otlp_grpc/tempo"] and set(gateway["service"]["pipelines"]) == {"traces"}


def test_fleet_prometheus_config_is_the_base_plus_the_gateway_job() -> None:
    base = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    fleet = yaml.safe_load((REPO / "prometheus" / "prometheus.fleet.yml").read_text())
    gateway_jobs = [j for j in fleet["scrape_configs"] if j["job_name"] == "otel-gateway"]
    assert [j["static_configs"][0]["targets"] for j in gateway_jobs] == [["otel-gateway-1:8888", "otel-gateway-2:8888"]]
    fleet["scrape_configs"] = [j for j in fleet["scrape_configs"] if j["job_name"] != "otel-gateway"]
    assert fleet == base
    assert "SUCCESS" in _run(binary("promtool"), "check", "config", "prometheus.fleet.yml", cwd=REPO / "prometheus")


def test_fleet_compose_overlay_is_locked_down_and_runs_the_fleet_distribution(tmp_path: Path) -> None:
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    clean = {k: v for k, v in __import__("os").environ.items()
             if not k.startswith(("GRAFANA_", "ALERTMANAGER_", "QT_"))}
    proc = subprocess.run([binary("compose_check"), "--env-file", str(env_file), *FLEET_COMPOSE], cwd=REPO,
                          capture_output=True, text=True, timeout=60, env=clean, check=False)
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    version = yaml.safe_load((FLEET / "builder-config.yaml").read_text())["dist"]["version"]
    gateways = sorted(n for n in services if n.startswith("otel-gateway"))
    assert gateways == ["otel-gateway-1", "otel-gateway-2"]
    for name, svc in services.items():
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", svc["image"]), name
        for port in svc.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond loopback"
        if name != "tempo-init":
            assert svc.get("healthcheck", {}).get("test") and svc.get("restart") == "unless-stopped", name
    for name in ["otel-collector", *gateways]:
        assert services[name]["image"] == f"otel/opentelemetry-collector-contrib:{version}", name
    agent = services["otel-collector"]
    assert agent["command"] == ["--config=/etc/otelcol/config.yaml"]
    (config,) = [v for v in agent["volumes"] if v["target"] == "/etc/otelcol/config.yaml"]
    assert config["source"].endswith("collector/fleet/agent.yaml")
    assert agent["environment"]["QT_GATEWAYS_HOSTNAME"] == "otel-gateways"
    for name in gateways:
        svc = services[name]
        assert svc["hostname"] == name and "ports" not in svc  # reached by the agents only, on the network
        assert svc["networks"]["default"]["aliases"] == ["otel-gateways"]
        env = svc["environment"]
        assert env["QT_GATEWAY_OTLP_GRPC_ADDR"] == f"{name}:4317" and env["QT_GATEWAY_METRICS_HOST"] == name
        assert env["QT_GATEWAY_SLOW_ORDER_MS"] == "500" and env["QT_GATEWAY_EXTRA_KEEP_PERCENT"] == "0"
    prom = services["prometheus"]
    (config,) = [v for v in prom["volumes"] if v["target"] == "/etc/prometheus/prometheus.yml"]
    assert config["source"].endswith("prometheus/prometheus.fleet.yml")
    assert {"--enable-feature=exemplar-storage", "--enable-feature=native-histograms"} <= set(prom["command"])
    text = (REPO / "docker-compose.fleet.yml").read_text()
    assert "0.0.0.0" not in text
    # The bots' sampling settings documented in the file agree with the gateways' slow threshold.
    bot_env = yaml.safe_load(text)["x-bot-environment"]
    assert bot_env["QT_TELEMETRY_SLOW_ORDER_SECONDS"] == "${QT_TELEMETRY_SLOW_ORDER_SECONDS:-0.5}"
    assert bot_env["QT_TELEMETRY_TRACE_KEEP_RATIO"].startswith("${QT_TELEMETRY_TRACE_KEEP_RATIO:-")


def test_the_single_box_compose_is_unchanged_by_the_fleet_file(tmp_path: Path) -> None:
    proc = _compose(SECRETS, tmp_path)
    services = json.loads(proc.stdout)["services"]
    assert not [n for n in services if n.startswith("otel-gateway")]
    assert services["otel-collector"]["command"] == ["--config=/etc/otelcol/config.yaml"]


#: The configs an operator runs the fleet from, by the name the README's variable table gives them.
ADDRESS_CONFIGS = {"single box": REPO / "collector" / "config.yaml", "agent": AGENT, "gateway": GATEWAY,
                   "prometheus": REPO / "prometheus" / "prometheus.fleet.yml", "tempo": REPO / "tempo" / "tempo.yaml"}
#: ${env:NAME:-default} (collector) or ${NAME:-default} / ${NAME} (Tempo's -config.expand-env, compose)
VARIABLE = re.compile(r"\$\{(?:env:)?([A-Z][A-Z0-9_]*)(?::-([^}]*))?\}")


def _readme_variable_table() -> list[tuple[str, set[str], str]]:
    """(name or setting, configs, default) for each row of the README's fleet variable table."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("<!-- fleet-variables:start -->\n")[1].split("<!-- fleet-variables:end -->")[0]
    rows = []
    for line in section.splitlines()[2:]:  # header and rule
        name, configs, default, _ = (cell.strip() for cell in line.strip("|").split("|"))
        rows.append((name.strip("`"), {c.strip() for c in configs.split(",")}, default.strip("`")))
    return rows


def _literal_addresses() -> dict[str, set[str]]:
    """Addresses Prometheus and Tempo read from their files (neither expands variables there as we run them):
    every scrape and alerting target; Tempo's listeners, OTLP receiver and the generator's remote write.
    Tempo's ingester and memberlist bind 127.0.0.1: inside the single binary, not an operator's business."""
    prom = yaml.safe_load(ADDRESS_CONFIGS["prometheus"].read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    targets |= {t for am in prom["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]}
    tempo = yaml.safe_load(ADDRESS_CONFIGS["tempo"].read_text())
    server = tempo["server"]
    return {"prometheus": targets, "tempo": {
        f"{server['http_listen_address']}:{server['http_listen_port']}",
        f"{server['grpc_listen_address']}:{server['grpc_listen_port']}",
        tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        *(rw["url"] for rw in tempo["metrics_generator"]["storage"]["remote_write"])}}


def test_readme_names_every_variable_and_address_of_the_fleet_configs_with_its_default() -> None:
    used: dict[str, tuple[set[str], str]] = {}
    for config, path in ADDRESS_CONFIGS.items():
        for name, default in VARIABLE.findall(path.read_text()):
            configs, known = used.setdefault(name, (set(), default))
            assert default == known, f"{name} defaults to {known!r} in one config and {default!r} in {config}"
            configs.add(config)
    rows = _readme_variable_table()
    table = {name: (configs, default) for name, configs, default in rows if VARIABLE.fullmatch(f"${{{name}}}")}
    assert sorted(table) == sorted(used), "README fleet variable table: a variable is missing or not used"
    assert table == used
    literal = _literal_addresses()
    for config in ("prometheus", "tempo"):
        assert {default for name, configs, default in rows if name not in table and configs == {config}} \
            == literal[config], f"README fleet variable table: {config}'s addresses"
