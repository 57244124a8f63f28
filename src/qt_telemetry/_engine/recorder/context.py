"""The OTel context on the hot path: the current span, and making ours current, in the fewest steps.

The OTel API reaches the context variable through four calls per operation (and a logger on detach). With the
default runtime context (contextvars) we use the same variable directly; with any other runtime context
configured (``OTEL_PYTHON_CONTEXT``), or an API release whose private names moved (see :mod:`.otel_internals`),
we go through the API, unchanged in behaviour either way.
"""

from __future__ import annotations

from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from qt_telemetry._engine.recorder.otel_internals import SPAN_SLOT

_INVALID = trace.INVALID_SPAN

if SPAN_SLOT is not None:
    _variable, _SPAN_KEY = SPAN_SLOT

    def current_span(parent: Context | None = None) -> trace.Span:
        span: Any = (_variable.get() if parent is None else parent).get(_SPAN_KEY)
        return _INVALID if span is None else span

    def attach_span(span: trace.Span) -> Token[Context]:
        return _variable.set(Context({**_variable.get(), _SPAN_KEY: span}))

    def detach(token: Any) -> None:
        try:
            _variable.reset(token)
        except ValueError:  # ended in another context than it started in: nothing to restore here
            pass

else:  # a custom runtime context, or the API's private names moved

    def current_span(parent: Context | None = None) -> trace.Span:
        return trace.get_current_span(parent)

    def attach_span(span: trace.Span) -> Token[Context]:
        return otel_context.attach(trace.set_span_in_context(span))

    def detach(token: Any) -> None:
        otel_context.detach(token)
