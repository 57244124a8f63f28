"""The ccxt integration (public face: :mod:`qt_telemetry.ccxt`, which documents what becomes what).

Each traced ccxt call is one :class:`_CcxtCall`: the order spans it opens (one, or one per order of a batch) made
with :func:`~qt_telemetry.order_span`, run through :func:`~qt_telemetry._engine.recorder.wrapping.traced` (sync
and async alike). What the venue answers — in the reply, in later fetches, on the private streams — moves the
lifecycle of the one order it names: matched by the venue's order id first, then by a client order id that is
ours (one we sent, or one ccxt sent for us), never by a placeholder a venue fills in for every order (gate's
``apiv4``).
"""

from __future__ import annotations

import inspect
import json
import re
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload
from urllib.parse import parse_qsl, urlsplit

import wrapt
from opentelemetry import context as otel_context

from qt_telemetry import semconv
from qt_telemetry._config import ConfigurationError, show
from qt_telemetry._engine.recorder.orderstore import OrderRecord, order_id_key
from qt_telemetry._engine.recorder.safety import telemetry_error
from qt_telemetry._engine.recorder.state import STATE
from qt_telemetry._engine.recorder.wrapping import traced
from qt_telemetry._values import finite, text
from qt_telemetry.feeds import FeedMonitor
from qt_telemetry.latency import MarketEvent, clock_sample, market_event
from qt_telemetry.orders import OrderCall, order_span, update_order

E = TypeVar("E")
_EPSILON = 1e-12


@dataclass(frozen=True)
class _Method:
    """One ccxt order method: where its arguments are (positions after ``self``) and what it is to us."""

    name: str
    #: ``place``, ``cancel`` or ``query``: the span (``qt.order.place``, ``qt.order.cancel``, ``qt.order.query``).
    operation: str
    parameters: str
    #: What ccxt returns: one ``order``, a list of ``orders`` or of ``trades``.
    reply: str = "order"
    order_type: str | None = None
    #: Changes an order placed before: later fills stay with that order's placement.
    edit: bool = False

    positions: Mapping[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", {p: i for i, p in enumerate(self.parameters.split())})

    def arg(self, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        i = self.positions.get(name)
        if i is None:
            return None
        return args[i] if i < len(args) else kwargs.get(name)


_PLACE = "symbol type side amount price params"
_EDIT = "id symbol type side amount price params"
_ONE = "id symbol params"
_MANY = "symbol since limit params"
#: ccxt's unified signatures (``Exchange.create_order(symbol, type, side, amount, price=None, params={})`` ...).
ORDER_METHODS: Mapping[str, _Method] = {m.name: m for m in (
    _Method("create_order", "place", _PLACE),
    _Method("create_order_ws", "place", _PLACE),
    _Method("create_limit_order", "place", "symbol side amount price params", order_type="limit"),
    _Method("create_market_order", "place", "symbol side amount price params", order_type="market"),
    _Method("create_orders", "place", "orders params", reply="orders"),
    _Method("edit_order", "place", _EDIT, edit=True),
    _Method("edit_order_ws", "place", _EDIT, edit=True),
    _Method("cancel_order", "cancel", _ONE),
    _Method("cancel_order_ws", "cancel", _ONE),
    _Method("cancel_orders", "cancel", "ids symbol params", reply="orders"),
    _Method("cancel_all_orders", "cancel", "symbol params", reply="orders"),
    _Method("cancel_all_orders_ws", "cancel", "symbol params", reply="orders"),
    _Method("fetch_order", "query", _ONE),
    _Method("fetch_order_ws", "query", _ONE),
    _Method("fetch_open_orders", "query", _MANY, reply="orders"),
    _Method("fetch_closed_orders", "query", _MANY, reply="orders"),
    _Method("fetch_orders", "query", _MANY, reply="orders"),
    _Method("fetch_my_trades", "query", _MANY, reply="trades"),
)}
#: ``params`` keys that carry a client order id: ccxt's unified one first, then venue-specific spellings.
CLIENT_ID_PARAMS = ("clientOrderId", "newClientOrderId", "origClientOrderId", "clientOid", "clOrdId",
                    "orderLinkId", "clientAlgoId", "text")
#: Request fields (any case, ``_``/``-`` ignored) in which ccxt sends a client order id to a venue: ``newClientOrderId``
#: (binance), ``text`` (gate, ``t-`` + the id), ``clOrdId`` (okx), ... Not ``client_id``: Deribit's login sends the
#: API key under it.
_SENT_ID_FIELDS = frozenset({"clientorderid", "newclientorderid", "clientoid", "clordid", "orderlinkid",
                             "clientalgoid", "text"})
#: Attributes of an exchange that hold credentials (ccxt's ``requiredCredentials``).
CREDENTIALS = ("apiKey", "secret", "password", "uid", "login", "twofa", "privateKey", "walletAddress", "token",
               "accountId")
#: ``ccxt.pro`` market-data methods -> (channel, takes a list of symbols).
WATCH_METHODS: Mapping[str, tuple[str, bool]] = {
    "watch_trades": ("trades", False),
    "watch_ticker": ("ticker", False),
    "watch_order_book": ("orderbook", False),
    "watch_ohlcv": ("ohlcv", False),
    "watch_tickers": ("ticker", True),
    "watch_trades_for_symbols": ("trades", True),
    "watch_order_book_for_symbols": ("orderbook", True),
}
#: ``ccxt.pro`` private streams -> what they return (orders or trades): each update moves its order on.
STREAM_METHODS: Mapping[str, str] = {"watch_orders": "orders", "watch_my_trades": "trades"}
#: Where ccxt hands over every request it sends: REST (sync and async) and websocket.
_REQUEST_HOOKS = ("set_last_request", "watch")
#: Calls whose reply is the venue's clock (milliseconds): each one a sample of the venue's clock offset.
CLOCK_METHODS = ("fetch_time",)
#: Market-data messages remembered per (venue, symbol) as triggers (:func:`market_event`), at most.
MAX_TRIGGERS = 1000

_current: ContextVar[_CcxtCall | None] = ContextVar("qt_telemetry_ccxt_call", default=None)
_watching: ContextVar[bool] = ContextVar("qt_telemetry_ccxt_watching", default=False)
_errors: dict[str, Any] = {}
_reasons: dict[type, str] = {}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")


class _Registry:
    """What the integration keeps process-wide (``STATE.registry("ccxt")``). ``STATE.reset()`` clears what it
    learnt (secrets registered per engine, feed state); the instrumentation itself stays, like a decorator, until
    :func:`uninstrument_ccxt` (:meth:`undo`)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.patched: list[tuple[Any, str, Any]] = []  # (class, name, original) of the class-level switch
        self.instances: weakref.WeakSet[Any] = weakref.WeakSet()
        self.secrets_seen: weakref.WeakKeyDictionary[Any, tuple[Any, tuple[str, ...]]] = \
            weakref.WeakKeyDictionary()
        self.monitors: dict[str, FeedMonitor] = {}
        self.down: set[tuple[str, str]] = set()
        #: The last ``watch_*`` message per (venue, symbol) and the event it was: (message, event).
        self.triggers: dict[tuple[str | None, str | None], tuple[Any, MarketEvent]] = {}

    def clear(self) -> None:
        with self.lock:
            self.secrets_seen.clear()
            self.monitors.clear()
            self.down.clear()
            self.triggers.clear()

    def undo(self) -> None:
        with self.lock:
            for owner, name, original in reversed(self.patched):
                setattr(owner, name, original)
            self.patched.clear()
            for exchange in list(self.instances):
                for name in (*ORDER_METHODS, *WATCH_METHODS, *STREAM_METHODS, *_REQUEST_HOOKS, *CLOCK_METHODS):
                    if name in exchange.__dict__:
                        delattr(exchange, name)
            self.instances.clear()
        self.clear()


def _registry() -> _Registry:
    registry: _Registry = STATE.registry("ccxt", _Registry)
    return registry


# --- switching on and off ------------------------------------------------------------------------------------

@overload
def instrument_ccxt(exchange: None = None, /) -> None: ...
@overload
def instrument_ccxt(exchange: E, /) -> E: ...


def instrument_ccxt(exchange: Any = None, /) -> Any:
    """Trace the order calls of one ccxt exchange (returned as is), or — without an argument — of every exchange
    class of ``ccxt``, ``ccxt.async_support`` and ``ccxt.pro``, present and future instances. Idempotent."""
    _load_errors()
    if exchange is None:
        _instrument_classes()
        return None
    if not callable(getattr(exchange, "create_order", None)):
        raise ConfigurationError(f"instrument_ccxt: {show(exchange)} is not a ccxt exchange")
    registry = _registry()
    with registry.lock:
        if not registry.patched and exchange not in registry.instances:
            _wrap_instance(exchange)
            registry.instances.add(exchange)
    engine = STATE.active()
    if engine is not None:
        _register_secrets(engine, exchange)
    return exchange


def uninstrument_ccxt() -> None:
    """Undo every :func:`instrument_ccxt` (classes and instances) and forget feed state (for tests)."""
    _registry().undo()


def _wrap_instance(exchange: Any) -> None:
    for name, method in ORDER_METHODS.items():
        original = getattr(exchange, name, None)
        if callable(original) and (not _is_async(exchange) or inspect.iscoroutinefunction(original)):
            setattr(exchange, name, traced(original, _maker(method, exchange), _read_reply))
    for name, (channel, many) in WATCH_METHODS.items():
        if inspect.iscoroutinefunction(getattr(exchange, name, None)):
            wrapt.wrap_function_wrapper(exchange, name, _watch_wrapper(channel, many))
    for name, kind in STREAM_METHODS.items():
        if inspect.iscoroutinefunction(getattr(exchange, name, None)):
            wrapt.wrap_function_wrapper(exchange, name, _stream_wrapper(kind))
    for name in _REQUEST_HOOKS:
        if callable(getattr(exchange, name, None)):
            wrapt.wrap_function_wrapper(exchange, name, _sent)
    for name in CLOCK_METHODS:
        if callable(getattr(exchange, name, None)):
            wrapt.wrap_function_wrapper(exchange, name, _timed)


def _is_async(exchange: Any) -> bool:
    return any(cls.__module__.startswith(("ccxt.async_support.", "ccxt.pro.")) for cls in type(exchange).__mro__)


def _instrument_classes() -> None:
    try:
        import ccxt  # type: ignore[import-untyped,import-not-found,unused-ignore]
        import ccxt.async_support  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:  # pragma: no cover - depends on the extra being installed
        raise ConfigurationError("instrument_ccxt needs ccxt: pip install -e '.[ccxt]' in the qt-telemetry "
                                 "checkout") from exc
    modules: list[Any] = [ccxt, ccxt.async_support]
    try:
        import ccxt.pro  # type: ignore[import-untyped,import-not-found,unused-ignore]

        modules.append(ccxt.pro)
    except ImportError:  # pragma: no cover - ccxt.pro ships with ccxt since 4.0
        pass
    registry = _registry()
    with registry.lock:
        if registry.patched:
            return
        classes: list[Any] = [ccxt.Exchange, ccxt.async_support.Exchange]
        for module in modules:
            classes.extend(c for c in (getattr(module, i, None) for i in module.exchanges) if isinstance(c, type))
        asynchronous = ccxt.async_support.Exchange

        def patch(cls: Any, name: str, wrapper: Any) -> None:
            registry.patched.append((cls, name, cls.__dict__[name]))
            setattr(cls, name, wrapper)

        for cls in dict.fromkeys(classes):  # in order, once
            for name, method in ORDER_METHODS.items():
                original = cls.__dict__.get(name)
                if original is None or not callable(original):
                    continue
                if issubclass(cls, asynchronous) and not inspect.iscoroutinefunction(original):
                    continue  # a sync helper of an async exchange returns a coroutine: its callee is traced
                patch(cls, name, traced(original, _maker(method, None), _read_reply))
            for name in CLOCK_METHODS:
                original = cls.__dict__.get(name)
                if callable(original):
                    patch(cls, name, wrapt.FunctionWrapper(original, _timed))
            if cls.__module__.startswith("ccxt.pro."):
                for name, (channel, many) in WATCH_METHODS.items():
                    original = cls.__dict__.get(name)
                    if inspect.iscoroutinefunction(original):
                        patch(cls, name, wrapt.FunctionWrapper(original, _watch_wrapper(channel, many)))
                for name, kind in STREAM_METHODS.items():
                    original = cls.__dict__.get(name)
                    if inspect.iscoroutinefunction(original):
                        patch(cls, name, wrapt.FunctionWrapper(original, _stream_wrapper(kind)))
        for cls in (ccxt.Exchange, asynchronous):  # set_last_request (both, inherited) and watch (async only)
            for name in _REQUEST_HOOKS:
                if name in cls.__dict__:
                    patch(cls, name, wrapt.FunctionWrapper(cls.__dict__[name], _sent))


def _load_errors() -> None:
    if _errors:
        return
    try:
        from ccxt.base import errors  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:  # pragma: no cover - depends on the extra being installed
        raise ConfigurationError("instrument_ccxt needs ccxt: pip install -e '.[ccxt]' in the qt-telemetry "
                                 "checkout") from exc
    _errors["rejected"] = (errors.InsufficientFunds, errors.InvalidOrder)
    _errors["timeout"] = errors.RequestTimeout
    _errors["network"] = errors.NetworkError


# --- one call ------------------------------------------------------------------------------------------------

class _CcxtCall:
    """The order spans of one ccxt call (a :class:`~qt_telemetry._engine.recorder.wrapping.CallScope`): one, or
    one per order of a batch. The first is current while the call runs (ccxt's HTTP request is its child); the
    others of a batch are its siblings, linked to it."""

    def __init__(self, method: _Method, exchange: Any, orders: list[OrderCall], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:
        self.method = method
        self.venue = text(getattr(exchange, "id", None), 128)
        self.orders = orders
        self.args = args
        self.kwargs = kwargs
        self.reply: Any = None
        #: Client order ids found in the requests ccxt sent during the call (those it made up or rewrote).
        self.sent_ids: list[str] = []
        #: The order an edit, cancel or query is about (placements are their own).
        self.target: OrderRecord | None = None
        #: A batch's orders with their replies.
        self.paired: list[tuple[OrderCall, Mapping[str, Any]]] = []
        self._token: Token[_CcxtCall | None] | None = None

    # --- the CallScope protocol -----------------------------------------------------------------------------
    def open(self, engine: Any) -> None:
        parent = otel_context.get_current()
        first, *rest = self.orders
        first.open(engine)
        for order in rest:
            order.open(engine, parent, current=False)
            order.add_link(first.get_span_context())
        self._token = _current.set(self)

    def close(self, exc: BaseException | None = None) -> None:
        token, self._token = self._token, None
        if token is not None:
            try:
                _current.reset(token)
            except ValueError:  # closed in another context than it opened in: nothing to restore here
                _current.set(None)
        for order in reversed(self.orders):  # the current one last: it restores the caller's context
            if exc is not None:
                _classify(order, exc, self.method)
            order.close(exc)
        if exc is None:
            self._advance()

    def suspend(self) -> None:
        self.orders[0].suspend()

    def resume(self) -> None:
        self.orders[0].resume()

    # --- what ccxt sent and what the venue answered ------------------------------------------------------------
    def sent(self, request: Any) -> None:
        """A request ccxt is about to send for this call: the client order ids in it are ours. A placement gets
        them at once (a stream update may name them before the reply does); a batch's list, item by item."""
        found = [i for i in (text(v, 128) for v in _sent_ids(request)) if i is not None]
        self.sent_ids.extend(found)
        if self.method.operation != "place" or self.method.edit:
            return
        items = _batch_items(request)
        per_order = [found] if len(self.orders) == 1 else [
            [i for i in (text(v, 128) for v in _walk(item, 0)) if i is not None] for item in items] \
            if items is not None and len(items) == len(self.orders) else []
        for order, client_ids in zip(self.orders, per_order, strict=False):
            for client_id in client_ids:
                order.track(client_id)

    def read(self, reply: Any) -> None:
        """The reply onto the spans (before they close): ids, status, fill so far; the ids the orders are known by."""
        self.reply = reply
        if self.method.reply == "order" and isinstance(reply, Mapping):
            self._read_order(self.orders[0], reply)
        elif self.method.operation == "place" and isinstance(reply, list):  # a batch: one reply per order
            for order, item in self._pairs(reply):
                self._read_order(order, item)
                if item.get("status") == "rejected":
                    order.reject(_label(item))

    def _pairs(self, reply: list[Any]) -> list[tuple[OrderCall, Mapping[str, Any]]]:
        """Each order of a batch with its reply: by client id (ccxt may sort the replies: gate's refused ones come
        first), the rest in order."""
        items = [item for item in reply if isinstance(item, Mapping)]
        pairs: dict[int, tuple[OrderCall, Mapping[str, Any]]] = {}
        unmatched = list(range(len(self.orders)))
        rest = []
        for item in items:
            ids = set(_client_ids(item))
            i = next((i for i in unmatched if ids and self.orders[i].stored is not None
                      and any(STATE.orders.get(c) is self.orders[i].stored for c in ids)), None)
            if i is None:
                rest.append(item)
            else:
                unmatched.remove(i)
                pairs[i] = (self.orders[i], item)
        for i, item in zip(unmatched, rest, strict=False):
            pairs[i] = (self.orders[i], item)
        self.paired = [pairs[i] for i in sorted(pairs)]
        return self.paired

    def _read_order(self, call: OrderCall, reply: Mapping[str, Any]) -> None:
        call.set_result(reply)
        for key, value in ((semconv.ORDER_STATUS, reply.get("status")), (semconv.ORDER_FILLED, reply.get("filled")),
                           (semconv.ORDER_AVERAGE, reply.get("average"))):
            if value is not None:
                call.set_attribute(key, value)
        order_id = text(reply.get("id"), 128)
        client_ids = _client_ids(reply)
        method = self.method
        if method.operation == "place" and not method.edit:
            if order_id is not None:
                call.track(order_id=order_id)
            for client_id in client_ids:
                if self._ours(client_id, call.stored):
                    call.track(client_id)
            if reply.get("timestamp") is not None and reply.get("status") != "rejected":
                call.acknowledged(_seconds(reply.get("timestamp")))  # the venue's stamp: when it took the order
            return
        record = _find(self.venue, text(method.arg("id", self.args, self.kwargs), 128), self._param_ids()) or \
            _find(self.venue, order_id, client_ids)
        if method.edit:
            if record is None:  # an order placed elsewhere: from now on, the edit is the placement we know
                call.track(order_id=order_id)
                record = call.stored
            elif order_id is not None and order_id != record.order_id:  # amended as a new order (binance)
                record.order_id = order_id
                STATE.orders.remember(order_id_key(self.venue, order_id), record)
            for client_id in client_ids:
                if record is not None and self._ours(client_id, record):
                    STATE.orders.remember(client_id, record)
        self.target = record
        if record is not None and record.client_id is not None:
            call.set_attribute(semconv.ORDER_CLIENT_ID, record.client_id)

    def _ours(self, client_id: str, record: OrderRecord | None) -> bool:
        """Sent by us or by ccxt for us (a venue's placeholder, e.g. gate's ``apiv4``, was never sent)."""
        return client_id in self.sent_ids or client_id in self._param_ids() or (
            record is not None and STATE.orders.get(client_id) is record)

    def _param_ids(self) -> list[str]:
        return [i for i in (text(v, 128) for v in _param_client_ids(self.method.arg("params", self.args,
                                                                                      self.kwargs))) if i]

    def _advance(self) -> None:
        """What the reply says happened to the orders, as their lifecycle updates (after the spans closed)."""
        try:
            method, reply = self.method, self.reply
            if method.operation == "place" and not method.edit:
                pairs = self.paired if isinstance(reply, list) else [(self.orders[0], reply)]
                for order, item in pairs:
                    if order.outcome == semconv.OUTCOME_OK and order.stored is not None and isinstance(item, Mapping):
                        _advance(order.stored, item, placed=True)
            elif method.reply == "order":
                if self.target is not None and isinstance(reply, Mapping):
                    _advance(self.target, reply, cancelled=method.operation == "cancel")
            else:
                _apply(self.venue, method.reply, reply, cancelled=method.operation == "cancel")
        except Exception as exc:  # noqa: BLE001
            telemetry_error("ccxt_lifecycle_failed", type(exc).__name__)


def _maker(method: _Method, bound: Any) -> Any:
    """``make`` for :func:`traced`: the call's scope, or None inside another traced call (ccxt's
    ``create_limit_order`` calls ``create_order``: one call, one span)."""

    def make(engine: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _CcxtCall | None:
        if _current.get() is not None:
            return None
        exchange = bound
        if exchange is None:  # a class attribute: a plain function gets ``self`` in args, wrapt binds it
            exchange, args = (args[0], args[1:]) if instance is None and args else (instance, args)
        _register_secrets(engine, exchange)
        return _CcxtCall(method, exchange, _order_spans(method, exchange, args, kwargs), args, kwargs)

    return make


def _read_reply(call: _CcxtCall, reply: Any) -> None:
    try:
        call.read(reply)
    except Exception as exc:  # noqa: BLE001
        telemetry_error("ccxt_reply_unreadable", type(exc).__name__)


def _order_spans(method: _Method, exchange: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[OrderCall]:
    """The unopened spans of one call, their attributes read with plain lookups; never raises."""
    venue = getattr(exchange, "id", None)
    try:
        arg = method.arg
        if method.name == "create_orders":
            orders = arg("orders", args, kwargs)
            spans = [_order(method, venue, o.get("symbol"), o.get("type"), o.get("side"), o.get("amount"),
                            o.get("price"), o.get("params")) for o in orders if isinstance(o, Mapping)] \
                if isinstance(orders, list | tuple) else []
            return spans or [order_span(venue=venue, **{semconv.CODE_FUNCTION: method.name})]
        return [_order(method, venue, arg("symbol", args, kwargs), method.order_type or arg("type", args, kwargs),
                       arg("side", args, kwargs), arg("amount", args, kwargs), arg("price", args, kwargs),
                       arg("params", args, kwargs), arg("id", args, kwargs))]
    except Exception as exc:  # noqa: BLE001
        telemetry_error("ccxt_arguments_unreadable", type(exc).__name__)
        return [order_span(venue=venue, operation=method.operation)]


def _order(method: _Method, venue: Any, symbol: Any, order_type: Any, side: Any, amount: Any, price: Any,
           params: Any, order_id: Any = None) -> OrderCall:
    client_id = next(iter(_param_client_ids(params)), None)
    extra: dict[str, Any] = {semconv.CODE_FUNCTION: method.name}
    if order_id is not None and method.operation != "place":  # an edit's order id comes in the reply
        extra[semconv.ORDER_ID] = order_id
    placing = method.operation == "place" and not method.edit
    if not placing and client_id is not None:
        extra[semconv.ORDER_CLIENT_ID] = client_id
    return order_span(venue=venue, symbol=symbol, side=side, order_type=order_type, quantity=amount, price=price,
                      client_order_id=client_id if placing else None, operation=method.operation, **extra)


def _classify(order: OrderCall, exc: BaseException, method: _Method) -> None:
    """ccxt's exception as the outcome: a venue's refusal is ``rejected``; a timeout leaves the order tracked."""
    try:
        if isinstance(exc, _errors["rejected"]):
            order.reject(_reason(exc))
        elif isinstance(exc, _errors["timeout"]) and method.operation == "place":
            order.outcome_unknown()  # the venue may have it: its fills must still find it
    except Exception as inner:  # noqa: BLE001
        telemetry_error("ccxt_reply_unreadable", type(inner).__name__)


def _reason(exc: BaseException) -> str:
    """``InsufficientFunds`` -> ``insufficient_funds``: a short, bounded reason (one per ccxt error class)."""
    cls = type(exc)
    reason = _reasons.get(cls)
    if reason is None:
        reason = _reasons[cls] = _CAMEL.sub("_", cls.__name__).lower()
    return reason


def _label(order: Mapping[str, Any]) -> str:
    """Why one order of a batch was refused: the venue's error label (gate's ``BALANCE_NOT_ENOUGH``), bounded."""
    info = order.get("info")
    label = info.get("label") if isinstance(info, Mapping) else None
    return label.lower() if isinstance(label, str) and _LABEL.fullmatch(label) else "rejected"


# --- ids -------------------------------------------------------------------------------------------------------

def _param_client_ids(params: Any) -> list[Any]:
    if not isinstance(params, Mapping):
        return []
    return [params[key] for key in CLIENT_ID_PARAMS if params.get(key) is not None]


def _client_ids(order: Mapping[str, Any]) -> list[str]:
    """The client ids a reply names: ccxt's ``clientOrderId`` (and Binance's ``origClientOrderId``: its cancel
    reply calls the cancel request's own id ``clientOrderId``)."""
    info = order.get("info")
    found = [order.get("clientOrderId"), info.get("origClientOrderId") if isinstance(info, Mapping) else None]
    return [i for i in (text(v, 128) for v in found) if i is not None]


def _sent_ids(request: Any) -> Iterator[Any]:
    """Client order ids in a request ccxt sends: REST (``{'url', 'body', ...}``: JSON or form body, query string)
    or a websocket message (a dict)."""
    if not isinstance(request, Mapping):
        return
    if "url" in request and "method" in request:
        url, body = request.get("url"), request.get("body")
        if isinstance(url, str):
            yield from _fields(parse_qsl(urlsplit(url).query))
        if isinstance(body, str | bytes):
            try:
                yield from _walk(json.loads(body), 0)
            except ValueError:
                yield from _fields(parse_qsl(body if isinstance(body, str) else body.decode("utf-8", "replace")))
        return
    yield from _walk(request, 0)


def _batch_items(request: Any) -> list[Any] | None:
    """The orders of a batch request, in the order sent (a JSON list body), or None."""
    body = request.get("body") if isinstance(request, Mapping) else None
    if not isinstance(body, str) or not body.startswith("["):
        return None
    try:
        items = json.loads(body)
    except ValueError:
        return None
    return items if isinstance(items, list) else None


def _fields(pairs: Iterable[tuple[str, str]]) -> Iterator[str]:
    return (value for key, value in pairs if _is_id_field(key))


def _walk(value: Any, depth: int) -> Iterator[Any]:
    if depth > 4:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, str) and _is_id_field(key):
                yield item
            elif isinstance(item, Mapping | list):
                yield from _walk(item, depth + 1)
    elif isinstance(value, list):
        for item in value[:64]:
            yield from _walk(item, depth + 1)


def _is_id_field(key: Any) -> bool:
    return isinstance(key, str) and key.lower().replace("_", "").replace("-", "") in _SENT_ID_FIELDS


def _sent(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """ccxt's ``set_last_request(request)`` / ``watch(url, hash, message, ...)``: seen by the call in progress."""
    call = _current.get()
    if call is not None:
        try:
            call.sent(args[0] if wrapped.__name__ == "set_last_request" else (
                args[2] if len(args) > 2 else kwargs.get("message")))
        except Exception as exc:  # noqa: BLE001
            telemetry_error("ccxt_request_unreadable", type(exc).__name__)
    return wrapped(*args, **kwargs)


def _find(venue: str | None, order_id: str | None, client_ids: Iterable[str]) -> OrderRecord | None:
    """The tracked order a venue's message is about: by its order id, else by a client id of ours that no other
    order id of this venue claims."""
    if order_id is not None:
        record = STATE.orders.get(order_id_key(venue, order_id))
        if record is not None:
            return record
    for client_id in client_ids:
        record = STATE.orders.get(client_id)
        if record is None or (record.venue is not None and record.venue != venue):
            continue
        if order_id is not None and record.order_id is not None and record.order_id != order_id:
            continue  # the same client id on another order: not this one
        if order_id is not None and record.order_id is None:
            record.order_id = order_id
            STATE.orders.remember(order_id_key(venue, order_id), record)
        return record
    return None


# --- the lifecycle -----------------------------------------------------------------------------------------------

def _apply(venue: str | None, kind: str, items: Any, *, cancelled: bool = False) -> None:
    """A list of orders or trades (a fetch, a cancel of many, a private stream's update): each moves its own
    tracked order on; orders not tracked here (placed by another bot, by hand) are left alone."""
    if not isinstance(items, list):
        return
    for item in items:
        if not isinstance(item, Mapping):
            continue
        if kind == "trades":
            record = _find(venue, text(item.get("order"), 128), _client_ids(item))
            if record is not None:
                _advance_trade(record, item)
        else:
            record = _find(venue, text(item.get("id"), 128), _client_ids(item))
            if record is not None:
                _advance(record, item, cancelled=cancelled)


def _advance(record: OrderRecord, order: Mapping[str, Any], *, placed: bool = False, cancelled: bool = False) -> None:
    """Updates for what is new in ``order`` (ccxt's unified order) since the order was last heard of."""
    status = order.get("status")
    new_fill = (finite(order.get("filled")) or 0.0) - record.filled
    price = order.get("average") if order.get("average") is not None else order.get("price")
    if new_fill > _EPSILON:
        update_order(record, semconv.ORDER_FILL, fill=(new_fill, price, status == "closed" and not cancelled, None),
                     attributes={semconv.ORDER_VENUE_TIME: _seconds(order.get("lastTradeTimestamp"))})
    if status == "rejected":  # in a cancel's reply: this cancel failed (gate's batch cancel), the order lives on
        if not cancelled:
            update_order(record, semconv.ORDER_REJECT, reason=_label(order), final=True)
    elif cancelled or status in ("canceled", "expired"):
        update_order(record, semconv.ORDER_CANCEL, reason=None if cancelled or status == "canceled" else status,
                     final=True)
    elif status == "closed" and new_fill <= _EPSILON:
        STATE.orders.discard(record)  # done, and every fill already recorded (from its trades)
    elif placed and new_fill <= _EPSILON and status in ("open", "new", None):
        update_order(record, semconv.ORDER_ACK, attributes={semconv.ORDER_VENUE_TIME: _seconds(order.get("timestamp"))})


def _advance_trade(record: OrderRecord, trade: Mapping[str, Any]) -> None:
    """A trade of the order: a fill, unless this trade (or the fill it makes up) was recorded before."""
    trade_id = text(trade.get("id"), 128)
    amount = finite(trade.get("amount"))
    if amount is None:
        return
    if trade_id is not None:
        seen = record.trade_ids if record.trade_ids is not None else set()
        if trade_id in seen:
            return
        if len(seen) < 1000:
            seen.add(trade_id)
        record.trade_ids = seen
    record.traded += amount
    new_fill = record.traded - record.filled  # an order snapshot may already have reported it
    if new_fill > _EPSILON:
        update_order(record, semconv.ORDER_FILL, fill=(new_fill, trade.get("price"), None, None),
                     attributes={semconv.ORDER_VENUE_TIME: _seconds(trade.get("timestamp"))})


def _seconds(milliseconds: Any) -> float | None:
    value = finite(milliseconds) if milliseconds is not None else None
    return value / 1000.0 if value is not None else None


def _register_secrets(engine: Any, exchange: Any) -> None:
    """The exchange's credentials, redacted as exact values by ``engine`` (once per engine and value set)."""
    try:
        seen_by = _registry().secrets_seen
        values = tuple(v for v in (getattr(exchange, name, None) for name in CREDENTIALS) if isinstance(v, str) and v)
        seen = seen_by.get(exchange)
        if seen is not None and seen[0] is engine and seen[1] == values:
            return
        if values:
            engine.secrets(values)
        seen_by[exchange] = (engine, values)
    except Exception as exc:  # noqa: BLE001
        telemetry_error("ccxt_secrets_failed", type(exc).__name__)


# --- ccxt.pro streams ----------------------------------------------------------------------------------------

def _stream_wrapper(kind: str) -> Any:
    async def streamed(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = await wrapped(*args, **kwargs)
        if STATE.active() is not None:
            try:
                _apply(text(getattr(instance, "id", None), 128), kind, result)
            except Exception as exc:  # noqa: BLE001
                telemetry_error("ccxt_lifecycle_failed", type(exc).__name__)
        return result

    return streamed


def _watch_wrapper(channel: str, many: bool) -> Any:
    async def watched(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if STATE.active() is None or _watching.get():  # watch_ticker calls watch_tickers: one update, once
            return await wrapped(*args, **kwargs)
        token = _watching.set(True)
        try:
            result = await wrapped(*args, **kwargs)
        except _errors["network"] as exc:
            _feed_down(instance, channel, args[0] if args else kwargs.get("symbols" if many else "symbol"), many,
                       exc)
            raise
        finally:
            _watching.reset(token)
        _feed_up(instance, channel, _symbols_of(result) if many else args[0] if args else kwargs.get("symbol"),
                 result, many)
        return result

    return watched


def _monitor(exchange: Any, channel: str) -> FeedMonitor:
    registry = _registry()
    name = f"{getattr(exchange, 'id', None) or 'ccxt'}.{channel}"
    monitor = registry.monitors.get(name)
    if monitor is None:
        with registry.lock:
            venue = text(getattr(exchange, "id", None), 128)
            monitor = registry.monitors.setdefault(name, FeedMonitor(name, venue=venue))
    return monitor


def _feed_up(exchange: Any, channel: str, symbols: Any, result: Any, many: bool) -> None:
    try:
        monitor = _monitor(exchange, channel)
        registry = _registry()
        down = registry.down
        for symbol in (symbols if isinstance(symbols, list | tuple) else (symbols,)):
            key = (monitor.feed, text(symbol) or semconv.UNKNOWN_VALUE)
            if key in down:
                down.discard(key)
                monitor.reconnected(symbol)
            message = result.get(symbol) if many and isinstance(result, Mapping) and symbol in result else result
            event = monitor.message(symbol, exchange_time=_seconds(_message_time(message, symbol)))
            _remember(registry, monitor.venue, event.symbol, message, event)
    except Exception as exc:  # noqa: BLE001
        telemetry_error("ccxt_feed_failed", type(exc).__name__)


def _remember(registry: _Registry, venue: str | None, symbol: str | None, message: Any, event: MarketEvent) -> None:
    """The message as the trigger :func:`market_event` finds: the last per (venue, symbol), bounded."""
    triggers = registry.triggers
    key = (venue, symbol)
    if key not in triggers and len(triggers) >= MAX_TRIGGERS:
        telemetry_error("ccxt_trigger_overflow", venue or "")
        return
    triggers[key] = (message, event)


def _message_time(message: Any, symbol: Any = None) -> Any:
    """The venue's timestamp (ms) of a market-data message: a ticker's or order book's ``timestamp``, the last
    trade's (of ``symbol``, in a list of several symbols' trades); None for what has none (a candle's time is when
    it opened, not when it was sent)."""
    if isinstance(message, Mapping):
        return message.get("timestamp")
    if isinstance(message, list) and message:
        trades = [item for item in message[-64:] if isinstance(item, Mapping)]
        mine = [item for item in trades if symbol is None or item.get("symbol") == symbol]
        return (mine or trades or [{}])[-1].get("timestamp")
    return None


def _message_symbol(message: Any) -> Any:
    if isinstance(message, Mapping):
        return message.get("symbol")
    if isinstance(message, list) and message and isinstance(message[-1], Mapping):
        return message[-1].get("symbol")
    return None


def ccxt_market_event(exchange: Any, message: Any) -> MarketEvent:
    """A ``ccxt.pro`` market-data message (what ``watch_ticker``, ``watch_trades``, ``watch_order_book`` returned)
    as a trade's trigger: received when the watch returned it, stamped by the venue's ``timestamp``. A message the
    integration did not see (or no longer the last of its symbol) is received now. Never raises."""
    try:
        venue = text(getattr(exchange, "id", None), 128)
        symbol = _message_symbol(message)
        found = _registry().triggers.get((venue, text(symbol)))
        if found is not None and found[0] is message:
            return found[1]
        return market_event(symbol, feed=venue, venue=venue, exchange_time=_seconds(_message_time(message, symbol)))
    except Exception as exc:  # noqa: BLE001
        telemetry_error("ccxt_trigger_failed", type(exc).__name__)
        return market_event()


def _timed(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``fetch_time()`` (sync or async): the venue's clock between our send and receipt, a clock offset sample."""
    if STATE.active() is None:
        return wrapped(*args, **kwargs)
    sent = time.monotonic()
    result = wrapped(*args, **kwargs)
    if inspect.isawaitable(result):
        async def awaited() -> Any:
            started = time.monotonic()  # a coroutine sends nothing until it is awaited
            value = await result
            _clock_reply(instance, started, value)
            return value

        return awaited()
    _clock_reply(instance, sent, result)
    return result


def _clock_reply(exchange: Any, sent: float, milliseconds: Any) -> None:
    received = time.monotonic()
    try:
        stamp = _seconds(milliseconds)
        if stamp is not None:
            clock_sample(text(getattr(exchange, "id", None), 128), sent_at=sent, venue_time=stamp, received_at=received)
    except Exception as exc:  # noqa: BLE001
        telemetry_error("ccxt_clock_failed", type(exc).__name__)


def _feed_down(exchange: Any, channel: str, symbols: Any, many: bool, exc: BaseException) -> None:
    try:
        monitor = _monitor(exchange, channel)
        down = _registry().down
        for symbol in (symbols if many and isinstance(symbols, Iterable) and not isinstance(symbols, str)
                       else (symbols,)):
            down.add((monitor.feed, text(symbol) or semconv.UNKNOWN_VALUE))
            monitor.disconnected(symbol, reason=type(exc).__name__)
    except Exception as inner:  # noqa: BLE001
        telemetry_error("ccxt_feed_failed", type(inner).__name__)


def _symbols_of(result: Any) -> list[Any]:
    """The symbols an update of a many-symbol watch is about: a dict by symbol, or a list of items with one."""
    if isinstance(result, Mapping):  # tickers by symbol, or one order book that names its symbol
        return [result["symbol"]] if isinstance(result.get("symbol"), str) else list(result)
    if isinstance(result, list):
        return list(dict.fromkeys(item.get("symbol") for item in result if isinstance(item, Mapping)))
    return [None]


__all__ = ["CLIENT_ID_PARAMS", "CLOCK_METHODS", "CREDENTIALS", "ORDER_METHODS", "STREAM_METHODS", "WATCH_METHODS",
           "ccxt_market_event", "instrument_ccxt", "uninstrument_ccxt"]
