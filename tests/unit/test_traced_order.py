"""@traced_order: one span per placement, attributes from arguments, latency inside the span, errors re-raised."""

from __future__ import annotations

import asyncio
import inspect
from decimal import Decimal
from enum import Enum

import pytest
from opentelemetry.trace import SpanKind, StatusCode

import qt_telemetry as qt
from qt_telemetry import semconv
from qt_telemetry.testing import Capture


class Side(Enum):
    BUY = "buy"


class ExchangeError(Exception):
    pass


@qt.traced_order
def place_market(symbol, side, quantity, order_type="market", client_order_id=None, api_key="k-123"):
    """Place a market order."""
    return {"orderId": 9001}


@qt.traced_order(venue="binance")
def place_limit(symbol: str, side: str, quantity: float, price: float, order_type: str = "limit") -> str:
    return "ok"


@qt.traced_order(venue="kraken")
def place_failing(symbol, side, quantity):
    raise ExchangeError("rejected: insufficient margin signature=abcdef123 apiKey=XYZ")


@qt.traced_order(venue="binance")
async def place_async(symbol, side, quantity):
    await asyncio.sleep(0)
    return {"order_id": "A1"}


class Broker:
    @qt.traced_order(venue="ftx")
    def place(self, symbol, side, quantity, price=None):
        return self

    @qt.traced_order(venue="ftx")
    async def aplace(self, symbol, side, quantity):
        return None


def test_bare_decorator_produces_one_client_span_with_attributes_from_arguments(cap: Capture) -> None:
    place_market("BTCUSDT", "buy", 0.5, client_order_id="cid-1")

    span = cap.span(semconv.SPAN_ORDER)
    assert span.kind is SpanKind.CLIENT
    assert span.attributes[semconv.SYMBOL] == "BTCUSDT"
    assert span.attributes[semconv.SIDE] == "buy"
    assert span.attributes[semconv.ORDER_QUANTITY] == 0.5
    assert span.attributes[semconv.ORDER_TYPE] == "market"  # the parameter's default counts
    assert span.attributes[semconv.ORDER_CLIENT_ID] == "cid-1"
    assert span.attributes[semconv.ORDER_ID] == 9001  # read from the returned order
    assert span.attributes[semconv.OUTCOME] == "ok"
    assert span.status.status_code is StatusCode.UNSET


def test_secret_arguments_never_become_attributes(cap: Capture) -> None:
    place_market("BTCUSDT", "buy", 1, api_key="super-secret")
    values = [str(v) for s in cap.spans() for v in s.attributes.values()]
    assert not any("super-secret" in v for v in values)
    assert not any("key" in k for s in cap.spans() for k in s.attributes)


def test_decorator_options_and_keyword_arguments(cap: Capture) -> None:
    place_limit(symbol="ETHUSDT", side="sell", quantity=2, price=3100.5)
    attrs = cap.span(semconv.SPAN_ORDER).attributes
    assert attrs[semconv.VENUE] == "binance"
    assert attrs[semconv.PEER_SERVICE] == "binance"  # Tempo's service map draws bot -> venue from it
    assert attrs[semconv.ORDER_PRICE] == 3100.5
    assert attrs[semconv.ORDER_TYPE] == "limit"


def test_methods_read_arguments_after_self(cap: Capture) -> None:
    broker = Broker()
    assert broker.place("SOLUSDT", "buy", 3, price=20.0) is broker
    attrs = cap.span(semconv.SPAN_ORDER).attributes
    assert (attrs[semconv.SYMBOL], attrs[semconv.SIDE], attrs[semconv.ORDER_QUANTITY]) == ("SOLUSDT", "buy", 3)
    assert attrs[semconv.VENUE] == "ftx"


def test_wrapped_function_keeps_name_doc_and_signature() -> None:
    assert place_market.__name__ == "place_market"
    assert place_market.__doc__ == "Place a market order."
    assert list(inspect.signature(place_limit).parameters) == ["symbol", "side", "quantity", "price", "order_type"]
    assert inspect.iscoroutinefunction(place_async)
    assert inspect.iscoroutinefunction(Broker().aplace)


def test_latency_histogram_is_in_seconds_with_order_buckets(cap: Capture) -> None:
    place_limit("ETHUSDT", "buy", 1, 10.0)
    metric = cap.metrics()[semconv.ORDER_LATENCY.name]
    assert metric.unit == "s"
    point = metric.data.data_points[0]
    assert tuple(point.explicit_bounds) == semconv.LATENCY_BUCKETS_S
    assert point.explicit_bounds[0] == 0.001 and point.explicit_bounds[-1] == 10.0
    assert point.count == 1
    assert 0 < point.sum < 1.0  # seconds, not milliseconds
    assert dict(point.attributes) == {"venue": "binance", "symbol": "ETHUSDT", "side": "buy",
                                      "order.type": "limit", "outcome": "ok"}


def test_exemplar_trace_id_is_the_order_span_trace_id(cap: Capture) -> None:
    place_limit("ETHUSDT", "buy", 1, 10.0)
    span = cap.span(semconv.SPAN_ORDER)
    exemplars = cap.exemplars(semconv.ORDER_LATENCY.name)
    assert len(exemplars) == 1
    assert exemplars[0].trace_id == span.context.trace_id
    assert exemplars[0].span_id == span.context.span_id


def test_orders_are_counted_by_outcome_without_high_cardinality_labels(cap: Capture) -> None:
    place_market("BTCUSDT", "buy", 1, client_order_id="c-1")
    place_market("BTCUSDT", "buy", 1, client_order_id="c-2")
    with pytest.raises(ExchangeError):
        place_failing("BTCUSDT", "sell", 1)

    assert cap.point(semconv.ORDER_LATENCY.name, outcome="ok").count == 2
    failed = cap.point(semconv.ORDER_LATENCY.name, outcome="error")
    assert failed.count == 1
    assert failed.attributes[semconv.ERROR_TYPE] == "ExchangeError"
    for point in cap.points(semconv.ORDER_LATENCY.name):
        assert set(point.attributes) <= semconv.METRIC_ATTRIBUTE_KEYS
        assert semconv.ORDER_CLIENT_ID not in point.attributes


def test_exception_sets_error_status_records_event_and_is_reraised_unchanged(cap: Capture) -> None:
    with pytest.raises(ExchangeError) as raised:
        place_failing("BTCUSDT", "sell", 1)
    assert str(raised.value).startswith("rejected: insufficient margin")  # the user's exception, untouched

    span = cap.span(semconv.SPAN_ORDER)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[semconv.OUTCOME] == "error"
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.type"].endswith("ExchangeError")
    assert "insufficient margin" in event.attributes["exception.message"]
    # credentials inside the message are redacted before they leave the process
    assert "abcdef123" not in event.attributes["exception.message"]
    assert "XYZ" not in event.attributes["exception.stacktrace"]
    assert "abcdef123" not in (span.status.description or "")


def test_async_orders_are_traced_and_awaited(cap: Capture) -> None:
    result = asyncio.run(place_async("BTCUSDT", "buy", 1))
    assert result == {"order_id": "A1"}
    span = cap.span(semconv.SPAN_ORDER)
    assert span.attributes[semconv.ORDER_ID] == "A1"
    assert span.attributes[semconv.VENUE] == "binance"
    assert cap.point(semconv.ORDER_LATENCY.name).count == 1


def test_cancelled_async_order_is_counted_as_cancelled_and_reraised(cap: Capture) -> None:
    @qt.traced_order
    async def slow(symbol, side, quantity):
        await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.create_task(slow("BTCUSDT", "buy", 1))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert cap.span(semconv.SPAN_ORDER).attributes[semconv.OUTCOME] == "cancelled"
    assert cap.point(semconv.ORDER_LATENCY.name).attributes[semconv.OUTCOME] == "cancelled"


def test_order_object_argument_fields_are_read(cap: Capture) -> None:
    class Order:
        symbol = "XRPUSDT"
        side = Side.BUY
        quantity = Decimal("12.5")
        client_order_id = "obj-1"

    @qt.traced_order(venue="okx")
    def submit(order):
        return None

    submit(Order())
    attrs = cap.span(semconv.SPAN_ORDER).attributes
    assert attrs[semconv.SYMBOL] == "XRPUSDT"
    assert attrs[semconv.SIDE] == "buy"
    assert attrs[semconv.ORDER_QUANTITY] == 12.5
    assert attrs[semconv.ORDER_CLIENT_ID] == "obj-1"


def test_bad_argument_values_never_raise(cap: Capture) -> None:
    class Weird:
        def __str__(self) -> str:
            raise RuntimeError("cannot print me")

    assert place_market(None, Weird(), float("nan"), order_type=object()) == {"orderId": 9001}
    span = cap.span(semconv.SPAN_ORDER)
    assert semconv.SYMBOL not in span.attributes  # None dropped
    assert cap.point(semconv.ORDER_LATENCY.name).attributes[semconv.SYMBOL] == "unknown"
