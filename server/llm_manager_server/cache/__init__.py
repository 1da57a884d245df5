"""The response cache: in-memory LRU (default) or Redis shared by replicas.

``LLM_CACHE_ENABLED`` turns it on, ``LLM_CACHE_TTL_SECONDS`` bounds an entry's life,
``LLM_CACHE_MAX_SIZE`` and ``LLM_CACHE_MAX_BYTES`` bound the memory store (entries and
bytes; the byte bound also caps one reply stored in Redis), ``LLM_CACHE_STORE`` picks
``memory`` or a ``redis://`` URL. With API keys on, each caller has its own scope unless
``LLM_CACHE_SHARED_ACROSS_CALLERS`` is true (see ``response_cache``).
"""

from __future__ import annotations

from ..config import CacheSettings
from ..domain.types import RoutingStrategy
from .keys import cache_key, embedding_cache_key, key_document
from .redis_store import RedisCacheStore
from .response_cache import (
    CacheStats,
    Flight,
    ResponseCache,
    answer_from_bytes,
    answer_to_bytes,
    embeddings_from_bytes,
    embeddings_to_bytes,
)
from .stores import CacheStore, CacheStoreError, MemoryCacheStore


def build_response_cache(settings: CacheSettings, *, default_strategy: RoutingStrategy) -> ResponseCache | None:
    """The configured cache, or ``None`` when caching is disabled."""
    if not settings.enabled:
        return None
    store: CacheStore
    if settings.store == "memory":
        store = MemoryCacheStore(max_entries=settings.max_size, max_bytes=settings.max_bytes, ttl_s=settings.ttl_seconds)
    else:
        store = RedisCacheStore(settings.store, ttl_s=settings.ttl_seconds, max_entry_bytes=settings.max_bytes)
    return ResponseCache(store, default_strategy=default_strategy, shared_across_callers=settings.shared_across_callers)


__all__ = [
    "CacheStats",
    "CacheStore",
    "CacheStoreError",
    "Flight",
    "MemoryCacheStore",
    "RedisCacheStore",
    "ResponseCache",
    "answer_from_bytes",
    "answer_to_bytes",
    "build_response_cache",
    "cache_key",
    "embedding_cache_key",
    "embeddings_from_bytes",
    "embeddings_to_bytes",
    "key_document",
]
