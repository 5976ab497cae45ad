"""A bounded, thread-safe LRU cache with one lock per key, for image embeddings.

``get_or_compute(key, compute)`` returns the cached value or calls ``compute()`` once: two
threads asking for the same missing key do not both compute it (the second waits on the key's
lock, then finds the value), while different keys compute in parallel. The least recently used
entry is evicted when more than ``max_entries`` are held.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, Generic, Hashable, Iterator, List, Optional, Tuple, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class _KeyLock:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


@dataclass(frozen=True)
class CacheStats:
    entries: int
    max_entries: int
    hits: int
    misses: int
    evictions: int


class LRUCache(Generic[K, V]):
    """At most ``max_entries`` values, least recently used evicted first; all methods thread-safe."""

    def __init__(self, max_entries: int) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a positive integer, got {max_entries!r}")
        self.max_entries = max_entries
        self._data: "OrderedDict[K, V]" = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: Dict[K, _KeyLock] = {}
        self.hits = self.misses = self.evictions = 0

    # ------------------------------------------------------------------ reading
    def get(self, key: K) -> Optional[V]:
        """The value for ``key`` (marked as most recently used), or None."""
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def keys(self) -> List[K]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._data)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._data), self.max_entries, self.hits, self.misses, self.evictions)

    # ------------------------------------------------------------------ writing
    def _put_locked(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)
            self.evictions += 1

    def _hit_locked(self, key: K) -> Optional[V]:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
            self.hits += 1
        return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._put_locked(key, value)

    def pop(self, key: K) -> Optional[V]:
        """Remove ``key``; returns its value, or None if it was not cached."""
        with self._lock:
            return self._data.pop(key, None)

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> Tuple[V, bool]:
        """``(value, computed)``: the cached value, or ``compute()``'s result, stored.

        ``compute`` runs without the cache-wide lock held, under ``key``'s own lock: concurrent
        callers with the same key wait for the first one's result instead of computing again.
        If ``compute`` raises, nothing is stored and the exception propagates (the next caller
        tries again).
        """
        with self._lock:
            value = self._hit_locked(key)
            if value is not None:
                return value, False
            key_lock = self._key_locks.setdefault(key, _KeyLock())
            key_lock.users += 1
        try:
            with key_lock.lock:
                with self._lock:  # computed by another caller while this one waited?
                    value = self._hit_locked(key)
                if value is not None:
                    return value, False
                value = compute()
                with self._lock:
                    self._put_locked(key, value)
                    self.misses += 1
                return value, True
        finally:
            with self._lock:
                key_lock.users -= 1
                if key_lock.users == 0:
                    del self._key_locks[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self.keys())
