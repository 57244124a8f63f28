"""The process channel: batches over a private Unix socket to the exporter process, which this channel starts."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from qt_telemetry._config import Settings
from qt_telemetry._engine.transport import records as R

Header = tuple[Any, ...]
_log = logging.getLogger("qt_telemetry")
#: Exporter processes this process started: kept so a finished channel never drops its handle while the
#: exporter still drains (Popen warns when collected with its child running).
_STARTED: list[subprocess.Popen[bytes]] = []


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
        package_root = os.path.abspath(__file__).rsplit(os.sep + "qt_telemetry" + os.sep, 1)[0]
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "qt_telemetry._engine.exporter", *map(str, fds)], pass_fds=fds,
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

