"""The trading process's side of the hand-off: a bounded queue, a pump thread, and where batches go.

``put`` is a length check and a deque append: it never blocks and never waits for a lock. Every few
milliseconds the pump thread takes what is queued, encodes it (one ``marshal.dumps`` per batch, bounded in
size so it holds the GIL for tens of microseconds) and hands it to a channel: a datagram to the exporter process,
or a converter on the same thread. A full queue drops the record and counts it; the counts travel with every
batch and end up in ``qt.telemetry.dropped``. At exit the queue is flushed without waiting on the network.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from qt_telemetry import _records as R

_log = logging.getLogger("qt_telemetry")
BATCH_RECORDS = 256


Header = tuple[Any, ...]
Batch = tuple[Header, list[tuple[Any, ...]]]


class Channel(Protocol):
    """Where batches go. ``send`` returns None when delivered, "full" to retry later, else why it was dropped."""

    def send(self, header: Header, records: list[tuple[Any, ...]]) -> str | None: ...
    def healthy(self) -> bool: ...
    def restart(self) -> None: ...
    def close(self) -> None: ...
    def after_fork(self) -> None: ...


class Outbox:
    """Bounded queue + pump thread + drop counters of one producing process."""

    def __init__(self, capacity: int, channel: Channel, *, interval: float = 0.005,
                 tick: Callable[[], list[tuple[Any, ...]]] | None = None, tick_interval: float = 10.0,
                 instance_id: str | None = None) -> None:
        self.capacity = capacity
        self.channel = channel
        self.interval = interval
        self.tick = tick
        self.tick_interval = tick_interval
        self.instance_id = self.root_instance_id = instance_id or str(uuid.uuid4())
        self.pid = os.getpid()
        self.dropped: dict[str, int] = {}
        self._queue: collections.deque[Any] = collections.deque()
        self._pending: list[Batch] = []  # batches the channel could not take yet
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._seq = 0
        self._last_tick = 0.0
        self._thread: threading.Thread | None = None
        #: Records a new exporter must get before anything else (the secrets it has to redact).
        self.first_after_restart: Callable[[], list[tuple[Any, ...]]] = lambda: []

    # --- the trading thread's side --------------------------------------------------------------------
    def put_first(self, record: tuple[Any, ...]) -> None:
        """A control record that must precede what is queued (secrets to redact); never dropped."""
        self._queue.appendleft(record)

    def put(self, record: Any) -> None:
        """Queue a record tuple, or a closed span whose record the pump makes."""
        queue = self._queue
        if len(queue) < self.capacity:
            queue.append(record)
        else:
            self.dropped["queue_full"] = self.dropped.get("queue_full", 0) + 1

    # --- the pump ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="qt-telemetry-pump", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = 1.0
        next_restart = 0.0
        while not self._stop.wait(self.interval):
            try:
                now = time.monotonic()
                if self.tick is not None and now - self._last_tick >= self.tick_interval:
                    self._last_tick = now
                    for record in self.tick():
                        self.put(record)
                self.drain()
                if not self.channel.healthy() and now >= next_restart:
                    next_restart = now + backoff
                    backoff = min(backoff * 2, 30.0)
                    self.channel.restart()
                    for record in reversed(self.first_after_restart()):
                        self._queue.appendleft(record)
                    self._last_tick = 0.0  # re-send every gauge to the new exporter
                elif self.channel.healthy():
                    backoff = 1.0
            except Exception as exc:  # noqa: BLE001 - the pump must survive anything
                _log.debug("qt-telemetry pump: %r", exc)

    def drain(self, deadline: float | None = None) -> bool:
        """Send what is queued; True when everything left. Retries a full channel until ``deadline``."""
        with self._lock:
            while True:
                while self._pending:
                    header, records = self._pending[0]
                    reason = self.channel.send(header, records)
                    if reason == "full":
                        if deadline is None or time.monotonic() >= deadline:
                            return False
                        time.sleep(0.002)
                        continue
                    self._pending.pop(0)
                    if reason is not None:
                        self.dropped[reason] = self.dropped.get(reason, 0) + len(records)
                if not self._queue:
                    return True
                queue = self._queue
                records = []
                for _ in range(min(len(queue), BATCH_RECORDS)):
                    item = queue.popleft()
                    if item.__class__ is tuple:
                        records.append(item)
                        continue
                    try:
                        records.append(item.record())  # a finished span: its record is made here
                    except Exception as exc:  # noqa: BLE001 - a span we cannot describe is dropped and counted
                        self.dropped["record_failed"] = self.dropped.get("record_failed", 0) + 1
                        _log.debug("qt-telemetry could not make a record: %r", exc)
                self._seq += 1
                self._pending.append(((R.VERSION, self.pid, self.instance_id, dict(self.dropped), self._seq),
                                      records))

    def close(self, timeout: float) -> bool:
        """Stop the pump and hand everything over (bounded by ``timeout``); True when nothing was dropped."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(min(timeout, 0.5))
        dropped_before = sum(self.dropped.values())
        self.put((R.CONTROL, R.OP_GOODBYE, None))
        ok = self.drain(deadline=time.monotonic() + timeout)
        if not ok:
            left = len(self._queue) + sum(len(records) for _, records in self._pending)
            self.dropped["shutdown"] = self.dropped.get("shutdown", 0) + left
            self._queue.clear()
            self._pending.clear()
        self.channel.close()
        return ok and sum(self.dropped.values()) == dropped_before

    def after_fork(self) -> None:
        """In a forked child: the parent's queued records are the parent's; counters and identity are new."""
        self._queue = collections.deque()
        self._pending = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.dropped = {}
        self._seq = 0
        self._last_tick = 0.0
        self.pid = os.getpid()
        self.instance_id = f"{self.root_instance_id}-{self.pid}"
        self.channel.after_fork()
        self.start()
