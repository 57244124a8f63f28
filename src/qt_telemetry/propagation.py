"""Carry a trade's trace across services: ``inject`` into message headers, ``extract`` on the other side.

Uses the globally configured propagator (W3C ``traceparent``/``tracestate`` and baggage by default, or what
``OTEL_PROPAGATORS`` says), over plain dicts. Redis streams and Kafka hand back ``bytes``: ``extract``
decodes them, so ``extract(redis_fields)`` just works.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

from qt_telemetry._engine.recorder.safety import telemetry_error


class _BytesTolerantGetter(Getter[Mapping[Any, Any]]):
    def get(self, carrier: Mapping[Any, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            value = carrier.get(key.encode())
        if value is None:
            return None
        if isinstance(value, bytes | bytearray):
            value = value.decode("utf-8", "replace")
        if isinstance(value, list | tuple):
            return [v.decode("utf-8", "replace") if isinstance(v, bytes | bytearray) else str(v) for v in value]
        return [str(value)]

    def keys(self, carrier: Mapping[Any, Any]) -> list[str]:
        return [k.decode("utf-8", "replace") if isinstance(k, bytes | bytearray) else str(k) for k in carrier]


_GETTER = _BytesTolerantGetter()


def inject(carrier: MutableMapping[str, str] | None = None, context: Context | None = None) -> dict[str, str]:
    """Write the current (or given) trace context into ``carrier`` (a new dict if None) and return it."""
    out: dict[str, str] = {} if carrier is None else carrier  # type: ignore[assignment]
    try:
        from opentelemetry import propagate  # imported here: a bad OTEL_PROPAGATORS makes its import raise

        propagate.inject(out, context=context)
    except Exception as exc:  # noqa: BLE001
        telemetry_error("inject_failed", repr(exc))
    return out


def extract(carrier: Mapping[Any, Any] | None) -> Context:
    """Read a trace context from message headers; an empty context when there is none or it is malformed."""
    try:
        if not carrier or not isinstance(carrier, Mapping):
            return Context()
        from opentelemetry import propagate

        return propagate.extract(carrier, getter=_GETTER, context=Context())
    except Exception as exc:  # noqa: BLE001
        telemetry_error("extract_failed", repr(exc))
        return Context()
