"""The README's "What each call records", row by row: each call is made and its spans, outcomes, statuses, metrics
and metric attributes are checked exactly as the table writes them. The semantics are written once (the README);
this keeps them true, and a row without a scenario here (or a scenario without a row) fails."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

import qt_telemetry as qt
from qt_telemetry import semconv
from qt_telemetry._engine.recorder.state import STATE
from qt_telemetry.testing import Capture
from tests.support.servers import REPO

Matchers = dict[str, tuple[str, str]]  # attribute -> (operator, value)


@dataclass(frozen=True)
class Row:
    call: str
    spans: list[str]
    outcomes: list[str]
    statuses: list[str]
    metrics: list[tuple[str, Matchers]]
    order: str


def _backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _rows() -> list[Row]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("<!-- semantics-table:start -->\n")[1].split("<!-- semantics-table:end -->")[0]
    rows, base = [], ""
    for line in section.splitlines()[2:]:
        call, spans, outcomes, statuses, metrics, order = (c.strip() for c in line.strip().strip("|").split(" | "))
        if not call.startswith("…"):
            base = call
        parsed = []
        for item in _backticked(metrics):
            name, _, labels = item.partition("{")
            parsed.append((name, {k: (op, v) for k, op, v in re.findall(r'([\w.]+)(=~|=)"([^"]*)"', labels)}))
        rows.append(Row(call if call == base else f"{base} {call}", _backticked(spans), _backticked(outcomes),
                        [s.strip() for s in statuses.split(",")], parsed, order))
    return rows


# --- the calls ------------------------------------------------------------------------------------------------

@qt.traced_order(venue="binance")
def place(symbol: str, side: str, quantity: float, client_order_id: str | None = None) -> dict[str, str]:
    return {"orderId": "V-1"}


@qt.traced_order(venue="binance")
def place_failing(symbol: str, side: str, quantity: float, client_order_id: str | None = None) -> None:
    raise ConnectionError("venue down")


def _placed() -> None:
    place("BTCUSDT", "buy", 2, client_order_id="c-1")


def _partly_filled() -> None:
    _placed()
    qt.order_filled("c-1", quantity=1, price=101.0, reference_price=100.0)


def _order_block(operation: str = "place", action: Callable[[Any], None] | None = None) -> None:
    with qt.order_span(venue="binance", symbol="BTCUSDT", side="buy", quantity=1, client_order_id="c-1",
                       operation=operation) as order:
        if action is not None:
            action(order)


def _timed_out(order: Any) -> None:
    order.outcome_unknown()
    raise TimeoutError("no answer in 10 s")


def _raising(exc_type: type[BaseException], call: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        with pytest.raises(exc_type):
            call()

    return run


def _risk(action: Callable[[Any], None] | None = None) -> None:
    with qt.risk_check("max_positions") as check:
        if action is not None:
            action(check)


def _failing_check(check: Any) -> None:
    raise ValueError("position feed missing")


def _flow_with_stage() -> None:
    with qt.trade_flow(symbol="BTCUSDT", strategy="momo") as flow, flow.signal():
        pass


def _flow_triggered() -> None:
    tick = qt.market_event("BTCUSDT", venue="binance", exchange_time=time.time() - 0.01)
    with qt.trade_flow(symbol="BTCUSDT", strategy="momo") as flow, flow.signal(trigger=tick):
        pass


def _flow_rejected() -> None:
    with qt.trade_flow(symbol="BTCUSDT", strategy="momo"):
        _risk(lambda check: check.reject("max_positions"))


def _nothing() -> None:
    pass


PLACE = "`@traced_order` function (or `order_span` block) returns"
RISK = "`qt.risk_check(rule)` block passes"
FLOW = "`qt.trade_flow(...)` block with a stage ends"
#: The table's call -> (setup, the call): what is recorded by the call alone is checked against its row.
SCENARIOS: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
    PLACE: (_nothing, _placed),
    f"{PLACE} … raises": (_nothing, _raising(ConnectionError, lambda: place_failing("BTCUSDT", "buy", 1, "c-1"))),
    f"{PLACE} … times out: `order.outcome_unknown()` (ccxt: `RequestTimeout`)": (
        _nothing, _raising(TimeoutError, lambda: _order_block(action=_timed_out))),
    "`order.reject(reason)` (ccxt: `InsufficientFunds`, `InvalidOrder`)": (
        _nothing, lambda: _order_block(action=lambda order: order.reject("insufficient_funds"))),
    '`order_span(operation="cancel")` block returns': (_nothing, lambda: _order_block("cancel")),
    '`order_span(operation="query")` block returns': (_nothing, lambda: _order_block("query")),
    "`qt.order_acknowledged(cid)`": (_placed, lambda: qt.order_acknowledged("c-1", order_id="V-1")),
    "`qt.order_filled(cid, ...)`: part, paying more than the signal's price": (
        _placed, lambda: qt.order_filled("c-1", quantity=1, price=101.0, reference_price=100.0)),
    "`qt.order_filled(cid, ...)`: the rest, paying less": (
        _partly_filled, lambda: qt.order_filled("c-1", quantity=1, price=99.0, reference_price=100.0)),
    "`qt.order_cancelled(cid, reason=...)`": (_placed, lambda: qt.order_cancelled("c-1", reason="user")),
    "`qt.order_rejected(cid, reason=...)`": (_placed, lambda: qt.order_rejected("c-1", reason="insufficient_margin")),
    "a lifecycle call naming no tracked order": (_nothing, lambda: qt.order_filled("never-placed", quantity=1,
                                                                                   price=100.0)),
    RISK: (_nothing, _risk),
    f"{RISK} … `check.reject(reason)`": (_nothing, lambda: _risk(lambda check: check.reject("max_positions"))),
    f"{RISK} … raises": (_nothing, _raising(ValueError, lambda: _risk(_failing_check))),
    FLOW: (_nothing, _flow_with_stage),
    f"{FLOW} … a risk check in it rejects": (_nothing, _flow_rejected),
    f"{FLOW} … its signal names a trigger: `flow.signal(trigger=tick)`": (_nothing, _flow_triggered),
}
ROWS = _rows()


def test_every_row_has_a_scenario_and_every_scenario_a_row() -> None:
    assert [row.call for row in ROWS] == list(SCENARIOS)


def _observed(cap: Capture, name: str, matchers: Matchers) -> float:
    """How much ``name`` holds where its attributes match: histogram counts, counter sums."""
    total = 0.0
    for point in cap.points(name):
        attributes = dict(point.attributes or {})
        if all((attributes.get(key, "") == value) if op == "=" else re.fullmatch(value, attributes.get(key, ""))
               for key, (op, value) in matchers.items()):
            total += getattr(point, "count", None) or getattr(point, "value", 0)
    return total


@pytest.mark.parametrize("row", ROWS, ids=[row.call for row in ROWS])
def test_each_call_records_what_the_readme_says(cap: Capture, row: Row) -> None:
    setup, call = SCENARIOS[row.call]
    setup()
    before_spans = len(cap.spans())
    before = [_observed(cap, name, matchers) for name, matchers in row.metrics]
    call()

    spans = cap.spans()[before_spans:]
    assert [s.name for s in spans] == row.spans
    assert [s.attributes[semconv.OUTCOME] for s in spans] == row.outcomes
    assert [s.status.status_code.name for s in spans] == [
        StatusCode.UNSET.name if status == "unset" else status for status in row.statuses]
    after = [_observed(cap, name, matchers) for name, matchers in row.metrics]
    assert [a > b for a, b in zip(after, before, strict=True)] == [True] * len(row.metrics), row.metrics
    if row.order != "—":
        assert len(STATE.orders) == (1 if row.order == "tracked" else 0)
