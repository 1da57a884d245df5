"""Stores under test: each suite runs against the embedded store and the real server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from llm_manager_server.cache import CacheStore, MemoryCacheStore, RedisCacheStore, ResponseCache
from llm_manager_server.conversations import ConversationStore, MemoryConversationStore
from llm_manager_server.conversations.postgres import PostgresConversationStore
from llm_manager_server.conversations.sqlite import SqliteConversationStore
from llm_manager_server.domain.types import RoutingStrategy

from ..support.services import postgres_dsn, postgres_server, redis_server, redis_url  # noqa: F401 - fixtures

CONVERSATION_STORES = ("memory", "sqlite", "postgres")


class StepClock:
    """Microseconds that advance by one step per reading, so every write has its own
    time; ``advance`` jumps (lease expiry) without sleeping."""

    def __init__(self, start_us: int = 1_700_000_000_000_000, step_us: int = 1000) -> None:
        self.now = start_us
        self.step_us = step_us

    def __call__(self) -> int:
        self.now += self.step_us
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1_000_000)


StoreFactory = Callable[[], Awaitable[ConversationStore]]


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture(params=CONVERSATION_STORES)
async def make_store(request: pytest.FixtureRequest, clock: StepClock, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """A factory of opened stores over one backing database (several calls: several
    replicas, or a restart), closed afterwards."""
    kind = request.param
    dsn = request.getfixturevalue("postgres_dsn") if kind == "postgres" else ""
    opened: list[ConversationStore] = []
    shared_memory = MemoryConversationStore(clock=clock)

    def build() -> ConversationStore:
        if kind == "memory":
            return shared_memory
        if kind == "sqlite":
            return SqliteConversationStore(str(tmp_path / "conversations.db"), clock=clock)
        return PostgresConversationStore(dsn, clock=clock)

    async def make() -> ConversationStore:
        store = build()
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> ConversationStore:
    return await make_store()


# --- response cache ------------------------------------------------------------------------

CACHE_STORES = ("memory", "redis")


@pytest.fixture(params=CACHE_STORES)
async def response_cache(request: pytest.FixtureRequest) -> AsyncIterator[ResponseCache]:
    """A response cache over the in-memory store or the session's real Redis."""
    store: CacheStore
    if request.param == "memory":
        store = MemoryCacheStore(max_entries=100, max_bytes=1 << 20, ttl_s=60)
    else:
        store = RedisCacheStore(request.getfixturevalue("redis_url"), ttl_s=60, max_entry_bytes=1 << 20)
    cache = ResponseCache(store, default_strategy=RoutingStrategy.BALANCED)
    yield cache
    await cache.close()
