"""Values as telemetry can keep them: record-safe copies, finite numbers, short texts, clean attribute dicts.

Every value a user hands us passes through here before it is kept. Nothing here raises, whatever the value's
``__str__``, ``__float__``, ``__class__`` or ``__hash__`` does: a value that cannot be kept safely is dropped.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Final

#: Longest string kept (characters); longer ones are cut.
MAX_STRING: Final = 512


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


def clean_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """User keyword attributes, record-safe: keys that are non-empty strings, values through :func:`plain`
    (secret names are refused later, in the exporter, with every other attribute). Never raises."""
    out: dict[str, Any] = {}
    try:
        for key, value in attributes.items():
            if key.__class__ is not str or not key:
                continue
            clean = plain(value)
            if clean is not None:
                out[key] = clean
    except Exception:  # noqa: BLE001 - a hostile mapping keeps what was read before it failed
        pass
    return out


def current_number(value: float | Callable[[], Any]) -> tuple[float | None, str | None]:
    """A gauge's number now: its callback called (the user's code: it may raise or return None) and the result
    made finite. ``(number, None)``, or ``(None, kind)`` naming the problem to count in ``qt.telemetry.errors``."""
    if callable(value):
        try:
            value = value()
        except Exception:  # noqa: BLE001 - a user callback must not break whoever reads the board
            return None, "gauge_callback_failed"
        if value is None:
            return None, "gauge_callback_none"
    number = finite(value)
    return (number, None) if number is not None else (None, "gauge_bad_value")
