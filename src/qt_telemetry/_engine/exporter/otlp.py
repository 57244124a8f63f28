"""The OTLP protobuf wire format, written directly: varints, length-delimited fields, fixed64/fixed32, doubles.

Why by hand: building protobuf objects for each span and data point (and the SDK objects before them) was most of
the exporter's cost, 36 of 62 µs per order. Messages here are plain ``bytes``: an encoded attribute is cached and
spliced into every span that carries it. Fields are written in field-number order with proto3's rules (a scalar
equal to its default is left out; a set message, a oneof member and an ``optional`` field are always written), so
the span requests are byte-identical to ``encode_spans(...).SerializeToString()`` (tested).

Field numbers: ``opentelemetry/proto/{common,resource,trace,metrics}/v1/*.proto`` (opentelemetry-proto 1.45).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

_SMALL: Final = tuple(bytes((n,)) for n in range(128))
_INT64_MIN: Final = -(1 << 63)
_INT64_END: Final = 1 << 63
_MASK64: Final = (1 << 64) - 1
_pack_d = struct.Struct("<d").pack
_pack_q = struct.Struct("<Q").pack
_pack_i = struct.Struct("<I").pack
_pack_signed = struct.Struct("<q").pack

# --- primitives -----------------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    """An unsigned varint (``n`` >= 0)."""
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, message, packed repeated): tag, length, payload."""
    size = len(payload)
    return tag + (_SMALL[size] if size < 0x80 else varint(size)) + payload


def fixed64(tag: bytes, n: int) -> bytes:
    return tag + _pack_q(n)


def double(tag: bytes, x: float) -> bytes:
    return tag + _pack_d(x)


def zigzag32(n: int) -> bytes:
    """A ``sint32`` value."""
    return varint(((n << 1) ^ (n >> 31)) & 0xFFFFFFFF)


# --- common.proto: AnyValue, KeyValue, InstrumentationScope; resource.proto: Resource ------------------

TRUE: Final = b"\x10\x01"
FALSE: Final = b"\x10\x00"


def any_value(value: Any) -> bytes:
    """An AnyValue message (what ``_encode_value`` of the OTLP exporters builds), or ValueError."""
    if isinstance(value, bool):
        return TRUE if value else FALSE
    if isinstance(value, str):
        return field(b"\x0a", value.encode("utf-8"))
    if isinstance(value, int):
        if not _INT64_MIN <= value < _INT64_END:
            raise ValueError(f"integer out of int64 range: {value}")
        return b"\x18" + varint(value & _MASK64)
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)
    if isinstance(value, bytes):
        return field(b"\x3a", value)
    if isinstance(value, Sequence):
        return field(b"\x2a", b"".join(field(b"\x0a", any_value(item)) for item in value))
    if isinstance(value, Mapping):
        return field(b"\x32", b"".join(field(b"\x0a", key_value(str(k), v)) for k, v in value.items()))
    raise ValueError(f"not an attribute value: {type(value).__name__}")


def key_value(key: str, value: Any) -> bytes:
    """A KeyValue message."""
    return field(b"\x0a", key.encode("utf-8")) + field(b"\x12", any_value(value))


def attributes(tag: bytes, items: Iterable[tuple[str, Any]]) -> bytes:
    """Repeated KeyValue fields under ``tag``; like the OTLP exporters, a value that cannot be encoded is left out."""
    out = []
    for key, value in items:
        try:
            out.append(field(tag, key_value(key, value)))
        except ValueError:
            continue
    return b"".join(out)


def resource(items: Iterable[tuple[str, Any]]) -> bytes:
    """A Resource message (its attributes)."""
    return attributes(b"\x0a", items)


def scope(name: str | None, version: str | None) -> bytes:
    """An InstrumentationScope message (no attributes: neither ours nor a record's scope carries any)."""
    out = b""
    if name:
        out += field(b"\x0a", name.encode("utf-8"))
    if version:
        out += field(b"\x12", version.encode("utf-8"))
    return out


def string(tag: bytes, text: str | None) -> bytes:
    """A string field, left out when empty."""
    return field(tag, text.encode("utf-8")) if text else b""


# --- trace.proto ----------------------------------------------------------------------------------------

#: Span.kind from the API's SpanKind value (INTERNAL 0 .. CONSUMER 4 -> SPAN_KIND_INTERNAL 1 .. 5).
SPAN_KIND: Final = tuple(b"\x30" + _SMALL[kind + 1] for kind in range(5))
#: Span.status without a message, by code (UNSET, OK, ERROR).
STATUS: Final = (b"\x7a\x00", b"\x7a\x02\x18\x01", b"\x7a\x02\x18\x02")
#: SpanFlags: the context's is_remote is known (0x100), and true (0x200).
FLAGS_LOCAL: Final = b"\x85\x01" + _pack_i(0x100)
FLAGS_REMOTE: Final = b"\x85\x01" + _pack_i(0x300)
_LINK_FLAGS: Final = b"\x35" + _pack_i(0x100)


def status(code: int, message: str | None) -> bytes:
    """The Span.status field."""
    if not message:
        return STATUS[code]
    return field(b"\x7a", field(b"\x12", message.encode("utf-8")) + (b"\x18" + _SMALL[code] if code else b""))


def event(time_ns: int, name: str, attribute_fields: Iterable[bytes]) -> bytes:
    """A Span.events field; ``attribute_fields`` are KeyValues already tagged as Event.attributes (3)."""
    body = (b"\x09" + _pack_q(time_ns) if time_ns else b"") + string(b"\x12", name) + b"".join(attribute_fields)
    return field(b"\x5a", body)


def link(trace_id: bytes, span_id: bytes) -> bytes:
    """A Span.links field: a local context, no trace state, no attributes (what records carry)."""
    return b"\x6a\x21\x0a\x10" + trace_id + b"\x12\x08" + span_id + _LINK_FLAGS


def span(trace_id: bytes, span_id: bytes, trace_state: str, parent_id: bytes | None, name: bytes, kind: int,
         start_ns: int, end_ns: int, attribute_fields: Sequence[bytes], events: Sequence[bytes],
         links: Sequence[bytes], status_field: bytes, remote_parent: bool) -> bytes:
    """A Span message. ``attribute_fields`` are KeyValues already tagged as Span.attributes (9)."""
    parts = [b"\x0a\x10", trace_id, b"\x12\x08", span_id]
    if trace_state:
        parts.append(field(b"\x1a", trace_state.encode("utf-8")))
    if parent_id is not None:
        parts += (b"\x22\x08", parent_id)
    if name:
        parts.append(field(b"\x2a", name))
    parts.append(SPAN_KIND[kind])
    if start_ns:
        parts += (b"\x39", _pack_q(start_ns))
    if end_ns:
        parts += (b"\x41", _pack_q(end_ns))
    parts += attribute_fields
    parts += events
    parts += links
    parts.append(status_field)
    parts.append(FLAGS_REMOTE if remote_parent else FLAGS_LOCAL)
    return b"".join(parts)


def scope_spans(scope_message: bytes, span_fields: Sequence[bytes], schema_url: str | None) -> bytes:
    """A ResourceSpans.scope_spans field; ``span_fields`` are Spans already tagged as ScopeSpans.spans (2)."""
    return field(b"\x12", field(b"\x0a", scope_message) + b"".join(span_fields) + string(b"\x1a", schema_url))


def resource_spans(resource_message: bytes, scope_fields: Sequence[bytes], schema_url: str | None) -> bytes:
    """An ExportTraceServiceRequest.resource_spans field."""
    return field(b"\x0a", field(b"\x0a", resource_message) + b"".join(scope_fields) + string(b"\x1a", schema_url))


# --- metrics.proto --------------------------------------------------------------------------------------

DELTA: Final = 1
CUMULATIVE: Final = 2


def exemplar(time_ns: int, value: float, trace_id: bytes | None, span_id: bytes | None) -> bytes:
    """An Exemplar message (its filtered attributes are always empty here: a measurement's attributes are its
    point's). An integer value is ``as_int``, as the SDK's encoder writes it."""
    out = b"\x11" + _pack_q(time_ns) if time_ns else b""
    if isinstance(value, float):
        out += b"\x19" + _pack_d(value)
    if span_id is not None and trace_id is not None:
        out += b"\x22\x08" + span_id + b"\x2a\x10" + trace_id
    if not isinstance(value, float):
        out += b"\x31" + _pack_signed(value)
    return out


def _exemplars(tag: bytes, exemplars: Iterable[bytes]) -> bytes:
    return b"".join(field(tag, e) for e in exemplars)


def _times(start_ns: int, time_ns: int) -> bytes:
    return (b"\x11" + _pack_q(start_ns) if start_ns else b"") + (b"\x19" + _pack_q(time_ns) if time_ns else b"")


def number_point(attribute_fields: bytes, start_ns: int, time_ns: int, value: float,
                 exemplars: Iterable[bytes]) -> bytes:
    """A NumberDataPoint message (``attribute_fields`` tagged 7: ``attributes(b"\\x3a", ...)``); an integer value
    is ``as_int``."""
    if isinstance(value, float):
        return _times(start_ns, time_ns) + b"\x21" + _pack_d(value) + _exemplars(b"\x2a", exemplars) + \
            attribute_fields
    return _times(start_ns, time_ns) + _exemplars(b"\x2a", exemplars) + b"\x31" + _pack_signed(value) + \
        attribute_fields


def histogram_point(attribute_fields: bytes, start_ns: int, time_ns: int, count: int, total: float,
                    bucket_counts: Sequence[int], bounds: Sequence[float], exemplars: Iterable[bytes],
                    low: float, high: float) -> bytes:
    """A HistogramDataPoint message (``attribute_fields`` tagged 9: ``attributes(b"\\x4a", ...)``)."""
    return b"".join((
        _times(start_ns, time_ns), b"\x21" + _pack_q(count) if count else b"", b"\x29" + _pack_d(total),
        field(b"\x32", struct.pack(f"<{len(bucket_counts)}Q", *bucket_counts)) if bucket_counts else b"",
        field(b"\x3a", struct.pack(f"<{len(bounds)}d", *bounds)) if bounds else b"",
        _exemplars(b"\x42", exemplars), attribute_fields, b"\x59" + _pack_d(low), b"\x61" + _pack_d(high),
    ))


def _buckets(offset: int, counts: Sequence[int]) -> bytes:
    return (b"\x08" + zigzag32(offset) if offset else b"") + \
        (field(b"\x12", b"".join(varint(c) for c in counts)) if counts else b"")


def exponential_point(attribute_fields: bytes, start_ns: int, time_ns: int, count: int, total: float, scale: int,
                      zero_count: int, positive: tuple[int, Sequence[int]], negative: tuple[int, Sequence[int]],
                      exemplars: Iterable[bytes], low: float, high: float) -> bytes:
    """An ExponentialHistogramDataPoint message (``attribute_fields`` tagged 1: ``attributes(b"\\x0a", ...)``);
    ``positive``/``negative`` are (offset, bucket counts)."""
    return b"".join((
        attribute_fields, _times(start_ns, time_ns), b"\x21" + _pack_q(count) if count else b"",
        b"\x29" + _pack_d(total), b"\x30" + zigzag32(scale) if scale else b"",
        b"\x39" + _pack_q(zero_count) if zero_count else b"",
        field(b"\x42", _buckets(*positive)), field(b"\x4a", _buckets(*negative)),
        _exemplars(b"\x5a", exemplars), b"\x61" + _pack_d(low), b"\x69" + _pack_d(high),
    ))


def metric(name: str, description: str, unit: str, kind: str, points: Sequence[bytes], temporality: int) -> bytes:
    """A ScopeMetrics.metrics field. ``kind``: gauge, sum (monotonic), updown (a sum that may fall), histogram or
    exponential."""
    data = b"".join(field(b"\x0a", p) for p in points)
    if kind == "gauge":
        body = field(b"\x2a", data)
    elif kind == "sum":
        body = field(b"\x3a", data + b"\x10" + _SMALL[temporality] + b"\x18\x01")
    elif kind == "updown":
        body = field(b"\x3a", data + b"\x10" + _SMALL[temporality])
    elif kind == "histogram":
        body = field(b"\x4a", data + b"\x10" + _SMALL[temporality])
    else:
        body = field(b"\x52", data + b"\x10" + _SMALL[temporality])
    return field(b"\x12", string(b"\x0a", name) + string(b"\x12", description) + string(b"\x1a", unit) + body)


def resource_metrics(resource_message: bytes, scope_message: bytes, metric_fields: Sequence[bytes],
                     schema_url: str | None) -> bytes:
    """An ExportMetricsServiceRequest.resource_metrics field with one ScopeMetrics."""
    scope_metrics = field(b"\x0a", scope_message) + b"".join(metric_fields)
    return field(b"\x0a", field(b"\x0a", resource_message) + field(b"\x12", scope_metrics) +
                 string(b"\x1a", schema_url))
