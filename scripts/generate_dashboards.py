"""Generate grafana/dashboards/*.json from qt_telemetry.semconv, so every query uses the Prometheus names the
collector derives from our OTel names. Run after changing a metric: ``python scripts/generate_dashboards.py``.
``tests/unit/test_stack_configs.py`` fails when the committed JSON and this generator disagree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from qt_telemetry import semconv as sc

OUT = Path(__file__).resolve().parent.parent / "grafana" / "dashboards"
PROM = {"type": "prometheus", "uid": "prometheus"}
SEL = 'service_name=~"$service"'
RATE = "$__rate_interval"
ERRORS = 'outcome="error"'


def p(spec: sc.MetricSpec, suffix: str = "") -> str:
    """The Prometheus series name of a metric (``_bucket`` etc. for histograms)."""
    return spec.prometheus + suffix


#: Histograms a bot may export as Prometheus native histograms (QT_TELEMETRY_NATIVE_HISTOGRAMS=true): one series
#: named like the metric, without _bucket/_sum/_count. Their queries read both forms; where a bot briefly has
#: both (while it switches), the explicit half wins (`or` keeps its left side's label sets).
NATIVE_CAPABLE = (sc.ORDER_LATENCY, sc.STAGE_DURATION)


def quantile(q: float, spec: sc.MetricSpec, by: str = "", extra: str = "", matcher: str = SEL) -> str:
    group = f"{by}, le" if by else "le"
    matcher = f"{matcher}{', ' + extra if extra else ''}"
    explicit = f"histogram_quantile({q}, sum by ({group}) (rate({p(spec, '_bucket')}{{{matcher}}}[{RATE}])))"
    if spec not in NATIVE_CAPABLE:
        return explicit
    native_sum = f"sum by ({by})" if by else "sum"
    return f"{explicit} or histogram_quantile({q}, {native_sum} (rate({p(spec)}{{{matcher}}}[{RATE}])))"


DIRECTION = sc.prometheus_label(sc.SLIPPAGE_DIRECTION)
#: Grafana units: basis points and trades have no built-in unit, so a custom suffix; exposure is in the account
#: currency, which the metric does not name (USD/USDT accounts are the common case: change the unit otherwise).
BP = "suffix: bp"
TRADES_UNIT = "suffix: trades"
CURRENCY = "currencyUSD"
#: QtTickToTradeP99High's threshold (prometheus/rules/trading.yml), drawn on the tick-to-trade panel.
TICK_TO_TRADE_P99_S = 0.05


def orders(fn: str, matcher: str, window: str) -> str:
    """Orders placed per venue (the order latency histogram's count)."""
    return f"sum by (venue) ({count(sc.ORDER_LATENCY, fn, matcher, window)})"


def reject_rate(matcher: str, window: str) -> str:
    """Failed placements plus venue rejects (each reject is one qt.order.events{order.event="reject"}, at placement
    or later) over orders placed, per venue: the same expression as the QtOrderRejectRateHigh alert."""
    failed = count(sc.ORDER_LATENCY, "rate", f'{matcher}, outcome="error"', window)
    rejects = f'rate({p(sc.ORDER_EVENTS)}{{{matcher}, order_event="reject"}}[{window}])'
    return (f"sum by (venue) (({failed}) or {rejects}) / "
            f"sum by (venue) ({count(sc.ORDER_LATENCY, 'rate', matcher, window)})")


def reject_rate_by_reason(matcher: str, window: str) -> str:
    """Venue rejects per reason over orders placed on that venue: the reject rate split by what the venue said."""
    rejects = f'sum by (venue, reason) (rate({p(sc.ORDER_EVENTS)}{{{matcher}, order_event="reject"}}[{window}]))'
    return f"{rejects} / on (venue) group_left {orders('rate', matcher, window)}"


def fill_rate(matcher: str, window: str) -> str:
    """Orders filled (the final fill event; a partial fill is not a fill yet) over orders placed, per venue."""
    fills = f'sum by (venue) (rate({p(sc.ORDER_EVENTS)}{{{matcher}, order_event="fill"}}[{window}]))'
    return f"{fills} / {orders('rate', matcher, window)}"


def slippage_mean(matcher: str) -> str:
    """The signed mean in bp: (adverse sum - favourable sum) / fills = (sum - 2 x favourable sum) / fills."""
    total = f"sum by (venue) (rate({p(sc.SLIPPAGE, '_sum')}{{{matcher}}}[{RATE}]))"
    favourable = f'sum by (venue) (rate({p(sc.SLIPPAGE, "_sum")}{{{matcher}, {DIRECTION}="favourable"}}[{RATE}]))'
    fills = f"sum by (venue) (rate({p(sc.SLIPPAGE, '_count')}{{{matcher}}}[{RATE}]))"
    return f"({total} - 2 * ({favourable} or {total} * 0)) / {fills}"


def favourable_share(matcher: str) -> str:
    fills = f"sum by (venue) (rate({p(sc.SLIPPAGE, '_count')}{{{matcher}}}[{RATE}]))"
    favourable = f'sum by (venue) (rate({p(sc.SLIPPAGE, "_count")}{{{matcher}, {DIRECTION}="favourable"}}[{RATE}]))'
    return f"({favourable} or {fills} * 0) / {fills}"


def count(spec: sc.MetricSpec, fn: str, matcher: str, window: str) -> str:
    """Observations per series of a histogram (orders, for the order latency): ``_count`` or native."""
    return (f"{fn}({p(spec, '_count')}{{{matcher}}}[{window}]) "
            f"or histogram_count({fn}({p(spec)}{{{matcher}}}[{window}]))")


#: Dashboard variables a query filters on when its metric has the attribute: name -> (label, where its values
#: come from). Every query of a board with the variable uses it (Board.sel), so a choice narrows every panel.
VARIABLES: dict[str, tuple[str, sc.MetricSpec]] = {
    "venue": (sc.VENUE, sc.ORDER_LATENCY), "strategy": (sc.STRATEGY, sc.TRADES),
    "symbol": (sc.SYMBOL, sc.ORDER_LATENCY),
}


class Board:
    def __init__(self, uid: str, title: str, description: str, variables: tuple[str, ...] = ()) -> None:
        self.uid, self.title, self.description = uid, title, description
        self.variables = variables
        self.panels: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self._x = self._y = 0
        self._row_h = 0

    def sel(self, spec: sc.MetricSpec, extra: str = "") -> str:
        """The label matcher for a metric on this board: the bot, plus each board variable the metric carries."""
        parts = [SEL] + [f'{sc.prometheus_label(VARIABLES[v][0])}=~"${v}"' for v in self.variables
                         if VARIABLES[v][0] in spec.attributes]
        return ", ".join(parts + ([extra] if extra else []))

    def add(self, kind: str, title: str, targets: list[tuple[str, str]], *, w: int = 12, h: int = 8,
            unit: str | None = None, exemplars: bool = False, description: str = "",
            thresholds: list[tuple[float | None, str]] | None = None,
            mappings: list[dict[str, Any]] | None = None, options: dict[str, Any] | None = None,
            instant: bool = False, fmt: str | None = None, custom: dict[str, Any] | None = None,
            overrides: list[dict[str, Any]] | None = None, repeat: str | None = None) -> int:
        """Add a panel at the next free place (rows of 24 columns); returns its id (for annotation filters)."""
        if self._x + w > 24:
            self._x, self._y = 0, self._y + self._row_h
            self._row_h = 0
        defaults: dict[str, Any] = {}
        if unit:
            defaults["unit"] = unit
        if thresholds:
            defaults["thresholds"] = {"mode": "absolute",
                                      "steps": [{"color": c, "value": v} for v, c in thresholds]}
            if kind == "timeseries":
                defaults["custom"] = {"thresholdsStyle": {"mode": "line+area"}}
        if custom:
            defaults["custom"] = {**defaults.get("custom", {}), **custom}
        if mappings:
            defaults["mappings"] = mappings
        panel: dict[str, Any] = {
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": PROM,
            "gridPos": {"x": self._x, "y": self._y, "w": w, "h": h},
            "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": options or {},
            "targets": [
                {"refId": chr(ord("A") + i), "datasource": PROM, "expr": expr, "legendFormat": legend,
                 "exemplar": exemplars, "instant": instant, "range": not instant,
                 **({"format": fmt} if fmt else {})}
                for i, (expr, legend) in enumerate(targets)
            ],
        }
        if repeat:  # one copy per value chosen, each below the last (side-by-side panels repeat as columns)
            panel.update(repeat=repeat, repeatDirection="v")
        self.panels.append(panel)
        self._x += w
        self._row_h = max(self._row_h, h)
        return int(panel["id"])

    def annotate(self, name: str, expr: str, title: str, tags: str, color: str, panels: list[int]) -> None:
        """A Prometheus annotation: every step where ``expr`` is non-zero is marked (consecutive steps join into
        one region), on the given panels only."""
        self.annotations.append({
            "name": name, "datasource": PROM, "enable": True, "hide": False, "iconColor": color,
            "expr": expr, "step": "15s", "titleFormat": title, "tagKeys": tags, "textFormat": "",
            "useValueForTime": False, "filter": {"exclude": False, "ids": sorted(panels)},
        })

    def json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["qt-telemetry", "trading"],
            "schemaVersion": 39,
            "version": 1,
            "editable": False,
            "graphTooltip": 1,
            "refresh": "15s",
            "time": {"from": "now-1h", "to": "now"},
            "timezone": "utc",
            "templating": {"list": [_variable("service", "Bot", sc.HEARTBEAT, "service_name")] + [
                _variable(v, v.title(), VARIABLES[v][1], sc.prometheus_label(VARIABLES[v][0]), "_count"
                          if VARIABLES[v][1].kind == "histogram" else "", native=VARIABLES[v][1] in NATIVE_CAPABLE)
                for v in self.variables]},
            "annotations": {"list": self.annotations},
            "links": [{"title": "Trading dashboards", "type": "dashboards", "tags": ["qt-telemetry"]}],
            "panels": self.panels,
        }


def _variable(name: str, label: str, spec: sc.MetricSpec, label_name: str, suffix: str = "",
              native: bool = False) -> dict[str, Any]:
    series = f'{{__name__=~"{p(spec, suffix)}|{p(spec)}"}}' if native else p(spec, suffix)
    query = f"label_values({series}, {label_name})"
    return {"name": name, "label": label, "type": "query", "datasource": PROM,
            "query": {"query": query, "refId": name}, "definition": query,
            "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2,
            "current": {"text": "All", "value": "$__all"}}


STATE_0_1 = [{"type": "value", "options": {
    "0": {"text": "OK", "color": "green"}, "1": {"text": "ACTIVE", "color": "red"}}}]
BREAKER = [{"type": "value", "options": {
    "0": {"text": "CLOSED", "color": "green"}, "0.5": {"text": "HALF-OPEN", "color": "orange"},
    "1": {"text": "OPEN", "color": "red"}}}]
CONNECTED = [{"type": "value", "options": {
    "0": {"text": "DISCONNECTED", "color": "red"}, "1": {"text": "CONNECTED", "color": "green"}}}]
TIMELINE = {"mergeValues": True, "showValue": "auto", "rowHeight": 0.8, "alignValue": "center"}


def worst(spec: sc.MetricSpec) -> str:
    """A state gauge's worst value within each step (1 = active/open): a switch active for seconds still shows on
    an hour-wide chart, whose steps are wider than that. Shorter than the bot's metric export interval, it is in
    the activation/trip counters and the trace's span event only."""
    return f"max_over_time({p(spec)}{{{SEL}}}[$__interval])"


def safety_annotations(b: Board, panels: list[int]) -> None:
    """Kill switch and circuit breaker changes on the latency panels: a region from the change to the change back
    (the state gauges, not their counters: a switch still active when the window opens is marked too)."""
    b.annotate("Kill switch active", f"max by (service_name, kill_switch) ({worst(sc.KILL_SWITCH_ACTIVE)}) > 0",
               "Kill switch {{kill_switch}} ACTIVE on {{service_name}}", "service_name,kill_switch", "red", panels)
    b.annotate("Circuit breaker not closed", f"max by (service_name, breaker) ({worst(sc.BREAKER_STATE)}) > 0",
               "Breaker {{breaker}} open or half-open on {{service_name}}", "service_name,breaker", "orange", panels)


def trading_overview() -> Board:
    b = Board("qt-trading-overview", "Trading Overview",
              "What a trading desk watches, from qt-telemetry. Latency panels show exemplars (click one to open "
              "that order's trace in Tempo) and kill switch / circuit breaker changes as annotations.",
              variables=("venue", "strategy", "symbol"))
    latency_panels: list[int] = []
    b.add("timeseries", "Daily PnL used (fraction of loss limit)",
          [(f"max by (service_name, strategy) ({p(sc.DAILY_PNL_USED)}{{{b.sel(sc.DAILY_PNL_USED)}}})",
            "{{service_name}} {{strategy}}")],
          unit="percentunit", thresholds=[(None, "green"), (0.8, "red")],
          description="Daily loss / daily loss limit. Red from 80%; the kill switch trips at 100%.")
    b.add("stat", "Open positions",
          [(f"sum by (strategy) ({p(sc.OPEN_POSITIONS)}{{{b.sel(sc.OPEN_POSITIONS)}}})", "open {{strategy}}"),
           (f"max by (strategy) ({p(sc.MAX_POSITIONS)}{{{b.sel(sc.MAX_POSITIONS)}}})", "limit {{strategy}}")],
          w=6, unit="none", thresholds=[(None, "green"), (2, "yellow"), (3, "red")])
    b.add("stat", "Kill switch",
          [(f"max by (kill_switch) ({p(sc.KILL_SWITCH_ACTIVE)}{{{SEL}}})", "{{kill_switch}}")],
          w=6, mappings=STATE_0_1, thresholds=[(None, "green"), (1, "red")],
          description="No value means the bot is not reporting its kill switch: see the QtKillSwitchStateMissing "
                      "alert.")
    b.add("stat", "Circuit breakers",
          [(f"max by (breaker) ({p(sc.BREAKER_STATE)}{{{SEL}}})", "{{breaker}}")],
          w=8, mappings=BREAKER, thresholds=[(None, "green"), (0.5, "orange"), (1, "red")],
          description="0 closed, 0.5 half-open, 1 open.")
    order = b.sel(sc.ORDER_LATENCY)
    latency_panels.append(b.add(
        "timeseries", "Order latency p50 / p95 / p99",
        [(quantile(0.5, sc.ORDER_LATENCY, matcher=order), "p50"),
         (quantile(0.95, sc.ORDER_LATENCY, matcher=order), "p95"),
         (quantile(0.99, sc.ORDER_LATENCY, matcher=order), "p99")],
        w=16, unit="s", exemplars=True, thresholds=[(None, "green"), (0.5, "red")],
        description="Diamonds are exemplars: hover and choose 'Open trace in Tempo'. Red and orange regions: a kill "
                    "switch active, a circuit breaker open or half-open."))
    b.add("stat", "Market data feeds",
          [(f"min by (feed, symbol) ({p(sc.FEED_CONNECTED)}{{{b.sel(sc.FEED_CONNECTED)}}})", "{{feed}} {{symbol}}")],
          w=8, mappings=CONNECTED, thresholds=[(None, "red"), (1, "green")])
    b.add("stat", "Orders in 24h",
          [(f"sum({count(sc.ORDER_LATENCY, 'increase', order, '24h')})", "orders")], w=4, unit="none")
    b.add("timeseries", "Feed message gap p95 / staleness",
          [(quantile(0.95, sc.FEED_GAP, "feed, symbol", matcher=b.sel(sc.FEED_GAP)), "gap p95 {{feed}} {{symbol}}"),
           (f"max by (feed, symbol) ({p(sc.FEED_STALENESS)}{{{b.sel(sc.FEED_STALENESS)}}})",
            "stale {{feed}} {{symbol}}")],
          w=12, unit="s", thresholds=[(None, "green"), (30, "red")])
    budget = b.sel(sc.LATENCY_SEGMENT)
    parts = f'{budget}, segment!="{sc.SEGMENT_TOTAL}"'
    total = f'{budget}, segment="{sc.SEGMENT_TOTAL}"'
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        latency_panels.append(b.add(
            "timeseries", f"Latency budget {name}: tick to fill by segment ($venue)",
            [(quantile(q, sc.LATENCY_SEGMENT, "venue, segment", matcher=parts), "{{segment}}"),
             (quantile(q, sc.LATENCY_SEGMENT, "venue", matcher=total), f"total {name} (measured)")],
            unit="s", exemplars=True, repeat="venue",
            custom={"stacking": {"mode": "normal", "group": "segments"}, "fillOpacity": 60, "lineWidth": 1},
            overrides=[{"matcher": {"id": "byFrameRefID", "options": "B"}, "properties": [
                {"id": "custom.stacking", "value": {"mode": "none", "group": "total"}},
                {"id": "custom.fillOpacity", "value": 0},
                {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [6, 4]}}]}],
            description=f"Where a trade's time goes, per venue: the {name} of each segment (feed: exchange to "
                        "receive; tick_to_trade: receive to order sent; order_to_ack; ack_to_fill), stacked, and the "
                        f"{name} of the whole (dashed). Quantiles do not add up: the stack is a budget, the dashed "
                        "line what trades measured. Diamonds are exemplars: a point opens that trade's trace."))
    latency_panels.append(b.add(
        "timeseries", "Tick-to-trade p99 by venue",
        [(quantile(0.99, sc.LATENCY_SEGMENT, "venue", matcher=f'{budget}, segment="{sc.SEGMENT_TICK_TO_TRADE}"'),
          "{{venue}}")],
        unit="s", exemplars=True, thresholds=[(None, "green"), (TICK_TO_TRADE_P99_S, "red")],
        description="Market data received to order sent: the bot's own decision time. QtTickToTradeP99High fires "
                    f"above {TICK_TO_TRADE_P99_S * 1000:.0f} ms for 5 minutes."))
    latency_panels.append(b.add(
        "timeseries", "Order latency p99 by venue",
        [(quantile(0.99, sc.ORDER_LATENCY, "venue", matcher=order), "{{venue}}")],
        unit="s", exemplars=True, thresholds=[(None, "green"), (0.5, "red")],
        description="Placement latency, 99th percentile per venue (the alert is on p95 > 500 ms)."))
    events = b.sel(sc.ORDER_EVENTS)
    b.add("timeseries", "Fill rate by venue", [(fill_rate(events, RATE), "{{venue}}")], unit="percentunit",
          options={"legend": {"displayMode": "table", "calcs": ["mean", "lastNotNull"]}},
          description="Orders completely filled / orders placed (a partial fill counts once the order is filled).")
    b.add("timeseries", "Venue reject rate by reason", [(reject_rate_by_reason(events, RATE), "{{venue}} {{reason}}")],
          unit="percentunit", thresholds=[(None, "green"), (0.1, "red")],
          description="Venue rejects with that reason / orders placed on the venue. Failed placements (timeouts, "
                      "errors) are in Order Execution's 'Failed or rejected orders'.")
    b.add("timeseries", "Trades by outcome",
          [(f"sum by (strategy, outcome) (increase({p(sc.TRADES)}{{{b.sel(sc.TRADES)}}}[{RATE}]))",
            "{{strategy}} {{outcome}}")],
          unit=TRADES_UNIT, custom={"drawStyle": "bars", "fillOpacity": 80, "stacking": {"mode": "normal"}},
          description="Trade flows finished per interval: ok, rejected (a risk check said no), error, cancelled.")
    trade = b.sel(sc.TRADE_DURATION)
    b.add("timeseries", "Trade duration p50 / p95 by strategy",
          [(quantile(0.5, sc.TRADE_DURATION, "strategy", matcher=trade), "p50 {{strategy}}"),
           (quantile(0.95, sc.TRADE_DURATION, "strategy", matcher=trade), "p95 {{strategy}}")],
          unit="s", exemplars=True, description="Signal to exit, per trade flow.")
    b.add("timeseries", "Gross exposure",
          [(f"sum by (strategy) ({p(sc.GROSS_EXPOSURE)}{{{b.sel(sc.GROSS_EXPOSURE)}}})", "{{strategy}}")],
          unit=CURRENCY, description="Gross (absolute) exposure in the account currency, per strategy. Shown as USD: "
                                     "set the panel's unit to your account currency.")
    clock = b.sel(sc.VENUE_CLOCK_OFFSET)
    offset = f"max by (venue) ({p(sc.VENUE_CLOCK_OFFSET)}{{{clock}}})"
    spread = f"max by (venue) ({p(sc.VENUE_CLOCK_OFFSET_UNCERTAINTY)}{{{clock}}})"
    dashed = [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [4, 4]}},
              {"id": "custom.lineWidth", "value": 1}]
    b.add("timeseries", "Venue clock offset ± uncertainty",
          [(offset, "{{venue}}"), (f"{offset} + {spread}", "{{venue}} + uncertainty"),
           (f"{offset} - {spread}", "{{venue}} - uncertainty")],
          unit="s", overrides=[{"matcher": {"id": "byFrameRefID", "options": ref}, "properties": dashed}
                               for ref in ("B", "C")],
          description="Venue clock minus ours, estimated NTP-style from replies to our requests; taken off every "
                      "segment that mixes the two clocks (README 'Clocks').")
    b.add("state-timeline", "Kill switch timeline",
          [(f"max by (service_name, kill_switch) ({worst(sc.KILL_SWITCH_ACTIVE)})",
            "{{service_name}} {{kill_switch}}")],
          w=12, h=6, mappings=STATE_0_1, thresholds=[(None, "green"), (1, "red")], options=TIMELINE)
    b.add("state-timeline", "Circuit breaker timeline",
          [(f"max by (service_name, breaker) ({worst(sc.BREAKER_STATE)})", "{{service_name}} {{breaker}}")],
          w=12, h=6, mappings=BREAKER, thresholds=[(None, "green"), (0.5, "orange"), (1, "red")], options=TIMELINE)
    feed = b.sel(sc.FEED_MESSAGES)
    b.add("timeseries", "Feed messages and reconnects",
          [(f"sum by (feed, symbol) (rate({p(sc.FEED_MESSAGES)}{{{feed}}}[{RATE}]))", "messages {{feed}} {{symbol}}"),
           (f"sum by (feed, symbol) (increase({p(sc.FEED_RECONNECTS)}{{{feed}}}[{RATE}]))",
            "reconnects {{feed}} {{symbol}}")],
          unit="ops", overrides=[{"matcher": {"id": "byFrameRefID", "options": "B"}, "properties": [
              {"id": "unit", "value": "suffix: reconnects"}, {"id": "custom.axisPlacement", "value": "right"},
              {"id": "custom.drawStyle", "value": "bars"}]}],
          description="Messages per second (left) and reconnects per interval (right bars).")
    cancel = b.sel(sc.ORDER_CANCEL_LATENCY)
    latency_panels.append(b.add(
        "timeseries", "Cancel latency p95 by venue",
        [(quantile(0.95, sc.ORDER_CANCEL_LATENCY, "venue", matcher=cancel), "{{venue}}")], unit="s",
        exemplars=True, description="Cancel request to the venue's answer."))
    latency_panels.append(b.add(
        "timeseries", "Risk-check latency p95 by rule",
        [(quantile(0.95, sc.RISK_CHECK_LATENCY, sc.prometheus_label(sc.RISK_RULE),
                   matcher=b.sel(sc.RISK_CHECK_LATENCY)), "{{risk_rule}}")],
        unit="s", exemplars=True, description="In-process risk checks, per rule."))
    b.add("timeseries", "Latency segments clamped to 0",
          [(f"sum by (venue, segment) (increase({p(sc.LATENCY_SEGMENT_CLAMPED)}"
            f"{{{b.sel(sc.LATENCY_SEGMENT_CLAMPED)}}}[{RATE}]))", "{{venue}} {{segment}}")],
          unit="suffix: segments", custom={"drawStyle": "bars", "fillOpacity": 80},
          description="Segments that came out negative (skew beyond the estimate's uncertainty, a venue stamp "
                      "from the future): recorded as 0 and counted here, never silently.")
    b.add("timeseries", "Telemetry dropped",
          [(f"sum by (service_name, signal, reason) (increase({p(sc.TELEMETRY_DROPPED)}{{{SEL}}}[{RATE}]))",
            "{{service_name}} {{signal}} {{reason}}")],
          w=24, h=6, unit="suffix: items", custom={"drawStyle": "bars", "fillOpacity": 80},
          description="Spans, records or metric points the SDK dropped on the way out (never silently): "
                      "QtTelemetryDropped alerts on any. Counts stay exact; what is shed is span detail.")
    safety_annotations(b, latency_panels)
    return b


def order_execution() -> Board:
    b = Board("qt-order-execution", "Order Execution",
              "Where order time goes, by venue; slippage; rejects; risk-check rejections. Exemplars link to traces.",
              variables=("venue", "symbol"))
    order = b.sel(sc.ORDER_LATENCY)
    latency_panels: list[int] = []
    latency_panels.append(b.add(
        "heatmap", "Order latency heatmap (exemplars on)",
        [(f"sum by (le) (increase({p(sc.ORDER_LATENCY, '_bucket')}{{{order}}}[{RATE}])) "
          f"or sum(increase({p(sc.ORDER_LATENCY)}{{{order}}}[{RATE}]))", "{{le}}")],
        w=24, h=9, unit="s", exemplars=True, fmt="heatmap",
        options={"calculate": False, "yAxis": {"unit": "s"}, "exemplars": {"color": "rgba(255,0,255,0.7)"}},
        description="Each diamond is one order: click it to open its signal-to-execution trace in Tempo."))
    latency_panels.append(b.add(
        "timeseries", "Order latency p95 by venue",
        [(quantile(0.95, sc.ORDER_LATENCY, "venue", matcher=order), "{{venue}}")], unit="s", exemplars=True))
    b.add("timeseries", "Orders by outcome",
          [(f"sum by (venue, outcome) ({count(sc.ORDER_LATENCY, 'rate', order, RATE)})",
            "{{venue}} {{outcome}}")],
          unit="ops", description="The placement's own outcome; a venue reject after placement is in the reject "
                                  "rate and the rejects by reason.")
    b.add("timeseries", "Failed or rejected orders (share)", [(reject_rate(order, RATE), "{{venue}}")],
          unit="percentunit", thresholds=[(None, "green"), (0.1, "red")],
          description="(placements failed + venue rejects, at placement or later) / orders placed: what "
                      "QtOrderRejectRateHigh alerts on.")
    slip = b.sel(sc.SLIPPAGE)
    b.add("timeseries", "Slippage (bp): signed mean, adverse p95",
          [(slippage_mean(slip), "mean {{venue}}"),
           (quantile(0.95, sc.SLIPPAGE, "venue", f'{DIRECTION}="adverse"', matcher=slip), "adverse p95 {{venue}}")],
          unit=BP, exemplars=True,
          description="Fill price versus the signal's reference price, in basis points. Mean: positive is a cost, "
                      "negative a gain; p95 of the adverse fills: the cost tail.")
    b.add("timeseries", "Favourable fills (share)", [(favourable_share(slip), "{{venue}}")],
          unit="percentunit", description="Fills better than the signal's reference price.")
    latency_panels.append(b.add(
        "timeseries", "Fill latency p95",
        [(quantile(0.95, sc.FILL_LATENCY, "venue", matcher=b.sel(sc.FILL_LATENCY)), "{{venue}}")], unit="s",
        exemplars=True))
    events = b.sel(sc.ORDER_EVENTS)
    b.add("bargauge", "Venue rejects by reason (1h)",
          [(f"sum by (venue, reason) (increase({p(sc.ORDER_EVENTS)}{{{events}, order_event=\"reject\"}}[1h]))",
            "{{venue}} {{reason}}")], instant=True, unit="suffix: rejects")
    b.add("bargauge", "Placement errors by type (1h)",
          [(f"sum by (venue, error_type) ({count(sc.ORDER_LATENCY, 'increase', order + ', ' + ERRORS, '1h')})",
            "{{venue}} {{error_type}}")], instant=True, unit="suffix: errors")
    rejected = b.sel(sc.RISK_CHECKS, 'outcome="rejected"')
    b.add("timeseries", "Risk-check rejections by rule",
          [(f"sum by (risk_rule, reason) (rate({p(sc.RISK_CHECKS)}{{{rejected}}}[{RATE}]))",
            "{{risk_rule}}: {{reason}}")], unit="ops")
    b.add("timeseries", "Trade stage duration p95",
          [(quantile(0.95, sc.STAGE_DURATION, "stage", matcher=b.sel(sc.STAGE_DURATION)), "{{stage}}")], unit="s",
          exemplars=True)
    b.add("timeseries", "Span RED: rate by span name (span metrics)",
          [(f"sum by (span_name, status_code) (rate(traces_span_metrics_calls_total{{{SEL}}}[{RATE}]))",
            "{{span_name}} {{status_code}}")], unit="ops")
    b.add("timeseries", "Span RED: p95 duration by span name",
          [(f"histogram_quantile(0.95, sum by (span_name, le) "
            f"(rate(traces_span_metrics_duration_seconds_bucket{{{SEL}}}[{RATE}])))", "{{span_name}}")],
          unit="s", exemplars=True)
    safety_annotations(b, latency_panels)
    return b


def telemetry_pipeline() -> Board:
    b = Board("qt-telemetry-pipeline", "Telemetry Pipeline",
              "Is the telemetry itself healthy? Collector intake and exports, queues, scrape health, bot heartbeats.")
    b.add("stat", "Scrape health (up)", [('up', "{{job}}")], w=8, mappings=[{"type": "value", "options": {
        "0": {"text": "DOWN", "color": "red"}, "1": {"text": "UP", "color": "green"}}}], instant=True)
    b.add("stat", "Bot heartbeat age",
          [(f"time() - max by (service_name) ({p(sc.HEARTBEAT)}{{{SEL}}})", "{{service_name}}")],
          w=8, unit="s", thresholds=[(None, "green"), (60, "orange"), (90, "red")])
    b.add("timeseries", "Instrumentation errors absorbed",
          [(f"sum by (kind) (rate({p(sc.TELEMETRY_ERRORS)}{{{SEL}}}[{RATE}]))", "{{kind}}")], w=8, unit="ops")
    b.add("timeseries", "Collector accepted / refused",
          [(f"sum(rate(otelcol_receiver_accepted_spans[{RATE}]))", "accepted spans"),
           (f"sum(rate(otelcol_receiver_accepted_metric_points[{RATE}]))", "accepted points"),
           (f"sum(rate(otelcol_receiver_refused_spans[{RATE}]))", "refused spans"),
           (f"sum(rate(otelcol_receiver_refused_metric_points[{RATE}]))", "refused points")], unit="ops")
    b.add("timeseries", "Collector exports sent / failed",
          [(f"sum by (exporter) (rate(otelcol_exporter_sent_spans[{RATE}]))", "sent spans {{exporter}}"),
           (f"sum by (exporter) (rate(otelcol_exporter_sent_metric_points[{RATE}]))",
            "sent points {{exporter}}"),
           # the collector creates a failed counter at its first failure: until then, 0 for every exporter sending
           (f"sum by (exporter) (rate(otelcol_exporter_send_failed_spans[{RATE}])) "
            f"or sum by (exporter) (rate(otelcol_exporter_sent_spans[{RATE}])) * 0", "failed spans {{exporter}}"),
           (f"sum by (exporter) (rate(otelcol_exporter_send_failed_metric_points[{RATE}])) "
            f"or sum by (exporter) (rate(otelcol_exporter_sent_metric_points[{RATE}])) * 0",
            "failed points {{exporter}}")], unit="ops")
    b.add("timeseries", "Exporter queue (size / capacity)",
          [("sum by (exporter) (otelcol_exporter_queue_size)", "size {{exporter}}"),
           ("sum by (exporter) (otelcol_exporter_queue_capacity)", "capacity {{exporter}}")])
    b.add("timeseries", "Prometheus: exemplars stored and remote-write samples",
          [("prometheus_tsdb_exemplar_exemplars_in_storage", "exemplars in storage"),
           (f"sum(rate(prometheus_tsdb_head_samples_appended_total[{RATE}]))", "samples appended/s")])
    b.add("timeseries", "Telemetry dropped by the SDK",
          [(f"sum by (service_name, signal, reason) (increase({p(sc.TELEMETRY_DROPPED)}{{{SEL}}}[{RATE}]))",
            "{{service_name}} {{signal}} {{reason}}")], unit="suffix: items",
          custom={"drawStyle": "bars", "fillOpacity": 80},
          description="What the bots dropped before the collector saw it (queue full, exporter busy): "
                      "QtTelemetryDropped alerts on any.")
    b.add("timeseries", "Tempo: spans received",
          [(f"sum(rate(tempo_distributor_spans_received_total[{RATE}]))", "spans/s")], unit="ops")
    # Fleet topology only (docker-compose.fleet.yml): empty on the single box.
    b.add("timeseries", "Fleet gateways: traces kept / not kept (tail sampling)",
          [(f"sum by (instance, sampled) (rate(otelcol_processor_tail_sampling_global_count_traces_sampled[{RATE}]))",
            "{{instance}} kept={{sampled}}")], w=8, unit="ops",
          description="Every failed, rejected or slow order and every safety event is kept; healthy trades at the "
                      "bots' QT_TELEMETRY_TRACE_KEEP_RATIO.")
    b.add("timeseries", "Fleet gateways: traces in memory / dropped before a verdict",
          [("sum by (instance) (otelcol_processor_tail_sampling_sampling_traces_on_memory)", "in memory {{instance}}"),
           (f"sum by (instance) (rate(otelcol_processor_tail_sampling_sampling_trace_dropped_too_early[{RATE}]))",
            "dropped too early {{instance}}")], w=8,
          description="Dropped too early = num_traces too small for the traffic within decision_wait "
                      "(QtTailSamplingOverflow).")
    b.add("stat", "Fleet agents: gateways in the ring",
          [("sum by (instance) (otelcol_loadbalancer_num_backends)", "{{instance}}")], w=8,
          description="Gateways each agent currently routes trace ids to (DNS name otel-gateways).")
    return b


BOARDS = {"trading-overview.json": trading_overview, "order-execution.json": order_execution,
          "telemetry-pipeline.json": telemetry_pipeline}


def render() -> dict[str, str]:
    return {name: json.dumps(make().json(), indent=2, sort_keys=True) + "\n" for name, make in BOARDS.items()}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
