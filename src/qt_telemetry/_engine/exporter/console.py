"""A compact console trace summary for the local mode: one line per finished trade or stand-alone order.

It runs as a span *exporter* behind a BatchSpanProcessor, so formatting and printing happen on the export
thread, never on the trading thread. Child spans wait (bounded) for their root to end.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Sequence
from typing import TextIO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from qt_telemetry import semconv

_MAX_PENDING_TRACES = 512


class TraceSummaryExporter(SpanExporter):
    """Prints ``trade BTCUSDT/momentum ok 152.1ms signal 2.0ms > entry 0.3ms > ... trace=<id>``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._pending: OrderedDict[int, list[ReadableSpan]] = OrderedDict()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            ctx = span.get_span_context()
            if ctx is None:
                continue
            trace_id = ctx.trace_id
            if span.parent is not None and not span.parent.is_remote:
                self._pending.setdefault(trace_id, []).append(span)
                while len(self._pending) > _MAX_PENDING_TRACES:
                    self._pending.popitem(last=False)
                continue
            children = self._pending.pop(trace_id, [])
            line = _summary(span, children)
            if line:
                print(line, file=self._stream or sys.stderr, flush=True)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._pending.clear()


def _ms(span: ReadableSpan) -> float:
    if span.end_time is None or span.start_time is None:
        return 0.0
    return (span.end_time - span.start_time) / 1e6


def _status(span: ReadableSpan) -> str:
    if span.status.status_code is StatusCode.ERROR:
        return "ERROR"
    return str((span.attributes or {}).get(semconv.OUTCOME, "ok"))


def _order_text(span: ReadableSpan) -> str:
    a = span.attributes or {}
    parts = [str(a.get(semconv.VENUE, "")), str(a.get(semconv.SIDE, "")), str(a.get(semconv.ORDER_QUANTITY, "")),
             str(a.get(semconv.SYMBOL, ""))]
    return f"order {' '.join(p for p in parts if p)} {_status(span)} {_ms(span):.1f}ms"


def _summary(root: ReadableSpan, children: list[ReadableSpan]) -> str:
    trace_hex = f"{root.get_span_context().trace_id:032x}"  # type: ignore[union-attr]
    a = root.attributes or {}
    if root.name == semconv.SPAN_TRADE:
        stages = sorted((c for c in children if c.name.startswith(semconv.SPAN_TRADE + ".")),
                        key=lambda s: s.start_time or 0)
        orders = [c for c in children if c.name == semconv.SPAN_ORDER]
        rejected = [c for c in children if c.name == semconv.SPAN_RISK_CHECK
                    and (c.attributes or {}).get(semconv.OUTCOME) == semconv.OUTCOME_REJECTED]
        flow = " > ".join(f"{s.name.rsplit('.', 1)[-1]} {_ms(s):.1f}ms" for s in stages)
        extra = "".join(f" [{_order_text(o)}]" for o in orders)
        extra += "".join(f" [rejected by {(r.attributes or {}).get(semconv.RISK_RULE)}]" for r in rejected)
        return (f"[qt] trade {a.get(semconv.SYMBOL, '?')}/{a.get(semconv.STRATEGY, '?')} {_status(root)} "
                f"{_ms(root):.1f}ms  {flow}{extra}  trace={trace_hex}")
    if root.name == semconv.SPAN_ORDER:
        return f"[qt] {_order_text(root)}  trace={trace_hex}"
    return ""
