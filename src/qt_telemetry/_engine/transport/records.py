"""The compact records the trading process hands to the exporter.

A record is a plain tuple of str/int/float/bool/None (and tuples/dicts of them), so a batch is one
``marshal.dumps`` — C code, microseconds — and crosses to the exporter process as one datagram. Which metrics a
span yields is decided by the converter from the span's name and attributes, so an order costs one record.

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

import marshal
from typing import Any, Final

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
OP_FOREIGN_METRICS: Final = "foreign_metrics"  # payload: pickled MetricsData of other instrumentation
OP_GOODBYE: Final = "goodbye"  # the producer is exiting: export its last state and forget it
OP_DROPPED: Final = "dropped"  # payload: {reason: count} the producer dropped so far
OP_FLUSH: Final = "flush"  # payload: seconds; sent with a pipe's write end the exporter answers on

#: Datagram header: (VERSION, pid, service.instance.id, {drop reason: count}, sequence)
VERSION: Final = 1


def encode(header: tuple[Any, ...], records: list[tuple[Any, ...]]) -> bytes:
    return marshal.dumps((header, records))


def decode(data: bytes) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    header, records = marshal.loads(data)
    return header, records
