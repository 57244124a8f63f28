"""Every metric name, unit, bucket list, span name and attribute key qt-telemetry emits, defined once.

Names follow the OpenTelemetry semantic-convention style: lowercase, dotted, under ``qt.``, with the unit in
``unit=`` and never in the name. The collector derives the Prometheus name (see :func:`prometheus_name`), and
the dashboards, alert rules and README table are checked against :data:`METRICS`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from qt_telemetry._values import finite, text

InstrumentKind = Literal["counter", "histogram", "gauge", "updowncounter"]

# --- bucket boundaries ----------------------------------------------------------------------------------
#: Order placement / fill latency in seconds: 1 ms .. 10 s, dense around the 500 ms alert threshold.
LATENCY_BUCKETS_S: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)
#: Risk checks are in-process and fast: 10 us .. 100 ms.
CHECK_LATENCY_BUCKETS_S: Final = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
)
#: Trade and stage durations: 1 ms .. 1 h.
TRADE_DURATION_BUCKETS_S: Final = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)
#: Gap between two market-data messages: 1 ms .. 2 min.
FEED_GAP_BUCKETS_S: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: One garbage collection's pause: 0.1 ms (a young collection) .. 1 s (a full one over a large heap).
GC_PAUSE_BUCKETS_S: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: The latency budget's segments: 0.5 ms .. 10 s, a bound every 20-50 % between 5 ms and 300 ms so a p99 there
#: is read to within a bucket that narrow (histogram_quantile interpolates inside one bucket).
LATENCY_BUDGET_BUCKETS_S: Final = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.125, 0.15,
    0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)
#: Slippage magnitude in basis points (the direction is a label: a histogram cannot hold negative values).
SLIPPAGE_BUCKETS_BPS: Final = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)

# --- attribute keys (metric labels are the low-cardinality subset) --------------------------------------
VENUE: Final = "venue"
SYMBOL: Final = "symbol"
SIDE: Final = "side"
ORDER_TYPE: Final = "order.type"
OUTCOME: Final = "outcome"
STRATEGY: Final = "strategy"
ERROR_TYPE: Final = "error.type"
STAGE: Final = "stage"
REASON: Final = "reason"
RISK_RULE: Final = "risk.rule"
BREAKER: Final = "breaker"
BREAKER_NEW_STATE: Final = "breaker.state"
BREAKER_OLD_STATE: Final = "breaker.previous_state"
KILL_SWITCH: Final = "kill_switch"
ACTOR: Final = "actor"
FEED: Final = "feed"
ORDER_EVENT: Final = "order.event"
TELEMETRY_ERROR_KIND: Final = "kind"
TELEMETRY_SIGNAL: Final = "signal"
TELEMETRY_REASON: Final = "reason"
#: ``adverse`` (worse than the reference price, or equal) or ``favourable``: the sign of a slippage.
SLIPPAGE_DIRECTION: Final = "slippage.direction"
#: Which process of the bot a runtime metric describes: ``bot`` (a trading process) or ``exporter``.
PROCESS_ROLE: Final = "qt.process.role"
ROLE_BOT: Final = "bot"
ROLE_EXPORTER: Final = "exporter"
#: OpenTelemetry's process and CPython runtime conventions.
CPU_MODE: Final = "cpu.mode"
GC_GENERATION: Final = "cpython.gc.generation"
#: Which part of the latency budget a measurement is (one of :data:`SEGMENTS`).
SEGMENT: Final = "segment"

# Span-only attributes (high cardinality: never metric labels).
ORDER_QUANTITY: Final = "order.quantity"
ORDER_PRICE: Final = "order.price"
ORDER_CLIENT_ID: Final = "order.client_order_id"
ORDER_ID: Final = "order.id"
#: What the venue's reply says of the order (e.g. ccxt's unified order): its status ("open", "closed",
#: "canceled", ...), the quantity filled so far and the average fill price.
ORDER_STATUS: Final = "order.status"
ORDER_FILLED: Final = "order.filled"
ORDER_AVERAGE: Final = "order.average"
FILL_QUANTITY: Final = "fill.quantity"
FILL_PRICE: Final = "fill.price"
#: Signed: positive = adverse (paid more on a buy, received less on a sell), negative = favourable.
SLIPPAGE_BPS: Final = "slippage.bps"
#: The venue's own timestamp of an ack or fill, in epoch seconds (ccxt's ``timestamp`` / trade time).
ORDER_VENUE_TIME: Final = "order.venue_time"
TRADE_ID: Final = "trade.id"
#: The market-data event that triggered a trade (on the signal stage span): its feed, symbol, the venue's
#: timestamp (epoch seconds, the venue's clock, when the message had one) and the local receive time (epoch s).
TRIGGER_FEED: Final = "trigger.feed"
TRIGGER_SYMBOL: Final = "trigger.symbol"
TRIGGER_EXCHANGE_TIME: Final = "trigger.exchange_time"
TRIGGER_RECEIVED_TIME: Final = "trigger.received_time"
#: The latency budget's segments in seconds, as span attributes: ``latency.feed`` on the signal (or exit) stage span,
#: ``latency.tick_to_trade`` (and ``latency.order_to_ack`` when the reply is the ack) on the order span,
#: ``latency.order_to_ack`` on an ack update, ``latency.ack_to_fill`` and ``latency.total`` on the final fill.
LATENCY_FEED_S: Final = "latency.feed"
LATENCY_TICK_TO_TRADE_S: Final = "latency.tick_to_trade"
LATENCY_ORDER_TO_ACK_S: Final = "latency.order_to_ack"
LATENCY_ACK_TO_FILL_S: Final = "latency.ack_to_fill"
LATENCY_TOTAL_S: Final = "latency.total"
#: The venue clock offset (venue minus local, seconds) and its uncertainty applied to a span's venue timestamps.
VENUE_CLOCK_OFFSET_S: Final = "venue.clock.offset"
VENUE_CLOCK_UNCERTAINTY_S: Final = "venue.clock.offset.uncertainty"
SIGNAL_CONFIDENCE: Final = "signal.confidence"
SIGNAL_DIRECTION: Final = "signal.direction"
SIGNAL_REFERENCE_PRICE: Final = "signal.reference_price"
RISK_VALUE: Final = "risk.value"
RISK_LIMIT: Final = "risk.limit"
CODE_FUNCTION: Final = "code.function.name"
#: Seconds from placement to the final fill (on the fill's update span; the fill-latency histogram reads it).
FILL_LATENCY_S: Final = "order.fill.latency"
#: Set on spans whose trace a tail-sampling gateway must keep (error, rejected, slow, risk/kill-switch events,
#: or the trace id falls in the keep ratio). Exemplars come only from such spans, so none points at a dropped trace.
SAMPLING_KEEP: Final = "qt.sampling.keep"
KILL_SWITCH_ACTIVE_ATTR: Final = "kill_switch.active"
#: The venue as the order span's peer: Tempo's service graph draws bot -> venue edges from it.
PEER_SERVICE: Final = "peer.service"

#: Keys allowed as metric attributes. Anything else is a span attribute only.
METRIC_ATTRIBUTE_KEYS: Final = frozenset({
    VENUE, SYMBOL, SIDE, ORDER_TYPE, OUTCOME, STRATEGY, ERROR_TYPE, STAGE, REASON, RISK_RULE, BREAKER,
    KILL_SWITCH, FEED, ORDER_EVENT, TELEMETRY_ERROR_KIND, TELEMETRY_SIGNAL, SLIPPAGE_DIRECTION, PROCESS_ROLE,
    CPU_MODE, GC_GENERATION, SEGMENT,
})

# --- outcome values -------------------------------------------------------------------------------------
OUTCOME_OK: Final = "ok"
OUTCOME_ERROR: Final = "error"
OUTCOME_CANCELLED: Final = "cancelled"
OUTCOME_PASSED: Final = "passed"
OUTCOME_REJECTED: Final = "rejected"
#: Value that replaces a metric attribute value once its key holds too many distinct values.
OVERFLOW_VALUE: Final = "_other"
#: Value used for a metric attribute whose value is missing (None).
UNKNOWN_VALUE: Final = "unknown"
SLIPPAGE_ADVERSE: Final = "adverse"
SLIPPAGE_FAVOURABLE: Final = "favourable"

# --- span names (fixed and few; variable data goes in attributes) ---------------------------------------
SPAN_TRADE: Final = "qt.trade"
SPAN_SIGNAL: Final = "qt.trade.signal"
SPAN_ENTRY: Final = "qt.trade.entry"
SPAN_EXECUTION: Final = "qt.trade.execution"
SPAN_EXIT: Final = "qt.trade.exit"
SPAN_ORDER: Final = "qt.order.place"
SPAN_ORDER_CANCEL: Final = "qt.order.cancel"
SPAN_ORDER_QUERY: Final = "qt.order.query"
SPAN_RISK_CHECK: Final = "qt.risk.check"
SPAN_ORDER_EVENT: Final = "qt.order.update"
STAGES: Final = ("signal", "entry", "execution", "exit")

# --- span event names -----------------------------------------------------------------------------------
EVENT_KILL_SWITCH: Final = "qt.kill_switch.change"
EVENT_BREAKER: Final = "qt.circuit_breaker.transition"
EVENT_RISK_REJECTED: Final = "qt.risk.rejected"
EVENT_EXCEPTION: Final = "exception"
#: The exception event's attributes (OpenTelemetry's ``exception.*`` conventions).
EXCEPTION_TYPE: Final = "exception.type"
EXCEPTION_MESSAGE: Final = "exception.message"
EXCEPTION_STACKTRACE: Final = "exception.stacktrace"
EXCEPTION_ESCAPED: Final = "exception.escaped"
EVENT_FEED_CONNECTED: Final = "qt.feed.connected"
EVENT_FEED_DISCONNECTED: Final = "qt.feed.disconnected"

# --- spans that carry one event when no trace is active ---------------------------------------------------
SPAN_KILL_SWITCH: Final = "qt.kill_switch"
SPAN_BREAKER: Final = "qt.circuit_breaker"
SPAN_FEED: Final = "qt.feed"

# --- order lifecycle events -------------------------------------------------------------------------------
ORDER_ACK: Final = "ack"
ORDER_PARTIAL_FILL: Final = "partial_fill"
ORDER_FILL: Final = "fill"
ORDER_CANCEL: Final = "cancel"
ORDER_REJECT: Final = "reject"

# --- latency budget segments (values of the ``segment`` attribute) ----------------------------------------
SEGMENT_FEED: Final = "feed"
SEGMENT_TICK_TO_TRADE: Final = "tick_to_trade"
SEGMENT_ORDER_TO_ACK: Final = "order_to_ack"
SEGMENT_ACK_TO_FILL: Final = "ack_to_fill"
SEGMENT_TOTAL: Final = "total"
#: Each segment and the span attribute that carries it.
SEGMENTS: Final = {
    SEGMENT_FEED: LATENCY_FEED_S, SEGMENT_TICK_TO_TRADE: LATENCY_TICK_TO_TRADE_S,
    SEGMENT_ORDER_TO_ACK: LATENCY_ORDER_TO_ACK_S, SEGMENT_ACK_TO_FILL: LATENCY_ACK_TO_FILL_S,
    SEGMENT_TOTAL: LATENCY_TOTAL_S,
}

#: Circuit breaker states and the gauge value each maps to (documented in the README).
BREAKER_STATE_VALUES: Final = {"closed": 0.0, "half_open": 0.5, "open": 1.0}

# --- metrics --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSpec:
    """One instrument: its OTel name, kind, unit, description, metric attributes and bucket boundaries."""

    name: str
    kind: InstrumentKind
    unit: str
    description: str
    attributes: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None
    #: Attributes left out of the series when the measurement has none (instead of ``unknown``).
    optional: tuple[str, ...] = ()
    #: Read from the gauge board like a gauge, reported by the asynchronous instrument of ``kind`` (a counter's
    #: value is then the running total, e.g. CPU seconds so far).
    observed: bool = False

    def __post_init__(self) -> None:
        if not re.fullmatch(r"(qt|process|cpython)(\.[a-z][a-z0-9_]*)+", self.name):
            raise ValueError(f"metric name {self.name!r}: lowercase, dotted, under 'qt.' (or OpenTelemetry's own "
                             "'process.' / 'cpython.' runtime conventions)")
        if not re.fullmatch(r"s|1|By|\{[a-z_]+\}", self.unit):
            raise ValueError(f"{self.name}: unit {self.unit!r} is not 's', '1', 'By' or an annotation like '{{order}}'")
        if set(re.split(r"[._]", self.name)) & {"seconds", "total", "ms", "ratio", "milliseconds", "bytes"}:
            raise ValueError(f"{self.name}: the unit belongs in unit=, not in the name")
        if self.kind == "histogram" and self.buckets is None:
            raise ValueError(f"{self.name}: a histogram needs bucket boundaries")
        if not set(self.optional) <= set(self.attributes):
            raise ValueError(f"{self.name}: optional attributes must be declared attributes")

    @property
    def prometheus(self) -> str:
        """The base Prometheus name the collector derives (histograms add ``_bucket``/``_sum``/``_count``)."""
        return prometheus_name(self.name, self.unit, self.kind)


_ORDER_ATTRS = (VENUE, SYMBOL, SIDE, ORDER_TYPE, OUTCOME, ERROR_TYPE)

ORDER_LATENCY: Final = MetricSpec(
    "qt.order.latency", "histogram", "s",
    "Order placement latency, measured inside the order span; its count is the number of orders by outcome.",
    _ORDER_ATTRS, LATENCY_BUCKETS_S, optional=(ERROR_TYPE,))
ORDER_CANCEL_LATENCY: Final = MetricSpec(
    "qt.order.cancel.latency", "histogram", "s", "Order cancel request latency (cancel one or all orders).",
    (VENUE, SYMBOL, OUTCOME, ERROR_TYPE), LATENCY_BUCKETS_S, optional=(ERROR_TYPE,))
ORDER_EVENTS: Final = MetricSpec(
    "qt.order.events", "counter", "{event}",
    "Order lifecycle events after placement (ack, partial_fill, fill, cancel, reject).",
    (VENUE, SYMBOL, SIDE, ORDER_EVENT, REASON), optional=(REASON,))
FILL_LATENCY: Final = MetricSpec(
    "qt.order.fill.latency", "histogram", "s", "Time from order placement to its final fill.",
    (VENUE, SYMBOL, SIDE), LATENCY_BUCKETS_S)
SLIPPAGE: Final = MetricSpec(
    "qt.order.slippage", "histogram", "{bp}",
    "Fill price versus the signal's reference price: the magnitude in basis points, the sign as "
    "slippage.direction (adverse = worse or equal, favourable = better).",
    (VENUE, SYMBOL, SIDE, SLIPPAGE_DIRECTION), SLIPPAGE_BUCKETS_BPS)
TRADE_DURATION: Final = MetricSpec(
    "qt.trade.duration", "histogram", "s", "Duration of one trade flow, signal to exit.",
    (STRATEGY, SYMBOL, OUTCOME), TRADE_DURATION_BUCKETS_S)
STAGE_DURATION: Final = MetricSpec(
    "qt.trade.stage.duration", "histogram", "s", "Duration of one trade-flow stage.",
    (STRATEGY, SYMBOL, STAGE, OUTCOME), TRADE_DURATION_BUCKETS_S)
TRADES: Final = MetricSpec(
    "qt.trades", "counter", "{trade}", "Trade flows finished, by outcome.", (STRATEGY, SYMBOL, OUTCOME))
KILL_SWITCH_ACTIVE: Final = MetricSpec(
    "qt.kill_switch.active", "gauge", "{state}", "Kill switch state: 1 active (trading halted), 0 inactive.",
    (KILL_SWITCH,))
KILL_SWITCH_LAST_CHANGE: Final = MetricSpec(
    "qt.kill_switch.last_change", "gauge", "s",
    "Unix time of the kill switch's last recorded state; lets alerts detect a stale or missing state.",
    (KILL_SWITCH,))
KILL_SWITCH_ACTIVATIONS: Final = MetricSpec(
    "qt.kill_switch.activations", "counter", "{activation}", "Kill switch activations, by reason.",
    (KILL_SWITCH, REASON), optional=(REASON,))
BREAKER_STATE: Final = MetricSpec(
    "qt.circuit_breaker.state", "gauge", "{state}", "Circuit breaker state: 0 closed, 0.5 half-open, 1 open.",
    (BREAKER,))
BREAKER_TRIPS: Final = MetricSpec(
    "qt.circuit_breaker.trips", "counter", "{trip}", "Transitions of a circuit breaker to open.", (BREAKER,))
BREAKER_RESETS: Final = MetricSpec(
    "qt.circuit_breaker.resets", "counter", "{reset}", "Transitions of a circuit breaker back to closed.",
    (BREAKER,))
RISK_CHECKS: Final = MetricSpec(
    "qt.risk.checks", "counter", "{check}", "Risk checks evaluated, by rule and outcome.",
    (RISK_RULE, OUTCOME, REASON, STRATEGY, SYMBOL), optional=(REASON,))
RISK_CHECK_LATENCY: Final = MetricSpec(
    "qt.risk.check.latency", "histogram", "s", "Risk check evaluation time.",
    (RISK_RULE, OUTCOME), CHECK_LATENCY_BUCKETS_S)
DAILY_PNL_USED: Final = MetricSpec(
    "qt.risk.daily_pnl.used", "gauge", "1",
    "Daily loss as a fraction of the daily loss limit (0 = none used, 1 = limit reached).", (STRATEGY,))
OPEN_POSITIONS: Final = MetricSpec(
    "qt.risk.positions.open", "gauge", "{position}", "Open positions.", (STRATEGY,))
MAX_POSITIONS: Final = MetricSpec(
    "qt.risk.positions.limit", "gauge", "{position}", "Maximum open positions allowed.", (STRATEGY,))
GROSS_EXPOSURE: Final = MetricSpec(
    "qt.risk.exposure.gross", "gauge", "{currency}", "Gross exposure in the account currency.", (STRATEGY,))
FEED_CONNECTED: Final = MetricSpec(
    "qt.feed.connected", "gauge", "{state}", "Market-data feed connection: 1 connected, 0 disconnected.",
    (FEED, SYMBOL))
FEED_GAP: Final = MetricSpec(
    "qt.feed.message.gap", "histogram", "s", "Time between two consecutive messages of a feed.",
    (FEED, SYMBOL), FEED_GAP_BUCKETS_S)
FEED_STALENESS: Final = MetricSpec(
    "qt.feed.staleness", "gauge", "s", "Seconds since the feed's last message (observed at export).",
    (FEED, SYMBOL))
FEED_MESSAGES: Final = MetricSpec(
    "qt.feed.messages", "counter", "{message}", "Market-data messages received.", (FEED, SYMBOL))
FEED_RECONNECTS: Final = MetricSpec(
    "qt.feed.reconnects", "counter", "{reconnect}", "Market-data feed reconnections.", (FEED, SYMBOL))
LATENCY_SEGMENT: Final = MetricSpec(
    "qt.latency.segment", "histogram", "s",
    "The latency budget of a trade, one segment at a time: feed (exchange time -> local receive), tick_to_trade "
    "(receive -> order sent), order_to_ack (sent -> venue ack), ack_to_fill (ack -> final fill), total (tick -> "
    "final fill); venue timestamps corrected by the venue's estimated clock offset.",
    (VENUE, SYMBOL, STRATEGY, SEGMENT), LATENCY_BUDGET_BUCKETS_S)
LATENCY_SEGMENT_CLAMPED: Final = MetricSpec(
    "qt.latency.segment.clamped", "counter", "{segment}",
    "Latency segments that came out negative after clock-skew correction: recorded as 0, and counted here.",
    (VENUE, SEGMENT))
VENUE_CLOCK_OFFSET: Final = MetricSpec(
    "qt.venue.clock.offset", "gauge", "s",
    "Estimated venue clock minus local clock (from venue timestamps in replies to our requests).", (VENUE,))
VENUE_CLOCK_OFFSET_UNCERTAINTY: Final = MetricSpec(
    "qt.venue.clock.offset.uncertainty", "gauge", "s",
    "Uncertainty of the venue clock offset: half the round trip of the request it was estimated from.", (VENUE,))
TELEMETRY_ERRORS: Final = MetricSpec(
    "qt.telemetry.errors", "counter", "{error}",
    "Values the instrumentation dropped, clamped or replaced instead of raising into trading code.",
    (TELEMETRY_ERROR_KIND,))

TELEMETRY_DROPPED: Final = MetricSpec(
    "qt.telemetry.dropped", "counter", "{item}",
    "Telemetry dropped on the way out (spans, records, metric points), by signal and reason: never silent.",
    (TELEMETRY_SIGNAL, TELEMETRY_REASON))

HEARTBEAT: Final = MetricSpec(
    "qt.telemetry.heartbeat", "gauge", "s",
    "Unix time of the SDK's latest export: a dead bot or exporter stops it, so silence is never 'all quiet'.")

# Runtime metrics of each process (OpenTelemetry's process and CPython conventions where they exist), sampled
# off the trading thread; the role attribute tells the bot's processes from its exporter.
PROCESS_CPU_TIME: Final = MetricSpec(
    "process.cpu.time", "counter", "s", "CPU seconds the process has used, by mode (user, system).",
    (PROCESS_ROLE, CPU_MODE), observed=True)
PROCESS_MEMORY_USAGE: Final = MetricSpec(
    "process.memory.usage", "updowncounter", "By", "Resident memory of the process (RSS).", (PROCESS_ROLE,),
    observed=True)
PROCESS_MEMORY_VIRTUAL: Final = MetricSpec(
    "process.memory.virtual", "updowncounter", "By", "Virtual memory of the process.", (PROCESS_ROLE,),
    observed=True)
PROCESS_THREAD_COUNT: Final = MetricSpec(
    "process.thread.count", "updowncounter", "{thread}", "Threads of the process (the OS's count).",
    (PROCESS_ROLE,), observed=True)
PROCESS_FILE_DESCRIPTORS: Final = MetricSpec(
    "process.unix.file_descriptor.count", "updowncounter", "{file_descriptor}",
    "Open file descriptors of the process (sockets included).", (PROCESS_ROLE,), observed=True)
GC_COLLECTIONS: Final = MetricSpec(
    "cpython.gc.collections", "counter", "{collection}", "Garbage collections run, by generation.",
    (PROCESS_ROLE, GC_GENERATION), observed=True)
GC_COLLECTED: Final = MetricSpec(
    "cpython.gc.collected_objects", "counter", "{object}", "Objects the garbage collector freed, by generation.",
    (PROCESS_ROLE, GC_GENERATION), observed=True)
GC_UNCOLLECTABLE: Final = MetricSpec(
    "cpython.gc.uncollectable_objects", "counter", "{object}",
    "Objects the garbage collector found but could not free, by generation.", (PROCESS_ROLE, GC_GENERATION),
    observed=True)
GC_DURATION: Final = MetricSpec(
    "qt.runtime.gc.duration", "histogram", "s",
    "Pause of one garbage collection, by generation: the stall a trading loop meets (no OpenTelemetry "
    "convention exists for CPython yet).", (PROCESS_ROLE, GC_GENERATION), GC_PAUSE_BUCKETS_S)
RUNTIME_METRICS: Final = (PROCESS_CPU_TIME, PROCESS_MEMORY_USAGE, PROCESS_MEMORY_VIRTUAL, PROCESS_THREAD_COUNT,
                          PROCESS_FILE_DESCRIPTORS, GC_COLLECTIONS, GC_COLLECTED, GC_UNCOLLECTABLE, GC_DURATION)



@dataclass(frozen=True)
class Magnitude:
    """A value source of :data:`SPAN_METRICS`: the absolute value of the span attribute ``key``."""

    key: str


@dataclass(frozen=True)
class Segment:
    """A value source of :data:`SPAN_METRICS`: the span attribute holding latency segment ``name`` (seconds),
    measured with the attribute ``segment=name`` added to the span's."""

    name: str

    @property
    def key(self) -> str:
        return SEGMENTS[self.name]


_ORDER_SEGMENTS: Final = (
    (LATENCY_SEGMENT, Segment(SEGMENT_TICK_TO_TRADE)), (LATENCY_SEGMENT, Segment(SEGMENT_ORDER_TO_ACK)))
_UPDATE_SEGMENTS: Final = (
    (LATENCY_SEGMENT, Segment(SEGMENT_ORDER_TO_ACK)), (LATENCY_SEGMENT, Segment(SEGMENT_ACK_TO_FILL)),
    (LATENCY_SEGMENT, Segment(SEGMENT_TOTAL)))


#: Which metrics each span yields: (metric, value) where value is "duration", a constant, an attribute key, the
#: :class:`Magnitude` of one or a latency :class:`Segment`.
SPAN_METRICS: Final[dict[str, tuple[tuple[MetricSpec, float | str | Magnitude | Segment], ...]]] = {
    SPAN_ORDER: ((ORDER_LATENCY, "duration"), *_ORDER_SEGMENTS),
    SPAN_ORDER_CANCEL: ((ORDER_CANCEL_LATENCY, "duration"),),
    SPAN_TRADE: ((TRADE_DURATION, "duration"), (TRADES, 1)),
    SPAN_SIGNAL: ((STAGE_DURATION, "duration"), (LATENCY_SEGMENT, Segment(SEGMENT_FEED))),
    SPAN_ENTRY: ((STAGE_DURATION, "duration"),),
    SPAN_EXECUTION: ((STAGE_DURATION, "duration"),),
    SPAN_EXIT: ((STAGE_DURATION, "duration"), (LATENCY_SEGMENT, Segment(SEGMENT_FEED))),
    SPAN_RISK_CHECK: ((RISK_CHECK_LATENCY, "duration"), (RISK_CHECKS, 1)),
    SPAN_ORDER_EVENT: ((ORDER_EVENTS, 1), (SLIPPAGE, Magnitude(SLIPPAGE_BPS)), (FILL_LATENCY, FILL_LATENCY_S),
                       *_UPDATE_SEGMENTS),
}


def span_measurements(name: str, attributes: Mapping[str, Any],
                      duration_ns: int) -> Iterator[tuple[MetricSpec, Any, Mapping[str, Any]]]:
    """The metrics one of our spans yields by :data:`SPAN_METRICS`, read from its attributes: (metric, value, the
    attributes its labels come from). Used by the exporter's converters, and the trading side's spill when it keeps
    the counts of spans it had to shed."""
    for spec, source in SPAN_METRICS.get(name, ()):
        if source == "duration":
            yield spec, duration_ns / 1e9, attributes
        elif isinstance(source, str):
            value = attributes.get(source)
            if value is not None:
                yield spec, value, attributes
        elif isinstance(source, Magnitude):
            magnitude = finite(attributes.get(source.key))
            if magnitude is not None:
                yield spec, abs(magnitude), attributes
        elif isinstance(source, Segment):
            value = attributes.get(source.key)
            if value is not None:
                yield spec, value, {**{key: attributes.get(key) for key in spec.attributes}, SEGMENT: source.name}
        else:
            yield spec, source, attributes


#: Every metric qt-telemetry defines, by OTel name.
METRICS: Final = {
    m.name: m
    for m in (
        ORDER_LATENCY, ORDER_CANCEL_LATENCY, ORDER_EVENTS, FILL_LATENCY, SLIPPAGE, TRADE_DURATION, STAGE_DURATION,
        TRADES,
        KILL_SWITCH_ACTIVE, KILL_SWITCH_LAST_CHANGE, KILL_SWITCH_ACTIVATIONS, BREAKER_STATE, BREAKER_TRIPS,
        BREAKER_RESETS, RISK_CHECKS, RISK_CHECK_LATENCY, DAILY_PNL_USED, OPEN_POSITIONS, MAX_POSITIONS,
        GROSS_EXPOSURE, FEED_CONNECTED, FEED_GAP, FEED_STALENESS, FEED_MESSAGES, FEED_RECONNECTS,
        LATENCY_SEGMENT, LATENCY_SEGMENT_CLAMPED, VENUE_CLOCK_OFFSET, VENUE_CLOCK_OFFSET_UNCERTAINTY,
        TELEMETRY_ERRORS, TELEMETRY_DROPPED, HEARTBEAT, *RUNTIME_METRICS,
    )
}

# --- Prometheus name derivation (what the collector's translator does) ---------------------------------
_UNIT_SUFFIXES: Final = {
    "s": "seconds", "ms": "milliseconds", "By": "bytes", "1": "ratio", "%": "percent", "m": "meters",
}


def prometheus_name(name: str, unit: str, kind: InstrumentKind) -> str:
    """Derive the Prometheus metric name the collector produces for an OTel metric.

    Dots become underscores, the unit adds a suffix (``s`` -> ``_seconds``; ``1`` on a gauge -> ``_ratio``;
    annotations in braces add nothing) and monotonic counters gain ``_total``.
    """
    base = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
    unit_word = "" if unit.startswith("{") else _UNIT_SUFFIXES.get(unit, "")
    if unit == "1" and kind != "gauge":
        unit_word = ""  # the translator only adds _ratio to gauges
    if unit_word and not base.endswith("_" + unit_word):
        base = f"{base}_{unit_word}"
    if kind == "counter" and not base.endswith("_total"):
        base += "_total"
    return base


def prometheus_label(key: str) -> str:
    """The Prometheus label name for an attribute key (dots become underscores)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


# --- names users give (rules, switches, feeds, breakers): they become metric labels -----------------------

_NAME_LIMIT: Final = 64
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.:-]")


def checked_name(value: object) -> str:
    """A rule/switch/feed/breaker name as a metric label: characters other than letters, digits, ``_ . : -``
    become ``_``, at most 64 characters, ``unknown`` when empty or unreadable. Names are data: never raises."""
    name = text(value, _NAME_LIMIT)
    return _NOT_IN_NAME.sub("_", name) if name else UNKNOWN_VALUE
