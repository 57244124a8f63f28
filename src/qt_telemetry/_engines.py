"""Engines: where a finished span and a measurement go once the trading code is done with them.

- ``process`` (default): records go through the :class:`Outbox` to a separate exporter process, which runs the
  OTel SDK. The trading thread only makes ids, timestamps, the context and one tuple per event.
- ``inline``: the same records and the same conversion, on a background thread of this process (for platforms
  where a helper process is not wanted; the SDK then shares the trading process's GIL).
- ``sdk``: spans are real SDK spans of the installed ``TracerProvider`` from the start (what a user who brings
  ``opentelemetry-instrument`` or their own span processors needs); slower, in-process.
- the test capture converts synchronously, so a test sees its telemetry the moment the call returns.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from random import getrandbits
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from qt_telemetry import _records as R
from qt_telemetry import semconv
from qt_telemetry._config import Settings
from qt_telemetry._context import current_span
from qt_telemetry._convert import Converter, ProducerState
from qt_telemetry._gauges import GaugeBoard
from qt_telemetry._outbox import Header, Outbox
from qt_telemetry._pipeline import Pipeline
from qt_telemetry._sampling import HeadSampler
from qt_telemetry._scope import SpanScope

_log = logging.getLogger("qt_telemetry")
#: Exporter processes this process started: kept so a finished channel never drops its handle while the
#: exporter still drains (Popen warns when collected with its child running).
_STARTED: list[subprocess.Popen[bytes]] = []
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
    """Spans become records; ``_emit`` decides where the records go."""

    def __init__(self, sampler: HeadSampler) -> None:
        self.sampler = sampler
        self._emit: Callable[[Any], None] = lambda record: None

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
        self._emit(scope)  # the record is made off the trading thread (SpanScope.record)

    def measure(self, ops: tuple[tuple[str, Any], ...], attributes: dict[str, Any]) -> None:
        self._emit((R.METRICS, ops, attributes))

    def gauge(self, name: str, attributes: dict[str, Any], value: Any) -> None:
        self._emit((R.GAUGE, name, attributes, value))

    def secrets(self, values: tuple[str, ...]) -> None:
        self._emit((R.CONTROL, R.OP_SECRETS, values))


class QueuedEngine(RecordEngine):
    """Records through the outbox, to the exporter process (``process``) or a converter thread (``inline``)."""

    def __init__(self, sampler: HeadSampler, outbox: Outbox, name: str) -> None:
        super().__init__(sampler)
        self.outbox = outbox
        self.name = name
        self._emit = outbox.put
        self._secrets: set[str] = set()
        outbox.first_after_restart = self._restated

    def secrets(self, values: tuple[str, ...]) -> None:
        """Exact values to redact: remembered here, so a restarted exporter learns them before any record."""
        new = {v for v in values if isinstance(v, str)} - self._secrets
        if new:
            self._secrets |= new
            self.outbox.put_first((R.CONTROL, R.OP_SECRETS, tuple(sorted(new))))

    def _restated(self) -> list[tuple[Any, ...]]:
        return [(R.CONTROL, R.OP_SECRETS, tuple(sorted(self._secrets)))] if self._secrets else []

    def gauge(self, name: str, attributes: dict[str, Any], value: Any) -> None:
        if not callable(value):  # callbacks are evaluated by the pump, off the trading thread
            self._emit((R.GAUGE, name, attributes, value))

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if not self.outbox.flush(block=True, deadline=deadline):
            return False
        return self.outbox.channel.flush(deadline)  # type: ignore[attr-defined,no-any-return]

    def shutdown(self, timeout: float) -> bool:
        return self.outbox.close(timeout)

    def after_fork_in_child(self) -> None:
        self.outbox.after_fork()


class SyncEngine(RecordEngine):
    """Converts each record as it is made (the test capture): a test sees its telemetry at once."""

    name = "sync"

    def __init__(self, sampler: HeadSampler, pipeline: Pipeline) -> None:
        super().__init__(sampler)
        self.pipeline = pipeline
        converter = pipeline.converter
        self.producer = converter.producer(os.getpid(), "capture")
        lock = converter.lock

        def emit(record: Any) -> None:
            with lock:
                converter.accept(self.producer, (record if record.__class__ is tuple else record.record(),))

        self._emit = emit

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


# --- channels -------------------------------------------------------------------------------------------

class LocalChannel:
    """The ``inline`` engine: batches are converted and exported on a thread of this process (the OTel SDK then
    shares the trading thread's GIL: slower, but no helper process)."""

    def __init__(self, pipeline: Pipeline, capacity: int = 1024) -> None:
        self.pipeline = pipeline
        self._batches: queue.Queue[tuple[Header, list[tuple[Any, ...]]]] = queue.Queue(capacity)
        self._idle = threading.Event()
        self._idle.set()
        threading.Thread(target=self._convert, name="qt-telemetry-convert", daemon=True).start()

    def send(self, header: Header, records: list[tuple[Any, ...]]) -> str | None:
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

    def healthy(self) -> bool:
        return True

    def restart(self) -> None:
        pass

    def flush(self, deadline: float) -> bool:
        self._idle.wait(max(0.0, deadline - time.monotonic()))
        return self.pipeline.flush(deadline)

    def close(self) -> None:
        deadline = time.monotonic() + self.pipeline.settings.exporter_drain_timeout_s
        self._idle.wait(max(0.0, deadline - time.monotonic()))
        self.pipeline.shutdown(deadline)

    def after_fork(self) -> None:
        pass


class ProcessChannel:
    """Datagrams over a private Unix socket pair to the exporter process, which this channel starts.

    The exporter lives as long as anyone holds the write end of its "life" pipe: this process and the children
    it forks. When the last one exits it drains, exports within its own bound, and ends by itself. A dead
    exporter is noticed (a refused send, or its exit status) and a new one is started; what was lost meanwhile
    is counted.
    """

    def __init__(self, settings: Settings, listen_socket: socket.socket | None = None,
                 join: str | None = None) -> None:
        self.settings = settings
        self._listen = listen_socket
        self._sock: socket.socket | None = None
        self._life: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = os.getpid()
        self._dead = False
        self._flush_lock = threading.Lock()
        #: The exporter's named socket: processes that do not descend by fork (multiprocessing "spawn") join it.
        self.address: str | None = None
        if join is not None:
            self._join(join)
        else:
            self.spawn()

    def _join(self, address: str) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.connect(address)
        _tune(sock)
        self._sock, self.address, self._dead = sock, address, False

    def spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        _tune(ours)
        directory = tempfile.mkdtemp(prefix="qt-telemetry-")  # private (0700): only this user can join
        address = os.path.join(directory, "exporter.sock")
        named = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        named.bind(address)
        life_r, life_w = os.pipe()
        config_r, config_w = os.pipe()
        fds = [theirs.fileno(), named.fileno(), life_r, config_r]
        if self._listen is not None:
            fds.append(self._listen.fileno())
        env = dict(os.environ)
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "qt_telemetry._exporter", *map(str, fds)], pass_fds=fds,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env, start_new_session=True)
            _STARTED[:] = [p for p in _STARTED if p.poll() is None]  # forget only the finished ones
            _STARTED.append(self._proc)
            os.write(config_w, self.settings.to_json().encode())
        finally:
            os.close(config_w)
            os.close(config_r)
            os.close(life_r)
            theirs.close()
            named.close()
        self._sock, self._life, self._owner, self._dead = ours, life_w, os.getpid(), False
        self.address = address

    def send(self, header: Header, records: list[tuple[Any, ...]]) -> str | None:
        sock = self._sock
        if sock is None or self._dead:
            return "exporter_down"
        try:
            sock.send(R.encode(header, records))
        except BlockingIOError:
            return "full"
        except OSError as exc:
            if exc.errno == 90 and len(records) > 1:  # EMSGSIZE: split the batch
                half = len(records) // 2
                return self.send(header, records[:half]) or self.send(header, records[half:])
            self._dead = True
            return "exporter_down"
        return None

    def healthy(self) -> bool:
        if self._dead:
            return False
        proc = self._proc
        if proc is not None and self._owner == os.getpid() and proc.poll() is not None:
            self._dead = True
        return not self._dead

    def restart(self) -> None:
        _log.warning("qt-telemetry: the exporter process is gone; starting a new one (lost records are counted "
                     "in qt.telemetry.dropped)")
        self.close()
        self.spawn()

    def flush(self, deadline: float) -> bool:
        """Ask the exporter to export everything it has and wait for its answer until ``deadline``."""
        sock = self._sock
        if sock is None or self._dead:
            return False
        with self._flush_lock:
            reply_r, reply_w = os.pipe()
            try:
                header: Header = (R.VERSION, os.getpid(), "", {}, 0)
                try:
                    socket.send_fds(sock, [R.encode(header, [(R.CONTROL, R.OP_FLUSH, max(0.0, deadline
                                                                                       - time.monotonic()))])],
                                    [reply_w])
                except OSError:
                    return False
                os.close(reply_w)
                reply_w = -1
                import select

                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    ready, _, _ = select.select([reply_r], [], [], left)
                    if ready:
                        return os.read(reply_r, 1) == b"1"
            finally:
                os.close(reply_r)
                if reply_w >= 0:
                    os.close(reply_w)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        life, self._life = self._life, None
        if sock is not None:
            sock.close()
        if life is not None:
            os.close(life)

    def after_fork(self) -> None:
        self._flush_lock = threading.Lock()


def release_exporters() -> None:
    """At exit: the exporters outlive us by design (they drain, then end by themselves). Tell ``subprocess`` so
    it does not warn that they are still running."""
    for proc in _STARTED:
        if proc.poll() is None:
            proc._child_created = False  # type: ignore[attr-defined]
    _STARTED.clear()


def _tune(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    except OSError:
        pass
    sock.setblocking(False)


class RecordingProcessor(SpanProcessor):
    """Spans of other instrumentation (HTTP clients, your own tracer) join the same records."""

    def __init__(self, emit: Callable[[tuple[Any, ...]], None]) -> None:
        self._emit = emit

    def on_end(self, span: ReadableSpan) -> None:
        try:
            ctx = span.get_span_context()
            if ctx is None or not ctx.trace_flags.sampled:
                return
            parent = span.parent
            scope = span.instrumentation_scope
            events = [(e.name, e.timestamp, {k: R.plain(v) for k, v in (e.attributes or {}).items()})
                      for e in span.events] or None
            links = [(link.context.trace_id, link.context.span_id) for link in span.links] or None
            self._emit((R.SPAN, span.name, span.kind.value, ctx.trace_id, ctx.span_id,
                        parent.span_id if parent is not None else 0, bool(parent and parent.is_remote), True,
                        span.start_time or 0, span.end_time or 0, span.status.status_code.value,
                        span.status.description, {k: R.plain(v) for k, v in (span.attributes or {}).items()},
                        events, links, ctx.trace_state.to_header() if ctx.trace_state else None,
                        (scope.name, scope.version, scope.schema_url) if scope is not None else ("unknown",)))
        except Exception as exc:  # noqa: BLE001
            _log.debug("qt-telemetry could not record a span: %r", exc)


def error_counter(engine: Engine) -> Callable[[str], None]:
    def count(kind: str) -> None:
        engine.measure(((semconv.TELEMETRY_ERRORS.name, 1),), {semconv.TELEMETRY_ERROR_KIND: kind})

    return count


__all__ = ["Engine", "LocalChannel", "ProcessChannel", "ProducerState", "QueuedEngine", "RecordEngine",
           "RecordingProcessor", "SdkEngine", "SyncEngine", "error_counter"]
