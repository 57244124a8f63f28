"""The exporter process: records in over a private socket, OTLP out. Started by ``init()``; never by hand.

    python -m qt_telemetry._exporter <data fd> <life fd> <config fd> [<metrics listen fd>]

It runs the OTel SDK (span building, aggregation, protobuf encoding, retries) off the trading process's GIL.
It ends by itself: when every trading process that shared it is gone (the life pipe reads EOF) it exports
what it holds within ``exporter_drain_timeout`` and exits, whatever the collector does.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from typing import Any

from qt_telemetry import _records as R
from qt_telemetry._config import Settings
from qt_telemetry._convert import ProducerState
from qt_telemetry._pipeline import Pipeline

_log = logging.getLogger("qt_telemetry")
_MAX_DATAGRAM = 1 << 22


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
    def __init__(self, settings: Settings, data: socket.socket, life: int, listen: socket.socket | None) -> None:
        self.settings = settings
        self.data = data
        self.life = life
        self.pipeline = Pipeline(settings, remote=True, listen_socket=listen)
        self.converter = self.pipeline.converter
        self._last_liveness = time.monotonic()

    def run(self) -> None:
        self.data.setblocking(False)
        while True:
            ready, _, _ = select.select([self.data.fileno(), self.life], [], [], 1.0)
            if self.data.fileno() in ready:
                self.receive()
            if self.life in ready and not os.read(self.life, 64):
                break  # every trading process is gone
            if time.monotonic() - self._last_liveness > 5:
                self._last_liveness = time.monotonic()
                self.retire_dead()
        _release_terminal()
        self.receive()
        deadline = time.monotonic() + self.settings.exporter_drain_timeout_s
        worker = threading.Thread(target=self.pipeline.shutdown, args=(deadline,), daemon=True)
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()) + 0.5)

    def receive(self) -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.data, _MAX_DATAGRAM, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not data:
                for fd in fds:
                    os.close(fd)
                continue
            try:
                header, records = R.decode(data)
            except (ValueError, EOFError, TypeError):
                for fd in fds:
                    os.close(fd)
                continue
            if fds:
                self.flush_for(records, fds[0])
                continue
            with self.converter.lock:
                producer = self.converter.producer(header[1], header[2])
                producer.last_seen = time.time()
                producer.producer_drops(header[3])
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
        """A trading process said goodbye (or died): export its last state, then forget it."""
        self.converter.producers.pop(producer.pid, None)
        provider = next((p for p in self.pipeline.providers
                         if p._sdk_config.resource is producer.resource), None)

        def final_export() -> None:
            try:
                if provider is not None:
                    provider.shutdown(timeout_millis=10_000)
            finally:
                with self.converter.lock:
                    self.converter.forget(producer)
                if provider is not None and provider in self.pipeline.providers:
                    self.pipeline.providers.remove(provider)

        threading.Thread(target=final_export, name="qt-telemetry-retire", daemon=True).start()

    def retire_dead(self) -> None:
        for producer in list(self.converter.producers.values()):
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


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the bot; we drain after it
    data_fd, life_fd, config_fd, *rest = (int(a) for a in argv)
    with os.fdopen(config_fd, "rb") as config:
        settings = Settings.from_json(config.read().decode())
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_OncePerMinute())
    handler.setFormatter(logging.Formatter("qt-telemetry exporter: %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    listen = socket.socket(fileno=rest[0]) if rest else None
    exporter = Exporter(settings, socket.socket(fileno=data_fd), life_fd, listen)

    def stop(_signum: int, _frame: Any) -> None:  # SIGTERM: export what we hold, briefly, and go
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        exporter.run()
    except SystemExit:
        deadline = time.monotonic() + min(2.0, settings.exporter_drain_timeout_s)
        exporter.pipeline.shutdown(deadline)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
