"""Record a known order-latency distribution into qt.order.latency and export it once over OTLP.

    python -m tests.e2e.fleet.latency_sample --samples 200000 [--native] [--seed 7] [--slow-median 0.4]

The distribution is a venue's: 97 % log-normal around 15 ms (sigma 0.6) and a 3 % slow mode around
--slow-median seconds (default 400 ms; sigma 0.5), which is where p99 and p99.9 fall. Aggregation follows the
SDK contract's switch: explicit semconv buckets, or (``--native``) a base-2 exponential histogram with max scale
20 and at most 160 buckets. Prints the exact quantiles of the recorded sample as JSON, for comparison with what
Prometheus estimates from the exported histogram.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource

from qt_telemetry.semconv import LATENCY_BUCKETS_S

QUANTILES = (0.5, 0.9, 0.99, 0.999)
LABELS = {"venue": "binance", "symbol": "BTCUSDT", "side": "buy", "order.type": "limit", "outcome": "ok"}


def sample(n: int, seed: int, slow_median: float = 0.4) -> list[float]:
    rng = random.Random(seed)
    slow = math.log(slow_median)
    return [rng.lognormvariate(slow, 0.5) if rng.random() < 0.03 else rng.lognormvariate(math.log(0.015), 0.6)
            for _ in range(n)]


def exact_quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--native", action="store_true")
    parser.add_argument("--slow-median", type=float, default=0.4)
    args = parser.parse_args()

    aggregation = (ExponentialBucketHistogramAggregation(max_size=160, max_scale=20) if args.native
                   else ExplicitBucketHistogramAggregation(list(LATENCY_BUCKETS_S)))
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=3_600_000)
    provider = MeterProvider(resource=Resource.create({}), metric_readers=[reader],
                             views=[View(instrument_name="qt.order.latency", aggregation=aggregation)])
    histogram = provider.get_meter("qt_telemetry").create_histogram("qt.order.latency", unit="s")
    values = sample(args.samples, args.seed, args.slow_median)
    for value in values:
        histogram.record(value, LABELS)
    ok = provider.force_flush(30_000)
    provider.shutdown()
    values.sort()
    print(json.dumps({"flushed": bool(ok), "count": len(values), "sum": math.fsum(values),
                      "quantiles": {str(q): exact_quantile(values, q) for q in QUANTILES}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
