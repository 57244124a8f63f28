"""The demo's front end: pick the export mode, show a live terminal view, stop cleanly and flush."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import qt_telemetry as qt
from qt_telemetry.cli import demo


def collector_answers(endpoint: str, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections at the OTLP endpoint (a quick, non-exporting probe)."""
    parts = urlsplit(endpoint)
    try:
        with socket.create_connection((parts.hostname or "localhost", parts.port or 4318), timeout=timeout):
            return True
    except OSError:
        return False


def _choose_mode(requested: str) -> str:
    if requested != "auto":
        return requested
    endpoint = (os.environ.get("QT_TELEMETRY_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or "http://localhost:4318")
    return "otlp" if collector_answers(endpoint) else "local"


def run_demo(args: argparse.Namespace) -> int:
    mode = _choose_mode(args.mode)
    live = None if args.plain or not sys.stdout.isatty() else _live_view()
    named = os.environ.get("OTEL_SERVICE_NAME") or os.environ.get("QT_TELEMETRY_SERVICE_NAME")
    # The console trace summary would scribble over the live view; it is on for plain local runs.
    port = None if args.metrics_port is None else int(args.metrics_port)
    info = qt.init(mode=mode, service_name=None if named else "qt-demo-bot", metrics_port=port,
                   console=mode == "local" and live is None,
                   metric_export_interval=None if mode == "local" else 5.0)
    symbols, ticks = list(args.symbols), int(args.ticks)
    where = _where(info, args.grafana_url, console=live is None)
    print(f"qt-telemetry demo: {len(symbols)} symbols, seed {args.seed}, {_how_long(args.duration, ticks)}; {where}",
          flush=True)
    last_print = [0.0]

    def on_tick(snapshot: dict[str, Any]) -> None:
        if live is not None:
            live.update(_render(snapshot, where))
        elif time.monotonic() - last_print[0] >= 2:
            last_print[0] = time.monotonic()
            print(_line(snapshot), flush=True)

    try:
        if live is not None:
            with live:
                final = demo.run(duration=args.duration, rate=args.rate, seed=args.seed, symbols=symbols,
                                 loss_limit=args.loss_limit, ticks=ticks, on_tick=on_tick)
        else:
            final = demo.run(duration=args.duration, rate=args.rate, seed=args.seed, symbols=symbols,
                             loss_limit=args.loss_limit, ticks=ticks, on_tick=on_tick)
    finally:
        # A demo is not a trading loop: wait for the collector's answer, so "flushed" means it has everything.
        flushed = qt.force_flush(10.0)
        flushed = qt.shutdown() and flushed
    print(_line(final), flush=True)
    print(f"done: {'all telemetry flushed' if flushed else 'some telemetry could not be exported'}; "
          f"last trade trace {final['trace_id']}", flush=True)
    return 0


def _how_long(duration: float, ticks: int) -> str:
    """What stops the run, as the banner says it: ``--ticks`` and ``--duration``, whichever comes first."""
    limits = ([f"{ticks} ticks"] if ticks > 0 else []) + ([f"{duration:g}s"] if duration > 0 else [])
    if not limits:
        return "until Ctrl-C"
    return " or ".join(limits) + (", whichever comes first" if len(limits) > 1 else "")


def _where(info: qt.TelemetryInfo | None, grafana_url: str, console: bool) -> str:
    if info is None:
        return "telemetry disabled (OTEL_SDK_DISABLED)"
    if info.mode == "local":
        traces = "traces summarised on stderr" if console else "traces need the collector"
        return f"metrics at {info.metrics_url} (local mode: {traces}; exemplars need the collector)"
    return (f"exporting to {info.traces_endpoint}; Grafana {grafana_url}/d/qt-trading-overview "
            f"(exemplar diamonds open traces in Tempo)")


def _line(s: dict[str, Any]) -> str:
    breakers = " ".join(f"{k}={v}" for k, v in s["breakers"].items())
    halted = "" if s["status"] == "trading" else f"{s['status']} | "
    return (f"{halted}tick {s['tick']} | orders {s['orders']} ({s['orders_per_s']:.1f}/s, {s['errors']} failed) "
            f"p50 {s['p50'] * 1000:.0f}ms p95 {s['p95'] * 1000:.0f}ms | risk rejects {s['rejects']} | "
            f"PnL {s['pnl']:+.2f} ({s['pnl_used']:.0%} of limit) | kill switch "
            f"{'ACTIVE' if s['kill_switch'] else 'off'} | {breakers} | feeds down: {','.join(s['feeds_down']) or '-'}")


def _live_view() -> Any:
    try:
        from rich.live import Live
    except ImportError:  # the cli extra is not installed: plain lines
        return None
    return Live(refresh_per_second=4, transient=False)


def _render(s: dict[str, Any], where: str) -> Any:
    from rich.table import Table

    table = Table(title="qt-telemetry demo bot", caption=where, show_header=False, expand=False)
    table.add_column(style="bold")
    table.add_column()
    status = s["status"]
    table.add_row("status", f"[bold red]{status}[/bold red]" if status != "trading" else f"trading (tick {s['tick']})")
    table.add_row("orders", f"{s['orders']}  ({s['orders_per_s']:.1f}/s, {s['errors']} failed)")
    table.add_row("latency", f"p50 {s['p50'] * 1000:.0f} ms   p95 {s['p95'] * 1000:.0f} ms")
    table.add_row("signals / risk rejects", f"{s['signals']} / {s['rejects']}")
    color = "red" if s["pnl_used"] >= 0.8 else "green"
    table.add_row("PnL (daily limit used)", f"{s['pnl']:+.2f}  [{color}]{s['pnl_used']:.0%}[/{color}]")
    table.add_row("open positions", str(s["positions"]))
    table.add_row("kill switch", "[bold red]ACTIVE[/bold red]" if s["kill_switch"] else "[green]off[/green]")
    table.add_row("circuit breakers", "  ".join(
        f"{k}: [{'red' if v == 'open' else 'yellow' if v == 'half_open' else 'green'}]{v}[/]"
        for k, v in s["breakers"].items()))
    table.add_row("feeds down", ", ".join(s["feeds_down"]) or "none")
    table.add_row("last trade trace", s["trace_id"] or "-")
    return table
