"""The kill switch, observed not owned: wrap its activate/deactivate, or report its state yourself.

Its state is a gauge with a last-change timestamp (so an alert tells "inactive" from "nobody reported"), each
activation is counted by reason, and each change is an event on the current trace (or a short span of its own).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import wrapt

from qt_telemetry import semconv
from qt_telemetry._config import ConfigurationError, show
from qt_telemetry._engine.recorder.callargs import ArgumentReader
from qt_telemetry._engine.recorder.safety import telemetry_error, user_name
from qt_telemetry._engine.recorder.scope import record_event
from qt_telemetry._engine.recorder.state import STATE
from qt_telemetry._values import text

P = ParamSpec("P")
R = TypeVar("R")

_CHANGE_FIELDS = {"reason": ("reason", "why", "cause"), "actor": ("actor", "user", "by", "source", "operator")}


def record_kill_switch(active: bool, *, name: str = "main", reason: Any = None, actor: Any = None) -> None:
    """Record the kill switch's state: gauge, last-change time, activation counter and a span event."""
    try:
        label = text(name) or "main"
        labels = {semconv.KILL_SWITCH: label}
        is_active = bool(active) if isinstance(active, bool | int) else _truthy(active)
        # An observed object's own state (observe_kill_switch) stays the source of the gauge.
        if not callable(STATE.gauge_value(semconv.KILL_SWITCH_ACTIVE, labels)):
            STATE.set_gauge(semconv.KILL_SWITCH_ACTIVE, labels, 1.0 if is_active else 0.0)
        STATE.set_gauge(semconv.KILL_SWITCH_LAST_CHANGE, labels, time.time())
        engine = STATE.active()
        why = text(reason)
        if is_active and engine is not None:
            counted = dict(labels)
            if why is not None:
                counted[semconv.REASON] = why
            engine.measure(((semconv.KILL_SWITCH_ACTIVATIONS.name, 1),), counted)
        record_event(semconv.SPAN_KILL_SWITCH, semconv.EVENT_KILL_SWITCH, {
            semconv.KILL_SWITCH: label, semconv.KILL_SWITCH_ACTIVE_ATTR: is_active, semconv.REASON: why,
            semconv.ACTOR: text(actor)})
    except Exception as exc:  # noqa: BLE001
        telemetry_error("kill_switch_failed", repr(exc))


def kill_switch_activation(*, name: str = "main") -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate your kill switch's *activate* method; ``reason``/``actor`` are read from its arguments."""
    return _decorator(True, user_name(name, "name"))


def kill_switch_deactivation(*, name: str = "main") -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate your kill switch's *deactivate* method."""
    return _decorator(False, user_name(name, "name"))


def _decorator(active: bool, name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        return wrapt.decorator(_change_recorder(active, name, fn))(fn)

    return decorate


def _change_recorder(active: bool, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """A wrapt wrapper that records the change after ``method`` returns (reason/actor from its arguments)."""
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
    name = user_name(name, "name")
    for method, active in ((activate, True), (deactivate, False)):
        if not isinstance(method, str) or not callable(getattr(switch, method, None)):
            raise ConfigurationError(f"{method}: {type(switch).__name__} has no such method to observe")
        wrapt.wrap_function_wrapper(switch, method, _change_recorder(active, name, getattr(switch, method)))
    labels = {semconv.KILL_SWITCH: name}
    if is_active is not None:
        if not (callable(is_active) or isinstance(is_active, str)):
            raise ConfigurationError(f"is_active={show(is_active)}: an attribute name or a callable")
        probe: Callable[[], Any] = is_active if callable(is_active) else (lambda: getattr(switch, is_active))
        STATE.set_gauge(semconv.KILL_SWITCH_ACTIVE, labels, lambda: 1.0 if _truthy(probe()) else 0.0)
        if STATE.gauge_value(semconv.KILL_SWITCH_LAST_CHANGE, labels) is None:
            STATE.set_gauge(semconv.KILL_SWITCH_LAST_CHANGE, labels, time.time())
    return switch


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "active")
    return bool(value)
