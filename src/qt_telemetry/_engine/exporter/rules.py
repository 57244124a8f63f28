"""What a record means, decided once for both exporter paths: the SDK objects of :mod:`.convert` and the protobuf
bytes of :mod:`.lean`.

Which records are well formed, which attributes are exported and as what, which traces a tail sampler must keep,
which metrics a span yields, which values a metric accepts, and how a metric label is made. Both paths call these
functions, so the differential test (``tests/unit/test_lean_differential.py``) only has to prove the encodings equal.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

from opentelemetry.trace import TraceState

from qt_telemetry import semconv
from qt_telemetry._engine.transport import records as R
from qt_telemetry._redaction import Redactor
from qt_telemetry._values import finite

_RATIO_BITS: Final = (1 << 56) - 1
_INT64_MIN: Final = -(1 << 63)
_INT64_END: Final = 1 << 63
_UINT64_END: Final = 1 << 64
#: Span events that make a trace worth keeping whole.
KEEP_EVENTS: Final = frozenset({semconv.EVENT_KILL_SWITCH, semconv.EVENT_BREAKER, semconv.EVENT_RISK_REJECTED})
_KEEP_OUTCOMES: Final = frozenset({semconv.OUTCOME_ERROR, semconv.OUTCOME_REJECTED})
_STATUS_ERROR: Final = 2
_LIST_TYPES: Final = (tuple, list)
_FLAG_TYPES: Final = (bool, int)  # True/False, or 1/0

Text = Callable[[str], str]


class RecordError(ValueError):
    """A record that is not what :mod:`~qt_telemetry._engine.transport.records` describes: it costs itself only
    (counted as ``record_failed``), never the batch it came in."""


# --- text -----------------------------------------------------------------------------------------------

def utf8(text: str) -> str:
    """What protobuf can encode: a lone surrogate (from a bad decode upstream) becomes ``?``, not a lost batch."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def redacted(redactor: Redactor) -> Text:
    """Free text as exported: scrubbed, then made encodable."""
    def text(value: str) -> str:
        return utf8(redactor.text(value))

    return text


# --- span records -----------------------------------------------------------------------------------------

def check_span(record: Sequence[Any]) -> None:
    """Raise :class:`RecordError` unless ``record`` is a well-formed SPAN record: checked before anything of it is
    counted or measured, so a bad record yields nothing (not its metrics without its span, nor an encoder error that
    would lose the whole batch it is exported with)."""
    if len(record) <= R.S_SCOPE:
        raise RecordError("short span record")
    (_, name, kind, trace_id, span_id, parent, remote, sampled, start, end, status, message, attributes, events,
     links, state, scope) = record[:17]
    if name.__class__ is not str and not isinstance(name, str):
        raise RecordError("span name")
    if kind.__class__ is not int or not 0 <= kind <= 4 or status.__class__ is not int or not 0 <= status <= 2:
        raise RecordError("span kind or status code")
    if trace_id.__class__ is not bytes or len(trace_id) != 16 or span_id.__class__ is not bytes \
            or len(span_id) != 8 or (parent is not None and (parent.__class__ is not bytes or len(parent) != 8)):
        raise RecordError("span ids")
    if remote.__class__ not in _FLAG_TYPES or sampled.__class__ not in _FLAG_TYPES or remote not in (0, 1) \
            or sampled not in (0, 1):
        raise RecordError("span flags")
    if start.__class__ is not int or end.__class__ is not int or not 0 <= start < _UINT64_END \
            or not 0 <= end < _UINT64_END:
        raise RecordError("span times")
    if (message is not None and not isinstance(message, str)) or (state is not None and not isinstance(state, str)):
        raise RecordError("status message or trace state")
    if attributes is not None and not isinstance(attributes, dict):
        raise RecordError("span attributes")
    if events is not None:
        for event in _items(events, "events"):
            if not isinstance(event, _LIST_TYPES) or len(event) != 3 or not isinstance(event[0], str) \
                    or not _is_time(event[1]) or not _is_attributes(event[2]):
                raise RecordError("span event")
    if links is not None:
        for link in _items(links, "links"):
            if not isinstance(link, _LIST_TYPES) or len(link) != 2 or not _is_id(link[0], 16) \
                    or not _is_id(link[1], 8):
                raise RecordError("span link")
    if scope is not None:
        scope_key(scope)


def _is_id(value: Any, size: int) -> bool:
    return value.__class__ is bytes and len(value) == size


def _is_time(value: Any) -> bool:
    return value.__class__ is int and 0 <= value < _UINT64_END


def _is_attributes(value: Any) -> bool:
    return value is None or isinstance(value, dict)


def _items(value: Any, what: str) -> Sequence[Any]:
    if value is None:
        return ()
    if not isinstance(value, _LIST_TYPES):
        raise RecordError(what)
    return value


def scope_key(scope: Any) -> tuple[str, str | None, str | None] | None:
    """The instrumentation scope of a span: None for ours, else (name, version, schema_url) as exported."""
    if scope is None:
        return None
    if not isinstance(scope, _LIST_TYPES) or not 1 <= len(scope) <= 3 or not isinstance(scope[0], str):
        raise RecordError("span scope")
    rest = [*scope[1:], None, None][:2]
    if any(part is not None and not isinstance(part, str) for part in rest):
        raise RecordError("span scope")
    return utf8(scope[0]), _maybe_utf8(rest[0]), _maybe_utf8(rest[1])


def _maybe_utf8(text: str | None) -> str | None:
    return None if text is None else utf8(text)


@lru_cache(maxsize=1024)
def trace_state(header: str) -> TraceState:
    """The W3C trace state a span carries (an invalid header is an empty one); parsed once per distinct header."""
    return TraceState.from_header([header])


def trace_state_text(header: str | None) -> str:
    """The trace state as OTLP carries it: ``key=value`` members joined by commas ("" when none)."""
    if not header:
        return ""
    return ",".join(f"{key}={value}" for key, value in trace_state(header).items())


# --- attributes -------------------------------------------------------------------------------------------

def attribute_key(redactor: Redactor, key: Any) -> tuple[str | None, str | None]:
    """(the key as exported, None), or (None, the error to count): not a non-empty string, or secret-looking."""
    if not isinstance(key, str) or not key:
        return None, "bad_attribute"
    key = utf8(key)
    if redactor.is_secret_key(key):
        return None, "secret_attribute_dropped"
    return key, None


def attribute_value(value: Any, text: Text) -> tuple[Any, str | None]:
    """(the value as exported, None); (None, None) for a None value, left out silently; (None, error) for a value
    OTLP cannot carry: a non-finite float, an integer beyond int64, bytes, a mapping, a sequence holding any of
    these (or other sequences), anything else. Strings, also inside sequences, go through ``text`` (redaction)."""
    if value is None:
        return None, None
    scalar = _scalar(value, text)
    if scalar is not _BAD:
        return scalar, None
    if isinstance(value, _LIST_TYPES):
        out = []
        for item in value:
            clean = _scalar(item, text)
            if clean is _BAD or clean is None:
                return None, "bad_attribute"
            out.append(clean)
        return tuple(out), None
    return None, "bad_attribute"


_BAD: Final[Any] = object()


def _scalar(value: Any, text: Text) -> Any:
    if isinstance(value, str):
        return text(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if _INT64_MIN <= value < _INT64_END else _BAD
    if isinstance(value, float):
        return value if math.isfinite(value) else _BAD
    return _BAD


# --- what a span means ------------------------------------------------------------------------------------

class SpanRules:
    """Which traces a tail sampler must keep (``qt.sampling.keep``), from the settings."""

    def __init__(self, slow_order_seconds: float, trace_keep_ratio: float) -> None:
        self.slow_ns = int(slow_order_seconds * 1e9)
        self.keep_bound = int(trace_keep_ratio * (1 << 56))

    def keep(self, name: str, outcome: Any, record: Sequence[Any]) -> bool:
        """Errors, rejections, slow orders, safety events, and the trace ids within the keep ratio (decided from
        the id's low 56 bits, so every service of a trace agrees)."""
        if int.from_bytes(record[R.S_TRACE][9:], "big") < self.keep_bound:
            return True
        if record[R.S_STATUS] == _STATUS_ERROR or outcome in _KEEP_OUTCOMES:
            return True
        if name == semconv.SPAN_ORDER and record[R.S_END] - record[R.S_START] > self.slow_ns:
            return True
        if name in (semconv.SPAN_KILL_SWITCH, semconv.SPAN_BREAKER):
            return True
        return any(event[0] in KEEP_EVENTS for event in record[R.S_EVENTS] or ())


span_measurements = semconv.span_measurements


def status_message(code: int, message: Any, text: Text) -> str | None:
    """What OTel keeps of a status description: a string, on an ERROR status only."""
    return text(message) if code == _STATUS_ERROR and isinstance(message, str) else None


# --- metric values and labels -----------------------------------------------------------------------------

def measurement(spec: semconv.MetricSpec, value: Any) -> tuple[float | None, str | None]:
    """(the number to record or None, the error to count or None). Durations below zero are clamped to 0 (a clock
    step); other negatives are refused, as the SDK's counter and histogram refuse them (a histogram's ``_sum``
    must never fall, or Prometheus reads a counter reset), but counted instead of only logged."""
    number = finite(value)
    if number is None:
        return None, "bad_measurement"
    if number < 0:
        if spec.unit == "s":
            return 0.0, "negative_duration"
        if spec.kind in ("counter", "histogram"):
            return None, "negative_measurement"
    return number, None


def metrics_record(record: Sequence[Any]) -> tuple[list[tuple[semconv.MetricSpec, Any]], dict[str, Any]]:
    """A METRICS record's measurements and attributes, every name checked before any is recorded."""
    ops, attributes = record[1], record[2]
    if not isinstance(ops, _LIST_TYPES) or not isinstance(attributes, dict):
        raise RecordError("METRICS record")
    out = []
    for op in ops:
        if not isinstance(op, _LIST_TYPES) or len(op) != 2:
            raise RecordError("METRICS operation")
        out.append((_measured(op[0]), op[1]))
    return out, attributes


def preagg_record(record: Sequence[Any]) -> tuple[semconv.MetricSpec, dict[str, Any], Sequence[Any]]:
    """A PREAGG record: what records the producer could not hand over contributed to one series: the metric, the
    attributes, and the values it stands for: a counter's sum (one number) or a histogram's values (little-endian
    float64 bytes)."""
    spec, attributes, payload = _measured(record[1]), record[2], record[3]
    if not isinstance(attributes, dict):
        raise RecordError("PREAGG attributes")
    if spec.kind == "counter" and payload.__class__ in (int, float):
        return spec, attributes, (payload,)
    if spec.kind == "histogram" and payload.__class__ is bytes and len(payload) % 8 == 0:
        return spec, attributes, struct.unpack(f"<{len(payload) // 8}d", payload)
    raise RecordError(f"PREAGG payload for {spec.name}")


def check_gauge(record: Sequence[Any]) -> None:
    """A GAUGE record names one of our gauges (or an observed counter: a runtime metric) and carries attributes."""
    spec = semconv.METRICS.get(record[1]) if isinstance(record[1], str) else None
    if spec is None or not (spec.kind == "gauge" or spec.observed) or not isinstance(record[2], dict):
        raise RecordError("GAUGE record")


def _measured(name: Any) -> semconv.MetricSpec:
    spec = semconv.METRICS.get(name) if isinstance(name, str) else None
    if spec is None or spec.kind not in ("counter", "histogram") or spec.observed:
        raise RecordError(f"not a counter or histogram that is measured: {name!r}")
    return spec


class LabelGuard:
    """Keeps metric attributes low-cardinality: each key accepts a bounded number of distinct values.

    The SDK has no cardinality limit, so an unbounded label (a symbol list from a feed gone wrong) would grow
    memory forever. Past ``max_values`` the value becomes ``_other`` and the overflow is counted.
    """

    def __init__(self, max_values: int, on_overflow: Callable[[str], None]) -> None:
        self.max_values = max_values
        self._seen: dict[str, set[str]] = {}
        self._on_overflow = on_overflow

    def value(self, key: str, text: str) -> str:
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = set()
        if text in seen:
            return text
        if len(seen) < self.max_values:
            seen.add(text)
            return text
        self._on_overflow(key)
        return semconv.OVERFLOW_VALUE

    def known(self, key: str, text: str) -> bool:
        """True once ``text`` is one of ``key``'s values: it is returned as is from then on, never counted."""
        seen = self._seen.get(key)
        return seen is not None and text in seen


def label_text(raw: Any, text: Text) -> str:
    """A metric label value from an attribute value: cut to 64 characters, redacted, ``unknown`` when empty."""
    if raw.__class__ is str:
        value = raw
    elif isinstance(raw, bool):
        value = "true" if raw else "false"
    else:
        value = str(raw)
    value = text(value[:64]) if value else semconv.UNKNOWN_VALUE
    return value or semconv.UNKNOWN_VALUE


def label_set(spec: semconv.MetricSpec, attributes: Mapping[str, Any], guard: LabelGuard,
              text: Text) -> dict[str, str]:
    """The metric attributes of one measurement: the spec's keys only, ``unknown`` for a missing one (left out if
    optional), each value bounded by ``guard``."""
    out: dict[str, str] = {}
    for key in spec.attributes:
        raw = attributes.get(key)
        if raw is None:
            if key in spec.optional:
                continue
            out[key] = semconv.UNKNOWN_VALUE
            continue
        out[key] = guard.value(key, label_text(raw, text))
    return out


def gauge_key(attributes: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A gauge series on a producer's board: its attributes, sorted."""
    return tuple(sorted(attributes.items()))


def set_gauge(board: dict[str, dict[tuple[tuple[str, Any], ...], Any]], name: str, attributes: Mapping[str, Any],
              value: Any) -> None:
    """A GAUGE record on a producer's board: the series' value now (None removes the series)."""
    series = board.setdefault(name, {})
    if value is None:
        series.pop(gauge_key(attributes), None)
    else:
        series[gauge_key(attributes)] = value


def new_drops(counted: dict[str, int], totals: Mapping[str, int]) -> Iterator[tuple[str, str, int]]:
    """What a producer's cumulative drop totals (``"signal/reason"``, in every message) add since ``counted``:
    (signal, reason, count). A new exporter hears the whole total again and counts it all: the producer's count is
    the truth (its series only ever grows across exporter generations)."""
    for key, total in totals.items():
        new = total - counted.get(key, 0)
        if new > 0:
            counted[key] = total
            yield (*R.drop_key(key), new)
