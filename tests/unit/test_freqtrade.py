"""freqtrade: the real bot (2026.9) and real ccxt, trading on a local Binance (tests/support/fake_binance.py).

The strategy (tests/support/freqtrade_strategies/traced_strategy.py) has the one line, ``QtTelemetry``; it enters
BTC/USDT on every candle with a market order and exits as soon as the entry is filled. The in-process tests build
freqtrade's own ``FreqtradeBot`` and run its loop one iteration at a time (``bot.process()``, what its worker calls
every few seconds); the last test runs ``freqtrade trade`` itself and reads the trade off the OTLP wire.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

if sys.version_info < (3, 11):  # pragma: no cover - freqtrade 2026.9 needs Python 3.11
    pytest.skip("freqtrade needs Python >= 3.11", allow_module_level=True)

from freqtrade.enums import CandleType

from qt_telemetry import semconv
from qt_telemetry.ccxt import uninstrument_ccxt
from qt_telemetry.testing import Capture
from tests.support.fake_binance import FakeBinance, ThreadedStream, kline_event
from tests.support.freqtrade_bot import API_KEY, SECRET, make_bot, write_config
from tests.support.otlp_receiver import OtlpHttpReceiver, attributes
from tests.support.polling import wait_until
from tests.support.servers import REPO

# freqtrade 2026.9 on pandas 3.1: its own DataFrame calls, nothing of ours
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame:DeprecationWarning")

PAIR = "BTC/USDT"
STAGES = (semconv.SPAN_SIGNAL, semconv.SPAN_ENTRY, semconv.SPAN_EXECUTION, semconv.SPAN_EXIT)


@pytest.fixture
def venue() -> Iterator[FakeBinance]:
    server = FakeBinance(secret=SECRET)
    yield server
    server.close()


@pytest.fixture
def bot(tmp_path: Path, venue: FakeBinance, cap: Capture) -> Iterator[Callable[..., Any]]:
    """``bot(dry_run=..., ws_url=...)``: a started FreqtradeBot on the local venue (cleaned up after the test)."""
    made: list[Any] = []

    def start(*, dry_run: bool = True, ws_url: str | None = None) -> Any:
        made.append(make_bot(write_config(tmp_path, venue.url, dry_run=dry_run, ws_url=ws_url), dry_run=dry_run))
        return made[-1]

    yield start
    for each in made:
        each.cleanup()
    uninstrument_ccxt()
    asyncio.set_event_loop(None)  # freqtrade's exchange set (and closed) this thread's loop: leave none behind
    gc.collect()  # a socket or transport left unclosed fails this test, not whichever test collects it later


def _one(cap: Capture, name: str, **attrs: Any) -> Any:
    found = [s for s in cap.spans(name) if all(s.attributes.get(k) == v for k, v in attrs.items())]
    assert len(found) == 1, f"{name} {attrs}: {[dict(s.attributes) for s in cap.spans(name)]}"
    return found[0]


def _children(cap: Capture, parent: Any) -> list[str]:
    return sorted(s.name for s in cap.spans() if s.parent is not None and s.parent.span_id == parent.context.span_id)


def test_dry_run_trade_is_one_trace_signal_entry_execution_exit_with_simulated_orders_and_fills(
        bot: Callable[..., Any], cap: Capture, venue: FakeBinance) -> None:
    ft = bot(dry_run=True)
    ft.process()  # the signal, the entry, the market buy (filled at once, simulated)
    ft.process()  # custom_exit says "done": the market sell closes the trade

    root = cap.span(semconv.SPAN_TRADE)
    assert root.parent is None
    assert dict(root.attributes) == {
        semconv.SYMBOL: PAIR, semconv.STRATEGY: "TracedStrategy", "freqtrade.dry_run": True, semconv.TRADE_ID: 1,
        "freqtrade.exit_reason": "done", "freqtrade.profit_ratio": pytest.approx(-0.0021, abs=2e-4),
        "freqtrade.profit_abs": pytest.approx(-0.21, abs=0.02), semconv.OUTCOME: "ok", semconv.SAMPLING_KEEP: True}
    stages = {name: cap.span(name) for name in STAGES}
    assert {n: s.parent.span_id for n, s in stages.items()} == dict.fromkeys(STAGES, root.context.span_id)
    assert {s.context.trace_id for s in cap.spans()} == {root.context.trace_id}  # the whole trade, one trace
    signal_stage = stages[semconv.SPAN_SIGNAL]
    assert (signal_stage.attributes[semconv.SIGNAL_DIRECTION], signal_stage.attributes["freqtrade.entry_tag"],
            signal_stage.attributes[semconv.SIGNAL_REFERENCE_PRICE]) == ("long", "always", 100.5)
    assert _children(cap, stages[semconv.SPAN_ENTRY]) == [semconv.SPAN_RISK_CHECK]
    assert _children(cap, stages[semconv.SPAN_EXECUTION]) == [semconv.SPAN_ORDER]
    assert _children(cap, stages[semconv.SPAN_EXIT]) == [semconv.SPAN_ORDER, semconv.SPAN_RISK_CHECK]
    assert stages[semconv.SPAN_EXIT].attributes["freqtrade.exit_reason"] == "done"

    buy, sell = _one(cap, semconv.SPAN_ORDER, side="buy"), _one(cap, semconv.SPAN_ORDER, side="sell")
    assert buy.attributes["freqtrade.dry_run"] is True and buy.attributes[semconv.VENUE] == "binance"
    assert (buy.attributes[semconv.ORDER_TYPE], buy.attributes[semconv.ORDER_STATUS]) == ("market", "closed")
    assert buy.attributes[semconv.ORDER_ID].startswith("dry_run_buy_")
    for order in (buy, sell):  # the simulated fill, through order_filled, under its order
        (fill,) = [s for s in cap.spans(semconv.SPAN_ORDER_EVENT) if s.parent.span_id == order.context.span_id]
        assert fill.attributes[semconv.ORDER_EVENT] == "fill"
        assert fill.attributes[semconv.FILL_QUANTITY] == pytest.approx(0.99502)
    assert not venue.received("POST", "/api/v3/order")  # dry-run: no order reached the venue

    assert cap.point(semconv.TRADES.name).attributes[semconv.OUTCOME] == "ok"
    assert {p.attributes["risk.rule"]: p.value for p in cap.points(semconv.RISK_CHECKS.name)} == {
        "confirm_trade_entry": 1, "confirm_trade_exit": 1}
    assert cap.point(semconv.ORDER_LATENCY.name, side="buy").count == 1
    assert cap.point(semconv.FILL_LATENCY.name, side="sell").count == 1
    assert {p.attributes[semconv.STAGE] for p in cap.points(semconv.STAGE_DURATION.name)} == {
        "signal", "entry", "execution", "exit"}


def test_dry_run_limit_order_rests_acknowledged_until_the_market_reaches_it(
        bot: Callable[..., Any], cap: Capture, venue: FakeBinance) -> None:
    ft = bot(dry_run=True)
    ft.strategy.order_types = {**ft.strategy.order_types, "entry": "limit"}
    ft.config["entry_pricing"]["price_side"] = "same"  # buy at the bid, a cent under the ask: the order rests
    ft.process()

    order = cap.span(semconv.SPAN_ORDER)
    assert (order.attributes[semconv.ORDER_TYPE], order.attributes[semconv.ORDER_STATUS]) == ("limit", "open")
    (ack,) = cap.spans(semconv.SPAN_ORDER_EVENT)
    assert ack.attributes[semconv.ORDER_EVENT] == "ack" and ack.parent.span_id == order.context.span_id

    venue.fill_price = "100.40"  # the market comes down through the order: freqtrade's simulation fills it
    ft.process()
    fill = _one(cap, semconv.SPAN_ORDER_EVENT, **{semconv.ORDER_EVENT: "fill", semconv.SIDE: "buy"})
    assert fill.parent.span_id == order.context.span_id
    assert fill.attributes[semconv.FILL_PRICE] == 100.49  # at its limit
    assert cap.point(semconv.FILL_LATENCY.name, side="buy").count == 1


def test_live_orders_are_ccxt_spans_under_the_stages_with_one_fill_each_from_the_venue_replies(
        bot: Callable[..., Any], cap: Capture, venue: FakeBinance) -> None:
    ft = bot(dry_run=False)
    ft.process()
    ft.process()

    sent = venue.received("POST", "/api/v3/order")
    assert [(r.params["side"], r.params["type"]) for r in sent] == [("BUY", "MARKET"), ("SELL", "MARKET")]
    root = cap.span(semconv.SPAN_TRADE)
    assert (root.attributes["freqtrade.dry_run"], root.attributes[semconv.OUTCOME]) == (False, "ok")
    for side, stage, order_id, request in (("buy", semconv.SPAN_EXECUTION, "1001", sent[0]),
                                           ("sell", semconv.SPAN_EXIT, "1002", sent[1])):
        order = _one(cap, semconv.SPAN_ORDER, side=side)
        assert order.parent.span_id == cap.span(stage).context.span_id
        assert order.attributes[semconv.CODE_FUNCTION] == "create_order"  # ccxt's call, traced by instrument_ccxt
        assert order.attributes[semconv.ORDER_ID] == order_id
        assert order.attributes[semconv.ORDER_CLIENT_ID] == request.params["newClientOrderId"]
        assert "freqtrade.dry_run" not in order.attributes
    # ccxt's replies said "filled"; freqtrade's order_filled that follows adds no second fill
    events = sorted((p.attributes[semconv.SIDE], p.attributes[semconv.ORDER_EVENT], p.value)
                    for p in cap.points(semconv.ORDER_EVENTS.name))
    assert events == [("buy", "fill", 1), ("sell", "fill", 1)]


def test_live_limit_order_filled_later_is_found_by_freqtrades_fetch_order_and_filled_once(
        bot: Callable[..., Any], cap: Capture, venue: FakeBinance) -> None:
    ft = bot(dry_run=False)
    ft.strategy.order_types = {**ft.strategy.order_types, "entry": "limit"}
    ft.config["entry_pricing"]["price_side"] = "same"
    ft.process()
    (sent,) = venue.received("POST", "/api/v3/order")
    assert sent.params["type"] == "LIMIT"
    order = cap.span(semconv.SPAN_ORDER)
    assert cap.span(semconv.SPAN_ORDER_EVENT).attributes[semconv.ORDER_EVENT] == "ack"

    venue.fill(order.attributes[semconv.ORDER_ID])
    ft.strategy.deny_exits = True  # only the fill in this loop
    ft.process()
    (query,) = [s for s in cap.spans(semconv.SPAN_ORDER_QUERY)  # freqtrade's fetch_order, through ccxt (its
                if s.attributes[semconv.CODE_FUNCTION] == "fetch_order"]  # fetch_open_orders is a query too)
    assert query.attributes[semconv.ORDER_STATUS] == "closed"
    fills = [s for s in cap.spans(semconv.SPAN_ORDER_EVENT) if s.attributes[semconv.ORDER_EVENT] == "fill"]
    assert [f.parent.span_id for f in fills] == [order.context.span_id]  # ccxt's reply; order_filled adds none
    assert cap.point(semconv.ORDER_EVENTS.name, order__event="fill").value == 1


def test_confirm_trade_entry_saying_no_is_a_rejected_trade_without_orders(
        bot: Callable[..., Any], cap: Capture) -> None:
    ft = bot(dry_run=True)
    ft.strategy.deny_entries = True
    ft.process()

    root = cap.span(semconv.SPAN_TRADE)
    assert (root.attributes[semconv.OUTCOME], root.attributes[semconv.REASON]) == (
        "rejected", "confirm_trade_entry:denied")
    check = cap.span(semconv.SPAN_RISK_CHECK)
    assert check.parent.span_id == cap.span(semconv.SPAN_ENTRY).context.span_id
    assert (check.attributes[semconv.OUTCOME], check.attributes[semconv.REASON]) == ("rejected", "denied")
    assert cap.spans(semconv.SPAN_ORDER) == [] and cap.spans(semconv.SPAN_EXECUTION) == []
    assert cap.point(semconv.RISK_CHECKS.name).attributes[semconv.OUTCOME] == "rejected"
    assert cap.point(semconv.TRADES.name).attributes[semconv.OUTCOME] == "rejected"


def test_confirm_trade_exit_saying_no_keeps_the_trade_and_its_flow_open(
        bot: Callable[..., Any], cap: Capture) -> None:
    ft = bot(dry_run=True)
    ft.strategy.deny_exits = True
    ft.process()
    ft.process()  # the exit is refused: a rejected exit stage, the trade goes on

    assert cap.spans(semconv.SPAN_TRADE) == []
    refused = cap.span(semconv.SPAN_EXIT)
    assert refused.attributes[semconv.OUTCOME] == "rejected"
    assert _children(cap, refused) == [semconv.SPAN_RISK_CHECK]

    ft.strategy.deny_exits = False
    ft.process()
    root = cap.span(semconv.SPAN_TRADE)
    assert root.attributes[semconv.OUTCOME] == "ok"  # a refused exit is no rejected trade
    exits = cap.spans(semconv.SPAN_EXIT)
    assert [s.attributes[semconv.OUTCOME] for s in exits] == ["rejected", "ok"]
    assert {s.parent.span_id for s in exits} == {root.context.span_id}


def test_freqtrade_state_is_reported_as_risk_gauges_each_bot_loop(bot: Callable[..., Any], cap: Capture) -> None:
    ft = bot(dry_run=True)
    ft.process()  # entered at the end of this loop: the next loop start reports it
    ft.strategy.deny_exits = True
    ft.process()

    def gauge(metric: Any) -> float:
        return float(cap.point(metric.name, strategy="TracedStrategy").value)

    assert (gauge(semconv.OPEN_POSITIONS), gauge(semconv.MAX_POSITIONS)) == (1, 1)
    assert gauge(semconv.GROSS_EXPOSURE) == pytest.approx(100.0, rel=1e-3)  # the stake in the open trade
    assert gauge(semconv.DAILY_PNL_USED) == 0.0

    ft.strategy.deny_exits = False
    ft.process()  # closed at a loss (fees); the next loop start reports it
    ft.process()
    assert gauge(semconv.OPEN_POSITIONS) == 0 and gauge(semconv.GROSS_EXPOSURE) == 0
    pnl = cap.span(semconv.SPAN_TRADE).attributes["freqtrade.profit_abs"]
    # no MaxDrawdown protection: the loss limit is the stoploss (10 %) of freqtrade's starting balance
    starting = ft.wallets.get_starting_balance()
    assert starting == pytest.approx(990.0)  # 1000 USDT dry-run wallet x tradable_balance_ratio 0.99
    assert gauge(semconv.DAILY_PNL_USED) == pytest.approx(-pnl / (0.10 * starting))


def test_candle_websocket_reports_feed_health_messages_disconnects_and_reconnects(
        bot: Callable[..., Any], cap: Capture) -> None:
    stream = ThreadedStream()
    try:
        ft = bot(dry_run=True, ws_url=stream.url)
        ft.process()  # candles by REST, then freqtrade subscribes to the candle stream
        first = stream.subscribed("btcusdt@kline_1m")
        stream.send(first, kline_event("BTCUSDT", "1m", "100.50"))
        labels = {"feed": "binance.ohlcv", "symbol": PAIR}
        wait_until(lambda: cap.points(semconv.FEED_MESSAGES.name, **labels), 20, "a candle message")
        assert cap.point(semconv.FEED_CONNECTED.name, **labels).value == 1

        stream.drop(first)
        wait_until(lambda: cap.point(semconv.FEED_CONNECTED.name, **labels).value == 0, 20, "the disconnect")
        assert [e.name for s in cap.spans(semconv.SPAN_FEED) for e in s.events] == [
            semconv.EVENT_FEED_CONNECTED, semconv.EVENT_FEED_DISCONNECTED]

        def subscribed_again() -> list[Any]:
            # freqtrade subscribes again at its next candle refresh: ask for it now instead of waiting a minute
            # (a no-op until its watch task has wound down)
            ft.exchange._exchange_ws.schedule_ohlcv(PAIR, "1m", CandleType.SPOT)
            return stream.connections_to("btcusdt@kline_1m")[1:]

        stream.send(wait_until(subscribed_again, 20, "a new subscription")[0], kline_event("BTCUSDT", "1m", "100.50"))
        wait_until(lambda: cap.points(semconv.FEED_RECONNECTS.name, **labels), 20, "the reconnect")
        assert cap.point(semconv.FEED_CONNECTED.name, **labels).value == 1
        ft.cleanup()  # the client closes its connections first, as a stopping bot does, while the venue still answers
    finally:
        stream.close()


def test_stopping_the_bot_ends_an_open_trade_flow_as_cancelled(bot: Callable[..., Any], cap: Capture) -> None:
    ft = bot(dry_run=True)
    ft.process()
    ft.cleanup()  # what freqtrade does on stop and reload: the trade stays open in its database

    root = cap.span(semconv.SPAN_TRADE)
    assert (root.attributes[semconv.OUTCOME], root.attributes[semconv.REASON]) == ("cancelled", "bot_stopped")
    assert root.attributes[semconv.TRADE_ID] == 1
    assert [s.name for s in cap.spans() if s.name in STAGES] == [
        semconv.SPAN_SIGNAL, semconv.SPAN_ENTRY, semconv.SPAN_EXECUTION]


def test_freqtrade_trade_live_exports_the_trade_and_its_metrics_over_otlp(tmp_path: Path, venue: FakeBinance) -> None:
    """``freqtrade trade`` as a user runs it: the mixin calls init() itself, configured by OTEL_* variables only."""
    receiver = OtlpHttpReceiver()
    config = write_config(tmp_path, venue.url, dry_run=False, throttle_s=1)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
    env = {**clean, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_METRIC_EXPORT_INTERVAL": "500",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]), "QT_TEST_ONE_TRADE": "1"}
    log = tmp_path / "freqtrade.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "freqtrade", "trade", "--config", str(config)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        def closed_trade() -> list[Any]:
            return [s for _, s in receiver.spans() if s.name == semconv.SPAN_TRADE]

        def gauges_after_close() -> bool:
            return any(m.name == semconv.OPEN_POSITIONS.name and m.gauge.data_points[-1].as_double == 0
                       for _, m in receiver.metrics()) and bool(closed_trade())

        try:
            wait_until(gauges_after_close, 120, "the closed trade and the loop after it on the wire")
        except AssertionError:
            raise AssertionError(log.read_text()[-5000:]) from None
        (root,) = closed_trade()
        trace = [s for _, s in receiver.spans() if s.trace_id == root.trace_id]
        by_id = {s.span_id: s for s in trace}
        links = sorted((s.name, by_id[s.parent_span_id].name if s.parent_span_id else None) for s in trace)
        assert links == sorted([
            (semconv.SPAN_TRADE, None), (semconv.SPAN_SIGNAL, semconv.SPAN_TRADE),
            (semconv.SPAN_ENTRY, semconv.SPAN_TRADE), (semconv.SPAN_RISK_CHECK, semconv.SPAN_ENTRY),
            (semconv.SPAN_EXECUTION, semconv.SPAN_TRADE), (semconv.SPAN_ORDER, semconv.SPAN_EXECUTION),
            (semconv.SPAN_ORDER_EVENT, semconv.SPAN_ORDER), (semconv.SPAN_EXIT, semconv.SPAN_TRADE),
            (semconv.SPAN_RISK_CHECK, semconv.SPAN_EXIT), (semconv.SPAN_ORDER, semconv.SPAN_EXIT),
            (semconv.SPAN_ORDER_EVENT, semconv.SPAN_ORDER)])
        assert attributes(root)[semconv.OUTCOME] == "ok" and attributes(root)[semconv.TRADE_ID] == 1
        orders = [attributes(s) for s in trace if s.name == semconv.SPAN_ORDER]
        assert [(o[semconv.SIDE], o[semconv.ORDER_ID]) for o in orders] == [("buy", "1001"), ("sell", "1002")]
        (resource,) = {tuple(sorted(r.items())) for r, _ in receiver.spans()}
        assert dict(resource)["service.name"] == "ft-test-bot"  # freqtrade's bot_name

        metrics = {m.name: m for _, m in receiver.metrics()}
        trades = metrics[semconv.TRADES.name].sum.data_points
        assert [(attributes(p)[semconv.OUTCOME], p.as_int or p.as_double) for p in trades][-1:] == [("ok", 1)]
        latency = [p for p in metrics[semconv.ORDER_LATENCY.name].histogram.data_points
                   if attributes(p)["venue"] == "binance"]
        assert sum(p.count for p in latency[-2:]) == 2  # buy and sell, cumulative
        assert metrics[semconv.MAX_POSITIONS.name].gauge.data_points[-1].as_double == 1
        with receiver.lock:
            wire = b"".join(r.SerializeToString() for r in [*receiver.trace_requests, *receiver.metric_requests])
        assert API_KEY.encode() not in wire and SECRET.encode() not in wire
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            receiver.close()
