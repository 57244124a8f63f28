"""Native versus explicit order-latency histograms, measured end to end: SDK -> agent -> remote write -> Prometheus.

Shared by tests/e2e/fleet/test_native_histograms.py (which asserts) and benchmarks/bench_histograms.py (which
prints the table for the README).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from tests.e2e.fleet.harness import Fleet
from tests.e2e.stack import wait_until
from tests.support.servers import REPO

QUANTILES = ("0.99", "0.999")


@dataclass
class Measured:
    kind: str              # "native" | "explicit"
    slow_median: float     # the distribution's slow mode (s)
    service: str
    count: int
    series: int            # Prometheus series for the one label set
    exact: dict[str, float]
    estimated: dict[str, float]
    growth: float | None   # native: ratio between consecutive bucket boundaries (2^(2^-schema))

    def error(self, q: str) -> float:
        return abs(self.estimated[q] - self.exact[q]) / self.exact[q]


def record_known_distribution(fleet: Fleet, service: str, native: bool, samples: int, seed: int = 7,
                              slow_median: float = 0.4) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "QT_TELEMETRY_"))}
    env = {**clean, "OTEL_SERVICE_NAME": service, "OTEL_EXPORTER_OTLP_ENDPOINT": fleet.otlp_http,
           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    proc = subprocess.run([sys.executable, "-m", "tests.e2e.fleet.latency_sample", "--samples", str(samples),
                           "--seed", str(seed), "--slow-median", str(slow_median),
                           *(["--native"] if native else [])], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["flushed"] and result["count"] == samples, result
    return dict(result)


def measure(fleet: Fleet, native: bool, samples: int, seed: int = 7, tag: str = "",
            slow_median: float = 0.4) -> Measured:
    kind = "native" if native else "explicit"
    service = f"hist-{kind}{tag}"
    truth = record_known_distribution(fleet, service, native, samples, seed, slow_median)
    sel = f'service_name="{service}"'
    if native:
        count_expr = f"histogram_count(qt_order_latency_seconds{{{sel}}})"
        quantile = "histogram_quantile({q}, sum(qt_order_latency_seconds{{" + sel + "}}))"
    else:
        count_expr = f"sum(qt_order_latency_seconds_count{{{sel}}})"
        quantile = "histogram_quantile({q}, sum by (le) (qt_order_latency_seconds_bucket{{" + sel + "}}))"

    def arrived() -> bool:
        rows = fleet.prom_query(count_expr)
        return bool(rows) and float(rows[0]["value"][1]) == samples

    wait_until(arrived, 60, f"{samples} observations of {service} in Prometheus")
    series = fleet.prom_query(f'count({{__name__=~"qt_order_latency_seconds.*", {sel}}})')
    estimated = {q: float(fleet.prom_query(quantile.format(q=q))[0]["value"][1]) for q in QUANTILES}
    growth = None
    if native:
        (row,) = fleet.prom_query(f"qt_order_latency_seconds{{{sel}}}")
        bucket = max(row["histogram"][1]["buckets"], key=lambda b: float(b[3]))  # [rule, lower, upper, count]
        growth = float(bucket[2]) / float(bucket[1])
    return Measured(kind, slow_median, service, samples, int(series[0]["value"][1]),
                    {q: truth["quantiles"][q] for q in QUANTILES}, estimated, growth)


def table(rows: list[Measured]) -> str:
    lines = [f"{'slow mode':>9} {'histogram':10} {'samples':>8} {'series':>6} "
             f"{'p99 exact':>10} {'p99 est.':>10} {'err':>7} "
             f"{'p99.9 exact':>11} {'p99.9 est.':>10} {'err':>7}  bucket growth",
             "-" * 116]
    for m in rows:
        lines.append(
            f"{m.slow_median * 1000:7.0f}ms {m.kind:10} {m.count:8} {m.series:6} "
            f"{m.exact['0.99'] * 1000:8.1f}ms {m.estimated['0.99'] * 1000:8.1f}ms "
            f"{m.error('0.99'):7.2%} {m.exact['0.999'] * 1000:9.1f}ms {m.estimated['0.999'] * 1000:8.1f}ms "
            f"{m.error('0.999'):7.2%}  {f'x{m.growth:.4f}' if m.growth else 'semconv buckets'}")
    return "\n".join(lines)
