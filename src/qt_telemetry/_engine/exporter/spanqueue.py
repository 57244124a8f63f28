"""The exporter's span queue: bounded, first in first out, and fair between the processes that fill it.

When a bot's parent floods while its forked workers trade a little (or the reverse), the queue is full of the
flooder's spans; a plain bounded queue would then refuse every newcomer, and the quiet processes would lose all
their spans to someone else's load. Here a full queue makes room by dropping the oldest span of the process
holding the most, unless the newcomer's own process is that one: a quiet process keeps its spans, the flooder
sheds its detail (counted, like every drop, on the process that lost it). Both exporter paths use it, so the
differential test holds them to the same choices.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable
from typing import Generic, TypeVar

OwnerT = TypeVar("OwnerT", bound=Hashable)
T = TypeVar("T")


class _Entry(Generic[OwnerT, T]):
    __slots__ = ("item", "owner", "size")

    def __init__(self, owner: OwnerT, item: T | None, size: int) -> None:
        self.owner, self.item, self.size = owner, item, size


class FairQueue(Generic[OwnerT, T]):
    """Items with an owner (a producing process) and a size; see the module docstring for what full means."""

    def __init__(self, max_items: int, max_bytes: float = float("inf")) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: collections.deque[_Entry[OwnerT, T]] = collections.deque()  # item None: dropped to keep the bound
        self._held: dict[OwnerT, int] = {}
        self._count = 0
        self._bytes = 0

    def __len__(self) -> int:
        return self._count

    def _full(self) -> bool:
        # the bound is checked before an item, so one item larger than it still fits an empty queue
        return self._count >= self.max_items or self._bytes >= self.max_bytes

    def _victim(self, owner: OwnerT) -> OwnerT | None:
        """Whose oldest item makes room for one of ``owner`` in a full queue: the process holding the most, when
        that is not ``owner`` and holds more than it; None: ``owner``'s item is the one dropped."""
        largest, held = max(self._held.items(), key=lambda kv: kv[1], default=(None, 0))
        return largest if largest is not None and largest != owner and self._held.get(owner, 0) < held else None

    def admits(self, owner: OwnerT) -> bool:
        """Whether ``put`` would keep an item of ``owner`` (ask before building an item that would be dropped)."""
        return not self._full() or self._victim(owner) is not None

    def put(self, owner: OwnerT, item: T, size: int = 0) -> OwnerT | None:
        """Queue ``item``; returns the owner whose item was dropped to keep the bound (None when nothing was)."""
        shed = None
        if self._full():
            shed = self._victim(owner)
            if shed is None:
                return owner
            self._evict_oldest(shed)
        self._items.append(_Entry(owner, item, size))
        self._held[owner] = self._held.get(owner, 0) + 1
        self._count += 1
        self._bytes += size
        return shed

    def _evict_oldest(self, owner: OwnerT) -> None:
        for entry in self._items:  # the flooder's oldest is near the head: a short walk
            if entry.item is not None and entry.owner == owner:
                entry.item = None
                self._release(owner, entry.size)
                return

    def _release(self, owner: OwnerT, size: int) -> None:
        left = self._held[owner] - 1
        if left:
            self._held[owner] = left
        else:
            del self._held[owner]
        self._count -= 1
        self._bytes -= size

    def take(self, n: int) -> list[tuple[OwnerT, T]]:
        """Up to ``n`` items, oldest first."""
        out: list[tuple[OwnerT, T]] = []
        items = self._items
        while items and len(out) < n:
            entry = items.popleft()
            if entry.item is None:
                continue
            self._release(entry.owner, entry.size)
            out.append((entry.owner, entry.item))
        return out
