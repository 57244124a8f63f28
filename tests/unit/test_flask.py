"""Flask integration: request spans from opentelemetry-instrumentation-flask and a local-mode /metrics route."""

from __future__ import annotations

import flask
import pytest

import qt_telemetry as qt
from qt_telemetry.flask import instrument_app
from qt_telemetry.testing import Capture
from tests.support.polling import wait_until


@qt.traced_order(venue="binance")
def place(symbol, side, quantity):
    return None


def _app() -> flask.Flask:
    app = flask.Flask("bot")

    @app.post("/orders/<symbol>")
    def order(symbol: str) -> str:
        place(symbol, "buy", 1)
        return "placed"

    return instrument_app(app)


def test_requests_are_traced_and_orders_inside_are_children(cap: Capture) -> None:
    response = _app().test_client().post("/orders/BTCUSDT")
    assert response.status_code == 200
    server = next(s for s in cap.spans() if s.attributes.get("http.route") == "/orders/<symbol>")
    order = cap.span("qt.order.place")
    assert order.parent.span_id == server.context.span_id


@pytest.mark.usefixtures("clean_globals")
def test_metrics_route_serves_prometheus_text_in_local_mode() -> None:
    qt.init(mode="local", metrics_port=0, console=False)
    client = _app().test_client()
    client.post("/orders/ETHUSDT")

    def scrape() -> str | None:
        text = client.get("/metrics").get_data(as_text=True)
        return text if 'symbol="ETHUSDT"' in text else None

    body = wait_until(scrape, 15, "the order's series on /metrics")
    assert 'qt_order_latency_seconds_count{' in body and 'symbol="ETHUSDT"' in body
    assert "qt_order_latency_seconds_bucket" in body


@pytest.mark.usefixtures("clean_globals")
def test_metrics_route_explains_itself_outside_local_mode() -> None:
    response = _app().test_client().get("/metrics")
    assert response.status_code == 404
    assert "OTLP" in response.get_data(as_text=True)


def test_metrics_route_must_be_a_path() -> None:
    with pytest.raises(qt.ConfigurationError, match="metrics_route"):
        instrument_app(flask.Flask("x"), metrics_route="metrics")
