"""Risk checks (a span per evaluation, rejections counted by rule and reason) and risk gauges.

Kill switches and circuit breakers live in :mod:`qt_telemetry.kill_switch` and :mod:`qt_telemetry.breakers`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from qt_telemetry import semconv
from qt_telemetry._engine.recorder.gauges import GaugeValue
from qt_telemetry._engine.recorder.safety import telemetry_error, user_name
from qt_telemetry._engine.recorder.scope import BlockScope, SpanScope
from qt_telemetry._engine.recorder.state import STATE
from qt_telemetry._engine.recorder.wrapping import inside_descriptor, traced
from qt_telemetry._values import clean_attributes, finite, text
from qt_telemetry.flows import current_flow

P = ParamSpec("P")
R = TypeVar("R")


class RiskCheck(BlockScope):
    """One evaluation of a risk rule: a context manager (sync/async); :func:`risk_check` also decorates.

    Inside the block call :meth:`reject`; leaving the block without it means the check passed. The check is a
    ``qt.risk.check`` span (a child of the trade flow's entry stage when there is one); a rejection also
    marks the trade as rejected. A rejection is a decision, not an error: the span status stays unset.
    """

    name = semconv.SPAN_RISK_CHECK
    default_outcome = semconv.OUTCOME_PASSED

    def __init__(self, rule: str, attributes: Mapping[str, Any] | None = None) -> None:
        super().__init__({semconv.RISK_RULE: rule, **clean_attributes(attributes or {})})
        self.rule = rule
        self.reason: str | None = None
        flow = current_flow()
        if flow is not None:
            self.attributes.setdefault(semconv.STRATEGY, flow.strategy)
            self.attributes.setdefault(semconv.SYMBOL, flow.symbol)

    def reject(self, reason: Any = None, *, value: Any = None, limit: Any = None) -> None:
        """Mark this check rejected with a short reason code; ``value``/``limit`` go on the span."""
        try:
            self.outcome = semconv.OUTCOME_REJECTED
            self.reason = text(reason) or "rejected"
            for key, raw in ((semconv.RISK_VALUE, value), (semconv.RISK_LIMIT, limit)):
                number = finite(raw) if raw is not None else None
                if number is not None:
                    self.attributes[key] = number
                elif raw is not None:
                    telemetry_error("bad_risk_value")
        except Exception as exc:  # noqa: BLE001
            telemetry_error("risk_check_failed", repr(exc))

    def finishing(self) -> None:
        if self.outcome != semconv.OUTCOME_REJECTED:
            return
        reason = self.reason or "rejected"
        self.attributes[semconv.REASON] = reason
        self._add_event(semconv.EVENT_RISK_REJECTED, {semconv.RISK_RULE: self.rule, semconv.REASON: reason})
        flow = current_flow()
        if flow is not None:
            flow.reject(f"{self.rule}:{reason}")


class _RiskRule:
    """What :func:`risk_check` returns: each ``with`` (or decorated call) is a check of its own.

    The rule object can be shared — by tasks, threads, nested blocks — because the open checks live in a
    context variable, not on the object.
    """

    def __init__(self, rule: str, attributes: Mapping[str, Any]) -> None:
        self.rule = rule
        self.attributes = dict(attributes)
        self._open: ContextVar[tuple[RiskCheck, ...]] = ContextVar(f"qt_risk_{rule}", default=())

    def __enter__(self) -> RiskCheck:
        check = RiskCheck(self.rule, self.attributes)
        self._open.set((*self._open.get(), check))
        return check.__enter__()  # type: ignore[no-any-return]

    def __exit__(self, *exc: Any) -> None:  # noqa: PYI036 - passed through to the check as given
        stack = self._open.get()
        if not stack:
            return
        self._open.set(stack[:-1])
        stack[-1].__exit__(*exc)

    async def __aenter__(self) -> RiskCheck:
        return self.__enter__()

    async def __aexit__(self, *exc: Any) -> None:  # noqa: PYI036
        self.__exit__(*exc)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a check function: False (or ``(False, reason)``) rejects, anything else passes."""
        descriptor = inside_descriptor(fn, self)
        if descriptor is not None:
            return descriptor  # type: ignore[no-any-return]
        rule, attributes = self.rule, self.attributes

        def make(engine: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> RiskCheck:
            return RiskCheck(rule, attributes)

        return traced(fn, make, _verdict)  # type: ignore[no-any-return]


def _verdict(scope: SpanScope, result: Any) -> None:
    ok, reason = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
    if ok is False and isinstance(scope, RiskCheck):
        scope.reject(reason or "rejected")


def risk_check(rule: str, **attributes: Any) -> _RiskRule:
    """One risk rule (``max_position``, ``daily_loss``, ...): ``with risk_check("daily_loss") as check:`` or
    ``@risk_check("max_position")``. The rule name is a metric label: normalised (``"max position"`` ->
    ``max_position``), never refused."""
    return _RiskRule(user_name(rule, "rule"), attributes)


# --- risk gauges ---------------------------------------------------------------------------------------

_RISK_GAUGES = {
    "daily_pnl_used": semconv.DAILY_PNL_USED,
    "open_positions": semconv.OPEN_POSITIONS,
    "max_positions": semconv.MAX_POSITIONS,
    "gross_exposure": semconv.GROSS_EXPOSURE,
}


def set_risk_gauges(*, strategy: Any = None, daily_pnl_used: GaugeValue | None = None,
                    open_positions: GaugeValue | None = None, max_positions: GaugeValue | None = None,
                    gross_exposure: GaugeValue | None = None) -> None:
    """Set risk gauges to values, or to callbacks evaluated at each export (off the trading thread).

    ``daily_pnl_used`` is the daily loss as a fraction of the limit (see :func:`daily_pnl_used`); exposure is
    gross (absolute). Negative values are clamped to 0 and counted; a callback that raises or returns
    None/NaN is skipped and counted.
    """
    values = {"daily_pnl_used": daily_pnl_used, "open_positions": open_positions,
              "max_positions": max_positions, "gross_exposure": gross_exposure}
    labels = {semconv.STRATEGY: text(strategy) or semconv.UNKNOWN_VALUE}
    for key, value in values.items():
        if value is None:
            continue
        try:
            clamped = _non_negative(value)
            if clamped is not None:
                STATE.set_gauge(_RISK_GAUGES[key], labels, clamped)
        except Exception as exc:  # noqa: BLE001
            telemetry_error("risk_gauge_failed", repr(exc))


def daily_pnl_used(pnl: Any, loss_limit: Any) -> float | None:
    """Fraction of the daily loss limit used: 0 while in profit, 1.0 at the limit, above 1 past it."""
    p = finite(pnl)
    limit = finite(loss_limit)
    if p is None or limit is None or limit == 0:
        telemetry_error("bad_pnl")
        return None
    return max(0.0, -p) / abs(limit)


def _non_negative(value: GaugeValue) -> GaugeValue | None:
    if callable(value):
        fn = value

        def clamped() -> Any:
            raw = fn()
            if raw is None:
                return None
            number = finite(raw)
            if number is not None and number < 0:
                telemetry_error("negative_gauge_clamped", "a risk gauge callback returned a negative value")
                return 0.0
            return raw if number is None else number

        return clamped
    number = finite(value)
    if number is None:
        telemetry_error("bad_gauge_value")
        return None
    if number < 0:
        telemetry_error("negative_gauge_clamped", "a risk gauge was set to a negative value")
        return 0.0
    return number
