"""Byte-bounded LRU caches for the local engine (session KV caches, image features), and KV sizing."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ByteLRU(Generic[K, V]):
    """A dict bounded by the bytes of its values, least recently used out first (thread-safe)."""

    def __init__(self, budget_bytes: int, on_evict: Callable[[K, V], None] | None = None):
        self.budget = max(0, int(budget_bytes))
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._on_evict = on_evict
        self.hits = self.misses = self.evictions = 0

    def get(self, key: K) -> V | None:
        """The value (now the most recently used), or None."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def peek(self, key: K) -> V | None:
        """The value, without counting a hit or making it the most recently used."""
        with self._lock:
            item = self._items.get(key)
            return None if item is None else item[0]

    def put(self, key: K, value: V, nbytes: int) -> bool:
        """Store ``value``, evicting the least recently used until it fits; False when it alone is too big."""
        evicted: list[tuple[K, V]] = []
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if nbytes > self.budget:
                return False
            while self._items and self._bytes + nbytes > self.budget:
                k, (v, n) = self._items.popitem(last=False)
                self._bytes -= n
                self.evictions += 1
                evicted.append((k, v))
            self._items[key] = (value, nbytes)
            self._bytes += nbytes
        for k, v in evicted:
            log.debug("evicted %r to stay within %d bytes", k, self.budget)
            if self._on_evict:
                self._on_evict(k, v)
        return True

    def trim(self) -> None:
        """Evict the least recently used until what is held fits the budget (after the budget shrank)."""
        evicted: list[tuple[K, V]] = []
        with self._lock:
            while self._items and self._bytes > self.budget:
                k, (v, n) = self._items.popitem(last=False)
                self._bytes -= n
                self.evictions += 1
                evicted.append((k, v))
        for k, v in evicted:
            if self._on_evict:
                self._on_evict(k, v)

    def pop(self, key: K) -> V | None:
        """Remove and return ``key``'s value (no hit or miss counted)."""
        with self._lock:
            item = self._items.pop(key, None)
            if item is None:
                return None
            self._bytes -= item[1]
            return item[0]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def keys(self) -> list[K]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._items)

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._bytes


def cache_nbytes(cache) -> int:
    """Bytes held by a KV cache's tensors (each storage counted once)."""
    seen: set[int] = set()
    total = 0
    for layer in getattr(cache, "layers", []):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if t is None or not hasattr(t, "untyped_storage"):
                continue
            storage = t.untyped_storage()
            if storage.data_ptr() in seen:
                continue
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total
