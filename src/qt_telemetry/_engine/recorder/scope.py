"""The one span scope: orders, trade flows, stages and risk checks all open, attach, record and close through it.

A scope *is* an OTel :class:`~opentelemetry.trace.Span` to the rest of the process: it sits in the OTel context
while open, so spans of other instrumentation (an HTTP client inside an order) become its children, propagators
write its ids into headers, and ``trace.get_current_span().set_attribute(...)`` reaches it. What it costs on the
trading thread is ids, a timestamp, the context and, at the end, one record handed to the engine; building the
exported span and its metrics happens elsewhere (the engine decides where). Nothing here raises into user code.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util import types

from qt_telemetry import semconv
from qt_telemetry._engine.recorder.context import attach_span, current_span, detach
from qt_telemetry._engine.recorder.safety import telemetry_error
from qt_telemetry._engine.recorder.state import STATE
from qt_telemetry._engine.transport.records import SPAN
from qt_telemetry._values import clean_attributes, plain

if TYPE_CHECKING:
    from qt_telemetry._engine.recorder.engines import Engine

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_EMPTY_STATE = TraceState()
_time_ns = time.time_ns
_perf_ns = time.perf_counter_ns
_get_current_span = current_span
_STACK_LIMIT = 32


def is_cancellation(exc: BaseException) -> bool:
    """Task cancellation and Ctrl-C are an outcome of their own, not an error."""
    return isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | GeneratorExit)


class SpanScope(trace.Span):
    """One span from :meth:`open` to :meth:`close`. Subclasses add their attributes and outcome rules."""

    name: str = "qt.span"
    kind: SpanKind = SpanKind.INTERNAL
    #: What the outcome is when the block ends without an exception and nobody decided otherwise.
    default_outcome: str = semconv.OUTCOME_OK

    # Set by open(); class-level defaults keep the hot path from writing fields it does not need.
    engine: Engine | None = None
    live: trace.Span | None = None  # the SDK span, when the engine keeps spans in-process
    tid = 0  # trace id
    sid = 0  # span id
    psid = 0  # parent span id (0: a root)
    parent_remote = False
    sampled = False
    trace_state: TraceState | None = None
    start_ns = 0
    end_ns = 0
    _t0 = 0
    _token: Any = None
    _context: SpanContext | None = None
    outcome: str | None = None
    error_type: str | None = None
    status_code = 0
    status_message: str | None = None
    events: list[tuple[str, int, dict[str, Any]]] | None = None
    links: list[tuple[int, int]] | None = None
    closed = False

    def __init__(self, attributes: dict[str, Any]) -> None:
        self.attributes = attributes

    # --- lifecycle --------------------------------------------------------------------------------------
    def open(self, engine: Engine, parent: Context | None = None, current: bool = True) -> None:
        """Start the span as a child of the current (or given) span and (unless not ``current``) make it current."""
        try:
            self.engine = engine
            engine.begin(self, parent)
            if current:
                self._token = attach_span(self.live or self)
        except Exception as exc:  # noqa: BLE001
            telemetry_error("span_start_failed", repr(exc))
        self._t0 = _perf_ns()

    def close(self, exc: BaseException | None = None) -> None:
        """End the span: outcome from ``exc`` (re-raised by the caller, never here), record, restore the context."""
        elapsed = _perf_ns() - self._t0
        try:
            if self.closed:
                return
            self.closed = True
            self.end_ns = self.start_ns + elapsed
            if exc is not None:
                self._failed(exc)
            if self.outcome is None:
                self.outcome = self.default_outcome
            self.finishing()
            attributes = self.attributes
            attributes[semconv.OUTCOME] = self.outcome
            if self.error_type is not None and self.outcome == semconv.OUTCOME_ERROR:
                attributes[semconv.ERROR_TYPE] = self.error_type  # a reject is a decision, not an error type
            engine = self.engine
            if engine is not None:
                engine.end(self)
        except Exception as inner:  # noqa: BLE001
            telemetry_error("span_end_failed", repr(inner))
        finally:
            token, self._token = self._token, None
            if token is not None:
                detach(token)

    def suspend(self) -> None:
        """Leave the context without ending (a generator yielding): the caller's code is not inside us."""
        token, self._token = self._token, None
        if token is not None:
            detach(token)

    def resume(self) -> None:
        """Become current again (the generator resumed)."""
        if not self.closed and self._token is None:
            try:
                self._token = attach_span(self.live or self)
            except Exception as exc:  # noqa: BLE001
                telemetry_error("span_start_failed", repr(exc))

    def finishing(self) -> None:
        """Hook for subclasses: last attributes before the record is made (outcome is known)."""

    def finalize(self) -> None:
        """Hook for subclasses: work that can wait until the record is made, off the trading thread."""

    def record(self) -> tuple[Any, ...]:
        """This span as a SPAN record (:mod:`qt_telemetry._engine.transport.records`); once, after :meth:`close`."""
        self.finalize()
        state = self.trace_state
        links = self.links
        return (SPAN, self.name, self.kind.value, self.tid.to_bytes(16, "big"), self.sid.to_bytes(8, "big"),
                self.psid.to_bytes(8, "big") if self.psid else None, self.parent_remote, self.sampled,
                self.start_ns, self.end_ns, self.status_code, self.status_message, self.attributes, self.events,
                [(t.to_bytes(16, "big"), s.to_bytes(8, "big")) for t, s in links] if links else None,
                state.to_header() if state else None, None)

    def _failed(self, exc: BaseException) -> None:
        if is_cancellation(exc):
            if self.outcome is None:
                self.outcome = semconv.OUTCOME_CANCELLED
            return
        error_type = _qualname(exc)
        message = _message(exc, error_type)
        if self.outcome is None or self.outcome == self.default_outcome:
            self.outcome = semconv.OUTCOME_ERROR
        self.error_type = error_type
        self.status_code = StatusCode.ERROR.value
        self.status_message = f"{error_type}: {message}"[:512]
        self._add_event(semconv.EVENT_EXCEPTION, {
            semconv.EXCEPTION_TYPE: error_type, semconv.EXCEPTION_MESSAGE: message,
            semconv.EXCEPTION_STACKTRACE: _stack(exc), semconv.EXCEPTION_ESCAPED: True,
        })

    def _add_event(self, name: str, attributes: dict[str, Any], timestamp: int | None = None) -> None:
        if self.events is None:
            self.events = []
        if len(self.events) < 128:
            self.events.append((name, timestamp or _time_ns(), attributes))

    # --- the OTel Span interface (what other code sees in the context) -----------------------------------
    def get_span_context(self) -> SpanContext:
        ctx = self._context
        if ctx is None:
            ctx = self._context = SpanContext(self.tid, self.sid, False,
                                              _SAMPLED if self.sampled else _NOT_SAMPLED,
                                              self.trace_state or _EMPTY_STATE)
        return ctx

    def is_recording(self) -> bool:
        return not self.closed and self.sampled

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if not self.closed and isinstance(key, str) and key:
            clean = plain(value)
            if clean is not None:
                self.attributes[key] = clean

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        if not self.closed:
            self.attributes.update(clean_attributes(attributes))

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self.closed:
            return
        self._add_event(str(name), clean_attributes(attributes or {}), timestamp)

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if not self.closed and context.is_valid:
            if self.links is None:
                self.links = []
            self.links.append((context.trace_id, context.span_id))

    def update_name(self, name: str) -> None:
        """Our span names are fixed (few names, variable data in attributes): ignored."""

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        code = status.status_code if isinstance(status, Status) else status
        if code is StatusCode.ERROR:
            self.status_code = code.value
            self.status_message = (status.description if isinstance(status, Status) else description) or None
        elif code is StatusCode.OK:
            self.status_code = code.value

    def record_exception(self, exception: BaseException, attributes: types.Attributes = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        error_type = _qualname(exception)
        self._add_event(semconv.EVENT_EXCEPTION, {
            semconv.EXCEPTION_TYPE: error_type, semconv.EXCEPTION_MESSAGE: _message(exception, error_type),
            semconv.EXCEPTION_STACKTRACE: _stack(exception), semconv.EXCEPTION_ESCAPED: escaped,
        }, timestamp)

    def end(self, end_time: int | None = None) -> None:
        """Our spans end when their block does; ending one early from outside is ignored."""

    @property
    def trace_id_hex(self) -> str:
        """The trace id as 32 hex digits (what Tempo and the exemplars show)."""
        return f"{self.tid:032x}"


class BlockScope(SpanScope):
    """A scope used as ``with``/``async with``."""

    def _parent(self) -> Context | None:
        return None

    def _opening(self) -> None:
        pass

    def _closing(self) -> None:
        pass

    def __enter__(self) -> Any:
        self._opening()
        engine = STATE.active()
        if engine is not None:
            self.open(engine, self._parent())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self.engine is not None:
                self.close(exc)
            elif exc is not None and self.outcome is None:
                self.outcome = semconv.OUTCOME_ERROR
        finally:
            self._closing()

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)

    @property
    def trace_id(self) -> str:
        """This span's trace id as 32 hex digits (what Tempo and the exemplars show)."""
        return self.trace_id_hex



class EventScope(SpanScope):
    """A short span of its own that carries one event when no trace is active (a kill switch flipped at idle)."""

    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        super().__init__(dict(attributes))
        self.name = name


def record_event(span_name: str, event: str, attributes: dict[str, Any]) -> None:
    """Add ``event`` to the current span; with no trace active, a short span of its own carries it."""
    try:
        clean = clean_attributes(attributes)
        current = _get_current_span()
        if current.is_recording():
            current.add_event(event, clean)
            return
        engine = STATE.active()
        if engine is None:
            return
        scope = EventScope(span_name, clean)
        scope.open(engine)
        scope._add_event(event, clean)
        scope.close()
    except Exception as exc:  # noqa: BLE001
        telemetry_error("event_failed", repr(exc))


def link_to_current(scope: SpanScope) -> None:
    """Link ``scope`` to the span current here (an update arriving inside another trace points back to it)."""
    ctx = _get_current_span().get_span_context()
    if ctx.is_valid:
        scope.links = [(ctx.trace_id, ctx.span_id)]


def _qualname(exc: BaseException) -> str:
    try:
        name = type(exc).__qualname__
        return name if isinstance(name, str) else "Exception"
    except Exception:  # noqa: BLE001
        return "Exception"


def _message(exc: BaseException, error_type: str) -> str:
    try:
        text = str(exc)
        return text[:2048] if isinstance(text, str) else f"<unprintable {error_type}>"
    except Exception:  # noqa: BLE001 - an exception whose __str__ raises
        return f"<unprintable {error_type}>"


def _stack(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=_STACK_LIMIT))[-8192:]
    except Exception:  # noqa: BLE001
        return ""
