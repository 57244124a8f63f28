"""Bounded span batching for the exporter: what the SDK's BatchSpanProcessor does, plus counting and a deadline.

Why not the BatchSpanProcessor itself: it drops spans on a full queue with only a log line (we must count every
drop, by reason, in a metric that reaches Prometheus) and its shutdown waits for the exporter's own retries (we
need a hard deadline so the exporter process always ends). Spans that cannot be queued or exported are handed to
``on_drop`` with the reason.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from qt_telemetry._config import BatchSettings

_log = logging.getLogger("qt_telemetry")
DropHandler = Callable[[Sequence[ReadableSpan], str], None]


class SpanShipper:
    """Queue -> batches -> ``exporters`` on one thread; ``put`` never blocks."""

    def __init__(self, exporters: Sequence[SpanExporter], batch: BatchSettings, on_drop: DropHandler) -> None:
        self._exporters = list(exporters)
        self._batch = batch
        self._on_drop = on_drop
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="qt-telemetry-spans", daemon=True)
        self._thread.start()

    def full(self) -> bool:
        """True while a new span would be dropped (the collector is down or slow): spare building it."""
        return len(self._queue) >= self._batch.max_queue_size

    def put(self, span: ReadableSpan) -> None:
        if len(self._queue) >= self._batch.max_queue_size:
            self._on_drop((span,), "queue_full")
            return
        self._queue.append(span)
        if len(self._queue) >= self._batch.max_export_batch_size:
            with self._wake:
                self._wake.notify()

    def flush(self, deadline: float) -> bool:
        """Export everything queued now; False when the deadline passed first."""
        with self._wake:
            self._wake.notify()
        while time.monotonic() < deadline:
            if not self._queue and self._idle.is_set():
                return True
            time.sleep(0.01)
        return not self._queue and self._idle.is_set()

    def shutdown(self, deadline: float) -> bool:
        ok = self.flush(deadline)
        self._stopping = True
        with self._wake:
            self._wake.notify()
        if not ok:
            left = list(self._queue)
            self._queue.clear()
            if left:
                self._on_drop(left, "shutdown_deadline")
        for exporter in self._exporters:
            try:
                exporter.shutdown()
            except Exception:  # noqa: BLE001
                pass
        return ok

    def _run(self) -> None:
        delay = self._batch.schedule_delay_s
        while not self._stopping:
            with self._wake:
                if len(self._queue) < self._batch.max_export_batch_size:
                    self._wake.wait(delay if delay > 0 else 0.05)
            self._idle.clear()
            try:
                while self._queue and not self._stopping:
                    batch = [self._queue.popleft() for _ in range(min(len(self._queue),
                                                                      self._batch.max_export_batch_size))]
                    self._export(batch)
            finally:
                self._idle.set()

    def _export(self, batch: list[ReadableSpan]) -> None:
        for exporter in self._exporters:
            try:
                result = exporter.export(batch)
            except Exception as exc:  # noqa: BLE001 - an exporter bug must not kill the thread
                _log.warning("qt-telemetry span export raised %r", exc)
                result = SpanExportResult.FAILURE
            if result is not SpanExportResult.SUCCESS:
                self._on_drop(batch, "export_failed")
