"""The trade flow: one trace per trade, with signal -> entry -> execution -> exit stages under its root span.

``with trade_flow(symbol=..., strategy=...) as flow:`` opens the root span; ``flow.signal()``, ``flow.entry()``,
``flow.execution()`` and ``flow.exit()`` open the four stages as its children, and an order placed inside
``execution()`` becomes a child of that stage. Everything works the same with ``async with``. A flow can
continue a trace started in another service: pass the extracted context (or the raw headers) as ``parent``.

A trade that outlives one block (a bot whose callbacks see its signal, its orders and its exit hours apart) opens
the flow and its stages with ``start()`` and ends them with ``finish()``; ``with flow.activate():`` makes a
started flow or stage current for one call, so risk checks and orders made there join it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from qt_telemetry import semconv
from qt_telemetry._engine.recorder.safety import telemetry_error
from qt_telemetry._engine.recorder.scope import BlockScope
from qt_telemetry._engine.recorder.state import STATE, idle
from qt_telemetry._values import clean_attributes, finite, plain, text
from qt_telemetry.latency import MarketEvent, trigger_attributes

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


_FINISH_OUTCOMES = (semconv.OUTCOME_OK, semconv.OUTCOME_REJECTED, semconv.OUTCOME_CANCELLED, semconv.OUTCOME_ERROR)


class _Lasting(BlockScope):
    """Start and finish without a block, for a flow or stage that spans several calls."""

    def _flow(self) -> TradeFlow:
        raise NotImplementedError

    def start(self) -> Any:
        """Open now, without a block and without becoming current; :meth:`finish` ends it. Returns itself."""
        engine = STATE.active()
        if engine is not None and self.engine is None and not self.closed:
            self.open(engine, self._parent(), current=False)
        return self

    def finish(self, *, outcome: str | None = None) -> None:
        """End what :meth:`start` opened (again: nothing). ``outcome``: ``ok`` (the default unless rejected),
        ``rejected``, ``cancelled`` or ``error``."""
        if outcome is not None:
            if outcome in _FINISH_OUTCOMES:
                self.outcome = outcome
            else:
                telemetry_error("bad_outcome", text(outcome) or "")
        if self.engine is not None:
            self.close()

    def activate(self) -> AbstractContextManager[Any]:
        """Current for the block, not ended by it: spans made inside (risk checks, orders) become children, and
        :func:`current_flow` is this flow."""
        return self._active()

    @contextmanager
    def _active(self) -> Iterator[Any]:
        flow_token = _CURRENT_FLOW.set(self._flow())
        token = otel_context.attach(trace.set_span_in_context(self)) if self.engine is not None else None
        try:
            yield self
        finally:
            if token is not None:
                otel_context.detach(token)
            try:
                _CURRENT_FLOW.reset(flow_token)
            except ValueError:  # left in another context than entered: just clear it
                _CURRENT_FLOW.set(None)


class Stage(_Lasting):
    """One stage of a trade flow; a context manager (sync and async)."""

    def __init__(self, flow: TradeFlow, stage: str, attributes: Mapping[str, Any]) -> None:
        super().__init__({semconv.STAGE: stage, semconv.SYMBOL: flow.symbol, semconv.STRATEGY: flow.strategy,
                          **clean_attributes(attributes)})
        self.flow = flow
        self.stage = stage
        self.name = _STAGE_SPANS[stage]

    def _parent(self) -> Context | None:
        return trace.set_span_in_context(self.flow) if self.flow.engine is not None else None

    def _flow(self) -> TradeFlow:
        return self.flow

    def finishing(self) -> None:
        if self.outcome == semconv.OUTCOME_ERROR and self.flow.outcome is None:
            self.flow.outcome = semconv.OUTCOME_ERROR


class TradeFlow(_Lasting):
    """The root span of one trade. Use :func:`trade_flow` to make one."""

    name = semconv.SPAN_TRADE

    def __init__(self, symbol: Any, strategy: Any, trade_id: Any, parent: Context | Mapping[str, str] | None,
                 attributes: Mapping[str, Any]) -> None:
        self.symbol = text(symbol) or semconv.UNKNOWN_VALUE
        self.strategy = text(strategy) or semconv.UNKNOWN_VALUE
        attrs = {semconv.SYMBOL: self.symbol, semconv.STRATEGY: self.strategy, **clean_attributes(attributes)}
        tid = plain(trade_id)
        if tid is not None:
            attrs[semconv.TRADE_ID] = tid
        super().__init__(attrs)
        self.reference_price: float | None = None
        self.reject_reason: str | None = None
        #: The market-data event that triggered this trade (``signal(trigger=...)``): the latency budget's start.
        self.trigger: MarketEvent | None = None
        self._remote_parent = parent
        self._flow_token: Token[TradeFlow | None] | None = None

    def _parent(self) -> Context | None:
        parent = self._remote_parent
        if parent is None or isinstance(parent, Context):
            return parent
        from qt_telemetry.propagation import extract

        return extract(parent)

    def _flow(self) -> TradeFlow:
        return self

    def _opening(self) -> None:
        self._flow_token = _CURRENT_FLOW.set(self)

    def _closing(self) -> None:
        token, self._flow_token = self._flow_token, None
        if token is not None:
            try:
                _CURRENT_FLOW.reset(token)
            except ValueError:  # exited in another context than entered: just clear it
                _CURRENT_FLOW.set(None)

    def finishing(self) -> None:
        if self.reject_reason is not None:
            self.attributes[semconv.REASON] = self.reject_reason

    # --- the four stages ------------------------------------------------------------------------------
    def signal(self, *, confidence: Any = None, direction: Any = None, reference_price: Any = None,
               trigger: MarketEvent | None = None, **attributes: Any) -> Stage:
        """The signal stage. ``reference_price`` is what fills' slippage is measured against. ``trigger``: the
        market-data event the signal came from (``FeedMonitor.message(...)`` or ``qt.market_event(...)``): the
        trade's latency budget starts there (``feed`` on this stage; ``tick_to_trade`` and ``total`` on its
        orders)."""
        extra: dict[str, Any] = dict(attributes)
        if trigger is not None:
            self._triggered(trigger, extra)
        if confidence is not None:
            extra[semconv.SIGNAL_CONFIDENCE] = confidence
        if direction is not None:
            extra[semconv.SIGNAL_DIRECTION] = direction
        if reference_price is not None:
            price = finite(reference_price)
            if price is not None and price > 0:
                self.reference_price = price
                extra[semconv.SIGNAL_REFERENCE_PRICE] = price
            else:
                telemetry_error("bad_reference_price")
        return Stage(self, "signal", extra)

    def entry(self, **attributes: Any) -> Stage:
        """The entry stage: risk checks and the decision to trade."""
        return Stage(self, "entry", attributes)

    def execution(self, **attributes: Any) -> Stage:
        """The execution stage: orders placed here are children of it."""
        return Stage(self, "execution", attributes)

    def exit(self, *, trigger: MarketEvent | None = None, **attributes: Any) -> Stage:
        """The exit stage: closing the position. Its orders are a new decision: measured from ``trigger`` (the
        market-data event the exit came from) when given, else not from the signal's (hours may lie between)."""
        extra: dict[str, Any] = dict(attributes)
        self.trigger = None
        if trigger is not None:
            self._triggered(trigger, extra)
        return Stage(self, "exit", extra)

    def _triggered(self, trigger: Any, attributes: dict[str, Any]) -> None:
        """``trigger`` starts the latency budget of the orders that follow; its attributes go on the stage."""
        attributes.update(trigger_attributes(trigger))
        if type(trigger) is MarketEvent:  # never isinstance: a hostile object may refuse its __class__
            self.trigger = trigger

    def reject(self, reason: Any) -> None:
        """Mark the trade as rejected (e.g. by a risk rule); the root span and trade counter show it."""
        self.outcome = semconv.OUTCOME_REJECTED
        self.reject_reason = text(reason) or "rejected"


def trade_flow(*, symbol: Any, strategy: Any, trade_id: Any = None,
               parent: Context | Mapping[str, str] | None = None, **attributes: Any) -> TradeFlow:
    """Open the root span of one trade: ``with trade_flow(symbol="BTCUSDT", strategy="momo") as flow:``.

    ``parent`` continues a trace from another service: an OTel context from :func:`qt_telemetry.extract` or
    the carrier (dict of headers) itself. Extra keyword arguments become span attributes. Before ``init()``
    this is a shared do-nothing flow (its stages are itself): the no-op path allocates nothing.
    """
    if idle():
        return _IDLE_FLOW
    return TradeFlow(symbol, strategy, trade_id, parent, attributes)


class _IdleFlow(TradeFlow):
    """The flow of a process that records nothing: every method and block does nothing, reentrantly."""

    def __init__(self) -> None:
        self.symbol = self.strategy = semconv.UNKNOWN_VALUE
        self.reference_price = None
        self.reject_reason = None
        self.trigger = None
        self.attributes = {}

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def signal(self, **attributes: Any) -> Any:
        return self

    def entry(self, **attributes: Any) -> Any:
        return self

    def execution(self, **attributes: Any) -> Any:
        return self

    def exit(self, **attributes: Any) -> Any:
        return self

    def reject(self, reason: Any) -> None:
        pass

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def start(self) -> Any:
        return self

    def finish(self, *, outcome: str | None = None) -> None:
        pass

    def activate(self) -> AbstractContextManager[Any]:
        return nullcontext(self)


_IDLE_FLOW = _IdleFlow()
