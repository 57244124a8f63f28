"""Overload: the exporter sheds span detail, never counts, and one process's load never costs another its spans.

Under a flood the exporter's span queue (``OTEL_BSP_MAX_QUEUE_SIZE``) and a producer's connection buffer fill. A
full connection makes the producer keep the counts of what it could not send (a pre-aggregate) and shed the
spans, counted; a full span queue drops the oldest span of the process holding the most. So a bot's parent
flooding does not take its forked child's few orders with it, nor the other way round, and the order-latency
histogram's count equals the orders made.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.botproc import Bot, bot_environment, cumulative, order_spans
from tests.support.otlp_receiver import OtlpHttpReceiver
from tests.support.polling import wait_until


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    r = OtlpHttpReceiver()
    yield r
    r.close()


@pytest.mark.parametrize(("flooder", "few"), [("parent", "CHILD-FEW"), ("child", "PARENT-FEW")])
def test_one_process_flooding_does_not_take_a_sibling_s_orders_with_it(flooder: str, few: str,
                                                                         receiver: OtlpHttpReceiver) -> None:
    bot = Bot(receiver, bot_environment(receiver, OTEL_BSP_MAX_QUEUE_SIZE="256",
                                        OTEL_BSP_MAX_EXPORT_BATCH_SIZE="256"))
    try:
        bot.ask(cmd="fairness", flooder=flooder, n=40, seconds=4, timeout=120)
        wait_until(lambda: order_spans(receiver, few) == 40, 30,
                   f"the 40 {few} orders while the {flooder} floods")
        err = bot.finish()
        assert "Traceback" not in err, err[-3000:]
    finally:
        bot.kill()


def test_counts_stay_exact_when_span_detail_is_shed(receiver: OtlpHttpReceiver) -> None:
    bot = Bot(receiver, bot_environment(receiver, OTEL_BSP_MAX_QUEUE_SIZE="64", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="64"))
    try:
        bot.ask(cmd="flood", rate=100_000, seconds=3, symbol="FLOOD", timeout=120)
        placed = bot.exporter()["placed"]
        # A bot that floods and stops hands over what it kept with a budget to do it (at interpreter exit the
        # budget is 0.15 s: exiting is never delayed, and what is still held then is the exit's cost).
        assert bot.ask(cmd="shutdown", timeout=10.0)["ok"] is True
        err = bot.finish()
        assert "Traceback" not in err, err[-3000:]
        wait_until(lambda: cumulative(receiver, "qt.order.latency") >= placed, 30,
                   f"the latency histogram counting all {placed} orders", interval=0.5)
        assert cumulative(receiver, "qt.order.latency") == placed
        shed = cumulative(receiver, "qt.telemetry.dropped", signal="spans")
        assert shed > 0, "the flood never filled anything: this test tests nothing"
        assert order_spans(receiver, "FLOOD") + shed == placed, "a span neither exported nor counted"
        assert cumulative(receiver, "qt.telemetry.dropped", signal="records") == 0
    finally:
        bot.kill()
