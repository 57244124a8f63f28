"""Runtime metrics of the current process: CPU, memory, threads, file descriptors, garbage collection.

Shared by both sides (it imports no engine code): the bot reports them through its gauge board (evaluated by the
janitor, off the trading thread; :mod:`qt_telemetry._engine.recorder.runtime_metrics`), the exporter process
from its own loop. Standard library only — ``/proc`` where there is one (Linux: the OS's thread count and RSS),
``resource`` and ``threading`` elsewhere — so no psutil. One sample serves every metric read within
:data:`MAX_AGE_S`, so a collection reads ``/proc`` once, not once per series.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from qt_telemetry import semconv

MAX_AGE_S: Final = 0.5
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class RuntimeSampler:
    """Every runtime value of this process, read at most once per :data:`MAX_AGE_S`."""

    def __init__(self, role: str) -> None:
        self.role = role
        self._sample: dict[str, Any] = {}
        self._taken = -1.0
        self._pid = -1
        self._lock = threading.Lock()

    def sample(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            if self._pid != os.getpid() or now - self._taken > MAX_AGE_S:
                self._sample, self._taken, self._pid = _read(), now, os.getpid()
            return self._sample

    def value(self, key: str, index: int | None = None) -> Callable[[], float | None]:
        """A zero-argument callback for one value of the sample (a gauge-board entry)."""
        def read() -> float | None:
            found = self.sample().get(key)
            return found[index] if index is not None and found is not None else found

        return read

    def series(self) -> list[tuple[semconv.MetricSpec, dict[str, str], Callable[[], float | None]]]:
        """Every runtime series of this process: (metric, attributes with the role, callback)."""
        role = {semconv.PROCESS_ROLE: self.role}
        out: list[tuple[semconv.MetricSpec, dict[str, str], Callable[[], float | None]]] = [
            (semconv.PROCESS_CPU_TIME, {**role, semconv.CPU_MODE: "user"}, self.value("cpu", 0)),
            (semconv.PROCESS_CPU_TIME, {**role, semconv.CPU_MODE: "system"}, self.value("cpu", 1)),
            (semconv.PROCESS_MEMORY_USAGE, role, self.value("rss")),
            (semconv.PROCESS_MEMORY_VIRTUAL, role, self.value("vms")),
            (semconv.PROCESS_THREAD_COUNT, role, self.value("threads")),
            (semconv.PROCESS_FILE_DESCRIPTORS, role, self.value("fds")),
        ]
        for generation in range(len(gc.get_stats())):
            attributes = {**role, semconv.GC_GENERATION: str(generation)}
            for spec, key in ((semconv.GC_COLLECTIONS, "collections"), (semconv.GC_COLLECTED, "collected"),
                              (semconv.GC_UNCOLLECTABLE, "uncollectable")):
                out.append((spec, attributes, self.value(f"gc.{key}", generation)))
        return out


def _read() -> dict[str, Any]:
    times = os.times()
    out: dict[str, Any] = {"cpu": (times.user, times.system), "threads": threading.active_count(), "rss": None,
                           "vms": None, "fds": None}
    try:
        with open("/proc/self/statm", "rb") as f:
            vms_pages, rss_pages = f.read().split()[:2]
        out["vms"], out["rss"] = int(vms_pages) * _PAGE, int(rss_pages) * _PAGE
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Threads:"):
                    out["threads"] = int(line.split()[1])  # the OS's count: the exporter's and C threads too
                    break
    except (OSError, ValueError, IndexError):  # no /proc (macOS): the peak RSS is what the OS tells cheaply
        try:
            import resource

            out["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        except ImportError:  # Windows
            pass
    for fd_dir in ("/proc/self/fd", "/dev/fd"):
        try:
            out["fds"] = len(os.listdir(fd_dir)) - 1  # less the descriptor listdir itself opened
            break
        except OSError:
            continue
    stats = gc.get_stats()
    for key in ("collections", "collected", "uncollectable"):
        out[f"gc.{key}"] = tuple(s.get(key, 0) for s in stats)
    return out


class GcPauses:
    """Times every garbage collection through ``gc.callbacks`` and hands ``(generation, seconds)`` to ``record``.

    The callback runs inside the collection, on whichever thread triggered it (often the trading thread): it
    takes two clock reads and one call; ``record`` must never block (an engine's ``measure`` only queues)."""

    def __init__(self, record: Callable[[int, float], None]) -> None:
        self.record = record
        self._started: dict[int, float] = {}

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        try:
            thread = threading.get_ident()
            if phase == "start":
                self._started[thread] = time.perf_counter()
            elif phase == "stop":
                started = self._started.pop(thread, None)
                if started is not None:
                    self.record(int(info.get("generation", 0)), time.perf_counter() - started)
        except Exception:  # noqa: BLE001, S110 - a collection must never fail because of us
            pass

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        while self in gc.callbacks:
            gc.callbacks.remove(self)
