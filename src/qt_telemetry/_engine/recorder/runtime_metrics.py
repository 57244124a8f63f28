"""The bot's runtime metrics: the shared sampler's values on the gauge board, GC pauses through the engine.

The board's callbacks are evaluated by the janitor (or the SDK's collection), never on the trading thread; a
GC pause is measured where the collection runs and queued like any measurement. Installed once per process by
``init()`` for the engines that own the pipeline (``process``, ``inline``); a forked child installs its own
(the board it inherits is cleared, and its numbers are its own).
"""

from __future__ import annotations

import os

from qt_telemetry import semconv
from qt_telemetry._engine.recorder.state import STATE
from qt_telemetry._engine.runtime import GcPauses, RuntimeSampler

_installed: list[int] = []  # the pid that installed them (a forked child inherits the list, not the board)
_pauses: list[GcPauses] = []
_ROLE = {semconv.PROCESS_ROLE: semconv.ROLE_BOT}


def _record_pause(generation: int, seconds: float) -> None:
    engine = STATE.engine
    if engine is not None:
        engine.measure(((semconv.GC_DURATION.name, seconds),),
                       {**_ROLE, semconv.GC_GENERATION: str(generation)})


def report() -> None:
    """Put this process's runtime series on the board and time its collections (idempotent)."""
    if os.getpid() in _installed and STATE.board.get(semconv.PROCESS_THREAD_COUNT.name, _ROLE) is not None:
        return
    if not _installed:
        os.register_at_fork(after_in_child=_after_fork_in_child)
    _installed[:] = [os.getpid()]
    for spec, attributes, callback in RuntimeSampler(semconv.ROLE_BOT).series():
        STATE.board.set(spec.name, attributes, callback)
    if not _pauses:
        _pauses.append(GcPauses(_record_pause))
    _pauses[0].install()


def _after_fork_in_child() -> None:
    if _installed:  # the parent reported: so does the child, with its own numbers (the board was cleared)
        _installed.clear()
        report()


def stop() -> None:
    """Take the series off the board and stop timing collections (tests)."""
    for spec, attributes, _callback in RuntimeSampler(semconv.ROLE_BOT).series():
        STATE.board.set(spec.name, attributes, None)
    for pauses in _pauses:
        pauses.uninstall()
    _installed.clear()
