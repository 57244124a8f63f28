"""The hot-path guard rails: nothing raises into trading code, labels stay bounded, secrets stay in.

Every runtime problem (a NaN latency, a None symbol, a label with too many values, a callback that raises)
is absorbed here and counted in ``qt.telemetry.errors`` by kind, so it is visible without being fatal.
"""

from __future__ import annotations

import enum
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any, TypeVar

from qt_telemetry import semconv

_log = logging.getLogger("qt_telemetry")

AttributeValue = str | bool | int | float
T = TypeVar("T")

#: Parameter / attribute names that must never leave the process.
_SECRET_KEY = re.compile(
    r"(api[_.-]?key|api[_.-]?secret|secret|signature|token|passphrase|password|passwd|auth|credential|"
    r"private[_.-]?key|session[_.-]?id|cookie)",
    re.IGNORECASE,
)
#: ``key=value`` / ``key: value`` pairs with a secret-looking key, inside free text (error messages, URLs).
_SECRET_PAIR = re.compile(
    r"(?i)(api[_-]?key|apikey|secret|signature|token|passphrase|password|x-mbx-apikey|authorization)"
    r"(\"?\s*[=:]\s*\"?)(?:bearer\s+)?[^\s&\"',;}]+"
)
MAX_STRING = 256

_reported_kinds: set[str] = set()
_error_sink: Callable[[str], None] | None = None


def set_error_sink(sink: Callable[[str], None] | None) -> None:
    """Where counted telemetry errors go (the runtime points it at the ``qt.telemetry.errors`` counter)."""
    global _error_sink
    _error_sink = sink


def telemetry_error(kind: str, detail: str = "") -> None:
    """Count one absorbed problem; log it once per kind so a misbehaving feed does not flood the log."""
    try:
        if kind not in _reported_kinds:
            _reported_kinds.add(kind)
            _log.warning("qt-telemetry absorbed a %s problem (counted in qt.telemetry.errors): %s", kind, detail)
        sink = _error_sink
        if sink is not None:
            sink(kind)
    except Exception:  # pragma: no cover - the counter itself must never raise either
        pass


def is_secret_key(key: str) -> bool:
    """True for attribute or parameter names that look like credentials."""
    return bool(_SECRET_KEY.search(key))


def redact(text: str) -> str:
    """Remove secret-looking ``key=value`` pairs from free text such as exception messages."""
    return _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}[REDACTED]", text)


def attribute_value(value: Any) -> AttributeValue | None:
    """Coerce a Python value to an OTel attribute value, or None to drop it. Never raises."""
    try:
        if value is None:
            return None
        if isinstance(value, bool | int | str):
            return value[:MAX_STRING] if isinstance(value, str) else value
        if isinstance(value, float):
            return value
        if isinstance(value, enum.Enum):
            return attribute_value(value.value if isinstance(value.value, str | int | float) else value.name)
        if isinstance(value, Decimal):
            return float(value)
        return redact(str(value))[:MAX_STRING]
    except Exception:
        telemetry_error("bad_attribute")
        return None


def span_attributes(items: Iterable[tuple[str, Any]]) -> dict[str, AttributeValue]:
    """Clean user-supplied span attributes: drop None, coerce types, refuse secret-looking keys."""
    out: dict[str, AttributeValue] = {}
    for key, raw in items:
        if not isinstance(key, str) or not key:
            telemetry_error("bad_attribute")
            continue
        if is_secret_key(key):
            telemetry_error("secret_attribute_dropped", key)
            continue
        value = attribute_value(raw)
        if value is not None:
            out[key] = value
    return out


def finite(value: Any, kind: str = "bad_value") -> float | None:
    """A finite float, or None (counted) for NaN, infinity, None and non-numbers."""
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        telemetry_error(kind)
        return None
    if math.isfinite(f):
        return f
    telemetry_error(kind)
    return None


class LabelGuard:
    """Keeps metric attributes low-cardinality: each key accepts a bounded number of distinct values.

    The SDK has no cardinality limit, so an unbounded label (a symbol list from a feed gone wrong) would grow
    memory forever. Past ``max_values`` the value becomes ``_other`` and the overflow is counted.
    """

    def __init__(self, max_values: int = 250) -> None:
        self.max_values = max_values
        self._seen: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def value(self, key: str, raw: Any) -> str:
        if raw.__class__ is str:  # the hot path: a label value seen before
            seen_values = self._seen.get(key)
            if seen_values is not None and raw in seen_values:
                return raw
        text = _label_text(raw)
        if text == semconv.OVERFLOW_VALUE:
            return text
        seen = self._seen.get(key)
        if seen is not None and text in seen:
            return text
        with self._lock:
            seen = self._seen.setdefault(key, set())
            if text in seen:
                return text
            if len(seen) < self.max_values:
                seen.add(text)
                return text
        telemetry_error("label_overflow", f"{key!r} has more than {self.max_values} values")
        return semconv.OVERFLOW_VALUE

    def attributes(self, labels: Mapping[str, Any]) -> dict[str, str]:
        return {k: self.value(k, v) for k, v in labels.items()}

    def reset(self) -> None:
        with self._lock:
            self._seen.clear()


def _label_text(raw: Any) -> str:
    if raw is None:
        return semconv.UNKNOWN_VALUE
    if isinstance(raw, enum.Enum):
        raw = raw.value if isinstance(raw.value, str) else raw.name
    if isinstance(raw, bool):
        return "true" if raw else "false"
    text = raw if isinstance(raw, str) else str(raw)
    return text[:64] if text else semconv.UNKNOWN_VALUE


def guarded(kind: str, default: T) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator for instrumentation internals: an exception is counted and ``default`` returned."""

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        def wrapper(*args: Any, **kwargs: Any) -> T:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the point is to absorb anything
                telemetry_error(kind, repr(exc))
                return default

        wrapper.__name__ = getattr(fn, "__name__", "guarded")
        wrapper.__doc__ = fn.__doc__
        return wrapper

    return decorate
