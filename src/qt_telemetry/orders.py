"""Order placement (``@traced_order``) and the order lifecycle after it (ack, fills, cancels, rejects).

One placement call is one ``qt.order.place`` span; its latency histogram (whose count is the number of orders by
outcome) carries the span's ids as its exemplar, which is what lets Grafana jump from a slow bucket to the trace.
Fills usually arrive later, on another callback or thread — or before the placement call has even returned:
they rejoin the order's trace through a bounded store keyed by client order id, filled when placement starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar, overload

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags

from qt_telemetry import latency, semconv
from qt_telemetry._config import ConfigurationError, show
from qt_telemetry._engine.recorder.callargs import ArgumentReader
from qt_telemetry._engine.recorder.context import attach_span, detach
from qt_telemetry._engine.recorder.orderstore import OrderRecord, OrderStore, order_id_key
from qt_telemetry._engine.recorder.safety import telemetry_error
from qt_telemetry._engine.recorder.scope import BlockScope, SpanScope, link_to_current
from qt_telemetry._engine.recorder.state import STATE
from qt_telemetry._engine.recorder.wrapping import inside_descriptor, traced
from qt_telemetry._values import clean_attributes, finite, plain, text
from qt_telemetry.flows import current_flow

P = ParamSpec("P")
_monotonic = time.monotonic
R = TypeVar("R")

#: Parameter names read for each order field (first match wins).
ORDER_FIELDS: Mapping[str, tuple[str, ...]] = {
    semconv.SYMBOL: ("symbol", "instrument", "ticker", "pair", "market"),
    semconv.SIDE: ("side", "direction"),
    semconv.ORDER_QUANTITY: ("quantity", "qty", "size", "amount", "volume"),
    semconv.ORDER_TYPE: ("order_type", "type", "ord_type", "kind"),
    semconv.ORDER_PRICE: ("price", "limit_price", "px"),
    semconv.ORDER_CLIENT_ID: ("client_order_id", "client_id", "cl_ord_id", "clordid", "newClientOrderId",
                              "clientOrderId"),
    semconv.VENUE: ("venue", "exchange"),
}
_RESULT_ORDER_ID = ("order_id", "orderId", "exchange_order_id", "id")
#: What an order's updates repeat from the order itself (their metric labels and span context).
_CARRIED = (semconv.VENUE, semconv.SYMBOL, semconv.SIDE, semconv.ORDER_QUANTITY, semconv.STRATEGY,
            semconv.PEER_SERVICE)
ORDER_STORE: OrderStore = STATE.orders
_current_flow = current_flow


class OrderCall(BlockScope):
    """The span of one placement. Remembered by client order id from its start, so early fills find it.

    The trading thread only keeps references to the call's arguments and result; reading the order fields
    out of them (and coercing hostile values) happens when the record is made, off the trading thread.
    """

    name = semconv.SPAN_ORDER
    kind = SpanKind.CLIENT
    stored: OrderRecord | None = None
    client_id: str | None = None
    _source: tuple[Any, ...] | None = None
    _result: Any = None
    _extracted = False
    _unresolved = False
    #: When the placement started (``time.monotonic()`` seconds): the order "sent" of the latency budget.
    sent_at: float | None = None

    def __init__(self, attributes: dict[str, Any], source: tuple[Any, ...] | None = None,
                 client_id: Any = None) -> None:
        super().__init__(attributes)
        self._source = source  # (reader, receiver bound, args, kwargs, flow)
        if client_id is not None:
            self.client_id = text(client_id, 128)

    def open(self, engine: Any, parent: Any = None, current: bool = True) -> None:
        super().open(engine, parent, current)
        if self.name == semconv.SPAN_ORDER:
            self.sent_at = _monotonic()
            flow = self._flow()
            trigger = getattr(flow, "trigger", None) if flow is not None else None
            if trigger is not None:
                self.attributes[semconv.LATENCY_TICK_TO_TRADE_S] = latency.tick_to_trade(
                    trigger, self.sent_at, text(self.attributes.get(semconv.VENUE), 128))
        if self.client_id is not None:
            self.track(self.client_id)

    def _flow(self) -> Any:
        """The trade flow this order belongs to (current when the call was made), if any."""
        return self._source[4] if self._source is not None else current_flow()

    def acknowledged(self, venue_time: Any) -> None:
        """The placement's reply is the venue's ack (``venue_time``: its stamp, epoch seconds): ``order_to_ack`` on
        this span (an ack update later adds no second one)."""
        if self.engine is not None and not self.closed:
            latency.acknowledged(self.order_record(), venue_time, self.attributes)

    def order_record(self) -> OrderRecord:
        """What the store keeps of this order (made once, when the order is first given an id)."""
        record = self.stored
        if record is None:
            record = OrderRecord(self.tid, self.sid, self.sampled, order=self, venue=text(
                self.attributes.get(semconv.VENUE), 128), client_id=self.client_id)
            flow = self._flow()
            if flow is not None:
                record.reference_price = flow.reference_price
                record.trigger = getattr(flow, "trigger", None)
            record.sent_at = self.sent_at
            self.stored = record
        return record

    def track(self, client_order_id: Any = None, *, order_id: Any = None) -> None:
        """Find this order by these ids too: a client order id the venue or its client library made up or
        rewrote (ccxt sends ``lim2`` to gate as ``t-lim2``), the venue's own order id. Its acks and fills then
        join this trace whichever id they name."""
        if self.engine is None:
            return
        try:
            record = self.order_record()
            client_id = text(client_order_id, 128)
            if client_id is not None:
                if self.client_id is None and not self.closed:
                    self.client_id = client_id
                    self.attributes[semconv.ORDER_CLIENT_ID] = client_id
                if record.client_id is None:
                    record.client_id = client_id
                STATE.orders.remember(client_id, record)
            venue_order_id = text(order_id, 128)
            if venue_order_id is not None:
                record.order_id = venue_order_id
                STATE.orders.remember(order_id_key(record.venue, venue_order_id), record)
        except Exception as exc:  # noqa: BLE001
            telemetry_error("order_store_failed", repr(exc))

    def reject(self, reason: Any) -> None:
        """The venue refused the order (e.g. insufficient funds): outcome ``rejected`` with a short reason,
        and a ``reject`` update, as for a reject that comes later."""
        self.outcome = semconv.OUTCOME_REJECTED
        self.attributes[semconv.REASON] = text(reason) or "rejected"

    def outcome_unknown(self) -> None:
        """The request may have reached the venue although the call failed (a timeout): the outcome stays
        ``error``, but the order stays tracked, so a fill that comes later still joins this trace."""
        self._unresolved = True

    def set_result(self, result: Any) -> None:
        """Keep what placement returned; its order id is read when the record is made."""
        self._result = result

    def finishing(self) -> None:
        if self.outcome == semconv.OUTCOME_REJECTED and self.status_code == 0:
            self.status_code = StatusCode.ERROR.value
            self.status_message = f"order rejected: {self.attributes.get(semconv.REASON)}"
        if self.outcome != semconv.OUTCOME_OK and self.stored is not None and not self._unresolved:
            STATE.orders.discard(self.stored)  # no fills follow a failed placement

    def close(self, exc: BaseException | None = None) -> None:
        closing = not self.closed
        super().close(exc)
        if closing and self.name == semconv.SPAN_ORDER and self.outcome == semconv.OUTCOME_REJECTED \
                and self.engine is not None:
            update_order(self.order_record(), semconv.ORDER_REJECT, reason=self.attributes.get(semconv.REASON))

    def extract(self) -> dict[str, Any]:
        """The order's attributes, read from the arguments once (idempotent; safe from any thread: the dict is
        only ever added to in place, so what the trading thread sets meanwhile is never lost)."""
        if not self._extracted:
            source = self._source
            if source is not None:
                reader, receiver, args, kwargs, flow = source
                found = reader.read(receiver, args, kwargs)
                if flow is not None:
                    found.setdefault(semconv.STRATEGY, flow.strategy)
                    found.setdefault(semconv.SYMBOL, flow.symbol)
                attributes = self.attributes
                for key, value in found.items():  # set by us or the decorator (venue, outcome): they win
                    attributes.setdefault(key, value)
                venue = attributes.get(semconv.VENUE)
                if venue is not None:
                    attributes[semconv.PEER_SERVICE] = venue  # Tempo's service graph: bot -> venue edges
            self._extracted = True
        return self.attributes

    def carried_attributes(self) -> dict[str, Any]:
        attributes = self.extract()
        return {k: attributes[k] for k in _CARRIED if k in attributes}

    def finalize(self) -> None:
        self.extract()
        self._source = None  # let go of the caller's objects (the store may keep this scope until a fill)
        result, self._result = self._result, None
        if result is not None:
            order_id = _result_order_id(result)
            if order_id is not None:
                self.attributes.setdefault(semconv.ORDER_ID, order_id)


_OPERATIONS = {"place": semconv.SPAN_ORDER, "cancel": semconv.SPAN_ORDER_CANCEL, "query": semconv.SPAN_ORDER_QUERY}


def order_span(*, venue: Any, symbol: Any = None, side: Any = None, order_type: Any = None, quantity: Any = None,
               price: Any = None, client_order_id: Any = None, operation: str = "place",
               **attributes: Any) -> OrderCall:
    """An order request you cannot decorate, as a block: ``with qt.order_span(venue="binance", symbol=...,
    side="buy", quantity=1, client_order_id=cid) as order:`` (also ``async with``).

    ``operation`` is ``place`` (a ``qt.order.place`` span and the order latency), ``cancel`` (``qt.order.cancel``
    and the cancel latency) or ``query`` (``qt.order.query``, span only). Inside, ``order.set_result(reply)``
    reads the venue's order id from the reply, ``order.reject(reason)`` marks a venue refusal and
    ``order.acknowledged(venue_time)`` says the reply is the venue's ack (its stamp, epoch seconds: the latency
    budget's ``order_to_ack`` on this span).
    """
    name = _OPERATIONS.get(operation)
    if name is None:
        raise ConfigurationError(f"operation={show(operation)}: expected one of {', '.join(_OPERATIONS)}")
    values = {semconv.VENUE: venue, semconv.SYMBOL: symbol, semconv.SIDE: side, semconv.ORDER_TYPE: order_type,
              semconv.ORDER_QUANTITY: quantity, semconv.ORDER_PRICE: price, semconv.ORDER_CLIENT_ID: client_order_id,
              **attributes}
    scope = OrderCall(clean_attributes(values),
                      (_NO_ARGUMENTS, False, (), {}, current_flow()), client_order_id if name == semconv.SPAN_ORDER
                      else None)
    scope.name = name
    return scope


@overload
def traced_order(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def traced_order(
    *, venue: str | None = None, attributes: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def traced_order(
    func: Callable[P, R] | None = None,
    /,
    *,
    venue: str | None = None,
    attributes: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Trace an order-placement function: one ``qt.order.place`` span per call, latency by outcome.

    Use bare (``@traced_order``) or with options (``@traced_order(venue="binance")``) on sync or async
    functions, generators, methods, partials and callable objects. Symbol, side, quantity, order type, price and
    client order id are read from the arguments by parameter name (or from an ``order``/``request`` argument's
    fields); only those names are read. An exception marks the span ERROR with a (redacted) exception event and
    is re-raised unchanged; the return value is passed through as it is.
    """
    if venue is not None and not isinstance(venue, str):
        raise ConfigurationError(f"venue={show(venue)}: expected a string")
    static = _static_attributes(attributes)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        descriptor = inside_descriptor(fn, decorate)
        if descriptor is not None:
            return descriptor  # type: ignore[no-any-return]
        if not callable(fn):
            raise ConfigurationError(f"traced_order: {show(fn)} is not callable")
        reader = ArgumentReader(fn, ORDER_FIELDS)
        function_name = plain(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)) or "order"
        fixed = {**static, semconv.CODE_FUNCTION: function_name}
        if venue is not None:
            fixed[semconv.VENUE] = venue

        def make(engine: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> OrderCall:
            receiver = instance is not None
            return OrderCall(dict(fixed), (reader, receiver, args, kwargs, _current_flow()),
                             reader.first(semconv.ORDER_CLIENT_ID, receiver, args, kwargs))

        return traced(fn, make, _read_result)  # type: ignore[no-any-return]

    if func is not None:
        return decorate(func)
    return decorate


def _static_attributes(attributes: Any) -> dict[str, Any]:
    if attributes is None:
        return {}
    try:
        items = dict(attributes.items()) if isinstance(attributes, Mapping) else dict(attributes)
        if not all(isinstance(key, str) and key for key in items):
            raise ValueError(items)
        return clean_attributes(items)
    except (TypeError, ValueError):
        raise ConfigurationError(f"attributes={show(attributes)}: expected a mapping (or pairs) of names to "
                                 "values") from None


class _NoArguments:
    """The reader of an order whose attributes were given up front."""

    def read(self, receiver: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        return {}


_NO_ARGUMENTS = _NoArguments()


def _read_result(scope: SpanScope, result: Any) -> None:
    if isinstance(scope, OrderCall):
        scope.set_result(result)


def _result_order_id(result: Any) -> Any:
    """The order id in what placement returned (a dict or an object), or None. Never raises: ``isinstance`` itself
    asks a hostile object for its ``__class__``."""
    if result is None:
        return None
    try:
        is_mapping = type(result) is dict or isinstance(result, Mapping)
        for key in _RESULT_ORDER_ID:
            if is_mapping:
                value = result.get(key)
            else:
                value = getattr(result, key, None)
                if callable(value):
                    value = None
            if value is not None:
                return plain(value)
    except Exception:  # noqa: BLE001 - a result we cannot read is still the user's result
        return None
    return None


# --- the order lifecycle after placement ----------------------------------------------------------------

class OrderUpdate(SpanScope):
    """An ack, fill, cancel or reject: a short span under the order's span (or linked to the current one).

    The lifecycle calls return it, already recorded; ``with`` makes it current again for the block, so log
    lines written there carry its trace and span ids (``qt_telemetry.logs``).
    """

    name = semconv.SPAN_ORDER_EVENT
    _attached: list[Any] | None = None

    def __enter__(self) -> OrderUpdate:  # noqa: PYI034 - never subclassed (typing.Self needs Python 3.11)
        try:
            if self.tid:
                if self._attached is None:
                    self._attached = []
                self._attached.append(attach_span(self.live or self))
        except Exception as exc:  # noqa: BLE001
            telemetry_error("order_event_failed", repr(exc))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._attached:
            detach(self._attached.pop())


#: What the lifecycle calls return when nothing is recorded (before ``init()``): ``with`` does nothing.
NO_UPDATE = OrderUpdate({})


def order_acknowledged(client_order_id: Any, *, order_id: Any = None, venue_time: Any = None,
                       **attributes: Any) -> OrderUpdate:
    """The venue acknowledged the order (joins the placement's trace). ``venue_time``: the venue's own
    timestamp of the ack, in epoch seconds (a span attribute)."""
    return _order_event(semconv.ORDER_ACK, client_order_id, None, {
        semconv.ORDER_ID: order_id, semconv.ORDER_VENUE_TIME: latency.venue_seconds(venue_time), **attributes})


def order_filled(client_order_id: Any, *, quantity: Any, price: Any, final: bool | None = None,
                 reference_price: Any = None, venue_time: Any = None, **attributes: Any) -> OrderUpdate:
    """A fill (partial or full). Records fill latency (on the final fill) and slippage in basis points.

    ``final`` defaults to "the filled quantity reached the ordered quantity" (or True when unknown).
    Slippage is measured against ``reference_price``, else the trade flow's signal reference price.
    ``venue_time``: the venue's own timestamp of the fill, in epoch seconds (a span attribute).
    """
    return _order_event(semconv.ORDER_FILL, client_order_id, None,
                        {semconv.ORDER_VENUE_TIME: latency.venue_seconds(venue_time), **attributes},
                        fill=(quantity, price, final, reference_price))


def order_cancelled(client_order_id: Any, *, reason: Any = None, **attributes: Any) -> OrderUpdate:
    """The order was cancelled (by us or the venue)."""
    return _order_event(semconv.ORDER_CANCEL, client_order_id, reason, attributes, final=True)


def order_rejected(client_order_id: Any, *, reason: Any = None, **attributes: Any) -> OrderUpdate:
    """The venue rejected the order after placement; ``reason`` is a short code (e.g. ``insufficient_margin``).
    The update's outcome is ``rejected`` (status ERROR); the placement's own span and latency stay as they were."""
    return _order_event(semconv.ORDER_REJECT, client_order_id, reason, attributes, final=True)


def _order_event(event: str, client_order_id: Any, reason: Any, extra: Mapping[str, Any], *,
                 final: bool = False, fill: Fill | None = None) -> OrderUpdate:
    if STATE.active() is None:
        return NO_UPDATE
    try:
        key = text(client_order_id, 128)
        record = STATE.orders.get(key) if key is not None else None
        if key is None:
            telemetry_error("order_event_without_id", event)
        elif record is None:
            telemetry_error("order_not_tracked", event)
    except Exception as exc:  # noqa: BLE001
        telemetry_error("order_event_failed", repr(exc))
        return NO_UPDATE
    return update_order(record, event, client_order_id=key, reason=reason, attributes=extra, final=final,
                        fill=fill)


#: (quantity, price, final, reference price) of a fill.
Fill = tuple[Any, Any, Any, Any]


def update_order(record: OrderRecord | None, event: str, *, client_order_id: str | None = None,
                 reason: Any = None, attributes: Mapping[str, Any] | None = None, final: bool = False,
                 fill: Fill | None = None) -> OrderUpdate:
    """One update of the order ``record`` (None: an order not tracked, linked to the current span instead).

    The lifecycle calls find the record by client order id; integrations that match replies by the venue's
    order id (ccxt) call this with the record they found. Never raises.
    """
    engine = STATE.active()
    if engine is None:
        return NO_UPDATE
    try:
        attrs: dict[str, Any] = dict(record.attributes) if record is not None else {}
        key = client_order_id if client_order_id is not None else record.client_id if record is not None else None
        if key is not None:
            attrs[semconv.ORDER_CLIENT_ID] = key
        if record is not None and record.order_id is not None:
            attrs[semconv.ORDER_ID] = record.order_id
        attrs.update(clean_attributes(attributes or {}))
        if reason is not None:
            attrs[semconv.REASON] = text(reason) or "unknown"
        if fill is not None:
            event, final = _fill(record, attrs, *fill)
        attrs[semconv.ORDER_EVENT] = event
        if event == semconv.ORDER_ACK:
            latency.acknowledged(record, attrs.get(semconv.ORDER_VENUE_TIME), attrs)
        update = OrderUpdate(attrs)
        if event == semconv.ORDER_REJECT:
            update.outcome = semconv.OUTCOME_REJECTED
            update.status_code = StatusCode.ERROR.value
            update.status_message = f"order rejected: {attrs.get(semconv.REASON, 'unknown')}"
        parent = None
        if record is not None:
            flags = TraceFlags(TraceFlags.SAMPLED if record.sampled else TraceFlags.DEFAULT)
            parent = trace.set_span_in_context(NonRecordingSpan(SpanContext(record.trace_id, record.span_id, False,
                                                                            flags)))
        update.open(engine, parent, current=False)
        if record is None:
            link_to_current(update)
        update.close()
        if final and record is not None:
            STATE.orders.discard(record)
        return update
    except Exception as exc:  # noqa: BLE001
        telemetry_error("order_event_failed", repr(exc))
        return NO_UPDATE


def _fill(record: OrderRecord | None, attrs: dict[str, Any], quantity: Any, price: Any, final: Any,
          reference_price: Any) -> tuple[str, bool]:
    qty = finite(quantity)
    px = finite(price)
    if qty is None:
        telemetry_error("bad_fill_quantity")
    if px is None:
        telemetry_error("bad_fill_price")
    attrs[semconv.FILL_QUANTITY] = qty
    attrs[semconv.FILL_PRICE] = px
    if record is not None and qty is not None:
        record.filled += qty
    if final is None:
        ordered = finite(record.attributes.get(semconv.ORDER_QUANTITY)) if record is not None else None
        final = ordered is None or record is None or record.filled >= ordered - 1e-12
    final = bool(final) if isinstance(final, bool | int) else True
    ref = finite(reference_price) if reference_price is not None else (
        record.reference_price if record is not None else None)
    if px is not None and ref:
        bps = slippage_bps(attrs.get(semconv.SIDE), px, ref)
        if bps is not None:
            attrs[semconv.SLIPPAGE_BPS] = bps
            attrs[semconv.SLIPPAGE_DIRECTION] = semconv.SLIPPAGE_FAVOURABLE if bps < 0 else semconv.SLIPPAGE_ADVERSE
    if final and record is not None:
        attrs[semconv.FILL_LATENCY_S] = (time.perf_counter_ns() - record.placed_ns) / 1e9
        latency.filled(record, attrs.get(semconv.ORDER_VENUE_TIME), attrs)
    return (semconv.ORDER_FILL if final else semconv.ORDER_PARTIAL_FILL), final


def slippage_bps(side: Any, fill_price: float, reference: float) -> float | None:
    """Positive = worse than the reference (adverse): paid more on a buy, received less on a sell."""
    direction = (text(side) or "").lower()
    if direction in ("buy", "b", "long", "bid"):
        sign = 1.0
    elif direction in ("sell", "s", "short", "ask", "offer"):
        sign = -1.0
    else:
        telemetry_error("slippage_unknown_side", direction)
        return None
    return sign * (fill_price - reference) / reference * 10_000.0


__all__ = ["NO_UPDATE", "ORDER_STORE", "OrderCall", "OrderStore", "OrderUpdate", "order_acknowledged",
           "order_cancelled", "order_filled", "order_rejected", "order_span", "traced_order", "update_order"]
