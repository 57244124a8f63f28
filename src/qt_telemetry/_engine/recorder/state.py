"""All process-wide state of qt-telemetry in one object, with one ``reset()`` and one after-fork rule.

The engine (None before ``init()``: every call is then a cheap no-op), the gauge board (state survives engine
changes), the order store, the breakers' last states, the sink of absorbed errors, and the registries of the
integrations. Tests reset it between cases; a forked child resets what it must not share with its parent
(locks that may be held, queued records, inherited gauge values).

State holds; it assembles nothing. :mod:`qt_telemetry._setup` registers the two factories the state needs when
no ``init()`` ran in this process (``join``: a multiprocessing "spawn" child joins its parent's exporter;
``foreign``: an ``sdk`` engine on providers someone else installed), so arrows point down.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import metrics as _METRICS

from qt_telemetry import semconv
from qt_telemetry._engine.recorder.gauges import GaugeBoard, GaugeValue
from qt_telemetry._engine.recorder.orderstore import OrderStore
from qt_telemetry._engine.recorder.otel_internals import TRACE

if TYPE_CHECKING:
    from qt_telemetry._engine.recorder.engines import Engine

_TRACE = TRACE  # the API module (its private provider slot) or its public stand-in: see otel_internals
#: Set by init() for multiprocessing "spawn" children: the address of the family's exporter (never a secret).
INHERIT_VARIABLE = "QT_TELEMETRY__INHERIT"


class Registry(Protocol):
    """What an integration keeps process-wide (patched classes, monitors): cleared by ``reset()``."""

    def clear(self) -> None: ...


class State:
    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.board = GaugeBoard()
        self.orders = OrderStore()
        self.breakers: dict[str, str] = {}
        self.lock = threading.Lock()
        self.installed: Any = None  # what init() set up (qt_telemetry._setup.Installed)
        #: Where counted problems go (the active engine's ``qt.telemetry.errors`` counter), and the kinds
        #: already logged once.
        self.error_sink: Callable[[str], None] | None = None
        self.reported_kinds: set[str] = set()
        #: A "spawn" child of an initialised bot: its first call joins the parent's exporter.
        self.join_pending = bool(os.environ.get(INHERIT_VARIABLE))
        #: Registered by qt_telemetry._setup (see the module docstring).
        self.join: Callable[[], Engine | None] = lambda: None
        self.foreign: Callable[[], Engine | None] = lambda: None
        #: Integration registries by name (qt_telemetry._integrations).
        self.registries: dict[str, Registry] = {}
        #: Exporter processes this process started (their handles, kept while they drain past our exit).
        self.exporters: list[subprocess.Popen[bytes]] = []
        self._foreign_key: object = None
        self._foreign_engine: Engine | None = None

    def active(self) -> Engine | None:
        """The engine, or — without ``init()`` but with an SDK provider installed by someone else (e.g.
        ``opentelemetry-instrument``) — an ``sdk`` engine bound to it, or None (record nothing)."""
        engine = self.engine
        if engine is not None:
            return engine
        provider = _TRACE._TRACER_PROVIDER
        if provider is None:
            if self.join_pending:
                self.join_pending = False
                return self.join()
            return None
        key = (provider, _METRICS.get_meter_provider())
        if self._foreign_key != key:
            with self.lock:
                self._foreign_engine = self.foreign()
                self._foreign_key = key
                if self._foreign_engine is not None:
                    self._foreign_engine.send_board(self.board)
        return self._foreign_engine

    def registry(self, name: str, factory: Callable[[], Registry]) -> Any:
        """The integration's registry called ``name`` (made by ``factory`` the first time)."""
        found = self.registries.get(name)
        if found is None:
            with self.lock:
                found = self.registries.setdefault(name, factory())
        return found

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
            self._foreign_engine = None
            self._foreign_key = None
            self.error_sink = None
            self.reported_kinds.clear()
        for registry in list(self.registries.values()):
            registry.clear()
        self.board.clear()
        self.orders.clear()
        self.breakers.clear()

    def after_fork_in_child(self) -> None:
        self.lock = threading.Lock()
        self.exporters = []  # the parent's children, not ours
        self.board.after_fork()
        self.orders.after_fork()
        self.breakers = {}
        engine = self.engine
        if engine is not None:
            engine.after_fork_in_child()


def idle() -> bool:
    """Nothing to record and nothing that could start recording: calls go straight through (the no-op path
    before ``init()``; written to be inlined by the wrappers, which read the same three things)."""
    return STATE.engine is None and _TRACE._TRACER_PROVIDER is None and not STATE.join_pending


STATE = State()
os.register_at_fork(after_in_child=STATE.after_fork_in_child)
