"""The exporter process: records in over a private socket, OTLP out. Started by ``init()``; never by hand.

    python -m qt_telemetry._engine.exporter <pair fd> <named socket fd> <life fd> <config fd> [<metrics listen fd>]

It runs the OTel SDK (span building, aggregation, protobuf encoding, retries) off the trading process's GIL.
It ends by itself: when every trading process that shared it is gone (the life pipe reads EOF) it exports
what it holds within ``exporter_drain_timeout`` and exits, whatever the collector does.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
from typing import Any

from qt_telemetry._config import Settings
from qt_telemetry._engine.exporter.convert import ProducerState
from qt_telemetry._engine.exporter.pipeline import Pipeline
from qt_telemetry._engine.transport import records as R

_log = logging.getLogger("qt_telemetry")
_MAX_DATAGRAM = 1 << 22
#: Datagrams read but not yet converted, at most (beyond it they are dropped and counted: exporter_busy).
_INBOX_BYTES = 8 << 20


class _OncePerMinute(logging.Filter):
    """The OTLP exporters log every retry while the collector is down; drops are counted, so say it once a minute."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:80])
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < 60:
            return False
        self._last[key] = now
        return True


class Exporter:
    def __init__(self, settings: Settings, inputs: list[socket.socket], life: int,
                 listen: socket.socket | None) -> None:
        self.settings = settings
        self.inputs = {sock.fileno(): sock for sock in inputs}
        self.life = life
        self.pipeline = Pipeline(settings, remote=True, listen_socket=listen)
        self.converter = self.pipeline.converter
        self._last_liveness = time.monotonic()
        self._retiring: queue.Queue[tuple[ProducerState, Any]] = queue.Queue()
        self._inbox: queue.Queue[tuple[bytes, list[int]] | None] = queue.Queue()
        self._inbox_bytes = 0
        self._overflowed: dict[tuple[int, str], int] = {}
        threading.Thread(target=self._retire_worker, name="qt-telemetry-retire", daemon=True).start()

    def run(self) -> None:
        """Read datagrams as fast as they come (so no trading process ever finds the socket full because we are
        busy converting); a second thread converts them in order. Returns when every producer is gone and what
        they sent is exported, or the drain bound has passed."""
        for sock in self.inputs.values():
            sock.setblocking(False)
        converter = threading.Thread(target=self._convert_loop, name="qt-telemetry-convert", daemon=True)
        converter.start()
        while True:
            ready, _, _ = select.select([*self.inputs, self.life], [], [], 1.0)
            for fd in ready:
                if fd in self.inputs:
                    self.receive(self.inputs[fd])
            if self.life in ready and not os.read(self.life, 64):
                break  # every trading process is gone
        _release_terminal()
        for sock in self.inputs.values():
            self.receive(sock)
        deadline = time.monotonic() + self.settings.exporter_drain_timeout_s
        self._inbox.put(None)  # the converter's signal: everything that will come has come
        converter.join(max(0.0, deadline - time.monotonic()))

        def finish() -> None:
            for producer in list(self.converter.producers.values()):
                self.retire(producer)
            self._wait_retired(deadline)
            self.pipeline.shutdown(deadline)

        worker = threading.Thread(target=finish, daemon=True)
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()) + 0.5)

    def receive(self, sock: socket.socket) -> None:
        """Move every waiting datagram to the inbox; past its bound, drop it and count it for its producer."""
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(sock, _MAX_DATAGRAM, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not data:
                for fd in fds:
                    os.close(fd)
                continue
            if self._inbox_bytes + len(data) > _INBOX_BYTES and not fds:
                self._overflow(data)
                continue
            self._inbox_bytes += len(data)
            self._inbox.put((data, fds))

    def _overflow(self, data: bytes) -> None:
        try:
            header, records = R.decode(data)
        except (ValueError, EOFError, TypeError):
            return
        key = (header[1], header[2])
        self._overflowed[key] = self._overflowed.get(key, 0) + len(records)

    def _convert_loop(self) -> None:
        while True:
            try:
                item = self._inbox.get(timeout=1.0)
            except queue.Empty:
                self.retire_dead()
                continue
            if item is None:
                return
            data, fds = item
            self._inbox_bytes -= len(data)
            try:
                self.convert(data, fds)
            except Exception as exc:  # noqa: BLE001 - the converter thread must survive any batch
                _log.debug("qt-telemetry exporter: a batch failed: %r", exc)
            if time.monotonic() - self._last_liveness > 5 and self._inbox.empty():
                self._last_liveness = time.monotonic()
                self.retire_dead()

    def convert(self, data: bytes, fds: list[int]) -> None:
        try:
            header, records = R.decode(data)
        except (ValueError, EOFError, TypeError):
            for fd in fds:
                os.close(fd)
            return
        if fds:
            self.flush_for(records, fds[0])
            return
        with self.converter.lock:
            producer = self.converter.producer(header[1], header[2])
            producer.last_seen = time.time()
            producer.producer_drops(header[3])
            lost = self._overflowed.pop((header[1], header[2]), 0)
            if lost:
                producer.drop("records", "exporter_busy", lost)
            self.converter.accept(producer, records)
        if producer.goodbye:
            self.retire(producer)

    def flush_for(self, records: list[Any], reply: int) -> None:
        budget = float(records[0][2]) if records and records[0][0] == R.CONTROL else 1.0

        def run() -> None:
            try:
                ok = self.pipeline.flush(time.monotonic() + budget)
                os.write(reply, b"1" if ok else b"0")
            except OSError:
                pass
            finally:
                os.close(reply)

        threading.Thread(target=run, name="qt-telemetry-flush", daemon=True).start()

    def retire(self, producer: ProducerState) -> None:
        """A trading process said goodbye (or died): export its last state, then forget it (in order, on one
        thread, so a hundred exiting workers do not open a hundred connections at once)."""
        self.converter.producers.pop(producer.pid, None)
        with self.converter.lock:
            provider = next((p for p in self.pipeline.providers if p._sdk_config.resource is producer.resource), None)
            if provider is not None:
                self.pipeline.providers.remove(provider)
        self._retiring.put((producer, provider))

    def _retire_worker(self) -> None:
        while True:
            producer, provider = self._retiring.get()
            try:
                if provider is not None:
                    provider.shutdown(timeout_millis=10_000)
            except Exception as exc:  # noqa: BLE001
                _log.warning("final export for process %s failed: %r", producer.pid, exc)
            finally:
                with self.converter.lock:
                    self.converter.forget(producer, provider)
                self._retiring.task_done()

    def _wait_retired(self, deadline: float) -> None:
        while self._retiring.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def retire_dead(self) -> None:
        """Forget processes that died without a goodbye (killed), once all they sent has been converted."""
        if not self._inbox.empty():
            return
        quiet_since = time.time() - 3.0
        for producer in list(self.converter.producers.values()):
            if producer.last_seen > quiet_since:
                continue
            try:
                os.kill(producer.pid, 0)
            except ProcessLookupError:
                self.retire(producer)
            except PermissionError:
                pass


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
    woken on the trading thread's CPU must never take it away for a time slice. When the box is saturated the
    socket fills and the bot drops (and counts) records instead of waiting."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass


def _remove(address: Any) -> None:
    if isinstance(address, str) and address:
        try:
            os.unlink(address)
            os.rmdir(os.path.dirname(address))
        except OSError:
            pass


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the bot; we drain after it
    _yield_to_trading()
    pair_fd, named_fd, life_fd, config_fd, *rest = (int(a) for a in argv)
    with os.fdopen(config_fd, "rb") as config:
        settings = Settings.from_json(config.read().decode())
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_OncePerMinute())
    handler.setFormatter(logging.Formatter("qt-telemetry exporter: %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    listen = socket.socket(fileno=rest[0]) if rest else None
    named = socket.socket(fileno=named_fd)
    address = named.getsockname()
    exporter = Exporter(settings, [socket.socket(fileno=pair_fd), named], life_fd, listen)

    def stop(_signum: int, _frame: Any) -> None:  # SIGTERM: export what we hold, briefly, and go
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        exporter.run()
    except SystemExit:
        deadline = time.monotonic() + min(2.0, settings.exporter_drain_timeout_s)
        exporter.pipeline.shutdown(deadline)
    _remove(address)
    sys.stdout.flush()
    os._exit(0)

