"""Hostile values through every public name: telemetry never raises into trading code, never leaks a span.

Hypothesis drives thousands of calls with values whose ``__str__``, ``__float__``, ``__eq__`` or ``__getattr__``
raise, NaNs and infinities, huge integers, lone surrogates, bytes, nested containers and objects of no kind at
all, through sync and async functions, generators, methods, partials, callable objects, ``*args/**kwargs`` and
positional-only parameters. After every call: the user's return value and exception are the very objects the
user made, no span is left current, every span that was opened was exported once, with the right parent.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace

import qt_telemetry as qt
from qt_telemetry import semconv
from qt_telemetry.testing import Capture, capture_telemetry

CALLS = {"n": 0}


class Boom(Exception):
    """A user's own exception: it must come out of our wrappers as the very same object."""


class Bad:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __float__(self) -> float:
        raise RuntimeError("no float")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")

    def __hash__(self) -> int:
        raise RuntimeError("no hash")

    def __bool__(self) -> bool:
        raise RuntimeError("no bool")

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name}")


class BadStr(str):
    def __str__(self) -> str:
        raise RuntimeError("no str")


class BadFloat(float):
    def __float__(self) -> float:
        raise RuntimeError("no float")


class BadException(Exception):
    def __str__(self) -> str:
        raise RuntimeError("an exception that cannot be printed")


class BadClass:
    """Lies about its class: reading ``__class__`` raises (``type()`` still tells the truth)."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        raise RuntimeError("no class")

    def __str__(self) -> str:
        return "bad-class"


class Side(enum.Enum):
    BUY = "buy"
    WEIRD = Bad


HOSTILE: list[Any] = [
    None, "", "BTCUSDT", "x" * 10_000, "\ud800lone surrogate", "nul\x00byte", BadStr("sym"), b"bytes",
    bytearray(b"ba"), 0, -1, 10**30, -(10**30), True, 1.5, math.nan, math.inf, -math.inf, BadFloat(2.0),
    Decimal("1.25"), Decimal("NaN"), Decimal("1e400"), Side.BUY, Side.WEIRD, Bad(), object(), [1, "a", Bad()],
    (1, 2), {"k": Bad()}, {Bad}, frozenset(), lambda: 1, Boom("value"), 3 + 4j,
    10**400, -(10**400), 2**63, -(2**63) - 1, BadClass(), (("\ud800nested",),), [["a", ("b", "\udfff")]],
    ("\ud800", "ok"), [1.5, math.nan], (10**400,),
]
#: Hypothesis draws *indices* into HOSTILE: it hashes and prints what it draws, and some of these refuse both.
values = st.integers(0, len(HOSTILE) - 1)
KEYS = ["note", "api_key", "x", "signature", "desk", "session", "qty", "passwd"]  # never a parameter name
kwargs_st = st.dictionaries(st.sampled_from(KEYS), values, max_size=4)


def _v(index: int) -> Any:
    return HOSTILE[index]


# --- the user's functions, in every shape ---------------------------------------------------------------

def _body(result: Any, fail: Any) -> Any:
    if fail is not None:
        raise fail
    return result


@qt.traced_order(venue="v")
def sync_order(symbol: Any, side: Any, quantity: Any, result: Any = None, fail: Any = None) -> Any:
    return _body(result, fail)


@qt.traced_order
def positional_only(symbol: Any, side: Any, /, quantity: Any, *args: Any, result: Any = None, fail: Any = None,
                    **kwargs: Any) -> Any:
    return _body(result, fail)


@qt.traced_order(venue="v")
async def async_order(symbol: Any, side: Any, quantity: Any, result: Any = None, fail: Any = None) -> Any:
    await asyncio.sleep(0)
    return _body(result, fail)


@qt.traced_order(venue="v")
def generator_order(symbol: Any, side: Any, quantity: Any, result: Any = None, fail: Any = None) -> Any:
    yield result
    if fail is not None:
        raise fail
    yield result


@qt.traced_order(venue="v")
async def async_generator_order(symbol: Any, side: Any, quantity: Any, result: Any = None, fail: Any = None) -> Any:
    yield result
    if fail is not None:
        raise fail


class Broker:
    @qt.traced_order(venue="v")
    def place(self, symbol: Any, side: Any, quantity: Any, result: Any = None, fail: Any = None) -> Any:
        return _body(result, fail)


class CallableOrder:
    def __call__(self, symbol: Any, side: Any, quantity: Any, result: Any = None, fail: Any = None) -> Any:
        return _body(result, fail)


def _plain(symbol: Any, side: Any, quantity: Any, venue: Any = None, result: Any = None, fail: Any = None) -> Any:
    return _body(result, fail)


callable_order = qt.traced_order(CallableOrder())
partial_order = qt.traced_order(functools.partial(_plain, venue="p"))


def _drive(shape: str, args: tuple[Any, ...], result: Any, fail: Any) -> Any:
    """Call the order function of ``shape``; return what it returned (a generator's values: as a list)."""
    if shape == "sync":
        return sync_order(*args, result=result, fail=fail)
    if shape == "positional_only":
        return positional_only(*args, "extra", result=result, fail=fail, more=args[0])
    if shape == "method":
        return Broker().place(*args, result=result, fail=fail)
    if shape == "callable":
        return callable_order(*args, result=result, fail=fail)
    if shape == "partial":
        return partial_order(*args, result=result, fail=fail)
    if shape == "async":
        return asyncio.run(async_order(*args, result=result, fail=fail))
    if shape == "generator":
        return list(generator_order(*args, result=result, fail=fail))

    async def collect() -> list[Any]:
        return [item async for item in async_generator_order(*args, result=result, fail=fail)]

    return asyncio.run(collect())


SHAPES = ["sync", "positional_only", "method", "callable", "partial", "async", "generator", "async_generator"]


def _no_span_left() -> None:
    assert not trace.get_current_span().get_span_context().is_valid, "a span was left current"
    assert qt.current_flow() is None, "a flow was left current"


@settings(max_examples=700, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(calls=st.lists(st.tuples(st.sampled_from(SHAPES), st.tuples(values, values, values), values,
                                st.booleans(), st.booleans()), min_size=1, max_size=12))
def _orders_property(
        calls: list[tuple[str, tuple[int, int, int], int, bool, bool]]) -> None:
    with capture_telemetry() as cap:
        expected_spans = 0
        for shape, arg_indices, result_index, fails, in_flow in calls:
            args = tuple(_v(i) for i in arg_indices)
            result = _v(result_index)
            error = (BadException() if type(result) is Bad else Boom("placement failed")) if fails else None
            CALLS["n"] += 1
            with (qt.trade_flow(symbol=args[0], strategy=args[1]) if in_flow else _nothing()) as flow:
                try:
                    returned = _drive(shape, args, result, error)
                except BaseException as exc:  # noqa: BLE001 - we compare identities
                    assert exc is error, f"{shape}: {exc!r} is not the user's exception"
                else:
                    assert not fails, f"{shape}: the user's exception was swallowed"
                    if shape in ("generator", "async_generator"):
                        assert all(item is result for item in returned)
                    else:
                        assert returned is result, f"{shape}: the return value was replaced"
            expected_spans += 1 + (1 if in_flow else 0)
            _no_span_left()
            if flow is not None:
                orders = [s for s in cap.spans(semconv.SPAN_ORDER) if s.context.trace_id == flow.tid]
                assert [o.parent.span_id for o in orders] == [flow.sid]  # a child of its trade, nothing else
        spans = cap.spans()
        assert len(spans) == expected_spans, [s.name for s in spans]
        assert len({s.context.span_id for s in spans}) == len(spans)  # each exported once


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# --- every other public call with hostile arguments ----------------------------------------------------

def _calls(v: Any, w: Any, kw: dict[str, Any]) -> list[Callable[[], Any]]:
    feed = qt.FeedMonitor("feed")
    return [
        lambda: qt.order_acknowledged(v, order_id=w, **kw),
        lambda: qt.order_filled(v, quantity=w, price=v, final=w, reference_price=w, **kw),
        lambda: qt.order_cancelled(v, reason=w, **kw),
        lambda: qt.order_rejected(v, reason=w, **kw),
        lambda: qt.record_kill_switch(v, name=w, reason=v, actor=w),
        lambda: qt.record_breaker_state(v, w, reason=v),
        lambda: qt.PyBreakerListener().state_change(Bad(), v, w),
        lambda: qt.PyBreakerListener(v).state_change(v, w, w),
        lambda: qt.set_risk_gauges(strategy=v, daily_pnl_used=w, open_positions=v, max_positions=w,
                                   gross_exposure=(lambda: v)),
        lambda: qt.daily_pnl_used(v, w),
        lambda: feed.message(v, received_at=w),
        lambda: feed.message(v),
        lambda: feed.message(w, received_at=v, exchange_time=w),
        lambda: qt.market_event(v, feed=w, venue=v, exchange_time=w, received_at=v),
        lambda: feed.connected(v),
        lambda: feed.disconnected(v, reason=w),
        lambda: feed.reconnected(w),
        lambda: qt.inject(v if type(v) is dict else None),
        lambda: qt.extract(v),
        lambda: qt.force_flush(timeout=v),
        lambda: qt.logs.trace_fields(),
        lambda: _flow_calls(v, w, kw),
        lambda: _risk_calls(v, w, kw),
        lambda: _order_span_calls(v, w, kw),
    ]


def _flow_calls(v: Any, w: Any, kw: dict[str, Any]) -> None:
    with qt.trade_flow(symbol=v, strategy=w, trade_id=v, parent=w if type(w) is dict else None, **kw) as flow:
        with flow.signal(confidence=v, direction=w, reference_price=v, **kw):
            flow.set_attribute("k", v)
        with flow.signal(trigger=v):
            pass
        with flow.entry(**kw), flow.execution(**kw), flow.exit(**kw):
            pass
        flow.reject(v)


def _risk_calls(v: Any, w: Any, kw: dict[str, Any]) -> None:
    with qt.risk_check("max_position", **kw) as check:
        check.reject(v, value=w, limit=v)

    @qt.risk_check("exposure", **kw)
    def verdict() -> Any:
        return (False, v)

    assert verdict() == (False, v) if _comparable(v) else True


def _order_span_calls(v: Any, w: Any, kw: dict[str, Any]) -> None:
    with qt.order_span(venue=v, symbol=w, side=v, quantity=w, price=v, client_order_id=w, **kw) as order:
        order.set_result(v)
        order.reject(w)


def _comparable(v: Any) -> bool:
    try:
        return bool(v == v)
    except Exception:  # noqa: BLE001
        return False


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(v=values, w=values, kw=kwargs_st)
def _other_calls_property(v: int, w: int, kw: dict[str, int]) -> None:
    with capture_telemetry() as cap:
        for call in _calls(_v(v), _v(w), {k: _v(i) for k, i in kw.items()}):
            CALLS["n"] += 1
            call()
            _no_span_left()
        cap.metrics()  # gauges and their callbacks are read now: they must not raise either
        for span in cap.spans():
            for value in span.attributes.values():
                assert isinstance(value, str | bool | int | float | tuple)
                if isinstance(value, str):
                    value.encode("utf-8")  # what reaches the wire must encode


def test_orders_in_every_shape_pass_results_and_exceptions_through_and_leave_nothing_open() -> None:
    before = CALLS["n"]
    _orders_property()
    assert CALLS["n"] - before >= 3_000, f"only {CALLS['n'] - before} calls generated"


def test_every_other_public_call_absorbs_hostile_values() -> None:
    before = CALLS["n"]
    _other_calls_property()
    assert CALLS["n"] - before >= 6_000, f"only {CALLS['n'] - before} calls generated"


@pytest.mark.parametrize(("call", "setting"), [
    (lambda: qt.traced_order(attributes=5), "attributes"),
    (lambda: qt.traced_order(venue=Bad()), "venue"),
    (lambda: qt.traced_order(attributes={"": 1}), "attributes"),
    (lambda: qt.FeedMonitor("f", max_symbols=Bad()), "max_symbols"),
    (lambda: qt.order_span(venue="v", operation="sell"), "operation"),
    (lambda: qt.observe_kill_switch(object()), "activate"),
    (lambda: qt.observe_pybreaker(object(), name="b"), "breaker"),
])
def test_hostile_configuration_is_a_clear_error_naming_the_setting(call: Callable[[], Any], setting: str) -> None:
    with pytest.raises(qt.ConfigurationError, match=setting):
        call()


def test_hostile_names_become_unknown(cap: Capture) -> None:
    with qt.risk_check(Bad()):  # type: ignore[arg-type]
        pass
    qt.FeedMonitor(Bad()).message("BTCUSDT")  # type: ignore[arg-type]
    assert cap.point(semconv.RISK_CHECKS.name).attributes[semconv.RISK_RULE] == "unknown"
    assert cap.point(semconv.FEED_MESSAGES.name).attributes[semconv.FEED] == "unknown"


def test_attribute_pairs_are_accepted_as_well_as_a_mapping(cap: Capture) -> None:
    @qt.traced_order(attributes=[("desk", "emea")])
    def place(symbol: str) -> None:
        return None

    place("BTCUSDT")
    assert cap.span(semconv.SPAN_ORDER).attributes["desk"] == "emea"


# --- decorator stacks ----------------------------------------------------------------------------------------

def _user_decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A user's own decorator, written the usual way (functools.wraps)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


class Stacks:
    @qt.traced_order(venue="v")
    @classmethod
    def over_classmethod(cls, symbol: Any, side: Any, quantity: Any, result: Any = None) -> Any:
        return result

    @qt.traced_order(venue="v")
    @staticmethod
    def over_staticmethod(symbol: Any, side: Any, quantity: Any, result: Any = None) -> Any:
        return result

    @classmethod
    @qt.traced_order(venue="v")
    def under_classmethod(cls, symbol: Any, side: Any, quantity: Any, result: Any = None) -> Any:
        return result

    @staticmethod
    @qt.traced_order(venue="v")
    def under_staticmethod(symbol: Any, side: Any, quantity: Any, result: Any = None) -> Any:
        return result

    @qt.traced_order(venue="v")
    @_user_decorator
    def over_wraps(self, symbol: Any, side: Any, quantity: Any, result: Any = None) -> Any:
        return result

    @_user_decorator
    @qt.traced_order(venue="v")
    def under_wraps(self, symbol: Any, side: Any, quantity: Any, result: Any = None) -> Any:
        return result

    @property
    @qt.traced_order(venue="v")
    def as_property(self) -> Any:
        return "property-value"


STACKED = ["over_classmethod", "over_staticmethod", "under_classmethod", "under_staticmethod", "over_wraps",
           "under_wraps"]


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(STACKED), on_instance=st.booleans(), args=st.tuples(values, values, values),
       result=values)
def test_decorator_stacks_with_classmethod_staticmethod_property_and_wraps(name: str, on_instance: bool,
                                                                          args: tuple[int, int, int],
                                                                          result: int) -> None:
    owner: Any = Stacks() if on_instance or name.endswith("wraps") else Stacks
    with capture_telemetry() as cap:
        returned = getattr(owner, name)(*(_v(i) for i in args), result=_v(result))
        assert returned is _v(result)
        _no_span_left()
        assert len(cap.spans(semconv.SPAN_ORDER)) == 1
        assert Stacks().as_property == "property-value"
        assert len(cap.spans(semconv.SPAN_ORDER)) == 2
