"""All process-wide state of qt-telemetry in one object, with one ``reset()`` and one after-fork rule.

The engine (None before ``init()``: every call is then a cheap no-op), the gauge board (state survives engine
changes), the order store, the breakers' last states. Tests reset it between cases; a forked child resets what
it must not share with its parent (locks that may be held, queued records, inherited gauge values).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import _internal as _metrics_internal

from qt_telemetry import _safety, semconv
from qt_telemetry._gauges import GaugeBoard, GaugeValue
from qt_telemetry._orderstore import OrderStore

_TRACE = trace  # module attribute reads on the no-op path


class State:
    def __init__(self) -> None:
        self.engine: Any = None  # an Engine once init() (or a test capture) ran
        self.board = GaugeBoard()
        self.orders = OrderStore()
        self.breakers: dict[str, str] = {}
        self.lock = threading.Lock()
        self._lazy_key: tuple[object, object] | None = None
        self._lazy: Any = None
        self.installed: Any = None  # what init() set up (qt_telemetry._setup.Installed)

    def active(self) -> Any:
        """The engine, or — without ``init()`` but with an SDK provider installed by someone else (e.g.
        ``opentelemetry-instrument``) — an ``sdk`` engine bound to it, or None (record nothing)."""
        engine = self.engine
        if engine is not None:
            return engine
        provider = getattr(_TRACE, "_TRACER_PROVIDER", None)
        if provider is None:
            global JOIN_PENDING
            if JOIN_PENDING:
                JOIN_PENDING = False
                import multiprocessing

                if multiprocessing.parent_process() is not None:  # a "spawn" child of an initialised bot
                    from qt_telemetry._setup import join_parent

                    return join_parent()
            return None
        return self._lazy_engine(provider)

    def _lazy_engine(self, tracer_provider: object) -> Any:
        meter_provider = getattr(_metrics_internal, "_METER_PROVIDER", None)
        key = (tracer_provider, meter_provider)
        if self._lazy_key is not None and self._lazy_key[0] is key[0] and self._lazy_key[1] is key[1]:
            return self._lazy
        from qt_telemetry._setup import sdk_engine_for_installed_providers

        with self.lock:
            self._lazy = sdk_engine_for_installed_providers()
            self._lazy_key = key
            if self._lazy is not None:
                self._lazy.send_board(self.board)
        return self._lazy

    # --- gauges: remembered here, then handed to whichever engine is active ------------------------------
    def set_gauge(self, spec: semconv.MetricSpec, attributes: dict[str, Any], value: GaugeValue | None) -> None:
        self.board.set(spec.name, attributes, value)
        engine = self.active()
        if engine is not None:
            engine.gauge(spec.name, attributes, value)

    def gauge_value(self, spec: semconv.MetricSpec, attributes: dict[str, Any]) -> GaugeValue | None:
        return self.board.get(spec.name, attributes)

    # --- lifecycle --------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything (tests): no engine, no gauges, no orders, no breaker states, no reported kinds."""
        with self.lock:
            self.engine = None
            self.installed = None
            self._lazy = None
            self._lazy_key = None
        _safety.set_error_sink(None)
        _safety.forget_reported_kinds()
        self.board.clear()
        self.orders.clear()
        self.breakers.clear()

    def after_fork_in_child(self) -> None:
        self.lock = threading.Lock()
        self.board.after_fork()
        self.orders.after_fork()
        self.breakers = {}
        engine = self.engine
        if engine is not None:
            engine.after_fork_in_child()


#: Set by init() for multiprocessing "spawn" children: their first call joins the parent's exporter.
JOIN_PENDING = bool(os.environ.get("QT_TELEMETRY__INHERIT"))


def idle() -> bool:
    """Nothing to record and nothing that could start recording: calls go straight through (the no-op path
    before ``init()``; written to be inlined by the wrappers, which read the same three things)."""
    return STATE.engine is None and _TRACE._TRACER_PROVIDER is None and not JOIN_PENDING
STATE = State()
os.register_at_fork(after_in_child=STATE.after_fork_in_child)
