"""Native versus explicit order-latency histograms: series per histogram and tail-quantile accuracy.

    python benchmarks/bench_histograms.py [--samples 200000] [--slow-medians 0.08,0.15,0.3,0.6,1.2]

Records a known latency distribution (tests/e2e/fleet/latency_sample.py: 97 % log-normal around 15 ms, a 3 %
slow mode whose median is scanned, so p99 and p99.9 fall at different places between bucket bounds) once with
the semconv explicit buckets and once with QT_TELEMETRY_NATIVE_HISTOGRAMS' exponential aggregation, exports both
through the fleet agent to Prometheus (remote write, native histograms on), and compares Prometheus'
histogram_quantile with the exact quantiles of the sample.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.fleet.harness import Fleet
from tests.e2e.fleet.histograms import measure, table

#: A realistic bot's order-latency label sets: 2 venues x 3 symbols x 2 sides x 2 order types x 3 outcomes.
LABEL_SETS = 2 * 3 * 2 * 2 * 3


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--slow-medians", default="0.08,0.15,0.3,0.6,1.2")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-histograms-") as tmp:
        fleet = Fleet(Path(tmp))
        try:
            fleet.start()
            for i, median in enumerate(float(m) for m in args.slow_medians.split(",")):
                for native in (False, True):
                    rows.append(measure(fleet, native=native, samples=args.samples, seed=args.seed, tag=f"-{i}",
                                        slow_median=median))
        finally:
            fleet.stop()
    print("\n" + table(rows))
    for kind in ("explicit", "native"):
        errors = [(m.error("0.99"), m.error("0.999")) for m in rows if m.kind == kind]
        print(f"{kind:9} worst error: p99 {max(e[0] for e in errors):.2%}, p99.9 {max(e[1] for e in errors):.2%}; "
              f"mean p99 {sum(e[0] for e in errors) / len(errors):.2%}, "
              f"p99.9 {sum(e[1] for e in errors) / len(errors):.2%}")
    explicit, native = rows[0].series, rows[1].series
    print(f"\nseries for one bot's order latency ({LABEL_SETS} label sets): explicit {explicit * LABEL_SETS}, "
          f"native {native * LABEL_SETS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
