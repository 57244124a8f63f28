"""The trading process's side of the hand-off: records leave in small batches, sent by the thread that made them.

Measured here (benchmarks/bench_overhead.py): a background thread that ships records costs a trading thread far
more in jitter than the work it takes off it, because every time it needs the GIL it makes the trading thread
give it up, and on a virtual machine getting it back can take milliseconds. So the thread that finishes a span
appends its record and, every ``batch`` records, encodes them (one msgpack call) and hands them to the channel
with one non-blocking send. Nothing ever waits: a batch the channel cannot take has its span detail shed and
its metric contributions kept (:class:`~qt_telemetry._engine.recorder.spill.Spill`), so counts stay exact.

A janitor thread wakes rarely: it sends what an idle bot left behind and what was spilled, evaluates gauge
callbacks, reads the exporter's heartbeat and replaces a dead or wedged exporter. Where no thread can be
started (a ``pids.max`` limit) the janitor's non-blocking duties run on the trading thread when they are due.

Drops are counted by ``"<signal>/<reason>"``: ``spans/channel_full`` is detail shed with counts kept,
``records/...`` is a record lost with its counts (``exporter_lost``: sent to an exporter that died before it
exported them; ``spill_full``: past the spill's bound).
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from qt_telemetry._engine.recorder.spill import Spill
from qt_telemetry._engine.transport import records as R
from qt_telemetry._engine.transport import wire

_log = logging.getLogger("qt_telemetry")
_monotonic = time.monotonic
#: Records per batch sent by the trading thread (one encode + one send per this many spans).
BATCH = 16
#: The janitor sends a partial batch when nothing was added for this long (the bot is idle).
LINGER_S = 0.05


class Channel(Protocol):
    """Where batches go (the exporter process, or a converter thread of this process)."""

    #: False when the channel takes records as they are (no process boundary: nothing to encode).
    encoded: bool
    #: Connections made so far (a new exporter is a new connection).
    connections: int

    def send(self, header: tuple[Any, ...], records: list[tuple[Any, ...]], data: bytes) -> str | None: ...
    def check(self) -> str: ...
    def replace(self, wait: bool) -> int: ...
    def request_flush(self, budget: float) -> int: ...
    def wait_flushed(self, request: int, deadline: float) -> bool: ...
    def wait_converted(self, deadline: float) -> bool: ...
    def close(self) -> None: ...
    def after_fork(self) -> None: ...


class Outbox:
    """Batches, drop counters, the spill and the janitor of one producing process."""

    def __init__(self, channel: Channel, *, batch: int = BATCH, janitor_interval: float = 0.1,
                 tick: Callable[[], list[tuple[Any, ...]]] | None = None, tick_interval: float = 10.0,
                 instance_id: str | None = None) -> None:
        self.channel = channel
        self.batch = batch
        self.janitor_interval = janitor_interval
        self.tick = tick
        self.tick_interval = tick_interval
        self.instance_id = self.root_instance_id = instance_id or str(uuid.uuid4())
        #: Records every exporter must get before anything else (the secrets it has to redact).
        self._sticky: list[tuple[Any, ...]] = []
        self._fresh()

    def _fresh(self) -> None:
        self.pid = os.getpid()
        self.dropped: dict[str, int] = {}
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._spill = Spill()
        self._encoder = wire.Encoder()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sequence = 0
        self._restated = -1  # the connection the standing records were last sent on
        self._last_put = 0.0
        self._last_tick = 0.0
        self._last_chore = 0.0
        self._next_restart = 0.0
        self._backoff = 1.0
        self._thread: threading.Thread | None = None
        self._inline_chores = False

    # --- the trading thread's side --------------------------------------------------------------------
    def put(self, item: Any) -> None:
        """A record tuple, or a closed span (its record is made now). Sends a batch when one is full."""
        if item.__class__ is not tuple:
            try:
                item = item.record()
            except Exception as exc:  # noqa: BLE001 - a span we cannot describe is dropped and counted
                self.count("records/record_failed", 1)
                _log.debug("qt-telemetry could not make a record: %r", exc)
                return
        queue = self._queue
        queue.append(item)
        now = self._last_put = _monotonic()
        if len(queue) >= self.batch:
            self.flush()
        if self._inline_chores and now - self._last_chore >= self.janitor_interval:
            self._chores(now, blocking=False)

    def put_sticky(self, record: tuple[Any, ...]) -> None:
        """A control record that must precede everything after it and reach every later exporter too (secrets
        to redact): sent at once, and first on every new connection (:meth:`_send` sees to it, under the lock
        every send holds, so no record reaches a new exporter before the secrets it must redact)."""
        with self._lock:
            self._sticky.append(record)
            self._restated = -1
        self.flush(block=True)

    def flush(self, block: bool = False, deadline: float | None = None, spilled: bool = False) -> bool:
        """Send what is queued (and, with ``spilled`` or ``block``, what was spilled); True when everything left.
        Never waits unless ``block``. The trading thread leaves the spill to the janitor."""
        if not self._lock.acquire(blocking=block):
            return False  # another thread is sending right now; it takes these too
        try:
            queue = self._queue
            if (spilled or block) and self._spill and not self._send_spilled(deadline):
                self._spill_queue()
                return False
            while queue:
                records = [queue.popleft() for _ in range(min(len(queue), self.batch * 4))]
                reason = self._send(records, deadline)
                if reason is not None:
                    self._spill_records(records)
                    self._spill_queue()
                    return False
            return True
        finally:
            self._lock.release()

    def _send(self, records: list[tuple[Any, ...]], deadline: float | None) -> str | None:
        if self._sticky and self._restated != self.channel.connections:
            connection = self.channel.connections
            reason = self._send_one(list(self._sticky), deadline)
            if reason is not None:
                return reason
            self._restated = connection
        return self._send_one(records, deadline) if records else None

    def _send_one(self, records: list[tuple[Any, ...]], deadline: float | None) -> str | None:
        header = (wire.VERSION, self.pid, self.instance_id, dict(self.dropped), self._sequence)
        if not self.channel.encoded:
            data = b""
        else:
            try:
                data = self._encoder.batch(header, records)
            except Exception:  # noqa: BLE001 - a value msgpack refuses: send the rest, count the one
                return self._in_halves(records, deadline, "records/unencodable")
        if len(data) > wire.MAX_MESSAGE:
            return self._in_halves(records, deadline, "records/too_large")
        while True:
            reason = self.channel.send(header, records, data)
            if reason != "full" or deadline is None or _monotonic() >= deadline:
                break
            time.sleep(0.002)  # only ever at shutdown/flush: the exporter is catching up
        if reason == "too_large":  # bigger than the connection's buffer
            return self._in_halves(records, deadline, "records/too_large")
        if reason is None:
            self._sequence += 1
        return reason

    def _in_halves(self, records: list[tuple[Any, ...]], deadline: float | None, drop: str) -> str | None:
        """What cannot go as one message goes in halves, down to one record, which is dropped and counted."""
        if len(records) == 1:
            self.count(drop, 1)
            return None
        half = len(records) // 2
        return self._send_one(records[:half], deadline) or self._send_one(records[half:], deadline)

    def _send_spilled(self, deadline: float | None) -> bool:
        pending = list(self._spill.drain())
        for start in range(0, len(pending), self.batch):
            chunk = pending[start:start + self.batch]
            if self._send(chunk, deadline) is not None:
                self._spill_records(chunk + pending[start + self.batch:])
                return False
        return True

    def _spill_records(self, records: list[tuple[Any, ...]]) -> None:
        shed, lost = self._spill.add(records)
        if shed:
            self.count("spans/channel_full", shed)
        if lost:
            self.count("records/spill_full", lost)

    def _spill_queue(self) -> None:
        """The channel is refusing: what is still queued goes to the spill too (nothing waits in a queue)."""
        queue = self._queue
        if queue:
            records = [queue.popleft() for _ in range(len(queue))]
            self._spill_records(records)

    def count(self, key: str, n: int) -> None:
        self.dropped[key] = self.dropped.get(key, 0) + n

    # --- the janitor ------------------------------------------------------------------------------------
    def start(self) -> str | None:
        """Start the janitor thread; where none can be started, say so (the caller says it once) and do its
        non-blocking duties on the trading thread when they are due."""
        self._stop.clear()
        thread = threading.Thread(target=self._run, name="qt-telemetry-janitor", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # can't start new thread: a pids.max or RLIMIT_NPROC limit
            self._inline_chores = True
            return "no janitor thread (partial batches, gauges and exporter checks run on your thread when due)"
        self._thread = thread
        return None

    def _run(self) -> None:
        while not self._stop.wait(self.janitor_interval):
            self._chores(_monotonic(), blocking=True)

    def _chores(self, now: float, *, blocking: bool) -> None:
        self._last_chore = now
        try:
            if self.tick is not None and now - self._last_tick >= self.tick_interval:
                self._last_tick = now
                for record in self.tick():
                    self._queue.append(record)
                self.flush(spilled=True)
            elif (self._queue or self._spill) and now - self._last_put >= LINGER_S:
                self.flush(spilled=True)  # the bot is idle (or the spill waits): nothing to contend with
            if self.channel.check() == "replace" and now >= self._next_restart:
                self._next_restart = now + self._backoff
                self._backoff = min(self._backoff * 2, 30.0)
                try:
                    lost = self.channel.replace(wait=blocking)
                except OSError as exc:  # no process can be started now: keep counting, try later
                    _log.debug("qt-telemetry could not start an exporter: %r", exc)
                    return
                if lost:
                    self.count("records/exporter_lost", lost)
                self._last_tick = 0.0  # re-send every gauge to the new exporter
            else:
                self._backoff = 1.0
        except Exception as exc:  # noqa: BLE001 - the janitor must survive anything
            _log.debug("qt-telemetry janitor: %r", exc)

    # --- flush and close ----------------------------------------------------------------------------
    def flush_and_wait(self, deadline: float) -> bool:
        """Send everything, then ask the exporter to export it and wait for its answer until ``deadline``."""
        request = self.channel.request_flush(max(0.0, deadline - _monotonic()))
        self._queue.append((R.CONTROL, R.OP_FLUSH, (request, max(0.0, deadline - _monotonic()))))
        if not self.flush(block=True, deadline=deadline):
            return False
        return self.channel.wait_flushed(request, deadline)

    def close(self, timeout: float) -> bool:
        """Stop the janitor and hand everything over (bounded by ``timeout``); True when nothing was dropped."""
        self._stop.set()
        dropped_before = sum(self.dropped.values())
        deadline = _monotonic() + timeout
        self._queue.append((R.CONTROL, R.OP_GOODBYE, None))
        if self.flush(block=True, deadline=deadline):
            self.channel.wait_converted(deadline)  # read before we go: its trade lines print before our exit
        self.channel.close()
        return sum(self.dropped.values()) == dropped_before

    def after_fork(self) -> None:
        """In a forked child: the parent's queued records are the parent's; counters and identity are new."""
        self._fresh()
        self.instance_id = f"{self.root_instance_id}-{self.pid}"
        self.channel.after_fork()
        note = self.start()
        if note:
            print(f"qt-telemetry: cannot start a thread in process {self.pid}: {note}", file=sys.stderr)
