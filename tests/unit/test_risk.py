"""Kill switch, circuit breakers, risk checks and risk gauges: observed from the user's own objects."""

from __future__ import annotations

import asyncio
import math
import time

import pybreaker
import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

import qt_telemetry as qt
from qt_telemetry import semconv
from qt_telemetry.testing import Capture


class KillSwitch:
    """A user's own kill switch, as trading bots have them."""

    def __init__(self) -> None:
        self.active = False

    def activate(self, reason: str, actor: str = "risk-engine") -> None:
        self.active = True

    def deactivate(self, actor: str = "operator") -> None:
        self.active = False


def _gauge(cap: Capture, spec: semconv.MetricSpec, **attrs: str) -> float:
    return cap.point(spec.name, **attrs).value


# --- kill switch ---------------------------------------------------------------------------------------

def test_decorated_kill_switch_records_state_activation_reason_and_span_event(cap: Capture) -> None:
    class Switch(KillSwitch):
        @qt.kill_switch_activation(name="main")
        def activate(self, reason: str, actor: str = "risk-engine") -> None:
            super().activate(reason, actor)

        @qt.kill_switch_deactivation(name="main")
        def deactivate(self, actor: str = "operator") -> None:
            super().deactivate(actor)

    switch = Switch()
    with qt.trade_flow(symbol="BTCUSDT", strategy="s"):
        switch.activate("daily_loss_limit", actor="risk-engine")
    assert _gauge(cap, semconv.KILL_SWITCH_ACTIVE, kill_switch="main") == 1.0
    activations = cap.point(semconv.KILL_SWITCH_ACTIVATIONS.name, kill_switch="main")
    assert activations.value == 1 and activations.attributes[semconv.REASON] == "daily_loss_limit"
    (event,) = cap.span(semconv.SPAN_TRADE).events
    assert event.name == semconv.EVENT_KILL_SWITCH
    assert event.attributes[semconv.REASON] == "daily_loss_limit"
    assert event.attributes[semconv.ACTOR] == "risk-engine"
    assert event.attributes["kill_switch.active"] is True

    switch.deactivate()
    assert _gauge(cap, semconv.KILL_SWITCH_ACTIVE, kill_switch="main") == 0.0
    last_change = _gauge(cap, semconv.KILL_SWITCH_LAST_CHANGE, kill_switch="main")
    assert abs(last_change - time.time()) < 60
    assert cap.metrics()[semconv.KILL_SWITCH_LAST_CHANGE.name].unit == "s"


def test_observing_an_existing_kill_switch_object_reports_its_own_state(cap: Capture) -> None:
    switch = qt.observe_kill_switch(KillSwitch(), name="desk", is_active="active")
    assert _gauge(cap, semconv.KILL_SWITCH_ACTIVE, kill_switch="desk") == 0.0  # known from the start
    switch.activate(reason="manual", actor="alice")
    assert switch.active is True  # the user's behaviour is unchanged
    assert _gauge(cap, semconv.KILL_SWITCH_ACTIVE, kill_switch="desk") == 1.0
    span = cap.span("qt.kill_switch")  # no trace was active: a span of its own carries the event
    assert span.events[0].attributes[semconv.ACTOR] == "alice"
    switch.active = False  # changed behind our back: the gauge follows the object
    assert _gauge(cap, semconv.KILL_SWITCH_ACTIVE, kill_switch="desk") == 0.0


def test_observing_a_missing_method_is_a_configuration_error() -> None:
    with pytest.raises(qt.ConfigurationError, match="halt"):
        qt.observe_kill_switch(KillSwitch(), activate="halt")


# --- circuit breakers ----------------------------------------------------------------------------------

def test_breaker_state_gauge_uses_0_half_1_and_counts_trips_and_resets(cap: Capture) -> None:
    qt.record_breaker_state("binance-api", "closed")
    assert _gauge(cap, semconv.BREAKER_STATE, breaker="binance-api") == 0.0
    qt.record_breaker_state("binance-api", "OPEN")
    assert _gauge(cap, semconv.BREAKER_STATE, breaker="binance-api") == 1.0
    qt.record_breaker_state("binance-api", "half-open")
    assert _gauge(cap, semconv.BREAKER_STATE, breaker="binance-api") == 0.5
    qt.record_breaker_state("binance-api", "closed")
    assert cap.point(semconv.BREAKER_TRIPS.name).value == 1
    assert cap.point(semconv.BREAKER_RESETS.name).value == 1
    transitions = [e.attributes[semconv.BREAKER_OLD_STATE] + ">" + e.attributes[semconv.BREAKER_NEW_STATE]
                   for s in cap.spans() for e in s.events if e.name == semconv.EVENT_BREAKER]
    assert transitions == ["closed>open", "open>half_open", "half_open>closed"]


def test_unknown_breaker_state_is_dropped_and_counted(cap: Capture) -> None:
    qt.record_breaker_state("api", "closed")
    qt.record_breaker_state("api", "exploded")
    qt.record_breaker_state("api", None)
    assert _gauge(cap, semconv.BREAKER_STATE, breaker="api") == 0.0
    assert cap.point(semconv.TELEMETRY_ERRORS.name, kind="unknown_breaker_state").value == 2


def test_pybreaker_listener_follows_a_real_breaker(cap: Capture) -> None:
    breaker = qt.observe_pybreaker(pybreaker.CircuitBreaker(fail_max=2, reset_timeout=0.05, name="exchange"))
    assert _gauge(cap, semconv.BREAKER_STATE, breaker="exchange") == 0.0

    def boom() -> None:
        raise ConnectionError("venue down")

    for _ in range(2):
        with pytest.raises((ConnectionError, pybreaker.CircuitBreakerError)):
            breaker.call(boom)
    assert breaker.current_state == "open"
    assert _gauge(cap, semconv.BREAKER_STATE, breaker="exchange") == 1.0
    assert cap.point(semconv.BREAKER_TRIPS.name, breaker="exchange").value == 1

    time.sleep(0.06)  # the breaker's own reset timeout; pybreaker has no clock to inject
    breaker.call(lambda: None)  # half-open trial succeeds -> closed
    assert breaker.current_state == "closed"
    assert _gauge(cap, semconv.BREAKER_STATE, breaker="exchange") == 0.0
    assert cap.point(semconv.BREAKER_RESETS.name, breaker="exchange").value == 1


# --- risk checks ---------------------------------------------------------------------------------------

def test_rejected_check_is_a_child_of_entry_with_reason_event_and_counter(cap: Capture) -> None:
    with qt.trade_flow(symbol="BTCUSDT", strategy="momo") as flow, flow.entry():
        with qt.risk_check("max_position") as check:
            check.reject("limit_exceeded", value=4, limit=3)

    entry = cap.span(semconv.SPAN_ENTRY)
    span = cap.span(semconv.SPAN_RISK_CHECK)
    assert span.parent.span_id == entry.context.span_id
    assert span.attributes[semconv.RISK_RULE] == "max_position"
    assert span.attributes[semconv.OUTCOME] == "rejected"
    assert span.attributes[semconv.REASON] == "limit_exceeded"
    assert (span.attributes[semconv.RISK_VALUE], span.attributes[semconv.RISK_LIMIT]) == (4.0, 3.0)
    assert [e.name for e in span.events] == [semconv.EVENT_RISK_REJECTED]
    assert span.status.status_code is StatusCode.UNSET  # a rejection is a decision, not an error
    point = cap.point(semconv.RISK_CHECKS.name, outcome="rejected")
    assert point.value == 1
    assert point.attributes[semconv.RISK_RULE] == "max_position"
    assert point.attributes[semconv.STRATEGY] == "momo" and point.attributes[semconv.SYMBOL] == "BTCUSDT"
    assert cap.span(semconv.SPAN_TRADE).attributes[semconv.OUTCOME] == "rejected"
    assert cap.metrics()[semconv.RISK_CHECK_LATENCY.name].unit == "s"


def test_decorated_check_passes_on_true_and_rejects_on_false_with_reason(cap: Capture) -> None:
    @qt.risk_check("daily_loss")
    def within_daily_loss(pnl: float, limit: float):
        return (pnl > -limit, "daily_loss_limit")

    assert within_daily_loss(-10, 100) == (True, "daily_loss_limit")
    within_daily_loss(-150, 100)
    assert cap.point(semconv.RISK_CHECKS.name, outcome="passed").value == 1
    assert cap.point(semconv.RISK_CHECKS.name, outcome="rejected").attributes[semconv.REASON] == "daily_loss_limit"


def test_async_decorated_check_and_error_outcome(cap: Capture) -> None:
    @qt.risk_check("exposure")
    async def check_exposure() -> bool:
        raise RuntimeError("risk service down")

    with pytest.raises(RuntimeError):
        asyncio.run(check_exposure())
    span = cap.span(semconv.SPAN_RISK_CHECK)
    assert span.status.status_code is StatusCode.ERROR
    assert cap.point(semconv.RISK_CHECKS.name).attributes[semconv.OUTCOME] == "error"


@pytest.mark.parametrize(("rule", "label"), [
    ("max_position", "max_position"), ("1st", "1st"), ("max position", "max_position"), ("", "unknown"),
    ("x" * 65, "x" * 64), ("räte/limit", "r_te_limit"), (None, "unknown"), (42, "42")])
def test_rule_names_are_data_normalised_never_refused(cap: Capture, rule: object, label: str) -> None:
    with qt.risk_check(rule) as check:  # type: ignore[arg-type]
        check.reject("too_big")
    assert cap.point(semconv.RISK_CHECKS.name).attributes[semconv.RISK_RULE] == label
    changed = cap.points(semconv.TELEMETRY_ERRORS.name, kind="name_normalised")
    assert [p.value for p in changed] == ([] if rule == label else [1])


def test_names_never_raise_even_before_init(clean_globals: None) -> None:
    with qt.risk_check("max position") as check:
        check.reject("limit")
    qt.FeedMonitor("binance ws").message("BTCUSDT")
    qt.kill_switch_activation(name="desk switch")


# --- risk gauges ---------------------------------------------------------------------------------------

def test_risk_gauges_from_values_and_callbacks(cap: Capture) -> None:
    positions = [2]
    qt.set_risk_gauges(strategy="momo", daily_pnl_used=qt.daily_pnl_used(-80, 100),
                       open_positions=lambda: positions[0], max_positions=3, gross_exposure=12500.0)
    assert _gauge(cap, semconv.DAILY_PNL_USED, strategy="momo") == pytest.approx(0.8)
    assert _gauge(cap, semconv.OPEN_POSITIONS, strategy="momo") == 2
    positions[0] = 3
    assert _gauge(cap, semconv.OPEN_POSITIONS, strategy="momo") == 3
    assert _gauge(cap, semconv.MAX_POSITIONS, strategy="momo") == 3
    assert _gauge(cap, semconv.GROSS_EXPOSURE, strategy="momo") == 12500.0
    assert cap.metrics()[semconv.DAILY_PNL_USED.name].unit == "1"


def test_daily_pnl_used_is_zero_in_profit_and_above_one_past_the_limit() -> None:
    assert qt.daily_pnl_used(50, 100) == 0.0
    assert qt.daily_pnl_used(-120, -100) == pytest.approx(1.2)
    assert qt.daily_pnl_used(float("nan"), 100) is None
    assert qt.daily_pnl_used(-1, 0) is None


def test_bad_gauge_values_and_failing_callbacks_are_absorbed_and_counted(cap: Capture) -> None:
    def broken() -> float:
        raise RuntimeError("position service down")

    qt.set_risk_gauges(strategy="a", open_positions=broken, daily_pnl_used=lambda: None)
    qt.set_risk_gauges(strategy="b", open_positions=-2, daily_pnl_used=float("nan"))
    qt.set_risk_gauges(strategy="c", gross_exposure=lambda: math.inf)

    assert cap.points(semconv.OPEN_POSITIONS.name, strategy="a") == []
    assert _gauge(cap, semconv.OPEN_POSITIONS, strategy="b") == 0.0  # clamped
    assert cap.points(semconv.DAILY_PNL_USED.name, strategy="b") == []  # dropped
    errors = {p.attributes["kind"]: p.value for p in cap.points(semconv.TELEMETRY_ERRORS.name)}
    assert errors["gauge_callback_failed"] >= 1
    assert errors["gauge_callback_none"] >= 1
    assert errors["negative_gauge_clamped"] == 1
    assert errors["bad_gauge_value"] == 1
    assert errors["gauge_bad_value"] >= 1


def test_one_rule_shared_by_concurrent_tasks_gives_each_use_its_own_check(cap: Capture,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    rule = qt.risk_check("max_position")

    async def evaluate(i: int) -> None:
        async with rule as check:
            await asyncio.sleep(0.005 * (6 - i))  # interleave: later tasks leave first
            if i % 2:
                check.reject("too_big")

    async def main() -> None:
        await asyncio.gather(*(evaluate(i) for i in range(6)))

    asyncio.run(main())
    outcomes = sorted(s.attributes[semconv.OUTCOME] for s in cap.spans(semconv.SPAN_RISK_CHECK))
    assert outcomes == ["passed"] * 3 + ["rejected"] * 3
    assert cap.point(semconv.RISK_CHECKS.name, outcome="rejected").value == 3
    assert "Failed to detach context" not in caplog.text
    assert not trace.get_current_span().get_span_context().is_valid


def test_a_cancelled_check_is_cancelled_like_a_cancelled_stage_or_order(cap: Capture) -> None:
    async def main() -> None:
        async def slow() -> None:
            async with qt.risk_check("exposure"):
                await asyncio.sleep(10)

        task = asyncio.create_task(slow())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    span = cap.span(semconv.SPAN_RISK_CHECK)
    assert span.attributes[semconv.OUTCOME] == "cancelled"
    assert span.status.status_code is StatusCode.UNSET
