"""The trade flow: one trace per trade, with signal -> entry -> execution -> exit stages under its root span.

``with trade_flow(symbol=..., strategy=...) as flow:`` opens the root span; ``flow.signal()``, ``flow.entry()``,
``flow.execution()`` and ``flow.exit()`` open the four stages as its children, and an order placed inside
``execution()`` becomes a child of that stage. Everything works the same with ``async with``. A flow can
continue a trace started in another service: pass the extracted context (or the raw headers) as ``parent``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind

from qt_telemetry import semconv
from qt_telemetry._runtime import RUNTIME
from qt_telemetry._safety import attribute_value, finite, span_attributes, telemetry_error
from qt_telemetry._spans import is_cancellation, record_error

_CURRENT_FLOW: ContextVar[TradeFlow | None] = ContextVar("qt_telemetry_flow", default=None)

_STAGE_SPANS = {
    "signal": semconv.SPAN_SIGNAL,
    "entry": semconv.SPAN_ENTRY,
    "execution": semconv.SPAN_EXECUTION,
    "exit": semconv.SPAN_EXIT,
}


def current_flow() -> TradeFlow | None:
    """The trade flow active in this context (thread or asyncio task), if any."""
    return _CURRENT_FLOW.get()


class _SpanScope:
    """A span made current for a ``with``/``async with`` block; absorbs its own telemetry failures."""

    _name: str
    _kind: SpanKind = SpanKind.INTERNAL

    def __init__(self) -> None:
        self.span: Span = trace.INVALID_SPAN
        self._token: object = None
        self._started = 0.0
        self.outcome: str | None = None

    # subclasses provide these
    def _parent(self) -> Context | None:
        return None

    def _attributes(self) -> dict[str, Any]:
        return {}

    def _labels(self) -> dict[str, Any]:
        return {}

    def _entered(self) -> None:
        pass

    def _finished(self, outcome: str, elapsed: float) -> None:
        pass

    def __enter__(self) -> Any:
        self._started = time.perf_counter()
        try:
            tracer = RUNTIME.instruments().tracer
            self.span = tracer.start_span(self._name, context=self._parent(), kind=self._kind,
                                          attributes=self._attributes())
            self._token = otel_context.attach(trace.set_span_in_context(self.span))
            self._entered()
        except Exception as exc:  # noqa: BLE001
            telemetry_error("flow_span_failed", repr(exc))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc is not None:
                if is_cancellation(exc):
                    self.outcome = semconv.OUTCOME_CANCELLED
                else:
                    record_error(self.span, exc)
                    self.outcome = semconv.OUTCOME_ERROR
            outcome = self.outcome or semconv.OUTCOME_OK
            self.span.set_attribute(semconv.OUTCOME, outcome)
            # Inside the span, so the duration's exemplar points at this trace.
            self._finished(outcome, time.perf_counter() - self._started)
        except Exception as inner:  # noqa: BLE001
            telemetry_error("flow_span_failed", repr(inner))
        finally:
            try:
                if self._token is not None:
                    otel_context.detach(self._token)  # type: ignore[arg-type]
                    self._token = None
                self.span.end()
            except Exception as inner:  # noqa: BLE001
                telemetry_error("flow_span_failed", repr(inner))

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)

    def set_attribute(self, key: str, value: Any) -> None:
        """Add an attribute to this span (secret-looking keys and None values are dropped)."""
        for k, v in span_attributes([(key, value)]).items():
            self.span.set_attribute(k, v)

    @property
    def trace_id(self) -> str:
        """This span's trace id as 32 hex digits (what Tempo and the exemplars show)."""
        return f"{self.span.get_span_context().trace_id:032x}"


class Stage(_SpanScope):
    """One stage of a trade flow; a context manager (sync and async)."""

    def __init__(self, flow: TradeFlow, stage: str, attributes: Mapping[str, Any]) -> None:
        super().__init__()
        self.flow = flow
        self.stage = stage
        self._name = _STAGE_SPANS[stage]
        self._extra = span_attributes(attributes.items())

    def _parent(self) -> Context | None:
        return trace.set_span_in_context(self.flow.span)

    def _attributes(self) -> dict[str, Any]:
        return {semconv.STAGE: self.stage, semconv.SYMBOL: self.flow.symbol,
                semconv.STRATEGY: self.flow.strategy, **self._extra}

    def _finished(self, outcome: str, elapsed: float) -> None:
        RUNTIME.record(semconv.STAGE_DURATION, elapsed, {
            semconv.STRATEGY: self.flow.strategy, semconv.SYMBOL: self.flow.symbol,
            semconv.STAGE: self.stage, semconv.OUTCOME: outcome,
        })
        if outcome == semconv.OUTCOME_ERROR and self.flow.outcome is None:
            self.flow.outcome = semconv.OUTCOME_ERROR


class TradeFlow(_SpanScope):
    """The root span of one trade. Use :func:`trade_flow` to make one."""

    _name = semconv.SPAN_TRADE

    def __init__(self, symbol: Any, strategy: Any, trade_id: Any, parent: Context | Mapping[str, str] | None,
                 attributes: Mapping[str, Any]) -> None:
        super().__init__()
        self.symbol = str(symbol) if symbol is not None else semconv.UNKNOWN_VALUE
        self.strategy = str(strategy) if strategy is not None else semconv.UNKNOWN_VALUE
        self.trade_id = attribute_value(trade_id)
        self.reference_price: float | None = None
        self.reject_reason: str | None = None
        self._remote_parent = parent
        self._extra = span_attributes(attributes.items())
        self._flow_token: Token[TradeFlow | None] | None = None

    def _parent(self) -> Context | None:
        parent = self._remote_parent
        if parent is None or isinstance(parent, Context):
            return parent
        from qt_telemetry.propagation import extract

        return extract(parent)

    def _attributes(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {semconv.SYMBOL: self.symbol, semconv.STRATEGY: self.strategy, **self._extra}
        if self.trade_id is not None:
            attrs[semconv.TRADE_ID] = self.trade_id
        return attrs

    def _entered(self) -> None:
        self._flow_token = _CURRENT_FLOW.set(self)

    def _finished(self, outcome: str, elapsed: float) -> None:
        if self._flow_token is not None:
            try:
                _CURRENT_FLOW.reset(self._flow_token)
            except ValueError:  # exited in another context than entered: just clear it
                _CURRENT_FLOW.set(None)
            self._flow_token = None
        if self.reject_reason is not None:
            self.span.set_attribute(semconv.REASON, self.reject_reason)
        labels = {semconv.STRATEGY: self.strategy, semconv.SYMBOL: self.symbol, semconv.OUTCOME: outcome}
        RUNTIME.record(semconv.TRADE_DURATION, elapsed, labels)
        RUNTIME.count(semconv.TRADES, labels)

    # --- the four stages ------------------------------------------------------------------------------
    def signal(self, *, confidence: float | None = None, direction: str | None = None,
               reference_price: float | None = None, **attributes: Any) -> Stage:
        """The signal stage. ``reference_price`` is what fills' slippage is measured against."""
        extra: dict[str, Any] = dict(attributes)
        if confidence is not None:
            extra[semconv.SIGNAL_CONFIDENCE] = confidence
        if direction is not None:
            extra[semconv.SIGNAL_DIRECTION] = direction
        if reference_price is not None:
            price = finite(reference_price, "bad_reference_price")
            if price is not None and price > 0:
                self.reference_price = price
                extra[semconv.SIGNAL_REFERENCE_PRICE] = price
        return Stage(self, "signal", extra)

    def entry(self, **attributes: Any) -> Stage:
        """The entry stage: risk checks and the decision to trade."""
        return Stage(self, "entry", attributes)

    def execution(self, **attributes: Any) -> Stage:
        """The execution stage: orders placed here are children of it."""
        return Stage(self, "execution", attributes)

    def exit(self, **attributes: Any) -> Stage:
        """The exit stage: closing the position."""
        return Stage(self, "exit", attributes)

    def reject(self, reason: str) -> None:
        """Mark the trade as rejected (e.g. by a risk rule); the root span and trade counter show it."""
        self.outcome = semconv.OUTCOME_REJECTED
        self.reject_reason = str(reason)[:64]


def trade_flow(*, symbol: Any, strategy: Any, trade_id: Any = None,
               parent: Context | Mapping[str, str] | None = None, **attributes: Any) -> TradeFlow:
    """Open the root span of one trade: ``with trade_flow(symbol="BTCUSDT", strategy="momo") as flow:``.

    ``parent`` continues a trace from another service: an OTel context from :func:`qt_telemetry.extract` or
    the carrier (dict of headers) itself. Extra keyword arguments become span attributes.
    """
    return TradeFlow(symbol, strategy, trade_id, parent, attributes)
