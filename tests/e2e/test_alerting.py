"""Alert rules on the real metrics, Prometheus -> Alertmanager -> webhook, with the shipped routing."""

from __future__ import annotations

import time
from typing import Any

from tests.e2e.stack import Stack, http_json, wait_until


def test_kill_switch_alert_fires_on_the_real_metric_and_pages(stack: Stack, workload: dict[str, Any]) -> None:
    def alert_state() -> str | None:
        rows = stack.prom_query('ALERTS{alertname="QtKillSwitchActive", service_name="e2e-halted-bot"}')
        states = {r["metric"]["alertstate"] for r in rows}
        return "firing" if "firing" in states else ("pending" if "pending" in states else None)

    assert wait_until(alert_state, 60, "QtKillSwitchActive pending or firing") in ("pending", "firing")
    # for: 30s, evaluated every second here
    wait_until(lambda: alert_state() == "firing", 90, "QtKillSwitchActive firing")
    # the bot without an active switch never alerts
    assert not stack.prom_query('ALERTS{alertname="QtKillSwitchActive", service_name="e2e-bot"}')

    paged = wait_until(lambda: [a for a in stack.webhooks.alerts("/page")
                                if a["labels"]["alertname"] == "QtKillSwitchActive"], 60,
                       "the kill switch page at the critical webhook")
    alert = paged[0]
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["kill_switch"] == "main"
    assert "ACTIVE" in alert["annotations"]["summary"]
    assert not [a for a in stack.webhooks.alerts("/notify") if a["labels"]["alertname"] == "QtKillSwitchActive"]


def test_alertmanager_routes_by_severity_and_inhibits_noise_during_a_kill_switch(stack: Stack) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    base = {"startsAt": now, "annotations": {"summary": "e2e"}}
    http_json(f"{stack.alertmanager_url}/api/v2/alerts", [
        {**base, "labels": {"alertname": "QtCircuitBreakerOpen", "severity": "warning", "service_name": "route-bot",
                            "breaker": "x"}},
        {**base, "labels": {"alertname": "QtMaxPositionsReached", "severity": "info", "service_name": "route-bot"}},
        {**base, "labels": {"alertname": "QtKillSwitchActive", "severity": "critical", "service_name": "inhibit-bot"}},
        {**base, "labels": {"alertname": "QtOrderLatencyP95High", "severity": "warning",
                            "service_name": "inhibit-bot", "venue": "binance"}},
    ])
    notified = wait_until(lambda: [a for a in stack.webhooks.alerts("/notify")
                                   if a["labels"].get("service_name") == "route-bot"], 90,
                          "the warning at the notify webhook (group_wait 30s)")
    assert {a["labels"]["alertname"] for a in notified} == {"QtCircuitBreakerOpen"}
    wait_until(lambda: [a for a in stack.webhooks.alerts("/page") if a["labels"].get("service_name") == "inhibit-bot"],
               60, "the kill switch page for inhibit-bot")
    # info only shows in Alertmanager; the latency warning is inhibited by the active kill switch
    alerts = http_json(f"{stack.alertmanager_url}/api/v2/alerts")
    latency = next(a for a in alerts if a["labels"]["alertname"] == "QtOrderLatencyP95High")
    assert latency["status"]["state"] == "suppressed" and latency["status"]["inhibitedBy"]
    everything = stack.webhooks.alerts("/page") + stack.webhooks.alerts("/notify")
    assert not [a for a in everything if a["labels"]["alertname"] in ("QtMaxPositionsReached", "QtOrderLatencyP95High")
                and a["labels"].get("service_name") in ("route-bot", "inhibit-bot")]


def test_telemetry_dropped_alert_fires_for_the_bot_whose_span_queue_overflows(stack: Stack, lossy_bot: str) -> None:
    def firing(service: str) -> list[dict[str, Any]]:
        return stack.prom_query(f'ALERTS{{alertname="QtTelemetryDropped", alertstate="firing", '
                                f'service_name="{service}"}}')

    alerts = wait_until(lambda: firing(lossy_bot), 90, f"QtTelemetryDropped firing for {lossy_bot}")
    assert ("spans", "queue_full", "warning") in {(a["metric"]["signal"], a["metric"]["reason"],
                                                   a["metric"]["severity"]) for a in alerts}
    assert not firing("e2e-bot")  # a queue of the default size held everything
