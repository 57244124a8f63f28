"""The ccxt integration (public face: :mod:`qt_telemetry.ccxt`, which documents what becomes what)."""

from __future__ import annotations

import inspect
import re
import threading
import weakref
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar, overload

import wrapt

from qt_telemetry import semconv
from qt_telemetry._config import ConfigurationError, show
from qt_telemetry._engine.recorder.safety import telemetry_error
from qt_telemetry._engine.recorder.state import STATE
from qt_telemetry._values import finite, text
from qt_telemetry.feeds import FeedMonitor
from qt_telemetry.orders import (
    OrderCall,
    order_acknowledged,
    order_cancelled,
    order_filled,
    order_rejected,
    order_span,
)

E = TypeVar("E")


class _Method:
    """Where one ccxt order method keeps its arguments (positions after ``self``) and what it is to us."""

    __slots__ = ("name", "operation", "order_type", "positions")

    def __init__(self, name: str, operation: str, parameters: str, order_type: str | None = None) -> None:
        self.name = name
        self.operation = operation
        self.positions = {p: i for i, p in enumerate(parameters.split())}
        self.order_type = order_type

    def arg(self, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        i = self.positions.get(name)
        if i is None:
            return None
        return args[i] if i < len(args) else kwargs.get(name)


#: ccxt's unified signatures (``Exchange.create_order(symbol, type, side, amount, price=None, params={})`` ...).
ORDER_METHODS: Mapping[str, _Method] = {m.name: m for m in (
    _Method("create_order", "place", "symbol type side amount price params"),
    _Method("create_limit_order", "place", "symbol side amount price params", "limit"),
    _Method("create_market_order", "place", "symbol side amount price params", "market"),
    _Method("edit_order", "place", "id symbol type side amount price params"),
    _Method("cancel_order", "cancel", "id symbol params"),
    _Method("cancel_all_orders", "cancel", "symbol params"),
    _Method("fetch_order", "query", "id symbol params"),
)}
#: ``params`` keys that carry a client order id: ccxt's unified one first, then venue-specific spellings.
CLIENT_ID_PARAMS = ("clientOrderId", "newClientOrderId", "origClientOrderId", "clientOid", "clOrdId",
                    "orderLinkId", "clientAlgoId")
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

_inside: ContextVar[bool] = ContextVar("qt_telemetry_ccxt_inside", default=False)
_watching: ContextVar[bool] = ContextVar("qt_telemetry_ccxt_watching", default=False)
_lock = threading.Lock()
_patched: list[tuple[Any, str, Any]] = []  # (class, name, original) of the class-level switch
_instances: weakref.WeakSet[Any] = weakref.WeakSet()
_secrets_seen: weakref.WeakKeyDictionary[Any, tuple[Any, tuple[str, ...]]] = weakref.WeakKeyDictionary()
_monitors: dict[str, FeedMonitor] = {}
_down: set[tuple[str, str]] = set()
_errors: dict[str, Any] = {}
_reasons: dict[type, str] = {}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


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
    with _lock:
        if not _patched and exchange not in _instances:
            _wrap_instance(exchange)
    engine = STATE.active()
    if engine is not None:
        _register_secrets(engine, exchange)
    return exchange


def _wrap_instance(exchange: Any) -> None:
    for name, method in ORDER_METHODS.items():
        original = getattr(exchange, name, None)
        if callable(original):
            wrapt.wrap_function_wrapper(exchange, name, _order_wrapper(method, original))
    for name, (channel, many) in WATCH_METHODS.items():
        original = getattr(exchange, name, None)
        if inspect.iscoroutinefunction(original):
            wrapt.wrap_function_wrapper(exchange, name, _watch_wrapper(channel, many))
    _instances.add(exchange)


def uninstrument_ccxt() -> None:
    """Undo every :func:`instrument_ccxt` (classes and instances) and forget feed state (for tests)."""
    with _lock:
        for owner, name, original in reversed(_patched):
            setattr(owner, name, original)
        _patched.clear()
        for exchange in list(_instances):
            for name in (*ORDER_METHODS, *WATCH_METHODS):
                if isinstance(exchange.__dict__.get(name), wrapt.FunctionWrapper):
                    delattr(exchange, name)
        _instances.clear()
        _secrets_seen.clear()
        _monitors.clear()
        _down.clear()


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
    with _lock:
        if _patched:
            return
        classes: list[Any] = [ccxt.Exchange, ccxt.async_support.Exchange]
        for module in modules:
            classes.extend(c for c in (getattr(module, i, None) for i in module.exchanges) if isinstance(c, type))
        asynchronous = ccxt.async_support.Exchange
        for cls in dict.fromkeys(classes):  # in order, once
            for name, method in ORDER_METHODS.items():
                original = cls.__dict__.get(name)
                if original is None or not callable(original):
                    continue
                if issubclass(cls, asynchronous) and not inspect.iscoroutinefunction(original):
                    continue  # a sync helper of an async exchange returns a coroutine: its callee is traced
                wrapt.wrap_function_wrapper(cls, name, _order_wrapper(method, original))
                _patched.append((cls, name, original))
            if cls.__module__.startswith("ccxt.pro."):
                for name, (channel, many) in WATCH_METHODS.items():
                    original = cls.__dict__.get(name)
                    if inspect.iscoroutinefunction(original):
                        wrapt.wrap_function_wrapper(cls, name, _watch_wrapper(channel, many))
                        _patched.append((cls, name, original))


def _load_errors() -> None:
    if _errors:
        return
    try:
        from ccxt.base import errors  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:  # pragma: no cover - depends on the extra being installed
        raise ConfigurationError("instrument_ccxt needs ccxt: pip install -e '.[ccxt]' in the qt-telemetry "
                                 "checkout") from exc
    _errors["rejected"] = (errors.InsufficientFunds, errors.InvalidOrder)
    _errors["network"] = errors.NetworkError


# --- order calls ---------------------------------------------------------------------------------------------

def _order_wrapper(method: _Method, original: Any) -> Any:
    if inspect.iscoroutinefunction(original):
        async def traced_async(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            engine = STATE.active()
            if engine is None or _inside.get():
                return await wrapped(*args, **kwargs)
            call = _start(engine, method, instance, args, kwargs)
            token = _inside.set(True)
            try:
                async with call:
                    try:
                        reply = await wrapped(*args, **kwargs)
                    except _errors["rejected"] as exc:
                        call.reject(_reason(exc))
                        raise
                    _read_reply(method, call, reply)
            finally:
                _inside.reset(token)
            _advance_lifecycle(method, call, reply)
            return reply

        return traced_async

    def traced_sync(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        engine = STATE.active()
        if engine is None or _inside.get():
            return wrapped(*args, **kwargs)
        call = _start(engine, method, instance, args, kwargs)
        token = _inside.set(True)
        try:
            with call:
                try:
                    reply = wrapped(*args, **kwargs)
                except _errors["rejected"] as exc:
                    call.reject(_reason(exc))
                    raise
                _read_reply(method, call, reply)
        finally:
            _inside.reset(token)
        _advance_lifecycle(method, call, reply)
        return reply

    return traced_sync


def _start(engine: Any, method: _Method, exchange: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> OrderCall:
    """The (unopened) span of one call, its attributes read with plain lookups; never raises."""
    try:
        _register_secrets(engine, exchange)
        arg = method.arg
        params = arg("params", args, kwargs)
        client_id = None
        if isinstance(params, Mapping):
            for key in CLIENT_ID_PARAMS:
                client_id = params.get(key)
                if client_id is not None:
                    break
        extra = {semconv.CODE_FUNCTION: method.name}
        order_id = arg("id", args, kwargs)
        if order_id is not None and method.operation != "place":  # an edit's new order id comes in the reply
            extra[semconv.ORDER_ID] = order_id
        return order_span(venue=getattr(exchange, "id", None), symbol=arg("symbol", args, kwargs),
                          side=arg("side", args, kwargs), order_type=method.order_type or arg("type", args, kwargs),
                          quantity=arg("amount", args, kwargs), price=arg("price", args, kwargs),
                          client_order_id=client_id, operation=method.operation, **extra)
    except Exception as exc:  # noqa: BLE001
        telemetry_error("ccxt_arguments_unreadable", type(exc).__name__)
        return order_span(venue=getattr(exchange, "id", None), operation=method.operation)


def _reason(exc: BaseException) -> str:
    """``InsufficientFunds`` -> ``insufficient_funds``: a short, bounded reason (one per ccxt error class)."""
    cls = type(exc)
    reason = _reasons.get(cls)
    if reason is None:
        reason = _reasons[cls] = _CAMEL.sub("_", cls.__name__).lower()
    return reason


def _read_reply(method: _Method, call: OrderCall, reply: Any) -> None:
    """The returned order onto the span: id (read when the record is made), status, filled, average."""
    try:
        if not isinstance(reply, Mapping):
            return
        call.set_result(reply)
        for key, value in ((semconv.ORDER_STATUS, reply.get("status")), (semconv.ORDER_FILLED, reply.get("filled")),
                           (semconv.ORDER_AVERAGE, reply.get("average"))):
            if value is not None:
                call.set_attribute(key, value)
        if call.client_id is not None or semconv.ORDER_CLIENT_ID in call.attributes:
            return
        client_id = _reply_client_id(method, reply)
        if client_id is None:
            return
        if method.operation == "place":
            call.track(client_id)  # made up by ccxt or the venue: acks and fills will name it
        else:
            call.set_attribute(semconv.ORDER_CLIENT_ID, client_id)
    except Exception as exc:  # noqa: BLE001
        telemetry_error("ccxt_reply_unreadable", type(exc).__name__)


def _reply_client_id(method: _Method, reply: Mapping[str, Any]) -> Any:
    if method.operation != "place":
        # Binance answers a cancel with the cancel request's own clientOrderId; the order's is origClientOrderId.
        info = reply.get("info")
        if isinstance(info, Mapping) and info.get("origClientOrderId") is not None:
            return info.get("origClientOrderId")
    return reply.get("clientOrderId")


def _advance_lifecycle(method: _Method, call: OrderCall, reply: Any) -> None:
    """What the reply says happened to the order, as lifecycle updates (ack, fills, cancel, reject)."""
    try:
        if call.outcome != semconv.OUTCOME_OK:
            return
        if method.operation == "place":
            if call.client_id is not None and isinstance(reply, Mapping):
                _advance(call.client_id, reply, placed=True)
            return
        if isinstance(reply, Mapping):  # one order: its client id is the span's (from params or the reply)
            orders = [(call.attributes.get(semconv.ORDER_CLIENT_ID), reply)]
        elif isinstance(reply, list):  # cancel_all_orders: every order it cancelled
            orders = [(_reply_client_id(method, o), o) for o in reply if isinstance(o, Mapping)]
        else:
            return
        for client_id, order in orders:
            key = text(client_id, 128)
            if key is not None and STATE.orders.get(key) is not None:  # placed here and still open
                _advance(key, order, placed=False, cancelled=method.operation == "cancel")
    except Exception as exc:  # noqa: BLE001
        telemetry_error("ccxt_lifecycle_failed", type(exc).__name__)


def _advance(client_id: str, order: Mapping[str, Any], *, placed: bool, cancelled: bool = False) -> None:
    """Updates for what is new in ``order`` (ccxt's unified order) since the order was last heard of."""
    status = order.get("status")
    record = STATE.orders.get(client_id)
    already = record.filled if record is not None else 0.0
    new_fill = (finite(order.get("filled")) or 0.0) - already
    price = order.get("average") if order.get("average") is not None else order.get("price")
    if new_fill > 1e-12:
        order_filled(client_id, quantity=new_fill, price=price, final=status == "closed" and not cancelled)
    if cancelled or status in ("canceled", "expired"):
        order_cancelled(client_id, reason=None if cancelled or status == "canceled" else status)
    elif status == "rejected":
        order_rejected(client_id, reason="rejected")
    elif placed and new_fill <= 1e-12 and status in ("open", "new", None):
        order_acknowledged(client_id, order_id=order.get("id"))


def _register_secrets(engine: Any, exchange: Any) -> None:
    """The exchange's credentials, redacted as exact values by ``engine`` (once per engine and value set)."""
    try:
        values = tuple(v for v in (getattr(exchange, name, None) for name in CREDENTIALS) if isinstance(v, str) and v)
        seen = _secrets_seen.get(exchange)
        if seen is not None and seen[0] is engine and seen[1] == values:
            return
        if values:
            engine.secrets(values)
        _secrets_seen[exchange] = (engine, values)
    except Exception as exc:  # noqa: BLE001
        telemetry_error("ccxt_secrets_failed", type(exc).__name__)


# --- ccxt.pro feeds ------------------------------------------------------------------------------------------

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
        _feed_up(instance, channel, _symbols_of(result) if many else args[0] if args else kwargs.get("symbol"))
        return result

    return watched


def _monitor(exchange: Any, channel: str) -> FeedMonitor:
    name = f"{getattr(exchange, 'id', None) or 'ccxt'}.{channel}"
    monitor = _monitors.get(name)
    if monitor is None:
        with _lock:
            monitor = _monitors.setdefault(name, FeedMonitor(name))
    return monitor


def _feed_up(exchange: Any, channel: str, symbols: Any) -> None:
    try:
        monitor = _monitor(exchange, channel)
        for symbol in (symbols if isinstance(symbols, list | tuple) else (symbols,)):
            key = (monitor.feed, text(symbol) or semconv.UNKNOWN_VALUE)
            if key in _down:
                _down.discard(key)
                monitor.reconnected(symbol)
            monitor.message(symbol)
    except Exception as exc:  # noqa: BLE001
        telemetry_error("ccxt_feed_failed", type(exc).__name__)


def _feed_down(exchange: Any, channel: str, symbols: Any, many: bool, exc: BaseException) -> None:
    try:
        monitor = _monitor(exchange, channel)
        for symbol in (symbols if many and isinstance(symbols, Iterable) and not isinstance(symbols, str)
                       else (symbols,)):
            _down.add((monitor.feed, text(symbol) or semconv.UNKNOWN_VALUE))
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


__all__ = ["CLIENT_ID_PARAMS", "CREDENTIALS", "ORDER_METHODS", "WATCH_METHODS", "instrument_ccxt",
           "uninstrument_ccxt"]
