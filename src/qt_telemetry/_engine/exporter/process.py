"""The exporter process: records in over the family's socket, OTLP out. Started by ``init()``, never by hand.

    python -m qt_telemetry._engine.exporter <listening socket fd> <config fd> [<metrics listen fd>]

One loop on one thread reads every producer's connection in turn (a flooding process cannot starve its
siblings), decodes each message bounded and checked (:mod:`~qt_telemetry._engine.transport.wire`), converts its
records, and answers each producer with a heartbeat carrying its progress. Two sender workers POST the prepared
requests, spans and metrics apart, so spans that cannot go never hold up metrics. Peers are checked by the kernel
(``SO_PEERCRED``): only the root process and its descendants, of our own user, are read at all. One bad message
costs itself and is counted in ``qt.telemetry.errors``; the loop itself is guarded.

It ends by itself: once the last producer's connection closes it lets go of ``/metrics`` at once (a restarted bot
takes the port over), exports what it holds within ``exporter_drain_timeout``, removes the family's directory if
it is the family's current exporter, and exits.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import json
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from qt_telemetry import semconv
from qt_telemetry._config import Settings
from qt_telemetry._engine.exporter.console import TradeSummary, view_of_record
from qt_telemetry._engine.exporter.sender import Sender, transport
from qt_telemetry._engine.resource import base_resource
from qt_telemetry._engine.runtime import GcPauses, RuntimeSampler
from qt_telemetry._engine.transport import family, wire
from qt_telemetry._engine.transport import records as R

_log = logging.getLogger("qt_telemetry")
#: Messages read from one connection before the next gets its turn.
_FAIR_SHARE = 16
#: At most this many producing processes at once (a family of forked workers stays far below).
MAX_CONNECTIONS = 1024
#: At most this many connections per process (a producer has one; a few while it reconnects).
MAX_PER_PID = 4
#: Pending flush answers per connection.
MAX_FLUSHES = 16
_RECV_BUFFER = wire.MAX_MESSAGE + 1


class Connection:
    """One producing process's connection and what the loop knows of it."""

    __slots__ = ("sock", "pid", "producer", "converted", "exported", "snapshot", "flushes", "closed", "vouched")

    def __init__(self, sock: socket.socket, pid: int, vouched: bool) -> None:
        self.sock = sock
        self.pid = pid
        #: The kernel's view was enough (a live descendant of the root); else its first record must be the key.
        self.vouched = vouched
        self.producer: Any = None
        self.converted = 0  # records converted
        self.exported = 0  # ... whose metrics a successful export carried
        self.snapshot = 0  # converted, at the last metric collection
        self.flushes: list[tuple[int, float]] = []
        self.closed = False


class Exporter:
    def __init__(self, settings: Settings, listener: socket.socket, *, root_pid: int, family_dir: str,
                 generation: int, key: bytes, metrics_socket: socket.socket | None = None) -> None:
        self.settings = settings
        self.listener = listener
        self.root_pid = root_pid
        self.family_dir = family_dir
        self.generation = generation
        self.key = key
        self.metrics_socket = metrics_socket
        self.encoder = wire.Encoder()
        self.sink = make_sink(settings)
        self.connections: dict[int, Connection] = {}
        self.poller = select.poll()
        self.poller.register(listener.fileno(), select.POLLIN)
        self.uid = os.getuid()
        self.members: dict[int, bool] = {}
        self.refused = 0
        self.malformed: collections.Counter[str] = collections.Counter()
        self.spans = Sender(transport(settings, "traces"), max_pending=4, name="spans") \
            if settings.mode == "otlp" and settings.traces.enabled else None
        self.metrics = Sender(transport(settings, "metrics"), max_pending=2, name="metrics") \
            if settings.mode == "otlp" and settings.metrics.enabled else None
        self.stop_server = _serve_metrics(self.sink, metrics_socket) if metrics_socket is not None else None
        self.summary = TradeSummary() if settings.console else None
        #: Its own runtime metrics (``qt.process.role=exporter``), reported under the root bot's resource.
        self.runtime = RuntimeSampler(semconv.ROLE_EXPORTER) if settings.runtime_metrics else None
        self._pauses: list[tuple[int, float]] = []
        if self.runtime is not None:
            GcPauses(lambda generation, seconds: self._pauses.append((generation, seconds))
                     if len(self._pauses) < 1024 else None).install()
        cannot = [f"a {sender.name} sender thread" for sender in (self.spans, self.metrics)
                  if sender is not None and not sender.threaded]
        if metrics_socket is not None and self.stop_server is None:
            cannot.append("the /metrics server thread (no local /metrics)")
        if cannot:  # once, on the bot's stderr
            print(f"qt-telemetry exporter: cannot start {', '.join(cannot)}; sending from its main loop",
                  file=sys.stderr, flush=True)
        self._last_heartbeat = 0.0
        self._next_metrics = time.monotonic() + settings.metric_export_interval_s
        self._span_due = time.monotonic() + settings.batch.schedule_delay_s
        self._ever_connected = False
        self._lost_all_at: float | None = None
        self._collecting: list[tuple[Connection, int]] = []

    # --- the loop ------------------------------------------------------------------------------------------
    def run(self) -> None:
        started = time.monotonic()
        while True:
            try:
                self._round()
            except Exception as exc:  # noqa: BLE001 - the loop survives anything one round does
                _log.debug("qt-telemetry exporter round: %r", exc)
            if self.connections:
                continue
            now = time.monotonic()
            if not self._ever_connected and now - started > 30:
                break  # nobody ever came
            if self._ever_connected:
                if self._lost_all_at is None:
                    self._lost_all_at = now
                    self._release_metrics_port()
                if now - self._lost_all_at > 0.2:
                    break  # every trading process is gone (none joined in the grace period)
        _release_terminal()
        self.drain(time.monotonic() + self.settings.exporter_drain_timeout_s)

    def _round(self) -> None:
        now = time.monotonic()
        timeout = max(0.0, min(self._next_metrics, self._span_due, self._last_heartbeat + wire.HEARTBEAT_S) - now)
        if self._inline_senders():
            timeout = min(timeout, 0.05)
        ready = self.poller.poll(int(timeout * 1000) + 1)
        for fd, events in ready:
            if fd == self.listener.fileno():
                self._accept()
                continue
            conn = self.connections.get(fd)
            if conn is not None:
                self._read(conn, events)
        now = time.monotonic()
        if now - self._last_heartbeat >= wire.HEARTBEAT_S:
            self._last_heartbeat = now
            for conn in list(self.connections.values()):
                self._reply(conn, wire.STATUS, conn.converted, conn.exported, time.time_ns())
        self._ship_spans(now)
        if now >= self._next_metrics:
            self._next_metrics = now + self.settings.metric_export_interval_s
            self._ship_metrics()
        self._answer_flushes(now)
        for sender in (self.spans, self.metrics):
            if sender is not None and not sender.threaded:
                sender.pump()

    def _inline_senders(self) -> bool:
        return any(s is not None and not s.threaded and not s.idle() for s in (self.spans, self.metrics))

    # --- peers ---------------------------------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                pid, uid = family.peer(sock)
            except OSError:
                sock.close()
                continue
            member = self._member(pid)  # None: the process is already gone, its first record must vouch for it
            if uid != self.uid or member is False or len(self.connections) >= MAX_CONNECTIONS or sum(
                    1 for c in self.connections.values() if c.pid == pid) >= MAX_PER_PID:
                self.refused += 1
                sock.close()
                continue
            sock.setblocking(False)
            conn = Connection(sock, pid, vouched=member is True)
            self.connections[sock.fileno()] = conn
            self.poller.register(sock.fileno(), select.POLLIN)
            self._ever_connected = True
            self._lost_all_at = None
            self._reply(conn, wire.WELCOME, os.getpid(), self.generation)

    def _member(self, pid: int) -> bool | None:
        """True: the root or a live descendant of it; False: a live process that is not; None: gone already (a
        short-lived worker the loop reached after its exit; ``/proc`` can no longer say whose it was)."""
        known = self.members.get(pid)
        if known is None:
            if family.state_of(pid) in (None, "X"):
                return None
            known = family.descends_from(pid, self.root_pid)
            if len(self.members) > 4096:
                self.members.clear()
            self.members[pid] = known
        return known

    def _close(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        fd = conn.sock.fileno()
        with contextlib.suppress(KeyError, OSError):
            self.poller.unregister(fd)
        self.connections.pop(fd, None)
        conn.sock.close()
        if conn.producer is not None and not any(c.producer is conn.producer for c in self.connections.values()):
            self.sink.retire(conn.producer)

    # --- reading ---------------------------------------------------------------------------------------------
    def _read(self, conn: Connection, events: int) -> None:
        for _ in range(_FAIR_SHARE):
            try:
                data, _, flags, _ = conn.sock.recvmsg(_RECV_BUFFER)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionResetError:  # it closed without reading our heartbeats: what it sent still follows
                continue
            except OSError:
                self._close(conn)
                return
            if not data:
                if _hung_up(conn.sock):
                    self._close(conn)  # the process is gone (or closed its end)
                    return
                self._malformed(conn, "empty")  # producers never send an empty message
                continue
            if flags & socket.MSG_TRUNC or len(data) > wire.MAX_MESSAGE:
                self._malformed(conn, "too_large")
                continue
            try:
                header, records = wire.decode_batch(data, conn.pid)
            except wire.Malformed as bad:
                self._malformed(conn, bad.kind)
                continue
            self._accept_batch(conn, header, records)
        if events & (select.POLLHUP | select.POLLERR) and not events & select.POLLIN:
            self._close(conn)

    def _malformed(self, conn: Connection, kind: str) -> None:
        self.malformed[kind] += 1
        producer = conn.producer
        if producer is not None:
            self._count_exporter_errors(producer)

    def _count_exporter_errors(self, producer: Any) -> None:
        """What the loop refused is counted on the producer it concerns (a peer refused: on the root)."""
        for kind, n in self.malformed.items():
            for _ in range(n):
                producer.error("malformed_message")
            del kind
        self.malformed.clear()
        while self.refused:
            self.refused -= 1
            producer.error("peer_refused")

    def _accept_batch(self, conn: Connection, header: wire.Header, records: wire.Records) -> None:
        if records and records[0][0] == R.CONTROL and len(records[0]) == 3 and records[0][1] == R.OP_HELLO:
            if not conn.vouched and hmac.compare_digest(bytes(records[0][2] or b""), self.key):
                conn.vouched = True
            records = records[1:]
        if not conn.vouched:
            self.refused += 1  # a peer gone before we could look, that does not know the family's key
            self._close(conn)
            return
        _, pid, instance, drops, _ = header
        if not records and not drops:
            return  # a connection's hello alone: nobody to account for yet (it named no instance)
        producer = conn.producer
        if producer is None or producer.instance_id != instance:
            producer = conn.producer = self.sink.producer(pid, instance)
        producer.last_seen = time.time()  # the heartbeat: the bot's janitor sends at least every few seconds
        if drops:
            producer.producer_drops(drops)
        if self.malformed or self.refused:
            self._count_exporter_errors(producer)
        controls = [r for r in records if r[0] == R.CONTROL and len(r) == 3]  # one pass finds flushes and goodbye
        flushes = [r for r in controls if r[1] == R.OP_FLUSH]
        ordinary = tuple(r for r in records if not (r[0] == R.CONTROL and len(r) == 3 and r[1] == R.OP_FLUSH)) \
            if flushes else records
        self.sink.accept(producer, ordinary)
        conn.converted += len(records)
        if self.summary is not None:
            for record in ordinary:
                if record[0] == R.SPAN:
                    view = view_of_record(record, self.sink.redactor.text)
                    if view is not None:
                        self.summary.add(view)
        if any(r[1] == R.OP_GOODBYE for r in controls):
            self._reply(conn, wire.STATUS, conn.converted, conn.exported, time.time_ns())  # it waits for this
        for record in flushes:
            self._flush_requested(conn, record[2])

    # --- flushes ------------------------------------------------------------------------------------------
    def _flush_requested(self, conn: Connection, payload: Any) -> None:
        try:
            request, budget = payload
            request, budget = int(request), min(float(budget), 600.0)
        except (TypeError, ValueError):
            return
        if len(conn.flushes) >= MAX_FLUSHES or not budget == budget:
            self._reply(conn, wire.FLUSHED, request, False)
            return
        conn.flushes.append((request, time.monotonic() + max(0.0, budget)))
        self._span_due = 0.0  # everything queued goes now
        self._ship_spans(time.monotonic(), everything=True)
        self._ship_metrics()

    def _answer_flushes(self, now: float) -> None:
        for conn in list(self.connections.values()):
            if not conn.flushes:
                continue
            done = self._idle()
            keep = []
            for request, deadline in conn.flushes:
                if done:
                    self._reply(conn, wire.FLUSHED, request, True)
                elif now >= deadline:
                    self._reply(conn, wire.FLUSHED, request, False)
                else:
                    keep.append((request, deadline))
            conn.flushes = keep

    def _idle(self) -> bool:
        return not self._collecting and all(s is None or s.idle() for s in (self.spans, self.metrics)) and \
            not self.sink.queued_spans()

    def _reply(self, conn: Connection, *message: Any) -> None:
        try:
            conn.sock.send(self.encoder.reply(*message))
        except OSError:  # full (a producer not reading loses heartbeats, nothing else) or gone: the reader sees
            pass  # the end after what it sent is read, never before

    # --- shipping ----------------------------------------------------------------------------------------------
    def _ship_spans(self, now: float, everything: bool = False) -> None:
        batch = self.settings.batch
        if self.spans is None:
            while self.sink.take_spans(batch.max_export_batch_size) is not None:
                pass  # traces are off: nothing is kept
            return
        while self.spans.room():
            queued = self.sink.queued_spans()
            if not queued or not (everything or now >= self._span_due or queued >= batch.max_export_batch_size):
                return
            taken = self.sink.take_spans(batch.max_export_batch_size)
            if taken is None:
                return
            body, counts = taken
            if not self.spans.submit(body, _span_outcome(self.sink, counts)):
                self.sink.span_drop(counts, "queue_full")
            self._span_due = now + batch.schedule_delay_s

    def _own_runtime(self) -> None:
        """The exporter's runtime series, as the bot's own are: on the root process's producer."""
        root = next((c.producer for c in self.connections.values() if c.pid == self.root_pid and c.producer), None)
        if self.runtime is None or root is None:
            return
        records: list[tuple[Any, ...]] = []
        for spec, attributes, read in self.runtime.series():
            value = read()
            if value is not None:
                records.append((R.GAUGE, spec.name, attributes, value))
        pauses, self._pauses = self._pauses, []
        role = {semconv.PROCESS_ROLE: semconv.ROLE_EXPORTER}
        records.extend((R.METRICS, ((semconv.GC_DURATION.name, seconds),),
                        {**role, semconv.GC_GENERATION: str(generation)}) for generation, seconds in pauses)
        self.sink.accept(root, records)

    def _ship_metrics(self) -> None:
        if self.metrics is None or self._collecting:
            return
        self._own_runtime()
        snapshot = [(conn, conn.converted) for conn in self.connections.values()]
        body = self.sink.collect_metrics(time.time_ns())
        if body is None:
            for conn, converted in snapshot:
                conn.exported = converted
            return
        self._collecting = snapshot

        def done(ok: bool) -> None:
            if ok:
                for conn, converted in snapshot:
                    conn.exported = converted
            self._collecting = []

        if not self.metrics.submit(body, done):
            self._collecting = []

    def drain(self, deadline: float) -> None:
        """Export everything held (bounded by ``deadline``), then leave."""
        for conn in list(self.connections.values()):
            self._close(conn)
        self._ship_spans(time.monotonic(), everything=True)
        self._collecting = []
        self._ship_metrics()
        for sender in (self.spans, self.metrics):
            if sender is not None:
                sender.stop(deadline)
        self._release_metrics_port()
        self._leave_family()

    def _release_metrics_port(self) -> None:
        stop, self.stop_server = self.stop_server, None
        if stop is not None:
            stop()
        if self.metrics_socket is not None:
            self.metrics_socket.close()
            self.metrics_socket = None

    def _leave_family(self) -> None:
        """The family's current exporter, leaving with no producer left, removes the family's directory."""
        try:
            with open(os.path.join(self.family_dir, "exporter.pid")) as f:
                current = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            current = os.getpid()
        self.listener.close()
        if current == os.getpid():
            family.remove(self.family_dir)
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.family_dir, "exporter.pid"))
                os.rmdir(self.family_dir)


def _span_outcome(sink: Any, counts: dict[Any, int]) -> Callable[[bool], None]:
    """What a span request's sender reports back: a failure is every span in it dropped, counted per producer."""
    def done(ok: bool) -> None:
        if not ok:
            sink.span_drop(counts, "export_failed")

    return done


def _hung_up(sock: socket.socket) -> bool:
    """After an empty read: is it the end of the connection (or an empty message, which no producer sends)?"""
    probe = select.poll()
    probe.register(sock.fileno(), select.POLLIN)
    return any(events & (select.POLLHUP | select.POLLERR) for _, events in probe.poll(0))


def make_sink(settings: Settings) -> Any:
    """The lean path (records -> OTLP bytes directly), or the SDK path when ``QT_TELEMETRY_EXPORTER_PATH=sdk``."""
    resource = base_resource(settings)
    if os.environ.get("QT_TELEMETRY_EXPORTER_PATH", "").strip().lower() != "sdk":
        try:
            from qt_telemetry._engine.exporter.lean import LeanConverter  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            pass
        else:
            return LeanConverter(settings, base_resource=resource)
    from qt_telemetry._engine.exporter.sdksink import SdkSink

    return SdkSink(settings, base_resource=resource)


def _serve_metrics(sink: Any, listen: socket.socket) -> Any:
    """Local mode: Prometheus ``/metrics`` from the sink's collector, on the socket ``init()`` bound."""
    from prometheus_client import CollectorRegistry

    from qt_telemetry._engine.exporter.metricsserver import serve

    registry = CollectorRegistry(auto_describe=False)
    registry.register(sink.prometheus_collector())
    return serve(registry, listen)


def _release_terminal() -> None:
    """Let go of the trading process's stdout/stderr, so a pipe reading them sees EOF when it exits."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:
        pass


def _yield_to_trading() -> None:
    """Run only when a CPU would otherwise idle (Linux SCHED_IDLE), else at the lowest priority: an exporter
    woken on the trading thread's CPU must never take it away for a time slice. A bot that hears nothing from
    it for seconds while it lives (a saturated box) lifts it back to the normal scheduler.

    Where the kernel groups sessions (``sched_autogroup``, the default on desktop and many server kernels), the
    exporter's own session is a group that competes with the bot's whole session as an equal, whatever its
    policy inside: the group itself goes to nice 19 (``/proc/self/autogroup``; without it, two CPU burners beside
    the bot barely slowed the exporter in bench_pipeline's busy phase)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as group:
        group.write("19")


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the bot; we drain after it
    _yield_to_trading()
    listen_fd, config_fd, *rest = (int(a) for a in argv)
    with os.fdopen(config_fd, "rb") as f:
        config = json.loads(f.read().decode())
    settings = Settings.from_json(json.dumps(config["settings"]))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("qt-telemetry exporter: %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    listener = socket.socket(fileno=listen_fd)
    listener.setblocking(False)
    metrics_socket = socket.socket(fileno=rest[0]) if rest else None
    exporter = Exporter(settings, listener, root_pid=int(config["root_pid"]), family_dir=str(config["family"]),
                        generation=int(config["generation"]), key=bytes.fromhex(config["key"]),
                        metrics_socket=metrics_socket)

    def stop(_signum: int, _frame: Any) -> None:  # SIGTERM: export what we hold, briefly, and go
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        exporter.run()
    except SystemExit:
        exporter.drain(time.monotonic() + min(2.0, settings.exporter_drain_timeout_s))
    sys.stdout.flush()
    os._exit(0)
