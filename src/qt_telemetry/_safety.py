"""Absorbed problems are counted, never raised: a NaN latency, a None symbol, a callback that raises.

Each kind is counted in ``qt.telemetry.errors`` and logged once (redacted), so a misbehaving feed is visible
without flooding the log or reaching the trading code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from qt_telemetry._redaction import Redactor

_log = logging.getLogger("qt_telemetry")
_reported_kinds: set[str] = set()
_error_sink: Callable[[str], None] | None = None
_log_redactor = Redactor()


def set_error_sink(sink: Callable[[str], None] | None) -> None:
    """Where counted problems go (the active engine's ``qt.telemetry.errors`` counter)."""
    global _error_sink
    _error_sink = sink


def telemetry_error(kind: str, detail: str = "") -> None:
    """Count one absorbed problem; log it once per kind. Never raises."""
    try:
        if kind not in _reported_kinds:
            _reported_kinds.add(kind)
            suffix = f": {_log_redactor.text(detail)}" if detail else ""
            _log.warning("qt-telemetry absorbed a %s problem (counted in qt.telemetry.errors)%s", kind, suffix)
        sink = _error_sink
        if sink is not None:
            sink(kind)
    except Exception:  # noqa: BLE001 - the counter itself must never raise either
        pass


def forget_reported_kinds() -> None:
    _reported_kinds.clear()
