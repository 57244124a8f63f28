"""Head sampling with the SDK's own samplers (``OTEL_TRACES_SAMPLER``), decided in the trading process.

The decision has to be made where the span starts: it goes into the context that child spans and propagated
headers carry. The built-in samplers are decided inline (a flag or one integer comparison, exactly as the SDK
computes them); any other sampler (an entry point) is asked through its ``should_sample``.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.sdk.trace import sampling
from opentelemetry.trace import SpanKind, TraceState

_TRACE_ID_LIMIT = (1 << 64) - 1


class HeadSampler:
    """``decide(trace_id, parent)`` -> (sampled, trace_state) for a new span."""

    def __init__(self, sampler: sampling.Sampler | None = None) -> None:
        self.sampler = sampler if sampler is not None else _from_environment()
        self._parent_based = isinstance(self.sampler, sampling.ParentBased)
        root = self.sampler._root if self._parent_based else self.sampler  # type: ignore[attr-defined]
        self._generic = not self._inline(root) or (self._parent_based and not self._default_delegates())
        self._root_always: bool | None = None
        self._bound = 0
        #: True when a child's decision is simply its parent's (``parentbased_*`` with default delegates).
        self.follows_parent = self._parent_based and not self._generic
        if isinstance(root, sampling.StaticSampler):
            self._root_always = root._decision is sampling.Decision.RECORD_AND_SAMPLE
        elif isinstance(root, sampling.TraceIdRatioBased):
            self._bound = root.bound

    @staticmethod
    def _inline(root: Any) -> bool:
        return isinstance(root, sampling.StaticSampler | sampling.TraceIdRatioBased)

    def _default_delegates(self) -> bool:
        s: Any = self.sampler
        return (s._remote_parent_sampled is sampling.ALWAYS_ON and s._remote_parent_not_sampled is sampling.ALWAYS_OFF
                and s._local_parent_sampled is sampling.ALWAYS_ON
                and s._local_parent_not_sampled is sampling.ALWAYS_OFF)

    def decide(self, trace_id: int, parent_sampled: bool | None, name: str, kind: SpanKind,
               parent_context: Any = None) -> tuple[bool, TraceState | None]:
        """``parent_sampled`` is None for a root span."""
        if self._generic:
            result = self.sampler.should_sample(parent_context, trace_id, name, kind)
            return bool(result.decision.is_sampled()), result.trace_state  # type: ignore[no-untyped-call]
        if parent_sampled is not None and self._parent_based:
            return parent_sampled, None
        if self._root_always is not None:
            return self._root_always, None
        return (trace_id & _TRACE_ID_LIMIT) < self._bound, None


def _from_environment() -> sampling.Sampler:
    name = os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    arg = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    rate = float(arg) if arg else 1.0
    builtin: dict[str, sampling.Sampler] = {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": sampling.TraceIdRatioBased(rate),
        "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": sampling.ParentBased(sampling.TraceIdRatioBased(rate)),
    }
    if name in builtin:
        return builtin[name]
    from importlib import metadata

    for entry in metadata.entry_points(group="opentelemetry_traces_sampler"):
        if entry.name.lower() == name:
            factory = entry.load()
            return factory(arg) if arg else factory()  # type: ignore[no-any-return]
    return sampling.ParentBased(sampling.ALWAYS_ON)
