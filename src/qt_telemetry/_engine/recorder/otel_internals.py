"""The private names of the OTel API that the hot path reads, checked once at import, with a public fallback.

Two reads are worth a private name, each a few hundred nanoseconds per order through the public API:
- ``opentelemetry.trace._TRACER_PROVIDER``: "is any provider installed?", the whole cost of a decorated call
  before ``init()`` (the public ``get_tracer_provider()`` is a function call plus an ``isinstance``);
- the contextvars runtime's variable and ``opentelemetry.trace.propagation._SPAN_KEY``: the current span, and
  making ours current, in one step instead of four calls (see :mod:`.context`).

``pyproject.toml`` pins the OTel packages to the minor release the tests run, and
``tests/unit/test_otel_bound.py`` checks that these names exist and behave there. Should a release move them,
the check below fails at import and everything goes through the public API, unchanged in behaviour (the same
test suite runs that way, forced by :data:`FORCE_PUBLIC`), slower by the figures above.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

#: Set (to anything) to use the public API even where the private names behave: tests of the fallback.
FORCE_PUBLIC: Final = "QT_TELEMETRY__OTEL_PUBLIC_API"
_MISSING = object()


class PublicTrace:
    """Stands in for the ``opentelemetry.trace`` module where the hot path reads ``_TRACER_PROVIDER``."""

    @property
    def _TRACER_PROVIDER(self) -> Any:  # named as the module attribute it stands in for
        provider = trace.get_tracer_provider()
        return None if isinstance(provider, trace.ProxyTracerProvider) else provider


def tracer_provider_slot_behaves() -> bool:
    """``trace._TRACER_PROVIDER`` exists and says what ``get_tracer_provider()`` says."""
    slot = getattr(trace, "_TRACER_PROVIDER", _MISSING)
    if slot is _MISSING:
        return False
    provider = trace.get_tracer_provider()
    if slot is None:
        return isinstance(provider, trace.ProxyTracerProvider)
    return slot is provider


def span_slot() -> tuple[ContextVar[Context], str] | None:
    """The runtime context's variable and the span key, if they exist and behave as the API does (both ways)."""
    try:
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
        from opentelemetry.trace.propagation import _SPAN_KEY
    except ImportError:
        return None
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    if not isinstance(runtime, ContextVarsRuntimeContext) or not isinstance(variable, ContextVar) \
            or not isinstance(_SPAN_KEY, str):
        return None
    ours = trace.NonRecordingSpan(trace.SpanContext(1, 1, False))
    token = variable.set(Context({**variable.get(), _SPAN_KEY: ours}))
    try:
        theirs_sees_ours = trace.get_current_span() is ours
    finally:
        variable.reset(token)
    theirs = trace.NonRecordingSpan(trace.SpanContext(2, 2, False))
    api_token = otel_context.attach(trace.set_span_in_context(theirs))
    try:
        ours_sees_theirs = variable.get().get(_SPAN_KEY) is theirs
    finally:
        otel_context.detach(api_token)
    return (variable, _SPAN_KEY) if theirs_sees_ours and ours_sees_theirs else None


_forced = bool(os.environ.get(FORCE_PUBLIC))
#: What the hot path reads ``_TRACER_PROVIDER`` from: the API module itself, or its public stand-in.
TRACE: Any = trace if not _forced and tracer_provider_slot_behaves() else PublicTrace()
#: (variable, key) for the one-step context, or None: go through the API.
SPAN_SLOT = None if _forced else span_slot()
