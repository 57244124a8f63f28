"""Circuit breakers, observed not owned: a pybreaker listener, or ``record_breaker_state`` for your own breaker.

State is a gauge (0 closed, 0.5 half-open, 1 open); transitions count trips and resets and are span events.
"""

from __future__ import annotations

from typing import Any

from qt_telemetry import semconv
from qt_telemetry._config import ConfigurationError
from qt_telemetry._engine.recorder.safety import telemetry_error, user_name
from qt_telemetry._engine.recorder.scope import record_event
from qt_telemetry._engine.recorder.state import STATE
from qt_telemetry._values import text


def normalize_breaker_state(state: Any) -> str | None:
    """Map closed/half-open/open in their usual spellings (pybreaker, enums, 0/0.5/1) to our three names."""
    try:
        if state is None or isinstance(state, bool):
            return None
        if isinstance(state, int | float):
            return {0.0: "closed", 0.5: "half_open", 1.0: "open"}.get(float(state))
        raw = getattr(state, "name", state)
        if not isinstance(raw, str):
            raw = getattr(state, "value", raw)
        cleaned = (text(raw) or "").strip().lower().replace("-", "_").replace(" ", "_").removeprefix("state_")
        return cleaned if cleaned in semconv.BREAKER_STATE_VALUES else None
    except Exception:  # noqa: BLE001 - a hostile state object is an unknown state
        return None


def record_breaker_state(breaker: Any, state: Any, *, reason: Any = None) -> None:
    """Record a breaker's state (closed/half_open/open); transitions add span events and trip/reset counts."""
    try:
        name = text(breaker) or "breaker"
        normalized = normalize_breaker_state(state)
        if normalized is None:
            telemetry_error("unknown_breaker_state", f"{name}: {text(state)}")
            return
        labels = {semconv.BREAKER: name}
        STATE.set_gauge(semconv.BREAKER_STATE, labels, semconv.BREAKER_STATE_VALUES[normalized])
        with STATE.lock:
            previous = STATE.breakers.get(name)
            STATE.breakers[name] = normalized
        if previous == normalized:
            return
        engine = STATE.active()
        if engine is not None:
            if normalized == "open":
                engine.measure(((semconv.BREAKER_TRIPS.name, 1),), labels)
            elif normalized == "closed" and previous in ("open", "half_open"):
                engine.measure(((semconv.BREAKER_RESETS.name, 1),), labels)
        if previous is not None:
            record_event(semconv.SPAN_BREAKER, semconv.EVENT_BREAKER, {
                semconv.BREAKER: name, semconv.BREAKER_OLD_STATE: previous, semconv.BREAKER_NEW_STATE: normalized,
                semconv.REASON: text(reason)})
    except Exception as exc:  # noqa: BLE001
        telemetry_error("breaker_failed", repr(exc))


class PyBreakerListener:
    """A ``pybreaker.CircuitBreakerListener`` that records every state change (the ``pybreaker`` extra)."""

    def __init__(self, name: Any = None) -> None:
        self.name = text(name)

    def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def success(self, cb: Any) -> None:
        pass

    def failure(self, cb: Any, exc: BaseException) -> None:
        pass

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        try:
            name = self.name or text(getattr(cb, "name", None)) or "breaker"
            reason = None
            if getattr(new_state, "name", None) == "open" and getattr(cb, "fail_counter", None) is not None:
                reason = f"{text(cb.fail_counter)} consecutive failures"
        except Exception:  # noqa: BLE001 - a breaker whose attributes raise is still recorded
            name, reason = self.name or "breaker", None
        record_breaker_state(name, new_state, reason=reason)


def observe_pybreaker(breaker: Any, *, name: str | None = None) -> Any:
    """Attach a :class:`PyBreakerListener` to a ``pybreaker.CircuitBreaker`` and record its current state."""
    label = name or getattr(breaker, "name", None)
    if not label:
        raise ConfigurationError("name: this breaker has no name; pass name='...'")
    label = user_name(label, "name")
    if not callable(getattr(breaker, "add_listener", None)):
        raise ConfigurationError(f"breaker: {type(breaker).__name__} is not a pybreaker.CircuitBreaker")
    breaker.add_listener(PyBreakerListener(label))
    record_breaker_state(label, getattr(breaker, "current_state", "closed"))
    return breaker
