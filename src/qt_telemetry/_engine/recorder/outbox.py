"""The trading process's side of the hand-off: records leave in small batches, sent by the thread that made them.

Measured here (benchmarks/bench_overhead.py): a background "pump" thread in the trading process costs a trading
thread far more in jitter than the work it takes off it, because every time it needs the GIL it makes the
trading thread give it up, and on a virtual machine getting it back can take milliseconds. So there is none on
the hot path: the thread that finishes a span appends its record and, every ``batch`` records, encodes them
(one ``marshal.dumps``) and hands them to the channel with one non-blocking send. A full channel drops the batch
and counts it — nothing ever waits. A janitor thread wakes rarely: it sends what an idle bot left behind (it
only needs the GIL when the bot is not using it), evaluates gauge callbacks, and restarts a dead exporter.
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

from qt_telemetry._engine.transport import records as R

_log = logging.getLogger("qt_telemetry")
_monotonic = time.monotonic
#: Records per batch sent by the trading thread (one marshal + one send per this many spans).
BATCH = 16
#: The janitor sends a partial batch when nothing was added for this long (the bot is idle).
LINGER_S = 0.05

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
    """Batches, drop counters and the janitor of one producing process."""

    def __init__(self, channel: Channel, *, batch: int = BATCH, janitor_interval: float = 0.1,
                 tick: Callable[[], list[tuple[Any, ...]]] | None = None, tick_interval: float = 10.0,
                 instance_id: str | None = None) -> None:
        self.channel = channel
        self.batch = batch
        self.janitor_interval = janitor_interval
        self.tick = tick
        self.tick_interval = tick_interval
        self.instance_id = self.root_instance_id = instance_id or str(uuid.uuid4())
        self.pid = os.getpid()
        self.dropped: dict[str, int] = {}
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_put = 0.0
        self._last_tick = 0.0
        self._thread: threading.Thread | None = None
        #: Records a new exporter must get before anything else (the secrets it has to redact).
        self.first_after_restart: Callable[[], list[tuple[Any, ...]]] = list

    # --- the trading thread's side --------------------------------------------------------------------
    def put(self, item: Any) -> None:
        """A record tuple, or a closed span (its record is made now). Sends a batch when one is full."""
        if item.__class__ is not tuple:
            try:
                item = item.record()
            except Exception as exc:  # noqa: BLE001 - a span we cannot describe is dropped and counted
                self._count("record_failed", 1)
                _log.debug("qt-telemetry could not make a record: %r", exc)
                return
        queue = self._queue
        queue.append(item)
        self._last_put = _monotonic()
        if len(queue) >= self.batch:
            self.flush()

    def put_first(self, record: tuple[Any, ...]) -> None:
        """A control record that must precede everything after it (secrets to redact): sent at once."""
        self._queue.appendleft(record)
        self.flush(block=True)

    def flush(self, block: bool = False, deadline: float | None = None) -> bool:
        """Send what is queued; True when everything left. Never waits unless ``block`` (shutdown, flush)."""
        if not self._lock.acquire(blocking=block):
            return False  # another thread is sending right now; it takes these too
        try:
            queue = self._queue
            while queue:
                records = [queue.popleft() for _ in range(min(len(queue), self.batch * 4))]
                header = (R.VERSION, self.pid, self.instance_id, dict(self.dropped))
                while True:
                    reason = self.channel.send(header, records)
                    if reason != "full" or deadline is None or _monotonic() >= deadline:
                        break
                    time.sleep(0.002)  # only ever at shutdown/flush: the exporter is catching up
                if reason is not None:
                    self._count("channel_full" if reason == "full" else reason, len(records))
            return True
        finally:
            self._lock.release()

    def _count(self, reason: str, n: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    # --- the janitor ------------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="qt-telemetry-janitor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = 1.0
        next_restart = 0.0
        while not self._stop.wait(self.janitor_interval):
            try:
                now = _monotonic()
                if self.tick is not None and now - self._last_tick >= self.tick_interval:
                    self._last_tick = now
                    for record in self.tick():
                        self._queue.append(record)
                    self._queue.append((R.CONTROL, R.OP_DROPPED, dict(self.dropped)))
                    self.flush()
                elif self._queue and now - self._last_put >= LINGER_S:
                    self.flush()  # the bot is idle: nothing to contend with
                if not self.channel.healthy() and now >= next_restart:
                    next_restart = now + backoff
                    backoff = min(backoff * 2, 30.0)
                    self.channel.restart()
                    for record in reversed(self.first_after_restart()):
                        self._queue.appendleft(record)
                    self._last_tick = 0.0  # re-send every gauge to the new exporter
                elif self.channel.healthy():
                    backoff = 1.0
            except Exception as exc:  # noqa: BLE001 - the janitor must survive anything
                _log.debug("qt-telemetry janitor: %r", exc)

    def close(self, timeout: float) -> bool:
        """Stop the janitor and hand everything over (bounded by ``timeout``); True when nothing was dropped."""
        self._stop.set()
        dropped_before = sum(self.dropped.values())
        self._queue.append((R.CONTROL, R.OP_GOODBYE, None))
        self.flush(block=True, deadline=_monotonic() + timeout)
        self.channel.close()
        return sum(self.dropped.values()) == dropped_before

    def after_fork(self) -> None:
        """In a forked child: the parent's queued records are the parent's; counters and identity are new."""
        self._queue = collections.deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.dropped = {}
        self._last_tick = 0.0
        self.pid = os.getpid()
        self.instance_id = f"{self.root_instance_id}-{self.pid}"
        self.channel.after_fork()
        self.start()
