"""Read span attributes from a call's arguments by parameter name, worked out once at decoration time.

Binding the full signature on every call (``inspect.Signature.bind``) costs several microseconds; instead we
record, per field, which parameter holds it (position and default), so a call costs a few dict/tuple reads.
Only allow-listed parameter names are ever read, so an ``api_key`` argument can never become an attribute, and
values come out record-safe (:func:`qt_telemetry._values.plain`): a hostile ``__str__`` drops the value.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from qt_telemetry._values import plain

_MISSING = object()
#: Parameters that may carry an order-like object whose fields we read (``place(order)``).
_CONTAINER_PARAMS = ("order", "request", "order_request", "req")


@dataclass(frozen=True)
class _Slot:
    index: int | None  # position in the signature (None = keyword-only)
    name: str
    default: Any


class ArgumentReader:
    """Extracts named fields from ``(args, kwargs)`` of one function."""

    def __init__(self, func: Callable[..., Any], fields: Mapping[str, tuple[str, ...]]) -> None:
        self._fields = dict(fields)
        try:
            params = list(inspect.signature(func).parameters.values())
        except Exception:  # noqa: BLE001 - a callable without a readable signature: nothing to read
            params = []
        self._first_is_receiver = bool(params) and params[0].name in ("self", "cls")
        positional_kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        by_name = {
            p.name: _Slot(i if p.kind in positional_kinds else None, p.name,
                          _MISSING if p.default is inspect.Parameter.empty else p.default)
            for i, p in enumerate(params)
            if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        }
        self._accepts_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        self._slots: dict[str, _Slot | tuple[str, ...]] = {}
        for field, aliases in self._fields.items():
            slot = next((by_name[a] for a in aliases if a in by_name), None)
            # With **kwargs, the field may still arrive by keyword under any alias.
            self._slots[field] = slot if slot is not None else aliases
        self._container = next((by_name[n] for n in _CONTAINER_PARAMS if n in by_name), None)
        #: The hot path's plan: (field, position, name, default) for every field with a parameter of its own.
        self._plan = [(field, slot.index, slot.name, slot.default) for field, slot in self._slots.items()
                      if isinstance(slot, _Slot)]
        self._by_alias = [(field, slot) for field, slot in self._slots.items() if isinstance(slot, tuple)] \
            if self._accepts_kwargs else []

    def read(self, bound_receiver: bool, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Field values present in this call; ``bound_receiver`` is True when ``self`` is not in ``args``."""
        offset = 1 if (bound_receiver and self._first_is_receiver) else 0
        count = len(args)
        out: dict[str, Any] = {}
        for field, index, name, default in self._plan:
            if kwargs and name in kwargs:
                value = kwargs[name]
            elif index is not None and 0 <= index - offset < count:
                value = args[index - offset]
            else:
                value = default
            if value is None or value is _MISSING:
                continue
            cls = value.__class__
            if cls is str:
                out[field] = value if len(value) <= 512 else value[:512]
            elif cls is float:
                out[field] = value
            else:
                value = plain(value)
                if value is not None:
                    out[field] = value
        for field, aliases in self._by_alias:
            value = self._value(aliases, offset, args, kwargs)
            if value is not _MISSING and value is not None:
                value = plain(value)
                if value is not None:
                    out[field] = value
        if self._container is not None:
            container = self._value(self._container, offset, args, kwargs)
            if container is not _MISSING and container is not None:
                for field, aliases in self._fields.items():
                    if field not in out:
                        value = plain(_member(container, aliases))
                        if value is not None:
                            out[field] = value
        return out

    def first(self, field: str, bound_receiver: bool, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        """One field's raw value (or None): what must be known at once, e.g. the client order id."""
        slot = self._slots.get(field)
        if slot is None:
            return None
        try:
            value = self._value(slot, 1 if (bound_receiver and self._first_is_receiver) else 0, args, kwargs)
        except Exception:  # noqa: BLE001
            return None
        return None if value is _MISSING else value

    def _value(self, slot: _Slot | tuple[str, ...], offset: int, args: tuple[Any, ...],
               kwargs: Mapping[str, Any]) -> Any:
        if isinstance(slot, tuple):
            if self._accepts_kwargs:
                for alias in slot:
                    if alias in kwargs:
                        return kwargs[alias]
            return _MISSING
        if slot.name in kwargs:
            return kwargs[slot.name]
        if slot.index is not None:
            position = slot.index - offset
            if 0 <= position < len(args):
                return args[position]
        return slot.default


def _member(container: Any, aliases: tuple[str, ...]) -> Any:
    for alias in aliases:
        try:
            if isinstance(container, Mapping):
                if alias in container:
                    return container[alias]
            else:
                value = getattr(container, alias, None)
                if value is not None and not callable(value):
                    return value
        except Exception:  # noqa: BLE001 - a weird order object must not break the call
            return None
    return None
