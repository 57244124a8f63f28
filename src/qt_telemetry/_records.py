"""The compact records the trading process hands to the exporter, and how values become record-safe.

A record is a plain tuple of str/int/float/bool/None (and tuples/dicts of them), so a batch is one
``marshal.dumps`` — C code, microseconds — and crosses to the exporter process as one datagram. Which metrics a
span yields is decided by the converter from the span's name and attributes, so an order costs one record.

    SPAN     (SPAN, name, kind, trace_id, span_id, parent_id, parent_remote, sampled, start_ns, end_ns,
              status_code, status_message, attributes, events, links, trace_state, scope)
    METRICS  (METRICS, ((metric_name, value), ...), attributes)
    GAUGE    (GAUGE, metric_name, attributes, value)        value None removes the series
    CONTROL  (CONTROL, operation, payload)
"""

from __future__ import annotations

import enum
import marshal
import math
from decimal import Decimal
from typing import Any, Final

SPAN: Final = 1
METRICS: Final = 2
GAUGE: Final = 3
CONTROL: Final = 4

# SPAN field positions
S_NAME, S_KIND, S_TRACE, S_SPAN, S_PARENT, S_REMOTE, S_SAMPLED, S_START, S_END = 1, 2, 3, 4, 5, 6, 7, 8, 9
S_STATUS, S_MESSAGE, S_ATTRS, S_EVENTS, S_LINKS, S_STATE, S_SCOPE = 10, 11, 12, 13, 14, 15, 16

# CONTROL operations
OP_SECRETS: Final = "secrets"  # payload: tuple of exact values to redact
OP_FOREIGN_METRICS: Final = "foreign_metrics"  # payload: pickled MetricsData of other instrumentation
OP_GOODBYE: Final = "goodbye"  # the producer is exiting: export its last state and forget it
OP_DROPPED: Final = "dropped"  # payload: {reason: count} the producer dropped so far
OP_FLUSH: Final = "flush"  # payload: seconds; sent with a pipe's write end the exporter answers on

#: Datagram header: (VERSION, pid, service.instance.id, {drop reason: count}, sequence)
VERSION: Final = 1
MAX_STRING: Final = 512
_PLAIN = (str, int, float, bool, type(None))


def encode(header: tuple[Any, ...], records: list[tuple[Any, ...]]) -> bytes:
    return marshal.dumps((header, records))


def decode(data: bytes) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    header, records = marshal.loads(data)
    return header, records


def plain(value: Any) -> Any:
    """A record-safe copy of ``value`` (str, int, float, bool or a tuple of them), or None to drop it.

    Never calls anything that a hostile object could make raise on the common types; anything else is
    converted under a guard. Strings are cut to :data:`MAX_STRING` characters.
    """
    cls = value.__class__
    if cls is str:
        return value if len(value) <= MAX_STRING else value[:MAX_STRING]
    if cls is int or cls is bool:
        return value if -(2**63) <= value < 2**63 or cls is bool else float(value)
    if cls is float:
        return value
    if value is None:
        return None
    return _coerce(value)


def _coerce(value: Any) -> Any:
    try:
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, enum.Enum):
            inner = value.value
            return plain(inner if isinstance(inner, str | int | float) else value.name)
        if isinstance(value, str):
            return plain(str.__str__(value))
        if isinstance(value, int):
            return plain(int.__int__(value))
        if isinstance(value, float):
            return float.__float__(value)
        if isinstance(value, Decimal):
            number = float(value)
            return number if math.isfinite(number) else None
        if isinstance(value, list | tuple):
            items = [plain(v) for v in value[:64]]
            kinds = {type(v) for v in items if v is not None}
            return tuple(v for v in items if v is not None) if len(kinds) == 1 else None
        text = str(value)
        return plain(text) if text.__class__ is str else None
    except Exception:  # noqa: BLE001 - a hostile __str__/__float__ drops the value, never raises
        return None


def finite(value: Any) -> float | None:
    """A finite float from a number-like value, or None. Never raises."""
    cls = value.__class__
    if cls is float:
        return value if math.isfinite(value) else None
    if cls is int:
        return float(value)
    try:
        if isinstance(value, bool) or value is None or isinstance(value, str | bytes):
            number = float(value) if isinstance(value, str) else None
        else:
            number = float(value)
    except Exception:  # noqa: BLE001 - hostile __float__, non-numeric strings, overflow
        return None
    return number if number is not None and math.isfinite(number) else None


def text(value: Any, limit: int = 64) -> str | None:
    """A short string for a reason code or a name, or None. Never raises."""
    if value is None:
        return None
    cleaned = plain(value)
    if cleaned is None:
        return None
    out = cleaned if isinstance(cleaned, str) else str(cleaned)
    return out[:limit]
