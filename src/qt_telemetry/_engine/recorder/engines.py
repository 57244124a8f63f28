"""Engines on the trading side: where a finished span and a measurement go once the trading code is done with them.

- :class:`RecordEngine` makes ids, timestamps and the context on the trading thread and hands one record per
  event to its emitter; :class:`QueuedEngine` emits through the :class:`Outbox` to a channel: the exporter
  process (``process``, the default) or a converter thread of this process (``inline``).
- The in-process engines that run the OTel SDK here (``sdk``, the test capture) live on the exporter side
  (:mod:`qt_telemetry._engine.exporter.inprocess`): nothing in this module imports it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from random import getrandbits
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from qt_telemetry import semconv
from qt_telemetry._engine.recorder.context import current_span
from qt_telemetry._engine.recorder.gauges import GaugeBoard
from qt_telemetry._engine.recorder.outbox import Outbox
from qt_telemetry._engine.recorder.sampling import HeadSampler
from qt_telemetry._engine.recorder.scope import SpanScope
from qt_telemetry._engine.transport import records as R
from qt_telemetry._values import clean_attributes

_log = logging.getLogger("qt_telemetry")
_time_ns = time.time_ns
_get_current_span = current_span


class Engine:
    """What the instruments call. Every method is safe to call from any thread and never raises."""

    name = "engine"

    def begin(self, scope: SpanScope, parent: Context | None) -> None:
        raise NotImplementedError

    def end(self, scope: SpanScope) -> None:
        raise NotImplementedError

    def measure(self, ops: tuple[tuple[str, Any], ...], attributes: dict[str, Any]) -> None:
        raise NotImplementedError

    def gauge(self, name: str, attributes: dict[str, Any], value: Any) -> None:
        raise NotImplementedError

    def secrets(self, values: tuple[str, ...]) -> None:
        raise NotImplementedError

    def flush(self, timeout: float) -> bool:
        return True

    def shutdown(self, timeout: float) -> bool:
        return True

    def after_fork_in_child(self) -> None:
        pass

    def send_board(self, board: GaugeBoard) -> None:
        """Everything the board holds now (state set before ``init()`` is exported right after it)."""
        for name, key, value in board.all():
            self.gauge(name, dict(key), value)


class RecordEngine(Engine):
    """Spans become records; ``emit`` takes them where they go (the outbox, a synchronous converter, nowhere)."""

    def __init__(self, sampler: HeadSampler, emit: Callable[[Any], None] | None = None) -> None:
        self.sampler = sampler
        self.emit: Callable[[Any], None] = emit if emit is not None else (lambda record: None)

    def begin(self, scope: SpanScope, parent: Context | None) -> None:
        parent_span = _get_current_span(parent)
        if isinstance(parent_span, SpanScope):
            scope.tid = parent_span.tid
            scope.psid = parent_span.sid
            scope.sid = getrandbits(64) or 1
            if parent_span.trace_state is not None:
                scope.trace_state = parent_span.trace_state
            if self.sampler.follows_parent:  # the default: a child shares its parent's decision
                scope.sampled = parent_span.sampled
                scope.start_ns = _time_ns()
                return
            parent_sampled: bool | None = parent_span.sampled
        else:
            ctx = parent_span.get_span_context()
            if ctx.is_valid:
                scope.tid = ctx.trace_id
                scope.psid = ctx.span_id
                scope.parent_remote = ctx.is_remote
                parent_sampled = ctx.trace_flags.sampled
                if ctx.trace_state:
                    scope.trace_state = ctx.trace_state
            else:
                scope.tid = getrandbits(128) or 1
                parent_sampled = None
        scope.sid = getrandbits(64) or 1
        sampled, state = self.sampler.decide(scope.tid, parent_sampled, scope.name, scope.kind, parent)
        scope.sampled = sampled
        if state is not None:
            scope.trace_state = state
        scope.start_ns = _time_ns()

    def end(self, scope: SpanScope) -> None:
        self.emit(scope)  # the outbox makes its record (SpanScope.record)

    def measure(self, ops: tuple[tuple[str, Any], ...], attributes: dict[str, Any]) -> None:
        self.emit((R.METRICS, ops, attributes))

    def gauge(self, name: str, attributes: dict[str, Any], value: Any) -> None:
        self.emit((R.GAUGE, name, attributes, value))

    def secrets(self, values: tuple[str, ...]) -> None:
        self.emit((R.CONTROL, R.OP_SECRETS, values))


class QueuedEngine(RecordEngine):
    """Records through the outbox, to the exporter process (``process``) or a converter thread (``inline``)."""

    def __init__(self, sampler: HeadSampler, outbox: Outbox, name: str) -> None:
        super().__init__(sampler, outbox.put)
        self.outbox = outbox
        self.name = name
        self._secrets: set[str] = set()

    def secrets(self, values: tuple[str, ...]) -> None:
        """Exact values to redact: sent before any later record, and restated to every new exporter."""
        new = {v for v in values if isinstance(v, str)} - self._secrets
        if new:
            self._secrets |= new
            self.outbox.put_sticky((R.CONTROL, R.OP_SECRETS, tuple(sorted(new))))

    def gauge(self, name: str, attributes: dict[str, Any], value: Any) -> None:
        if not callable(value):  # callbacks are evaluated by the janitor, off the trading thread
            self.emit((R.GAUGE, name, attributes, value))

    def flush(self, timeout: float) -> bool:
        return self.outbox.flush_and_wait(time.monotonic() + timeout)

    def shutdown(self, timeout: float) -> bool:
        return self.outbox.close(timeout)

    def after_fork_in_child(self) -> None:
        self.outbox.after_fork()


class RecordingProcessor(SpanProcessor):
    """Spans of other instrumentation (HTTP clients, your own tracer) join the same records."""

    def __init__(self, emit: Callable[[tuple[Any, ...]], None]) -> None:
        self.emit = emit

    def on_end(self, span: ReadableSpan) -> None:
        try:
            ctx = span.get_span_context()
            if ctx is None or not ctx.trace_flags.sampled:
                return
            parent = span.parent
            scope = span.instrumentation_scope
            events = [(e.name, e.timestamp, clean_attributes(e.attributes or {}))
                      for e in span.events] or None
            links = [(link.context.trace_id.to_bytes(16, "big"), link.context.span_id.to_bytes(8, "big"))
                     for link in span.links] or None
            self.emit((R.SPAN, span.name, span.kind.value, ctx.trace_id.to_bytes(16, "big"),
                        ctx.span_id.to_bytes(8, "big"),
                        parent.span_id.to_bytes(8, "big") if parent is not None else None,
                        bool(parent and parent.is_remote), True,
                        span.start_time or 0, span.end_time or 0, span.status.status_code.value,
                        span.status.description, clean_attributes(span.attributes or {}),
                        events, links, ctx.trace_state.to_header() if ctx.trace_state else None,
                        (scope.name, scope.version, scope.schema_url) if scope is not None else ("unknown",)))
        except Exception as exc:  # noqa: BLE001
            _log.debug("qt-telemetry could not record a span: %r", exc)


def error_counter(engine: Engine) -> Callable[[str], None]:
    def count(kind: str) -> None:
        engine.measure(((semconv.TELEMETRY_ERRORS.name, 1),), {semconv.TELEMETRY_ERROR_KIND: kind})

    return count


__all__ = ["Engine", "QueuedEngine", "RecordEngine", "RecordingProcessor", "error_counter"]
