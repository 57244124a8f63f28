"""The qt-telemetry command: demo (a realistic instrumented bot) and doctor (checks the drill path)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from qt_telemetry._config import ConfigurationError
from qt_telemetry._version import __version__
from qt_telemetry.cli.args import number, symbols


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qt-telemetry", description=__doc__)
    parser.add_argument("--version", action="version", version=f"qt-telemetry {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a simulated, fully instrumented trading bot")
    demo.add_argument("--duration", type=number(0), default=60.0,
                      help="seconds to run; 0 = until Ctrl-C (default 60)")
    demo.add_argument("--rate", type=number(0, above=True, high=100_000), default=10.0,
                      help="strategy ticks per second (default 10)")
    demo.add_argument("--ticks", type=number(0, whole=True), default=0,
                      help="stop after this many strategy ticks (0 = no limit); with --seed, an exact replay")
    demo.add_argument("--seed", type=int, default=42, help="random seed: same seed, same run (default 42)")
    demo.add_argument("--symbols", type=symbols, default="BTCUSDT,ETHUSDT,SOLUSDT", help="comma-separated symbols")
    demo.add_argument("--loss-limit", type=number(0, above=True), default=60.0,
                      help="daily loss limit in account currency; the kill switch trips at it (default 60)")
    demo.add_argument("--mode", choices=("auto", "local", "otlp"), default="auto",
                      help="auto: use the collector when one answers, else local /metrics + console (default)")
    demo.add_argument("--metrics-port", type=number(0, whole=True, high=65535), default=None,
                      help="local mode /metrics port (default 9464; 0 = any free port)")
    demo.add_argument("--grafana-url", default=os.environ.get("QT_GRAFANA_URL", "http://localhost:3000"),
                      help="where the banner says to look in otlp mode (default: QT_GRAFANA_URL or "
                           "http://localhost:3000)")
    demo.add_argument("--plain", action="store_true", help="plain progress lines instead of the live view")

    doctor = sub.add_parser("doctor", help="check the whole path: SDK -> collector -> Prometheus/Tempo -> Grafana")
    from qt_telemetry.cli.doctor import add_arguments

    add_arguments(doctor)
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from qt_telemetry.cli.view import run_demo

            return run_demo(args)
        from qt_telemetry.cli.doctor import run_doctor

        return run_doctor(args)
    except ConfigurationError as exc:
        print(f"qt-telemetry: configuration error: {exc}", file=sys.stderr)
        return 2
