"""Where cached replies live: the store contract and the in-memory LRU store.

Stores hold opaque bytes (the serialized reply), so the memory store's size accounting is
exact and both stores behave alike. A store signals that it cannot serve (Redis down, say)
by raising :class:`CacheStoreError`; the response cache turns that into a miss.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

# Bookkeeping per memory entry beyond its key and value (dict slot, tuple, ints), so that a
# flood of tiny entries is bounded too.
ENTRY_OVERHEAD_BYTES = 128


class CacheStoreError(Exception):
    """The store cannot answer now; the caller carries on uncached."""


class CacheStore(Protocol):
    """A bytes store with a time-to-live per entry."""

    async def get(self, key: str) -> bytes | None:
        """The value, or ``None`` when absent or expired; raises ``CacheStoreError``."""
        ...

    async def set(self, key: str, value: bytes) -> bool:
        """Stores the value; False when it was refused (too large). Raises ``CacheStoreError``."""
        ...

    async def close(self) -> None: ...

    @property
    def evictions(self) -> int:
        """Entries dropped to stay within the size bounds (0 where the server evicts)."""
        ...


@dataclass
class _Entry:
    value: bytes
    expires_at: float
    size: int


class MemoryCacheStore:
    """An LRU map bounded by entry count and total bytes, with a TTL per entry.

    ``clock`` is injectable so tests can move time instead of sleeping. Expired entries are
    dropped when read and, lazily, when space is needed (LRU order puts stale entries first).
    """

    def __init__(
        self, *, max_entries: int, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1 or max_bytes < 1 or ttl_s <= 0:
            raise ValueError("max_entries, max_bytes and ttl_s must be positive")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._evictions = 0

    @property
    def evictions(self) -> int:
        return self._evictions

    @property
    def entry_count(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.size

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry.value

    async def set(self, key: str, value: bytes) -> bool:
        size = len(key) + len(value) + ENTRY_OVERHEAD_BYTES
        if size > self._max_bytes:
            return False  # would evict everything else and still not fit
        if key in self._entries:
            self._drop(key)
        now = self._clock()
        while self._entries and (len(self._entries) >= self._max_entries or self._bytes + size > self._max_bytes):
            oldest_key, oldest = next(iter(self._entries.items()))
            self._drop(oldest_key)
            if oldest.expires_at > now:
                self._evictions += 1  # a live entry made room; expired ones do not count
        self._entries[key] = _Entry(value, now + self._ttl_s, size)
        self._bytes += size
        return True

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0
