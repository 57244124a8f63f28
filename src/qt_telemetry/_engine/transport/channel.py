"""The process channel: this process's own connection to its family's exporter, which it may also start.

Each producing process (the bot, each forked worker, each "spawn" child) has a connection of its own
(``SOCK_SEQPACKET``: messages, reliable, in order), so a flooding sibling fills only its own buffer, the exporter
reads connections in turn, and a connection's end tells the exporter that its process is gone. The exporter
answers on the same connection: a welcome, a status every half second (alive, and how many of our records have
been converted and had their metrics exported), and flush results.

What the trading thread calls (:meth:`send`) never blocks: a full buffer or a dead exporter is a return value.
The janitor calls :meth:`check`, which reads the exporter's messages and judges it: silent for a few seconds
while it exists means stopped (killed and replaced), starved (lifted off ``SCHED_IDLE``; replaced if it stays
silent) or gone (replaced). Replacing happens under the family's lock, so a family whose exporter died shares
one replacement; the records this connection sent that the dead exporter never confirmed as exported are
returned to be counted as lost.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Final, Literal

from qt_telemetry._config import Settings
from qt_telemetry._engine.transport import family, wire
from qt_telemetry._engine.transport import records as R

_log = logging.getLogger("qt_telemetry")
#: A connection's send buffer: room for this many records of a typical ~2 KiB (OTEL_BSP_MAX_QUEUE_SIZE by default).
RECORD_BYTES: Final = 2048
#: No word from the exporter for this long (once it has spoken) and it is looked at; for this long, replaced.
STALE_S: Final = 3.0
WEDGED_S: Final = 10.0
#: How long a new exporter may take to start (a Python interpreter and our modules on a loaded box).
STARTUP_S: Final = 15.0
#: Sends finding the buffer full in every look for this long: the exporter is slower than the bot.
FULL_S: Final = 1.0

Check = Literal["ok", "replace"]


class ProcessChannel:
    """Sends batches to the family's exporter; judges and replaces it (see the module docstring)."""

    encoded = True

    def __init__(self, family_dir: str, root_pid: int, key: bytes, *, settings: Settings | None,
                 started: list[subprocess.Popen[bytes]], metrics_socket: socket.socket | None = None,
                 start: bool = False) -> None:
        self.settings = settings  # None in a "spawn" child: it joins, it never starts an exporter
        self.family = family_dir
        self.root_pid = root_pid
        #: The family's key (made by the root, inherited in memory): what vouches for a process the exporter
        #: reaches only after it has exited, when ``/proc`` can no longer tell whose it was.
        self.key = key
        self.address = os.path.join(family_dir, family.SOCKET_NAME)
        self._metrics_socket = metrics_socket
        #: Every exporter this process started (the process state's list): their handles stay referenced while
        #: they drain after our exit, and ``release_exporters`` tells ``subprocess`` not to warn about them.
        self._started = started
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._encoder = wire.Encoder()
        self._read_lock = threading.Lock()
        self._flushes: dict[int, bool] = {}
        self._next_flush = 0
        self._dead = False
        self._closed = False  # shut down: nothing connects or replaces any more (a janitor mid-round included)
        #: Connections made so far: the outbox restates its standing records (secrets) first on each new one.
        self.connections = 0
        self.sent = self.converted = self.exported = self.generation = self.refused = 0
        self.last_heard = self.refusing_since = 0.0
        self._exporter_pid: int | None = None
        self._lifted: int | None = None
        self._wedged = False
        self._reset_connection_state()
        if start:
            self._spawn()
        self._connect()

    # --- what the outbox calls ------------------------------------------------------------------------
    def send(self, header: tuple[Any, ...], records: list[tuple[Any, ...]], data: bytes) -> str | None:
        """Hand one encoded batch over: None when the kernel took it, "full" or "exporter_down" otherwise."""
        sock = self._sock
        if sock is None or self._dead:
            return "exporter_down"
        try:
            sock.send(data)
        except BlockingIOError:
            self.refused += 1
            return "full"
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                return "too_large"  # larger than this connection's buffer: the outbox sends it in halves
            self._dead = True
            return "exporter_down"
        self.sent += len(records)
        return None

    def request_flush(self, budget: float) -> int:
        """A flush request id (the outbox sends the control record carrying it, after everything queued)."""
        with self._read_lock:
            self._next_flush += 1
            return self._next_flush

    def wait_flushed(self, request: int, deadline: float) -> bool:
        """Wait for the exporter's answer to flush ``request`` until ``deadline``."""
        while True:
            with self._read_lock:
                self._pump()
                if request in self._flushes:
                    return self._flushes.pop(request)
                sock = self._sock
            left = deadline - time.monotonic()
            if left <= 0 or sock is None or self._dead:
                return False
            try:
                select.select([sock], [], [], min(left, 0.05))
            except (OSError, ValueError):
                return False

    def wait_converted(self, deadline: float) -> bool:
        """Wait (until ``deadline``) for the exporter to have read and converted everything sent: at exit, so what
        it prints (local mode's trade lines) is printed before the bot is gone."""
        while True:
            with self._read_lock:
                self._pump()
                done = self.converted >= self.sent
                sock = self._sock
            left = deadline - time.monotonic()
            if done or left <= 0 or sock is None or self._dead:
                return done
            try:
                select.select([sock], [], [], min(left, 0.02))
            except (OSError, ValueError):
                return False

    def check(self) -> Check:
        """The janitor's look at the exporter: read what it said, lift it if starved, say when to replace it."""
        if self._closed:
            return "ok"
        with self._read_lock:
            self._pump()
        if self._sock is None or self._dead:
            self._wedged = False
            return "replace"
        now = time.monotonic()
        refused, self.refused = self.refused, 0
        self.refusing_since = (self.refusing_since or now) if refused else 0.0
        if self.refusing_since and now - self.refusing_since > FULL_S and self.exporter_pid:
            self._lift(self.exporter_pid)  # it cannot keep up at SCHED_IDLE (a busy box): give it a CPU share
        silent = now - self.last_heard
        if silent <= (STALE_S if self.exporter_pid else STARTUP_S):
            return "ok"
        pid = self.exporter_pid or self._pid_file()[0]
        state = family.state_of(pid) if pid else None
        if state in (None, "Z", "X"):
            return "replace"
        if state in ("T", "t") or silent > (WEDGED_S if self.exporter_pid else STARTUP_S * 2):
            self._wedged = True  # stopped, or alive and silent even with CPU: it will never drain
            return "replace"
        if pid:
            self._lift(pid)
        return "ok"

    def replace(self, wait: bool = True) -> int:
        """The exporter is gone or wedged: join the replacement a relative started, or start it. Returns how
        many records this connection sent that were never confirmed exported (to be counted as lost). Without
        ``wait`` (called on a trading thread) the family lock is only tried, never waited for."""
        if self._closed:
            return 0
        unconfirmed = max(0, self.sent - self.exported)
        old = self.exporter_pid or self._pid_file()[0]
        wedged, self._wedged = self._wedged, False
        lost = 0
        self._close_socket()
        with family.locked(self.family, 5.0 if wait else 0.0) as mine:
            current, _ = self._pid_file()
            serving = current is not None and family.state_of(current) not in (None, "Z", "X", "T", "t")
            if current == old and serving and not wedged:
                pass  # it lives and was not judged wedged (our connection alone was lost; it exports what it got)
            elif not serving or (current == old and wedged):
                lost = unconfirmed  # it is gone or will be: what it never confirmed exporting is lost
                if not mine or self.settings is None:  # a relative is on it, or we cannot start one: later
                    self._reset_connection_state()
                    self._dead = True
                    return lost
                if old and family.state_of(old) not in (None, "Z", "X"):
                    with contextlib.suppress(OSError):
                        os.kill(old, signal.SIGKILL)  # stopped or wedged: it would never drain anyway
                self._spawn()
                _log.warning("qt-telemetry: the exporter process stopped answering; started a new one (records it "
                             "lost are counted in qt.telemetry.dropped)")
            self._reset_connection_state()
            self._connect()
        return lost

    @property
    def exporter_pid(self) -> int | None:
        return self._exporter_pid

    def close(self) -> None:
        self._closed = True
        self._close_socket()

    def after_fork(self) -> None:
        """In a forked child: the inherited connection is the parent's (the kernel says so); make our own."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                os.close(sock.detach())  # our copy of the fd only: the parent's connection stays
        self._proc = None  # not our child
        self._read_lock = threading.Lock()
        self._flushes = {}
        self._reset_connection_state()
        self._connect()

    # --- inside -------------------------------------------------------------------------------------------
    def _reset_connection_state(self) -> None:
        self._dead = False
        self.sent = 0  # records the kernel took on this connection
        self.converted = 0  # ... that the exporter converted
        self.exported = 0  # ... whose metrics it exported
        self._exporter_pid = None
        self.generation = 0
        self.last_heard = time.monotonic()
        self.refused = 0  # sends that found the buffer full since the janitor last looked
        self.refusing_since = 0.0  # since when every look found refusals
        self._lifted = None
        self._wedged = False

    def _connect(self) -> None:
        if self._closed:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.setblocking(False)
            buffer = max(256 << 10, min(64 << 20, (self.settings.batch.max_queue_size if self.settings else 2048)
                                        * RECORD_BYTES))
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
            sock.connect(self.address)
        except OSError:
            sock.close()
            self._dead = True
            return
        try:  # the connection's first message: the family key (a buffer this new is never full)
            sock.send(self._encoder.batch((wire.VERSION, os.getpid(), "hello", {}, 0),
                                          [(R.CONTROL, R.OP_HELLO, self.key)]))
        except OSError:
            sock.close()
            self._dead = True
            return
        self._sock = sock
        self._dead = False
        self.connections += 1

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _pump(self) -> None:
        """Read every message the exporter sent (non-blocking; the caller holds the read lock)."""
        sock = self._sock
        if sock is None:
            return
        for _ in range(256):
            try:
                data = sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._dead = True
                return
            if not data:
                self._dead = True  # the exporter closed the connection: it is gone
                return
            try:
                message = wire.decode_reply(data)
            except wire.Malformed:
                continue
            self.last_heard = time.monotonic()
            kind = message[0]
            if kind == wire.STATUS and len(message) >= 3:
                self.converted, self.exported = message[1], message[2]
            elif kind == wire.WELCOME and len(message) >= 3:
                self._exporter_pid, self.generation = message[1], message[2]
            elif kind == wire.FLUSHED and len(message) >= 3 and len(self._flushes) < 64:
                self._flushes[message[1]] = bool(message[2])

    def _lift(self, pid: int) -> None:
        """A live exporter that says nothing is starved (``SCHED_IDLE`` on a saturated box): give it the normal
        scheduler at the lowest priority, every thread of it. Once."""
        if self._lifted == pid:
            return
        self._lifted = pid
        try:
            tasks = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            tasks = [pid]
        for task in tasks:
            with contextlib.suppress(OSError, AttributeError):
                if os.sched_getscheduler(task) == os.SCHED_IDLE:
                    os.sched_setscheduler(task, os.SCHED_OTHER, os.sched_param(0))
                os.setpriority(os.PRIO_PROCESS, task, 19)
        _log.warning("qt-telemetry: the exporter process could not keep up at SCHED_IDLE (a busy machine); gave it "
                     "the normal scheduler at nice 19")

    def _pid_file(self) -> tuple[int | None, int]:
        try:
            with open(os.path.join(self.family, "exporter.pid")) as f:
                pid, generation = f.read().split()
            return int(pid), int(generation)
        except (OSError, ValueError):
            return None, 0

    def _spawn(self) -> None:
        """Start an exporter on a fresh listening socket at the family's address (the caller holds the lock, or
        is the root at ``init()``). Raises OSError when no process can be started."""
        assert self.settings is not None
        _, generation = self._pid_file()
        with contextlib.suppress(OSError):
            os.unlink(self.address)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        config_r, config_w = os.pipe()
        try:
            listener.bind(self.address)
            listener.listen(128)
            fds = [listener.fileno(), config_r]
            if self._metrics_socket is not None:
                fds.append(self._metrics_socket.fileno())
            env = {k: v for k, v in os.environ.items() if k != "QT_TELEMETRY__INHERIT"}
            package_root = os.path.abspath(__file__).rsplit(os.sep + "qt_telemetry" + os.sep, 1)[0]
            env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
            proc = subprocess.Popen([sys.executable, "-m", "qt_telemetry._engine.exporter", *map(str, fds)],
                                    pass_fds=fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env,
                                    start_new_session=True)
            config = {"settings": json.loads(self.settings.to_json()), "root_pid": self.root_pid,
                      "family": self.family, "generation": generation + 1, "key": self.key.hex()}
            os.write(config_w, json.dumps(config).encode())
        finally:
            os.close(config_w)
            os.close(config_r)
            listener.close()
        self._started[:] = [p for p in self._started if p.poll() is None]
        self._started.append(proc)
        self._proc = proc
        tmp = os.path.join(self.family, "exporter.pid.tmp")
        with open(tmp, "w") as f:
            f.write(f"{proc.pid} {generation + 1}")
        os.replace(tmp, os.path.join(self.family, "exporter.pid"))


def release_exporters(started: list[subprocess.Popen[bytes]]) -> None:
    """At exit: the exporters outlive us by design (they drain, then end by themselves). Tell ``subprocess`` so
    it does not warn that they are still running."""
    for proc in started:
        if proc.poll() is None:
            proc._child_created = False  # type: ignore[attr-defined]
    started.clear()
