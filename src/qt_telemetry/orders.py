"""Order placement (``@traced_order``) and the order lifecycle after it (ack, fills, cancels, rejects).

One placement call is one span; its latency is recorded *inside* the span so the histogram's exemplar carries
the span's trace id, which is what lets Grafana jump from a slow bucket to the trace. Fills usually arrive later
on another callback or thread: they rejoin the placement's trace through a bounded store keyed by client order id.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar, overload

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode

from qt_telemetry import semconv
from qt_telemetry._callargs import ArgumentReader
from qt_telemetry._runtime import RUNTIME, Instruments
from qt_telemetry._safety import attribute_value, finite, span_attributes, telemetry_error
from qt_telemetry._spans import is_cancellation, record_error
from qt_telemetry.flows import current_flow

P = ParamSpec("P")
R = TypeVar("R")

#: Parameter names read for each order field (first match wins).
ORDER_FIELDS: Mapping[str, tuple[str, ...]] = {
    semconv.SYMBOL: ("symbol", "instrument", "ticker", "pair", "market"),
    semconv.SIDE: ("side", "direction"),
    semconv.ORDER_QUANTITY: ("quantity", "qty", "size", "amount", "volume"),
    semconv.ORDER_TYPE: ("order_type", "type", "ord_type", "kind"),
    semconv.ORDER_PRICE: ("price", "limit_price", "px"),
    semconv.ORDER_CLIENT_ID: ("client_order_id", "client_id", "cl_ord_id", "clordid", "newClientOrderId"),
    semconv.VENUE: ("venue", "exchange"),
}
_RESULT_ORDER_ID = ("order_id", "orderId", "exchange_order_id", "id")
_METRIC_FIELDS = (semconv.VENUE, semconv.SYMBOL, semconv.SIDE, semconv.ORDER_TYPE)


@overload
def traced_order(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def traced_order(
    *, venue: str | None = None, attributes: Mapping[str, Any] | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def traced_order(
    func: Callable[P, R] | None = None,
    /,
    *,
    venue: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Trace an order-placement function: one ``qt.order.place`` span per call, latency and outcome metrics.

    Use bare (``@traced_order``) or with options (``@traced_order(venue="binance")``) on sync or async
    functions and methods. Symbol, side, quantity, order type, price and client order id are read from the
    arguments by parameter name (or from an ``order``/``request`` argument's fields). An exception marks the
    span ERROR, records a (redacted) exception event and is re-raised unchanged.
    """
    static = span_attributes((attributes or {}).items())

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        reader = ArgumentReader(fn, ORDER_FIELDS)
        function_name = getattr(fn, "__qualname__", getattr(fn, "__name__", "order"))
        fixed = {**static, semconv.CODE_FUNCTION: function_name}
        if venue is not None:
            fixed[semconv.VENUE] = venue

        if inspect.iscoroutinefunction(fn):
            @wrapt.decorator
            async def async_wrapper(wrapped: Callable[..., Awaitable[Any]], instance: Any,
                                    args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                inst = RUNTIME.instruments()
                if not inst.enabled:
                    return await wrapped(*args, **kwargs)
                call = _OrderCall.start(inst, reader, fixed, instance, args, kwargs)
                try:
                    result = await wrapped(*args, **kwargs)
                except BaseException as exc:
                    call.fail(exc)
                    raise
                call.succeed(result)
                return result

            return async_wrapper(fn)

        @wrapt.decorator
        def sync_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                         kwargs: dict[str, Any]) -> Any:
            inst = RUNTIME.instruments()
            if not inst.enabled:  # before init(): the no-op path costs one lookup
                return wrapped(*args, **kwargs)
            call = _OrderCall.start(inst, reader, fixed, instance, args, kwargs)
            try:
                result = wrapped(*args, **kwargs)
            except BaseException as exc:
                call.fail(exc)
                raise
            call.succeed(result)
            return result

        return sync_wrapper(fn)

    if func is not None:
        return decorate(func)
    return decorate


class _OrderCall:
    """The telemetry side of one placement call. Every method absorbs its own failures."""

    __slots__ = ("span", "token", "started", "labels", "client_id", "attrs", "inst", "reference_price")
    span: trace.Span | None
    token: object
    started: float
    labels: dict[str, Any]
    client_id: Any
    attrs: dict[str, Any]
    inst: Instruments
    reference_price: float | None

    @classmethod
    def start(cls, inst: Instruments, reader: ArgumentReader, fixed: Mapping[str, Any], instance: Any,
              args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> _OrderCall:
        self = cls.__new__(cls)
        self.span = None
        self.token = None
        self.inst = inst
        self.reference_price = None
        self.started = time.perf_counter()
        try:
            raw = reader.read(instance is not None, args, kwargs)
            attrs: dict[str, Any] = {}
            for key, value in raw.items():
                clean = attribute_value(value)
                if clean is not None:
                    attrs[key] = clean
            attrs.update(fixed)  # the decorator's venue wins over a 'venue' argument
            if semconv.VENUE in attrs:
                attrs[semconv.PEER_SERVICE] = attrs[semconv.VENUE]
            flow = current_flow()
            if flow is not None:
                attrs.setdefault(semconv.STRATEGY, flow.strategy)
                attrs.setdefault(semconv.SYMBOL, flow.symbol)
                self.reference_price = flow.reference_price
            self.attrs = attrs
            self.labels = {k: attrs.get(k) for k in _METRIC_FIELDS}
            self.client_id = attrs.get(semconv.ORDER_CLIENT_ID)
            self.span = inst.tracer.start_span(semconv.SPAN_ORDER, kind=SpanKind.CLIENT, attributes=attrs)
            self.token = otel_context.attach(trace.set_span_in_context(self.span))
        except Exception as exc:  # noqa: BLE001
            telemetry_error("order_span_failed", repr(exc))
            self.attrs = {}
            self.labels = {}
            self.client_id = None
        return self

    def succeed(self, result: Any) -> None:
        try:
            order_id = _result_order_id(result)
            if order_id is not None and self.span is not None:
                self.span.set_attribute(semconv.ORDER_ID, order_id)
            self._finish(semconv.OUTCOME_OK, None)
        except Exception as exc:  # noqa: BLE001
            telemetry_error("order_span_failed", repr(exc))

    def fail(self, exc: BaseException) -> None:
        try:
            cancelled = is_cancellation(exc)
            if self.span is not None:
                if cancelled:
                    self.span.set_attribute(semconv.OUTCOME, semconv.OUTCOME_CANCELLED)
                else:
                    record_error(self.span, exc)
            self._finish(semconv.OUTCOME_CANCELLED if cancelled else semconv.OUTCOME_ERROR,
                         None if cancelled else type(exc).__qualname__)
        except Exception as inner:  # noqa: BLE001
            telemetry_error("order_span_failed", repr(inner))

    def _finish(self, outcome: str, error_type: str | None) -> None:
        elapsed = time.perf_counter() - self.started
        labels = dict(self.labels)
        labels[semconv.OUTCOME] = outcome
        if error_type is not None:
            labels[semconv.ERROR_TYPE] = error_type
        labels = RUNTIME.labels.attributes(labels)  # bounded once for both instruments
        span = self.span
        if span is not None:
            span.set_attribute(semconv.OUTCOME, outcome)
        # Inside the span: the exemplar of this measurement carries the span's trace and span id.
        self.inst.record(semconv.ORDER_LATENCY, elapsed, labels)
        if span is not None:
            if outcome == semconv.OUTCOME_OK and self.client_id is not None:
                ORDER_STORE.remember(str(self.client_id), span.get_span_context(), self.attrs, self.reference_price)
            if self.token is not None:
                otel_context.detach(self.token)  # type: ignore[arg-type]
            span.end()


def _result_order_id(result: Any) -> Any:
    if result is None:
        return None
    for key in _RESULT_ORDER_ID:
        if isinstance(result, Mapping):
            value = result.get(key)
        else:
            value = getattr(result, key, None)
            if callable(value):
                value = None
        if value is not None:
            return attribute_value(value)
    return None


# --- the order lifecycle after placement ----------------------------------------------------------------

@dataclass
class _OrderRecord:
    context: SpanContext
    attrs: dict[str, Any]
    placed: float = field(default_factory=time.monotonic)
    filled: float = 0.0
    reference_price: float | None = None


class OrderStore:
    """Bounded map client order id -> placement span context. Oldest entries go first; it cannot leak."""

    def __init__(self, max_orders: int = 10_000) -> None:
        self.max_orders = max_orders
        self._orders: OrderedDict[str, _OrderRecord] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, client_order_id: str, context: SpanContext, attrs: Mapping[str, Any],
                 reference_price: float | None = None) -> None:
        record = _OrderRecord(context, dict(attrs), reference_price=reference_price)
        with self._lock:
            self._orders[client_order_id] = record
            self._orders.move_to_end(client_order_id)
            while len(self._orders) > self.max_orders:
                self._orders.popitem(last=False)

    def get(self, client_order_id: str) -> _OrderRecord | None:
        with self._lock:
            return self._orders.get(client_order_id)

    def forget(self, client_order_id: str) -> None:
        with self._lock:
            self._orders.pop(client_order_id, None)

    def __len__(self) -> int:
        return len(self._orders)

    def clear(self) -> None:
        with self._lock:
            self._orders.clear()


ORDER_STORE = OrderStore()


def order_acknowledged(client_order_id: Any, *, order_id: Any = None, **attributes: Any) -> None:
    """The venue acknowledged the order (joins the placement's trace)."""
    _order_event("ack", client_order_id, reason=None, extra={semconv.ORDER_ID: order_id, **attributes})


def order_filled(client_order_id: Any, *, quantity: Any, price: Any, final: bool | None = None,
                 reference_price: Any = None, **attributes: Any) -> None:
    """A fill (partial or full). Records fill latency (on the final fill) and slippage in basis points.

    ``final`` defaults to "the filled quantity reached the ordered quantity" (or True when unknown).
    Slippage is measured against ``reference_price``, else the trade flow's signal reference price.
    """
    try:
        key = None if client_order_id is None else str(client_order_id)
        record = ORDER_STORE.get(key) if key is not None else None
        qty = finite(quantity, "bad_fill_quantity")
        px = finite(price, "bad_fill_price")
        if record is not None and qty is not None:
            record.filled += qty
        if final is None:
            ordered = finite(record.attrs.get(semconv.ORDER_QUANTITY), "bad_order_quantity") if record else None
            final = ordered is None or record is None or record.filled >= ordered - 1e-12
        event = "fill" if final else "partial_fill"
        ref = finite(reference_price, "bad_reference_price") if reference_price is not None else (
            record.reference_price if record is not None else None)
        extra = {semconv.FILL_QUANTITY: qty, semconv.FILL_PRICE: px, **attributes}
        _order_event(event, client_order_id, reason=None, extra=extra, fill_price=px, reference=ref,
                     final=bool(final))
    except Exception as exc:  # noqa: BLE001
        telemetry_error("order_event_failed", repr(exc))


def order_cancelled(client_order_id: Any, *, reason: str | None = None, **attributes: Any) -> None:
    """The order was cancelled (by us or the venue)."""
    _order_event("cancel", client_order_id, reason=reason, extra=attributes, final=True)


def order_rejected(client_order_id: Any, *, reason: str | None = None, **attributes: Any) -> None:
    """The venue rejected the order after placement; ``reason`` is a short code (e.g. ``insufficient_margin``)."""
    _order_event("reject", client_order_id, reason=reason, extra=attributes, final=True, error=True)


def _order_event(event: str, client_order_id: Any, *, reason: str | None, extra: Mapping[str, Any],
                 fill_price: float | None = None, reference: float | None = None, final: bool = False,
                 error: bool = False) -> None:
    try:
        key = None if client_order_id is None else str(client_order_id)
        record = ORDER_STORE.get(key) if key is not None else None
        if key is None:
            telemetry_error("order_event_without_id", event)
        elif record is None:
            telemetry_error("order_not_tracked", event)
        attrs = dict(record.attrs) if record is not None else {}
        if key is not None:
            attrs[semconv.ORDER_CLIENT_ID] = key
        attrs.update(span_attributes(extra.items()))
        attrs[semconv.ORDER_EVENT] = event
        if reason is not None:
            attrs[semconv.REASON] = str(reason)[:64]
        labels = {k: attrs.get(k) for k in (semconv.VENUE, semconv.SYMBOL, semconv.SIDE)}

        tracer = RUNTIME.instruments().tracer
        current = trace.get_current_span().get_span_context()
        links = [Link(current)] if current.is_valid else []
        parent = trace.set_span_in_context(NonRecordingSpan(record.context)) if record is not None else None
        span = tracer.start_span(semconv.SPAN_ORDER_EVENT, context=parent, links=links, attributes=attrs)
        with trace.use_span(span, end_on_exit=True):
            if error:
                span.set_status(Status(StatusCode.ERROR, f"order rejected: {reason}"))
            RUNTIME.count(semconv.ORDER_EVENTS, {**labels, semconv.ORDER_EVENT: event, semconv.REASON: reason})
            if fill_price is not None and reference:
                bps = _slippage_bps(attrs.get(semconv.SIDE), fill_price, reference)
                if bps is not None:
                    span.set_attribute(semconv.SLIPPAGE_BPS, bps)
                    RUNTIME.record(semconv.SLIPPAGE, bps, labels)
            if event == "fill" and record is not None:
                RUNTIME.record(semconv.FILL_LATENCY, time.monotonic() - record.placed, labels)
        if final and key is not None:
            ORDER_STORE.forget(key)
    except Exception as exc:  # noqa: BLE001
        telemetry_error("order_event_failed", repr(exc))


def _slippage_bps(side: Any, fill_price: float, reference: float) -> float | None:
    """Positive = worse than the reference: paid more on a buy, received less on a sell."""
    direction = str(side or "").lower()
    if direction in ("buy", "b", "long", "bid"):
        sign = 1.0
    elif direction in ("sell", "s", "short", "ask", "offer"):
        sign = -1.0
    else:
        telemetry_error("slippage_unknown_side", direction)
        return None
    return sign * (fill_price - reference) / reference * 10_000.0


__all__ = [
    "ORDER_STORE", "OrderStore", "order_acknowledged", "order_cancelled", "order_filled", "order_rejected",
    "traced_order",
]
