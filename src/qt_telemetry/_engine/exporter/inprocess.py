"""Engines that run the OTel SDK inside the trading process: ``inline`` (a converter thread), ``sdk`` (real SDK
spans of the installed provider) and the test capture (synchronous). Imported only when one of them is chosen."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context

from qt_telemetry._engine.exporter.convert import Converter
from qt_telemetry._engine.exporter.pipeline import Pipeline
from qt_telemetry._engine.recorder.context import current_span
from qt_telemetry._engine.recorder.engines import Engine, RecordEngine
from qt_telemetry._engine.recorder.sampling import HeadSampler
from qt_telemetry._engine.recorder.scope import SpanScope
from qt_telemetry._engine.transport import records as R

Header = tuple[Any, ...]
_log = logging.getLogger("qt_telemetry")
_time_ns = time.time_ns
_get_current_span = current_span


class SyncEngine(RecordEngine):
    """Converts each record as it is made (the test capture): a test sees its telemetry at once."""

    name = "sync"

    def __init__(self, sampler: HeadSampler, pipeline: Pipeline) -> None:
        converter = pipeline.converter
        producer = converter.producer(os.getpid(), "capture")
        lock = converter.lock

        def emit(record: Any) -> None:
            with lock:
                converter.accept(producer, (record if record.__class__ is tuple else record.record(),))

        super().__init__(sampler, emit)
        self.pipeline = pipeline
        self.producer = producer

    def flush(self, timeout: float) -> bool:
        return self.pipeline.flush(time.monotonic() + timeout)

    def shutdown(self, timeout: float) -> bool:
        return self.pipeline.shutdown(time.monotonic() + timeout)


class SdkEngine(Engine):
    """Real SDK spans from the installed tracer provider; conversion applied to them in-process."""

    name = "sdk"

    def __init__(self, tracer: trace.Tracer, converter: Converter) -> None:
        self.tracer = tracer
        self.converter = converter
        self.producer = converter.producer(os.getpid(), "sdk")
        self._lock = threading.Lock()

    def begin(self, scope: SpanScope, parent: Context | None) -> None:
        attributes = self.converter.attributes(self.producer, scope.attributes)
        span = self.tracer.start_span(scope.name, context=parent, kind=scope.kind, attributes=attributes)
        ctx = span.get_span_context()
        scope.live = span
        scope.tid, scope.sid, scope.sampled = ctx.trace_id, ctx.span_id, ctx.trace_flags.sampled
        parent_ctx = _get_current_span(parent).get_span_context()
        if parent_ctx.is_valid:
            scope.psid = parent_ctx.span_id
        scope.start_ns = getattr(span, "start_time", None) or _time_ns()

    def end(self, scope: SpanScope) -> None:
        with self._lock:
            self.converter.span(self.producer, scope.record(), live=scope.live)

    def measure(self, ops: tuple[tuple[str, Any], ...], attributes: dict[str, Any]) -> None:
        with self._lock:
            self.converter.accept(self.producer, ((R.METRICS, ops, attributes),))

    def gauge(self, name: str, attributes: dict[str, Any], value: Any) -> None:
        self.producer.set_gauge(name, attributes, value)

    def secrets(self, values: tuple[str, ...]) -> None:
        self.converter.redactor.add_values(values)


class LocalChannel:
    """The ``inline`` engine: batches are converted and exported on a thread of this process (the OTel SDK then
    shares the trading thread's GIL: slower, but no helper process). Raises RuntimeError when no thread can be
    started (the caller degrades further)."""

    #: The outbox hands records as they are: nothing crosses a process boundary here.
    encoded = False
    #: One converter for the life of the process: standing records are said once.
    connections = 1

    def __init__(self, pipeline: Pipeline, capacity: int = 1024) -> None:
        self.pipeline = pipeline
        self._batches: queue.Queue[tuple[Header, list[tuple[Any, ...]]]] = queue.Queue(capacity)
        self._idle = threading.Event()
        self._idle.set()
        self._flushes = 0
        self._start()

    def _start(self) -> None:
        threading.Thread(target=self._convert, name="qt-telemetry-convert", daemon=True).start()

    def send(self, header: Header, records: list[tuple[Any, ...]], data: bytes) -> str | None:
        try:
            self._idle.clear()
            self._batches.put_nowait((header, records))
        except queue.Full:
            return "converter_busy"
        return None

    def _convert(self) -> None:
        converter = self.pipeline.converter
        while True:
            header, records = self._batches.get()
            try:
                with converter.lock:
                    producer = converter.producer(header[1], header[2])
                    producer.last_seen = time.time()
                    producer.producer_drops(header[3])
                    converter.accept(producer, records)
            except Exception as exc:  # noqa: BLE001
                _log.debug("qt-telemetry inline conversion: %r", exc)
            if self._batches.empty():
                self._idle.set()

    def check(self) -> str:
        return "ok"

    def replace(self, wait: bool) -> int:
        return 0

    def request_flush(self, budget: float) -> int:
        self._flushes += 1
        return self._flushes

    def wait_converted(self, deadline: float) -> bool:
        return self._idle.wait(max(0.0, deadline - time.monotonic()))

    def wait_flushed(self, request: int, deadline: float) -> bool:
        self._idle.wait(max(0.0, deadline - time.monotonic()))
        return self.pipeline.flush(deadline)

    def close(self) -> None:
        deadline = time.monotonic() + self.pipeline.settings.exporter_drain_timeout_s
        self._idle.wait(max(0.0, deadline - time.monotonic()))
        self.pipeline.shutdown(deadline)

    def after_fork(self) -> None:
        """In a forked child the converter thread is the parent's: start ours (what the parent queued is its)."""
        self._batches = queue.Queue(self._batches.maxsize)
        self._idle = threading.Event()
        self._idle.set()
        self._start()
