"""Absorbed problems are counted, never raised: a NaN latency, a None symbol, a callback that raises.

Each kind is counted in ``qt.telemetry.errors`` (through the state's error sink) and logged once (redacted), so
a misbehaving feed is visible without flooding the log or reaching the trading code.
"""

from __future__ import annotations

import logging

from qt_telemetry import semconv
from qt_telemetry._engine.recorder.state import STATE
from qt_telemetry._redaction import Redactor

_log = logging.getLogger("qt_telemetry")
_log_redactor = Redactor()


def telemetry_error(kind: str, detail: str = "") -> None:
    """Count one absorbed problem; log it once per kind. Never raises."""
    try:
        if kind not in STATE.reported_kinds:
            STATE.reported_kinds.add(kind)
            suffix = f": {_log_redactor.text(detail)}" if detail else ""
            _log.warning("qt-telemetry absorbed a %s problem (counted in qt.telemetry.errors)%s", kind, suffix)
        sink = STATE.error_sink
        if sink is not None:
            sink(kind)
    except Exception:  # noqa: BLE001 - the counter itself must never raise either
        pass


def user_name(value: object, what: str) -> str:
    """A name the user gave (rule, feed, switch, breaker) as its metric label (:func:`semconv.checked_name`);
    a name that had to change is counted as ``name_normalised``. Never raises."""
    name = semconv.checked_name(value)
    if not (isinstance(value, str) and str.__eq__(name, value)):  # str's own comparison: a subclass's may raise
        telemetry_error("name_normalised", f"{what}: {name}")
    return name
