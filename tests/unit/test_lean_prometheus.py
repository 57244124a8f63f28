"""Local mode's /metrics from the lean path: Prometheus names as the collector derives them, a service label per
producing process, _sum/_count on every histogram, exemplars in the OpenMetrics exposition."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from qt_telemetry import _config, semconv
from qt_telemetry._engine.exporter.lean import LeanConverter
from qt_telemetry._engine.resource import base_resource
from qt_telemetry._engine.transport import records as R


def _order(i: int, venue: str, duration_ns: int) -> tuple[Any, ...]:
    start = 1_700_000_000_000_000_000 + i
    return (R.SPAN, semconv.SPAN_ORDER, 2, i.to_bytes(16, "big"), (i + 1).to_bytes(8, "big"), None, False, True,
            start, start + duration_ns, 0, None,
            {"venue": venue, "symbol": "BTCUSDT", "side": "buy", "order.type": "limit", "outcome": "ok"},
            None, None, None, None)


def _fill(i: int, slippage: float) -> tuple[Any, ...]:
    direction = semconv.SLIPPAGE_FAVOURABLE if slippage < 0 else semconv.SLIPPAGE_ADVERSE
    return (R.SPAN, semconv.SPAN_ORDER_EVENT, 0, i.to_bytes(16, "big"), (i + 2).to_bytes(8, "big"), None, False, True,
            1, 2, 0, None, {"venue": "binance", "symbol": "BTCUSDT", "side": "buy", "order.event": "fill",
                            semconv.SLIPPAGE_BPS: slippage, semconv.SLIPPAGE_DIRECTION: direction},
            None, None, None, None)


def _scrape(native: bool) -> dict[str, list[Sample]]:
    settings = _config.resolve(environ={}, mode="local", service_name="local-bot", native_histograms=native)
    converter = LeanConverter(settings, base_resource=base_resource(settings))
    registry = CollectorRegistry()
    registry.register(converter.prometheus_collector())
    first, second = converter.producer(11, "bot"), converter.producer(12, "bot-12")
    converter.accept(first, [_order(1, "binance", 3_000_000), _order(2, "kraken", 700_000_000),
                             _fill(3, 1.5), _fill(4, -2.0),
                             (R.GAUGE, semconv.DAILY_PNL_USED.name, {"strategy": "m"}, 0.25),
                             (R.METRICS, ((semconv.TRADES.name, 1),),
                              {"strategy": "m", "symbol": "S", "outcome": "ok"})])
    converter.accept(second, [_order(5, "binance", 4_000_000)])
    text = generate_latest(registry).decode()
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


@pytest.mark.parametrize("native", [False, True])
def test_scrape_names_labels_and_exemplars(native: bool) -> None:
    samples = _scrape(native)
    counts = {(s.labels["service_instance_id"], s.labels["venue"]): s.value
              for s in samples["qt_order_latency_seconds_count"]}
    assert counts == {("bot", "binance"): 1, ("bot", "kraken"): 1, ("bot-12", "binance"): 1}
    assert {s.labels["service_name"] for s in samples["qt_order_latency_seconds_count"]} == {"local-bot"}
    assert "qt_order_latency_seconds_sum" in samples
    exemplars = [s.exemplar for s in samples["qt_order_latency_seconds_bucket"] if s.exemplar is not None]
    assert {e.labels["trace_id"] for e in exemplars} == {f"{i:032x}" for i in (1, 2, 5)}
    slow = next(e for e in exemplars if e.labels["trace_id"] == f"{2:032x}")
    assert slow.value == pytest.approx(0.7)
    assert [s.value for s in samples["qt_risk_daily_pnl_used_ratio"]] == [0.25]
    assert [s.value for s in samples["qt_trades_total"]] == [1.0]


def test_every_histogram_has_sum_and_count_and_slippage_keeps_both_signs() -> None:
    samples = _scrape(False)
    counts = {s.labels["slippage_direction"]: s.value for s in samples["qt_order_slippage_count"]}
    sums = {s.labels["slippage_direction"]: s.value for s in samples["qt_order_slippage_sum"]}
    assert counts == {"adverse": 1, "favourable": 1}
    assert sums == {"adverse": pytest.approx(1.5), "favourable": pytest.approx(2.0)}  # magnitudes; the label signs
    assert "qt_telemetry_errors_total" not in samples
