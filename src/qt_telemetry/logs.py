"""Log lines that carry the trace: ``trace_id`` and ``span_id`` on every ``logging`` record.

``init()`` installs it (``log_correlation`` / ``QT_TELEMETRY_LOG_CORRELATION``, on by default); use the ids in
your format, e.g. :data:`FORMAT`::

    logging.basicConfig(format=qt_telemetry.logs.FORMAT)
    # 2026-11-22 10:00:01,123 INFO bot [trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7] filled

A record made outside any span gets ``0``-filled ids (``trace_sampled`` False), and :data:`FORMAT` fills in zeros
for records nothing annotated (before ``init()``, after ``shutdown()``), so the format never breaks. Inside
``with qt.order_filled(...):`` (any lifecycle call) the update's ids are current: a fill logged on the venue's
thread carries its trace.
The same record also carries the names the OpenTelemetry logging instrumentation uses (``otelTraceID``,
``otelSpanID``, ``otelTraceSampled``), so either convention works; we never overwrite attributes already set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

_NO_TRACE = "0" * 32
_NO_SPAN = "0" * 16
_NO_IDS = {"trace_id": _NO_TRACE, "span_id": _NO_SPAN, "trace_sampled": False, "otelTraceID": _NO_TRACE,
           "otelSpanID": _NO_SPAN, "otelTraceSampled": False}


class _TraceFormat(str):
    """A ``%``-style format whose trace fields default to zeros: a record made while nothing adds them (before
    ``init()``, after ``shutdown()``, ``log_correlation=False``) still formats, where a plain string would make
    ``logging`` print "Formatting field not found in record: 'trace_id'" instead of the line."""

    __slots__ = ()

    def __mod__(self, values: Any) -> str:
        if isinstance(values, dict) and "trace_id" not in values:
            values = {**_NO_IDS, **values}
        return str.__mod__(self, values)


#: A format that shows the ids; grep the log for the trace id an exemplar pointed at. Safe before ``init()``.
FORMAT: str = _TraceFormat(
    "%(asctime)s %(levelname)s %(name)s [trace_id=%(trace_id)s span_id=%(span_id)s] %(message)s")
_lock = threading.Lock()
_previous: Callable[..., logging.LogRecord] | None = None


def trace_fields() -> dict[str, Any]:
    """The current span's ids as log fields (also for structured loggers such as structlog)."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {"trace_id": _NO_TRACE, "span_id": _NO_SPAN, "trace_sampled": False}
    return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}",
            "trace_sampled": ctx.trace_flags.sampled}


class TraceContextFilter(logging.Filter):
    """The same fields as a filter, for a handler or logger you configure yourself."""

    def filter(self, record: logging.LogRecord) -> bool:
        _annotate(record)
        return True


def _annotate(record: logging.LogRecord) -> None:
    try:
        fields = trace_fields()
    except Exception:  # noqa: BLE001 - logging must never break because of us
        fields = {"trace_id": _NO_TRACE, "span_id": _NO_SPAN, "trace_sampled": False}
    values = record.__dict__
    for key, value in (*fields.items(), ("otelTraceID", fields["trace_id"]), ("otelSpanID", fields["span_id"]),
                       ("otelTraceSampled", fields["trace_sampled"])):
        if key not in values:
            values[key] = value


def install() -> None:
    """Add the ids to every record from now on (idempotent)."""
    global _previous
    with _lock:
        if _previous is not None:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _annotate(record)
            return record

        factory.__qt_telemetry__ = True  # type: ignore[attr-defined]
        _previous = previous
        logging.setLogRecordFactory(factory)


def uninstall() -> None:
    """Restore the record factory that was there before :func:`install` (if nobody replaced ours since)."""
    global _previous
    with _lock:
        if _previous is None:
            return
        if getattr(logging.getLogRecordFactory(), "__qt_telemetry__", False):
            logging.setLogRecordFactory(_previous)
        _previous = None


__all__ = ["FORMAT", "TraceContextFilter", "install", "trace_fields", "uninstall"]
