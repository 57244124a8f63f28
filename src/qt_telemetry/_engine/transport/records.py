"""The compact records the trading process hands to the exporter.

A record is a plain tuple of str/int/float/bool/bytes/None (and tuples/dicts of them), so a batch is one msgpack
call — C code, microseconds — and crosses to the exporter as one message (:mod:`~qt_telemetry._engine.transport.wire`).
Which metrics a span yields is decided from the span's name and attributes (:data:`semconv.SPAN_METRICS`), so an
order costs one record.

    SPAN     (SPAN, name, kind, trace_id, span_id, parent_id, parent_remote, sampled, start_ns, end_ns,
              status_code, status_message, attributes, events, links, trace_state, scope)
             ids are big-endian bytes (16 for a trace, 8 for a span, parent None for a root), as OTLP carries them;
             events ((name, time_ns, attributes), ...) or None; links ((trace_id, span_id), ...) or None;
             scope None for our own spans, else (name, version, schema_url) of the instrumentation
    METRICS  (METRICS, ((metric_name, value), ...), attributes)
    GAUGE    (GAUGE, metric_name, attributes, value)        value None removes the series
    CONTROL  (CONTROL, operation, payload)
    PREAGG   (PREAGG, metric_name, attributes, payload)   what records the producer could not hand over contributed:
             payload is the sum (a counter) or the values as little-endian float64 bytes (a histogram), so counts
             and distributions stay exact when span detail is shed
"""

from __future__ import annotations

from typing import Final

SPAN: Final = 1
METRICS: Final = 2
GAUGE: Final = 3
CONTROL: Final = 4
PREAGG: Final = 5

# SPAN field positions
S_NAME, S_KIND, S_TRACE, S_SPAN, S_PARENT, S_REMOTE, S_SAMPLED, S_START, S_END = 1, 2, 3, 4, 5, 6, 7, 8, 9
S_STATUS, S_MESSAGE, S_ATTRS, S_EVENTS, S_LINKS, S_STATE, S_SCOPE = 10, 11, 12, 13, 14, 15, 16

# CONTROL operations
OP_SECRETS: Final = "secrets"  # payload: tuple of exact values to redact
OP_GOODBYE: Final = "goodbye"  # the producer is exiting: export its last state and forget it
OP_FLUSH: Final = "flush"  # payload: (request id, seconds); the exporter answers FLUSHED on the connection
OP_HELLO: Final = "hello"  # payload: the family key; a connection's first record


def drop_key(key: str) -> tuple[str, str]:
    """A producer's drop counter key ``"signal/reason"`` -> (signal, reason): the metric's two labels."""
    signal, _, reason = key.partition("/")
    return (signal, reason) if reason else ("records", signal)
