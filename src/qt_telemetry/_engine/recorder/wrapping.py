"""One way to trace a callable: sync, ``async``, generators and async generators, methods, partials and callable
objects, all through :class:`~qt_telemetry._engine.recorder.scope.SpanScope` and wrapt (which keeps the signature
and binding).

The wrapper's contract: the user's arguments, return value, yielded values and exceptions pass through as the
very same objects; the span is closed exactly once whatever happens; nothing of ours ever raises into the call.
Before ``init()`` the wrapper costs one attribute read and calls straight through.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any, Protocol, TypeVar

import wrapt

from qt_telemetry._engine.recorder.otel_internals import TRACE as _trace
from qt_telemetry._engine.recorder.safety import telemetry_error
from qt_telemetry._engine.recorder.state import STATE


class CallScope(Protocol):
    """What one traced call opens before it runs and closes after: a :class:`SpanScope`, or several (a ccxt
    batch of orders is one call and one span per order)."""

    def open(self, engine: Any) -> None: ...

    def close(self, exc: BaseException | None = None) -> None: ...

    def suspend(self) -> None: ...

    def resume(self) -> None: ...


S = TypeVar("S", bound=CallScope)


def inside_descriptor(fn: Any, decorate: Callable[[Any], Any]) -> Any:
    """``@decorator`` written above ``@classmethod``/``@staticmethod``: decorate the function inside and keep the
    descriptor (the order of decorators is the user's choice; both orders trace the same). None otherwise."""
    if isinstance(fn, classmethod):
        return classmethod(decorate(fn.__func__))
    if isinstance(fn, staticmethod):
        return staticmethod(decorate(fn.__func__))
    return None


def call_kind(fn: Any) -> str:
    """``sync``, ``async``, ``generator`` or ``async_generator`` — for functions, partials and callable objects."""
    targets = [fn, getattr(fn, "func", None), type(fn).__dict__.get("__call__")]
    for target in targets:
        if target is None:
            continue
        if inspect.iscoroutinefunction(target):
            return "async"
        if inspect.isasyncgenfunction(target):
            return "async_generator"
        if inspect.isgeneratorfunction(target):
            return "generator"
        if inspect.isfunction(target) or inspect.ismethod(target) or inspect.isbuiltin(target):
            return "sync"
    return "sync"


def traced(fn: Any, make: Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], S | None],
           done: Callable[[S, Any], None] | None = None) -> Any:
    """``fn`` wrapped so that each call is one span (or :class:`CallScope`) made by ``make(engine, instance, args,
    kwargs)`` — or none, when ``make`` returns None (a nested call already traced by the outer one). ``done(scope,
    result)`` reads what the result says (an order id, a risk verdict) before the scope closes."""
    kind = call_kind(fn)

    def start(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> S | None:
        engine = STATE.active()
        if engine is None:
            return None
        try:
            scope = make(engine, instance, args, kwargs)
        except Exception as exc:  # noqa: BLE001
            telemetry_error("span_start_failed", repr(exc))
            return None
        if scope is not None:
            scope.open(engine)
        return scope

    def finish(scope: S, result: Any) -> None:
        if done is not None:
            try:
                done(scope, result)
            except Exception as exc:  # noqa: BLE001 - a result we cannot read is still the user's result
                telemetry_error("result_unreadable", repr(exc))
        scope.close(None)

    if kind == "async":
        @wrapt.decorator
        async def async_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            scope = start(instance, args, kwargs)
            if scope is None:
                return await wrapped(*args, **kwargs)
            try:
                result = await wrapped(*args, **kwargs)
            except BaseException as exc:
                scope.close(exc)
                raise
            finish(scope, result)
            return result

        return async_wrapper(fn)

    if kind == "generator":
        @wrapt.decorator
        def generator_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if STATE.active() is None:
                return wrapped(*args, **kwargs)
            return _traced_generator(wrapped(*args, **kwargs), lambda: start(instance, args, kwargs), finish)

        return generator_wrapper(fn)

    if kind == "async_generator":
        @wrapt.decorator
        def async_generator_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...],
                                    kwargs: dict[str, Any]) -> Any:
            if STATE.active() is None:
                return wrapped(*args, **kwargs)
            return _traced_async_generator(wrapped(*args, **kwargs), lambda: start(instance, args, kwargs), finish)

        return async_generator_wrapper(fn)

    def traced_call(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        scope = start(instance, args, kwargs)
        if scope is None:
            return wrapped(*args, **kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            scope.close(exc)
            raise
        finish(scope, result)
        return result

    if inspect.isfunction(fn):
        # A plain function (or a method defined in a class body: it binds like any function, ``self`` stays in
        # ``args`` and the argument reader counts it) needs no proxy: a closure is half the cost of wrapt's, which
        # matters before init(), where the wrapper is all a call pays.
        @functools.wraps(fn)
        def function_wrapper(*args: Any, **kwargs: Any) -> Any:
            if STATE.engine is None and _trace._TRACER_PROVIDER is None and not STATE.join_pending:
                return fn(*args, **kwargs)  # before init(): state.idle(), inlined
            return traced_call(fn, None, args, kwargs)

        return function_wrapper

    @wrapt.decorator
    def sync_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if STATE.engine is None and _trace._TRACER_PROVIDER is None and not STATE.join_pending:
            return wrapped(*args, **kwargs)  # before init(): state.idle(), inlined
        return traced_call(wrapped, instance, args, kwargs)

    return sync_wrapper(fn)


def _traced_generator(gen: Generator[Any, Any, Any], start: Callable[[], CallScope | None],
                      finish: Callable[[Any, Any], None]) -> Generator[Any, Any, Any]:
    """The span runs from the first ``next()`` to exhaustion; it is current only while the body runs."""
    scope: CallScope | None = None
    to_send: Any = None
    to_throw: BaseException | None = None
    while True:
        if scope is None:
            scope = start()
        else:
            scope.resume()
        try:
            item = gen.throw(to_throw) if to_throw is not None else gen.send(to_send)
        except StopIteration as stop:
            if scope is not None:
                finish(scope, stop.value)
            return stop.value
        except BaseException as exc:
            if scope is not None:
                scope.close(exc)
            raise
        if scope is not None:
            scope.suspend()
        to_send, to_throw = None, None
        try:
            to_send = yield item
        except GeneratorExit as exc:
            if scope is not None:
                scope.resume()
                scope.close(exc)
            gen.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - thrown into the user's generator, which decides
            to_throw = exc


async def _traced_async_generator(gen: AsyncGenerator[Any, Any], start: Callable[[], CallScope | None],
                                  finish: Callable[[Any, Any], None]) -> AsyncGenerator[Any, Any]:
    scope: CallScope | None = None
    to_send: Any = None
    to_throw: BaseException | None = None
    while True:
        if scope is None:
            scope = start()
        else:
            scope.resume()
        try:
            item = await (gen.athrow(to_throw) if to_throw is not None else gen.asend(to_send))
        except StopAsyncIteration:
            if scope is not None:
                finish(scope, None)
            return
        except BaseException as exc:
            if scope is not None:
                scope.close(exc)
            raise
        if scope is not None:
            scope.suspend()
        to_send, to_throw = None, None
        try:
            to_send = yield item
        except GeneratorExit as exc:
            if scope is not None:
                scope.resume()
                scope.close(exc)
            await gen.aclose()
            raise
        except BaseException as exc:  # noqa: BLE001 - thrown into the user's generator, which decides
            to_throw = exc
