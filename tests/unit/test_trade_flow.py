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
