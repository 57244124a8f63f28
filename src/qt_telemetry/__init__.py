"""qt-telemetry: OpenTelemetry traces and metrics for Python algorithmic-trading systems.

Call :func:`init` once at startup, decorate order placement with :func:`traced_order`, wrap each trade in
:func:`trade_flow`, and observe kill switches, breakers, risk checks and feeds. Everything is safe (and a
no-op) before ``init()`` and never raises into trading code.
"""

from qt_telemetry import logs, semconv
from qt_telemetry._config import ConfigurationError
from qt_telemetry._setup import TelemetryInfo, current, force_flush, init, shutdown
from qt_telemetry._version import __version__
from qt_telemetry.breakers import PyBreakerListener, observe_pybreaker, record_breaker_state
from qt_telemetry.feeds import FeedMonitor
from qt_telemetry.flows import Stage, TradeFlow, current_flow, trade_flow
from qt_telemetry.kill_switch import (
    kill_switch_activation,
    kill_switch_deactivation,
    observe_kill_switch,
    record_kill_switch,
)
from qt_telemetry.latency import MarketEvent, market_event
from qt_telemetry.orders import (
    order_acknowledged,
    order_cancelled,
    order_filled,
    order_rejected,
    order_span,
    traced_order,
)
from qt_telemetry.propagation import extract, inject
from qt_telemetry.risk import RiskCheck, daily_pnl_used, risk_check, set_risk_gauges

__all__ = [
    "ConfigurationError",
    "FeedMonitor",
    "MarketEvent",
    "PyBreakerListener",
    "RiskCheck",
    "Stage",
    "TelemetryInfo",
    "TradeFlow",
    "__version__",
    "current",
    "current_flow",
    "daily_pnl_used",
    "extract",
    "force_flush",
    "init",
    "inject",
    "kill_switch_activation",
    "kill_switch_deactivation",
    "logs",
    "market_event",
    "observe_kill_switch",
    "observe_pybreaker",
    "order_acknowledged",
    "order_cancelled",
    "order_filled",
    "order_rejected",
    "order_span",
    "record_breaker_state",
    "record_kill_switch",
    "risk_check",
    "semconv",
    "set_risk_gauges",
    "shutdown",
    "traced_order",
    "trade_flow",
]
