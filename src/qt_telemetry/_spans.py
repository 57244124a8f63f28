"""Span helpers shared by every instrument: redacted error recording, cancellation, events on the trace."""

from __future__ import annotations

import asyncio
import traceback
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from qt_telemetry._runtime import RUNTIME
from qt_telemetry._safety import redact


def record_error(span: trace.Span, exc: BaseException) -> None:
    """ERROR status plus an exception event, with secret-looking ``key=value`` pairs redacted."""
    message = redact(str(exc))
    stack = redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    span.record_exception(exc, attributes={"exception.message": message, "exception.stacktrace": stack},
                          escaped=True)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__qualname__}: {message}"[:512]))


def is_cancellation(exc: BaseException) -> bool:
    """True for task cancellation and Ctrl-C: an outcome of its own, not an error."""
    return isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)


def event_on_trace(span_name: str, event: str, attributes: dict[str, Any]) -> None:
    """Add ``event`` to the current span; with no trace active, a short span of its own carries it."""
    current = trace.get_current_span()
    if current.is_recording():
        current.add_event(event, attributes)
        return
    span = RUNTIME.instruments().tracer.start_span(span_name, attributes=attributes)
    span.add_event(event, attributes)
    span.end()
