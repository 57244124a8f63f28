"""Native histograms end to end: one series instead of 18 per label set, and p99 / p99.9 within a bucket's width.

The same known latency distribution (latency_sample.py: 97 % around 15 ms, a 3 % slow mode around 150 ms)
is recorded by two bots, one on the semconv explicit buckets, one with QT_TELEMETRY_NATIVE_HISTOGRAMS'
exponential aggregation, and exported through the agent to Prometheus. Seeded, so the figures are exact
repeats; benchmarks/bench_histograms.py prints the same table.
"""

from __future__ import annotations

from tests.e2e.fleet.harness import Fleet
from tests.e2e.fleet.histograms import QUANTILES, measure, table

from qt_telemetry.semconv import LATENCY_BUCKETS_S

SAMPLES = 100_000
#: The slow mode's median: p99 and p99.9 then fall inside the explicit 0.1-0.25 s and 0.25-0.5 s buckets.
SLOW_MEDIAN_S = 0.15


def test_native_histograms_are_one_series_and_estimate_tail_quantiles_within_one_bucket(fleet: Fleet) -> None:
    explicit = measure(fleet, native=False, samples=SAMPLES, slow_median=SLOW_MEDIAN_S)
    native = measure(fleet, native=True, samples=SAMPLES, slow_median=SLOW_MEDIAN_S)
    print("\n" + table([explicit, native]))

    # Series per label set: 15 bounds + +Inf, _sum and _count, versus one native histogram series.
    assert explicit.series == len(LATENCY_BUCKETS_S) + 3 and native.series == 1
    # The SDK's 160-bucket cap decides the resolution; Prometheus' estimate cannot be off by more than the
    # bucket the quantile falls in, i.e. the growth factor between boundaries (2^(2^-schema)).
    assert native.growth is not None and 1 < native.growth <= 2 ** (2 ** -3) + 1e-9
    for q in QUANTILES:
        assert native.error(q) <= native.growth - 1, (q, native)
    # Here the explicit buckets around the tail (0.1 | 0.25 | 0.5 s) are far coarser.
    assert explicit.error("0.99") > native.error("0.99") and explicit.error("0.999") > native.error("0.999")
