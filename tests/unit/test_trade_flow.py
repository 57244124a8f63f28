"""trade_flow: one trace per trade; signal, entry, execution and exit under the root; orders under execution."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.trace import StatusCode

import qt_telemetry as qt
from qt_telemetry import semconv
from qt_telemetry.testing import Capture


@qt.traced_order(venue="binance")
def place(symbol, side, quantity):
    return None


@qt.traced_order(venue="binance")
async def aplace(symbol, side, quantity):
    return None


def _by_name(cap: Capture) -> dict:
    return {s.name: s for s in cap.spans()}


def test_four_stages_are_children_of_the_trade_root_and_the_order_of_execution(cap: Capture) -> None:
    with qt.trade_flow(symbol="BTCUSDT", strategy="momentum", trade_id="t-1") as flow:
        with flow.signal(confidence=0.82, direction="long"):
            pass
        with flow.entry():
            pass
        with flow.execution():
            place("BTCUSDT", "buy", 1)
        with flow.exit(reason="take_profit"):
            pass

    spans = _by_name(cap)
    root = spans[semconv.SPAN_TRADE]
    assert root.parent is None
    assert root.attributes[semconv.SYMBOL] == "BTCUSDT"
    assert root.attributes[semconv.STRATEGY] == "momentum"
    assert root.attributes[semconv.TRADE_ID] == "t-1"
    for stage in (semconv.SPAN_SIGNAL, semconv.SPAN_ENTRY, semconv.SPAN_EXECUTION, semconv.SPAN_EXIT):
        assert spans[stage].parent.span_id == root.context.span_id, stage
        assert spans[stage].context.trace_id == root.context.trace_id
    order = spans[semconv.SPAN_ORDER]
    assert order.parent.span_id == spans[semconv.SPAN_EXECUTION].context.span_id
    assert order.attributes[semconv.STRATEGY] == "momentum"  # inherited from the flow
    assert spans[semconv.SPAN_SIGNAL].attributes[semconv.SIGNAL_CONFIDENCE] == 0.82
    assert spans[semconv.SPAN_SIGNAL].attributes[semconv.SIGNAL_DIRECTION] == "long"
    assert spans[semconv.SPAN_EXIT].attributes["reason"] == "take_profit"
    assert [s.name for s in cap.spans()][-1] == semconv.SPAN_TRADE  # the root ends last


def test_stage_and_trade_durations_are_recorded_with_exemplars(cap: Capture) -> None:
    with qt.trade_flow(symbol="ETHUSDT", strategy="meanrev") as flow, flow.signal():
        pass
    root = cap.span(semconv.SPAN_TRADE)
    stage_point = cap.point(semconv.STAGE_DURATION.name, stage="signal")
    assert dict(stage_point.attributes) == {"strategy": "meanrev", "symbol": "ETHUSDT", "stage": "signal",
                                            "outcome": "ok"}
    assert cap.point(semconv.TRADES.name).attributes[semconv.OUTCOME] == "ok"
    assert cap.metrics()[semconv.TRADE_DURATION.name].unit == "s"
    traces = {e.trace_id for e in cap.exemplars(semconv.STAGE_DURATION.name)}
    assert traces == {root.context.trace_id}


def test_an_exception_in_a_stage_marks_stage_and_trade_as_error_and_propagates(cap: Capture) -> None:
    with pytest.raises(ZeroDivisionError), qt.trade_flow(symbol="BTCUSDT", strategy="s") as flow, flow.execution():
        1 / 0  # noqa: B018
    spans = _by_name(cap)
    assert spans[semconv.SPAN_EXECUTION].status.status_code is StatusCode.ERROR
    assert spans[semconv.SPAN_TRADE].status.status_code is StatusCode.ERROR
    assert spans[semconv.SPAN_TRADE].attributes[semconv.OUTCOME] == "error"
    assert cap.point(semconv.TRADES.name).attributes[semconv.OUTCOME] == "error"


def test_rejected_trade_reports_rejected_outcome(cap: Capture) -> None:
    with qt.trade_flow(symbol="BTCUSDT", strategy="s") as flow, flow.entry():
        flow.reject("max_positions")
    root = cap.span(semconv.SPAN_TRADE)
    assert root.attributes[semconv.OUTCOME] == "rejected"
    assert root.attributes[semconv.REASON] == "max_positions"


def test_async_flow_and_async_order_keep_parentage(cap: Capture) -> None:
    async def trade() -> None:
        async with qt.trade_flow(symbol="SOLUSDT", strategy="a") as flow:
            async with flow.signal(confidence=0.5):
                await asyncio.sleep(0)
            async with flow.execution():
                await aplace("SOLUSDT", "sell", 2)

    asyncio.run(trade())
    spans = _by_name(cap)
    assert spans[semconv.SPAN_ORDER].parent.span_id == spans[semconv.SPAN_EXECUTION].context.span_id
    assert spans[semconv.SPAN_EXECUTION].parent.span_id == spans[semconv.SPAN_TRADE].context.span_id


def test_concurrent_async_flows_do_not_mix_traces(cap: Capture) -> None:
    async def trade(symbol: str) -> None:
        async with qt.trade_flow(symbol=symbol, strategy="c") as flow, flow.execution():
            await asyncio.sleep(0.01)
            await aplace(symbol, "buy", 1)

    async def main() -> None:
        await asyncio.gather(trade("A"), trade("B"), trade("C"))

    asyncio.run(main())
    roots = {s.attributes[semconv.SYMBOL]: s.context.trace_id for s in cap.spans(semconv.SPAN_TRADE)}
    for order in cap.spans(semconv.SPAN_ORDER):
        assert order.context.trace_id == roots[order.attributes[semconv.SYMBOL]]
    assert len(set(roots.values())) == 3


def test_current_flow_is_visible_inside_and_gone_after(cap: Capture) -> None:
    assert qt.current_flow() is None
    with qt.trade_flow(symbol="X", strategy="y") as flow:
        assert qt.current_flow() is flow
        assert len(flow.trace_id) == 32
    assert qt.current_flow() is None


# --- a flow that spans several calls: start() / finish() / activate() ---------------------------------------

def test_started_flow_and_stages_end_when_finished_not_before(cap: Capture) -> None:
    flow = qt.trade_flow(symbol="BTC/USDT", strategy="ft", trade_id=7).start()
    signal = flow.signal(direction="long", reference_price=100.0).start()
    assert qt.current_flow() is None  # started, not current: the callback that started it returns
    assert cap.spans() == []
    signal.finish()
    flow.finish()
    flow.finish()  # again: nothing

    root, stage = cap.span(semconv.SPAN_TRADE), cap.span(semconv.SPAN_SIGNAL)
    assert stage.parent.span_id == root.context.span_id and stage.context.trace_id == root.context.trace_id
    assert root.parent is None
    assert (root.attributes[semconv.TRADE_ID], root.attributes[semconv.OUTCOME]) == (7, "ok")
    assert cap.point(semconv.TRADES.name).attributes[semconv.OUTCOME] == "ok"


def test_activate_makes_a_started_stage_and_its_flow_current_for_the_block_only(cap: Capture) -> None:
    flow = qt.trade_flow(symbol="BTC/USDT", strategy="ft").start()
    flow.signal(reference_price=100.0)  # not started: nothing recorded, but the reference price is the flow's
    execution = flow.execution().start()
    with execution.activate():
        assert qt.current_flow() is flow
        place("BTC/USDT", "buy", 1)
    assert qt.current_flow() is None
    execution.finish()
    flow.finish()

    order = cap.span(semconv.SPAN_ORDER)
    assert order.parent.span_id == cap.span(semconv.SPAN_EXECUTION).context.span_id
    assert order.attributes[semconv.STRATEGY] == "ft"  # from the activated flow
    assert [s.name for s in cap.spans()] == [semconv.SPAN_ORDER, semconv.SPAN_EXECUTION, semconv.SPAN_TRADE]


def test_a_risk_check_rejecting_inside_an_activated_flow_rejects_the_trade(cap: Capture) -> None:
    flow = qt.trade_flow(symbol="ETH/USDT", strategy="ft").start()
    with flow.activate(), flow.entry(), qt.risk_check("confirm_trade_entry") as check:
        check.reject("denied")
    flow.finish()

    check_span = cap.span(semconv.SPAN_RISK_CHECK)
    assert check_span.parent.span_id == cap.span(semconv.SPAN_ENTRY).context.span_id
    root = cap.span(semconv.SPAN_TRADE)
    assert (root.attributes[semconv.OUTCOME], root.attributes[semconv.REASON]) == (
        "rejected", "confirm_trade_entry:denied")


def test_finish_takes_an_outcome_and_counts_a_bad_one(cap: Capture) -> None:
    qt.trade_flow(symbol="A", strategy="ft").start().finish(outcome="cancelled")
    qt.trade_flow(symbol="B", strategy="ft").start().finish(outcome="sideways")

    outcomes = {s.attributes[semconv.SYMBOL]: s.attributes[semconv.OUTCOME] for s in cap.spans(semconv.SPAN_TRADE)}
    assert outcomes == {"A": "cancelled", "B": "ok"}
    assert cap.point(semconv.TELEMETRY_ERRORS.name, kind="bad_outcome").value == 1


def test_start_finish_and_activate_record_nothing_before_init() -> None:
    flow = qt.trade_flow(symbol="A", strategy="ft").start()
    with flow.activate(), flow.execution().start().activate():
        place("A", "buy", 1)
    flow.exit().start().finish()
    flow.finish(outcome="cancelled")
    assert qt.current_flow() is None
