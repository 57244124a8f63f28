"""Risk controls observed, not owned: kill switches, circuit breakers, risk checks and risk gauges.

We never replace the user's kill switch or breaker; we wrap or listen to them. State gauges are observable
and carry a last-change timestamp, so an alert can tell "inactive" from "nobody has reported anything".
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import wrapt
from opentelemetry import trace

from qt_telemetry import semconv
from qt_telemetry._callargs import ArgumentReader
from qt_telemetry._config import ConfigurationError, checked_name
from qt_telemetry._runtime import RUNTIME, GaugeValue
from qt_telemetry._safety import finite, span_attributes, telemetry_error
from qt_telemetry._spans import event_on_trace, record_error
from qt_telemetry.flows import current_flow

P = ParamSpec("P")
R = TypeVar("R")

_CHANGE_FIELDS = {"reason": ("reason", "why", "cause"), "actor": ("actor", "user", "by", "source", "operator")}


# --- kill switch ---------------------------------------------------------------------------------------

def record_kill_switch(active: bool, *, name: str = "main", reason: str | None = None,
                       actor: str | None = None) -> None:
    """Record the kill switch's state: gauge, last-change time, activation counter and a span event."""
    try:
        name = str(name)
        labels = {semconv.KILL_SWITCH: name}
        # An observed object's own state (observe_kill_switch) stays the source of the gauge.
        if not callable(RUNTIME.gauge_value(semconv.KILL_SWITCH_ACTIVE, labels)):
            RUNTIME.gauge(semconv.KILL_SWITCH_ACTIVE, labels, 1.0 if active else 0.0)
        RUNTIME.gauge(semconv.KILL_SWITCH_LAST_CHANGE, labels, time.time())
        if active:
            RUNTIME.count(semconv.KILL_SWITCH_ACTIVATIONS, {**labels, semconv.REASON: _short(reason)})
        attrs = span_attributes([(semconv.KILL_SWITCH, name), ("kill_switch.active", bool(active)),
                                 (semconv.REASON, reason), (semconv.ACTOR, actor)])
        event_on_trace("qt.kill_switch", semconv.EVENT_KILL_SWITCH, attrs)
    except Exception as exc:  # noqa: BLE001
        telemetry_error("kill_switch_failed", repr(exc))


def kill_switch_activation(*, name: str = "main") -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate your kill switch's *activate* method; ``reason``/``actor`` are read from its arguments."""
    return _kill_switch_decorator(True, checked_name(name, "name"))


def kill_switch_deactivation(*, name: str = "main") -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate your kill switch's *deactivate* method."""
    return _kill_switch_decorator(False, checked_name(name, "name"))


def _kill_switch_decorator(active: bool, name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        return wrapt.decorator(_change_recorder(active, name, fn))(fn)

    return decorate


def _change_recorder(active: bool, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """A wrapt wrapper that records the kill switch change after ``method`` returns (reason/actor from args)."""
    reader = ArgumentReader(method, _CHANGE_FIELDS)

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = wrapped(*args, **kwargs)  # only a change that happened is recorded
        try:
            fields = reader.read(instance is not None, args, kwargs)
        except Exception:  # noqa: BLE001
            fields = {}
        record_kill_switch(active, name=name, reason=fields.get("reason"), actor=fields.get("actor"))
        return result

    return wrapper


def observe_kill_switch(switch: Any, *, name: str = "main", activate: str = "activate",
                        deactivate: str = "deactivate", is_active: str | Callable[[], Any] | None = None) -> Any:
    """Instrument an existing kill-switch object in place and return it.

    Its ``activate``/``deactivate`` methods are wrapped; ``is_active`` (an attribute name or a callable) lets
    the gauge report the object's own state at each export instead of our record of the last call.
    """
    checked_name(name, "name")
    for method, active in ((activate, True), (deactivate, False)):
        if not callable(getattr(switch, method, None)):
            raise ConfigurationError(f"{method}: {type(switch).__name__} has no such method to observe")
        wrapt.wrap_function_wrapper(switch, method, _change_recorder(active, name, getattr(switch, method)))
    labels = {semconv.KILL_SWITCH: name}
    if is_active is not None:
        probe: Callable[[], Any] = (is_active if callable(is_active)
                                    else (lambda: getattr(switch, is_active)))
        RUNTIME.gauge(semconv.KILL_SWITCH_ACTIVE, labels, lambda: 1.0 if _truthy(probe()) else 0.0)
        if RUNTIME.gauge_value(semconv.KILL_SWITCH_LAST_CHANGE, labels) is None:
            RUNTIME.gauge(semconv.KILL_SWITCH_LAST_CHANGE, labels, time.time())
    return switch


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "active")
    return bool(value)


# --- circuit breakers ----------------------------------------------------------------------------------

_breaker_states: dict[str, str] = {}
_breaker_lock = threading.Lock()


def normalize_breaker_state(state: Any) -> str | None:
    """Map closed/half-open/open in their usual spellings (pybreaker, enums, 0/0.5/1) to our three names."""
    if state is None:
        return None
    if isinstance(state, bool):
        return None
    if isinstance(state, int | float):
        return {0.0: "closed", 0.5: "half_open", 1.0: "open"}.get(float(state))
    raw = getattr(state, "name", state)
    if not isinstance(raw, str):
        raw = getattr(state, "value", raw)
    text = str(raw).strip().lower().replace("-", "_").replace(" ", "_")
    text = text.removeprefix("state_")
    return text if text in semconv.BREAKER_STATE_VALUES else None


def record_breaker_state(breaker: str, state: Any, *, reason: str | None = None) -> None:
    """Record a breaker's state (closed/half_open/open); transitions add span events and trip/reset counts."""
    try:
        name = str(breaker)
        normalized = normalize_breaker_state(state)
        if normalized is None:
            telemetry_error("unknown_breaker_state", f"{name}: {state!r}")
            return
        labels = {semconv.BREAKER: name}
        RUNTIME.gauge(semconv.BREAKER_STATE, labels, semconv.BREAKER_STATE_VALUES[normalized])
        with _breaker_lock:
            previous = _breaker_states.get(name)
            _breaker_states[name] = normalized
        if previous == normalized:
            return
        if normalized == "open":
            RUNTIME.count(semconv.BREAKER_TRIPS, labels)
        elif normalized == "closed" and previous in ("open", "half_open"):
            RUNTIME.count(semconv.BREAKER_RESETS, labels)
        if previous is not None:
            attrs = span_attributes([(semconv.BREAKER, name), (semconv.BREAKER_OLD_STATE, previous),
                                     (semconv.BREAKER_NEW_STATE, normalized), (semconv.REASON, reason)])
            event_on_trace("qt.circuit_breaker", semconv.EVENT_BREAKER, attrs)
    except Exception as exc:  # noqa: BLE001
        telemetry_error("breaker_failed", repr(exc))


class PyBreakerListener:
    """A ``pybreaker.CircuitBreakerListener`` that records every state change (``pip install qt-telemetry[pybreaker]``)."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name

    def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def success(self, cb: Any) -> None:
        pass

    def failure(self, cb: Any, exc: BaseException) -> None:
        pass

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        name = self.name or getattr(cb, "name", None) or "breaker"
        reason = None
        if getattr(new_state, "name", None) == "open" and getattr(cb, "fail_counter", None) is not None:
            reason = f"{cb.fail_counter} consecutive failures"
        record_breaker_state(name, new_state, reason=reason)


def observe_pybreaker(breaker: Any, *, name: str | None = None) -> Any:
    """Attach a :class:`PyBreakerListener` to a ``pybreaker.CircuitBreaker`` and record its current state."""
    label = name or getattr(breaker, "name", None)
    if not label:
        raise ConfigurationError("name: this breaker has no name; pass name='...'")
    checked_name(str(label), "name")
    breaker.add_listener(PyBreakerListener(str(label)))
    record_breaker_state(str(label), getattr(breaker, "current_state", "closed"))
    return breaker


# --- risk checks ---------------------------------------------------------------------------------------

class RiskCheck:
    """One evaluation of a risk rule: a context manager (sync/async) and, via :func:`risk_check`, a decorator.

    Inside the block call :meth:`reject`; leaving the block without it means the check passed. The check is a
    ``qt.risk.check`` span (a child of the trade flow's entry stage when there is one); a rejection also
    marks the trade as rejected.
    """

    def __init__(self, rule: str, attributes: Mapping[str, Any] | None = None) -> None:
        self.rule = rule
        self.outcome: str = semconv.OUTCOME_PASSED
        self.reason: str | None = None
        self._attrs = span_attributes((attributes or {}).items())
        self._span: trace.Span = trace.INVALID_SPAN
        self._scope: Any = None
        self._started = 0.0

    def reject(self, reason: str, *, value: Any = None, limit: Any = None) -> None:
        """Mark this check rejected with a short reason code; ``value``/``limit`` go on the span."""
        self.outcome = semconv.OUTCOME_REJECTED
        self.reason = str(reason)[:64] if reason is not None else "rejected"
        try:
            for key, raw in ((semconv.RISK_VALUE, value), (semconv.RISK_LIMIT, limit)):
                number = finite(raw, "bad_risk_value") if raw is not None else None
                if number is not None:
                    self._span.set_attribute(key, number)
        except Exception as exc:  # noqa: BLE001
            telemetry_error("risk_check_failed", repr(exc))

    def __enter__(self) -> RiskCheck:
        self._started = time.perf_counter()
        try:
            attrs = {semconv.RISK_RULE: self.rule, **self._attrs}
            self._span = RUNTIME.instruments().tracer.start_span(semconv.SPAN_RISK_CHECK, attributes=attrs)
            self._scope = trace.use_span(self._span, end_on_exit=False)
            self._scope.__enter__()
        except Exception as exc:  # noqa: BLE001
            telemetry_error("risk_check_failed", repr(exc))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc is not None:
                self.outcome = semconv.OUTCOME_ERROR
                record_error(self._span, exc)
            span = self._span
            span.set_attribute(semconv.OUTCOME, self.outcome)
            flow = current_flow()
            labels: dict[str, Any] = {semconv.RISK_RULE: self.rule, semconv.OUTCOME: self.outcome,
                                      semconv.REASON: self.reason,
                                      semconv.STRATEGY: flow.strategy if flow else None,
                                      semconv.SYMBOL: flow.symbol if flow else self._attrs.get(semconv.SYMBOL)}
            if self.outcome == semconv.OUTCOME_REJECTED:
                span.set_attribute(semconv.REASON, self.reason or "rejected")
                span.add_event(semconv.EVENT_RISK_REJECTED, {semconv.RISK_RULE: self.rule,
                                                             semconv.REASON: self.reason or "rejected"})
                if flow is not None:
                    flow.reject(f"{self.rule}:{self.reason}")
            RUNTIME.record(semconv.RISK_CHECK_LATENCY, time.perf_counter() - self._started,
                           {semconv.RISK_RULE: self.rule, semconv.OUTCOME: self.outcome})
            RUNTIME.count(semconv.RISK_CHECKS, labels)
        except Exception as inner:  # noqa: BLE001
            telemetry_error("risk_check_failed", repr(inner))
        finally:
            try:
                if self._scope is not None:
                    self._scope.__exit__(None, None, None)
                self._span.end()
            except Exception as inner:  # noqa: BLE001
                telemetry_error("risk_check_failed", repr(inner))

    async def __aenter__(self) -> RiskCheck:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)


class _RiskRule:
    """What :func:`risk_check` returns: a context-manager factory and a decorator for one rule."""

    def __init__(self, rule: str, attributes: Mapping[str, Any] | None) -> None:
        self.rule = rule
        self.attributes = dict(attributes or {})

    def __enter__(self) -> RiskCheck:
        self._check = RiskCheck(self.rule, self.attributes)
        return self._check.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._check.__exit__(*exc)

    async def __aenter__(self) -> RiskCheck:
        return self.__enter__()

    async def __aexit__(self, *exc: Any) -> None:
        self.__exit__(*exc)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a check function: False (or ``(False, reason)``) rejects, anything else passes."""
        rule, attributes = self.rule, self.attributes

        def apply(check: RiskCheck, result: Any) -> None:
            ok, reason = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
            if ok is False:
                check.reject(reason or "rejected")

        if inspect.iscoroutinefunction(fn):
            @wrapt.decorator
            async def async_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                with RiskCheck(rule, attributes) as check:
                    result = await wrapped(*args, **kwargs)
                    apply(check, result)
                return result

            return async_wrapper(fn)

        @wrapt.decorator
        def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            with RiskCheck(rule, attributes) as check:
                result = wrapped(*args, **kwargs)
                apply(check, result)
            return result

        return wrapper(fn)


def risk_check(rule: str, **attributes: Any) -> _RiskRule:
    """One risk rule (``max_position``, ``daily_loss``, ...): ``with risk_check("daily_loss") as check:`` or
    ``@risk_check("max_position")``. The rule name is validated here, at configuration time."""
    return _RiskRule(checked_name(rule, "rule"), attributes)


# --- risk gauges ---------------------------------------------------------------------------------------

_RISK_GAUGES = {
    "daily_pnl_used": semconv.DAILY_PNL_USED,
    "open_positions": semconv.OPEN_POSITIONS,
    "max_positions": semconv.MAX_POSITIONS,
    "gross_exposure": semconv.GROSS_EXPOSURE,
}


def set_risk_gauges(*, strategy: str | None = None, daily_pnl_used: GaugeValue | None = None,
                    open_positions: GaugeValue | None = None, max_positions: GaugeValue | None = None,
                    gross_exposure: GaugeValue | None = None) -> None:
    """Set risk gauges to values, or to callbacks evaluated at each export.

    ``daily_pnl_used`` is the daily loss as a fraction of the limit (see :func:`daily_pnl_used`). Negative
    values are clamped to 0 and counted; a callback that raises or returns None/NaN is skipped and counted.
    """
    values = {"daily_pnl_used": daily_pnl_used, "open_positions": open_positions,
              "max_positions": max_positions, "gross_exposure": gross_exposure}
    labels = {semconv.STRATEGY: strategy}
    for key, value in values.items():
        if value is None:
            continue
        try:
            clamped = _non_negative(value)
            if clamped is not None:
                RUNTIME.gauge(_RISK_GAUGES[key], labels, clamped)
        except Exception as exc:  # noqa: BLE001
            telemetry_error("risk_gauge_failed", repr(exc))


def daily_pnl_used(pnl: Any, loss_limit: Any) -> float | None:
    """Fraction of the daily loss limit used: 0 while in profit, 1.0 at the limit, above 1 past it."""
    p = finite(pnl, "bad_pnl")
    limit = finite(loss_limit, "bad_loss_limit")
    if p is None or limit is None or limit == 0:
        return None
    return max(0.0, -p) / abs(limit)


def _non_negative(value: GaugeValue) -> GaugeValue | None:
    if callable(value):
        fn = value

        def clamped() -> Any:
            raw = fn()
            if raw is None:
                return None
            number = finite(raw, "gauge_bad_value")
            if number is not None and number < 0:
                telemetry_error("negative_gauge_clamped")
                return 0.0
            return number

        return clamped
    number = finite(value, "bad_gauge_value")
    if number is not None and number < 0:
        telemetry_error("negative_gauge_clamped")
        return 0.0
    return number


def _short(reason: Any) -> str | None:
    return None if reason is None else str(reason)[:64]
