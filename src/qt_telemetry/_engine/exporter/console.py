"""A compact console trace summary for the local mode: one line per finished trade or stand-alone order.

``[qt] trade BTCUSDT/momentum ok 152.1ms  signal 2.0ms > entry 0.3ms > ... [order binance buy 0.5 ok 40.1ms]
trace=<id>``. The exporter process prints it from the records as it reads them (the bot's stderr is its
stderr; what the bot hands over before it exits is printed before the bot's exit returns, see
``Outbox.close``); the in-process engines feed it their SDK spans. Child spans wait (bounded) for their root.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TextIO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from qt_telemetry import semconv
from qt_telemetry._engine.transport import records as R

_MAX_PENDING_TRACES = 512
_MAX_PENDING_SPANS = 64


class SpanView(NamedTuple):
    """What the summary needs of a span, from a record or an SDK span alike."""

    name: str
    trace_id: int
    is_root: bool
    start_ns: int
    end_ns: int
    error: bool
    attributes: Mapping[str, Any]


class TradeSummary:
    """Collects spans by trace and prints a line when a trade's (or a stand-alone order's) root span arrives."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._pending: OrderedDict[int, list[SpanView]] = OrderedDict()

    def add(self, span: SpanView) -> None:
        if not span.is_root:
            children = self._pending.setdefault(span.trace_id, [])
            if len(children) < _MAX_PENDING_SPANS:
                children.append(span)
            while len(self._pending) > _MAX_PENDING_TRACES:
                self._pending.popitem(last=False)
            return
        line = _summary(span, self._pending.pop(span.trace_id, []))
        if line:
            print(line, file=self._stream or sys.stderr, flush=True)


def view_of_record(record: Sequence[Any], text: Callable[[str], str]) -> SpanView | None:
    """The summary's view of a SPAN record (its texts through ``text``: the exporter's redaction)."""
    try:
        attributes = {k: text(v) if isinstance(v, str) else v for k, v in (record[R.S_ATTRS] or {}).items()
                      if k in _SHOWN}
        return SpanView(str(record[R.S_NAME]), int.from_bytes(record[R.S_TRACE], "big"),
                        not record[R.S_PARENT] or bool(record[R.S_REMOTE]), int(record[R.S_START]),
                        int(record[R.S_END]), record[R.S_STATUS] == StatusCode.ERROR.value, attributes)
    except Exception:  # noqa: BLE001 - a record the summary cannot read is left out of it, nothing else
        return None


_SHOWN = frozenset({semconv.SYMBOL, semconv.STRATEGY, semconv.OUTCOME, semconv.VENUE, semconv.SIDE,
                    semconv.ORDER_QUANTITY, semconv.RISK_RULE})


class TraceSummaryExporter(SpanExporter):
    """The summary as a span exporter, for the in-process engines (formatting happens on the export thread)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._summary = TradeSummary(stream)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            ctx = span.get_span_context()
            if ctx is None:
                continue
            self._summary.add(SpanView(span.name, ctx.trace_id, span.parent is None or span.parent.is_remote,
                                       span.start_time or 0, span.end_time or 0,
                                       span.status.status_code is StatusCode.ERROR, span.attributes or {}))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._summary = TradeSummary()


def _ms(span: SpanView) -> float:
    return max(0, span.end_ns - span.start_ns) / 1e6


def _status(span: SpanView) -> str:
    return "ERROR" if span.error else str(span.attributes.get(semconv.OUTCOME, "ok"))


def _order_text(span: SpanView) -> str:
    a = span.attributes
    parts = [str(a.get(semconv.VENUE, "")), str(a.get(semconv.SIDE, "")), str(a.get(semconv.ORDER_QUANTITY, "")),
             str(a.get(semconv.SYMBOL, ""))]
    return f"order {' '.join(p for p in parts if p)} {_status(span)} {_ms(span):.1f}ms"


def _summary(root: SpanView, children: list[SpanView]) -> str:
    trace_hex = f"{root.trace_id:032x}"
    a = root.attributes
    if root.name == semconv.SPAN_TRADE:
        stages = sorted((c for c in children if c.name.startswith(semconv.SPAN_TRADE + ".")), key=lambda s: s.start_ns)
        orders = [c for c in children if c.name == semconv.SPAN_ORDER]
        rejected = [c for c in children if c.name == semconv.SPAN_RISK_CHECK
                    and c.attributes.get(semconv.OUTCOME) == semconv.OUTCOME_REJECTED]
        flow = " > ".join(f"{s.name.rsplit('.', 1)[-1]} {_ms(s):.1f}ms" for s in stages)
        extra = "".join(f" [{_order_text(o)}]" for o in orders)
        extra += "".join(f" [rejected by {r.attributes.get(semconv.RISK_RULE)}]" for r in rejected)
        return (f"[qt] trade {a.get(semconv.SYMBOL, '?')}/{a.get(semconv.STRATEGY, '?')} {_status(root)} "
                f"{_ms(root):.1f}ms  {flow}{extra}  trace={trace_hex}")
    if root.name == semconv.SPAN_ORDER:
        return f"[qt] {_order_text(root)}  trace={trace_hex}"
    return ""
