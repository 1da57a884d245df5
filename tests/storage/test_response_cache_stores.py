"""Cache stores: the memory LRU's bounds and TTL (with a fake clock), Redis for real, and a
Redis that is down or unreachable."""

from __future__ import annotations

import socket

import redis.asyncio
from redis.asyncio import Redis

from llm_manager_server.cache import MemoryCacheStore, RedisCacheStore, ResponseCache
from llm_manager_server.cache.redis_store import KEY_PREFIX, redacted_url
from llm_manager_server.cache.stores import ENTRY_OVERHEAD_BYTES
from llm_manager_server.domain.types import Answer, CallMetadata, FinishReason, ProviderKind, RoutingStrategy, ToolCall, Usage

from ..support.services import RedisServer


def answer(
    text: str = "hello", finish: FinishReason = FinishReason.STOP, tool_calls: tuple[ToolCall, ...] = (), structured: dict[str, object] | None = None
) -> Answer:
    return Answer(
        text,
        "m",
        Usage(3, 2, 5, 1, 0),
        finish,
        tool_calls=tool_calls,
        structured_output=structured,
        cost_usd=0.25,
        metadata=CallMetadata(provider=ProviderKind.OPENAI, strategy=RoutingStrategy.COST),
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- both stores --------------------------------------------------------------------------


async def test_a_saved_answer_comes_back_whole(response_cache: ResponseCache) -> None:
    original = answer("τέλος 🙂 " * 50)
    assert await response_cache.lookup("k1") is None
    await response_cache.save("k1", original)
    assert await response_cache.lookup("k1") == original
    stats = response_cache.stats.snapshot()
    assert (stats["hits"], stats["misses"], stats["errors"], stats["stored"]) == (1, 1, 0, 1)
    # Tool calls and structured output come back whole too.
    with_tools = answer(
        '{"city": "Oslo"}',
        FinishReason.TOOL_CALLS,
        tool_calls=(ToolCall("call_1", "get_weather", {"city": "Oslo", "days": [1, 2], "units": {"t": "C"}}),),
        structured={"city": "Oslo", "nested": {"n": 1.5, "ok": True, "none": None}},
    )
    await response_cache.save("k2", with_tools)
    assert await response_cache.lookup("k2") == with_tools


async def test_only_complete_answers_are_stored(response_cache: ResponseCache) -> None:
    for finish in (FinishReason.CONTENT_FILTER, FinishReason.OTHER, FinishReason.UNSPECIFIED):
        await response_cache.save(f"k-{finish.value}", answer(finish=finish))
        assert await response_cache.lookup(f"k-{finish.value}") is None
    await response_cache.save("k-length", answer(finish=FinishReason.LENGTH))  # cut by max_tokens: complete
    assert await response_cache.lookup("k-length") is not None
    await response_cache.save("k-tools", answer(finish=FinishReason.TOOL_CALLS))  # stopped to call tools: complete
    assert await response_cache.lookup("k-tools") is not None
    assert response_cache.stats.store_skipped == 3


async def test_an_unreadable_entry_is_a_miss_and_counted(response_cache: ResponseCache) -> None:
    await response_cache.store.set("k", b"{not json")
    assert await response_cache.lookup("k") is None
    assert response_cache.stats.errors == 1


# --- memory: bounds and TTL, with a fake clock (no sleeps) --------------------------------


async def test_memory_entries_expire_after_the_ttl() -> None:
    clock = FakeClock()
    store = MemoryCacheStore(max_entries=10, max_bytes=1 << 20, ttl_s=60, clock=clock)
    await store.set("k", b"v")
    clock.now += 59.9
    assert await store.get("k") == b"v"
    clock.now += 0.2
    assert await store.get("k") is None
    assert store.entry_count == 0 and store.size_bytes == 0


async def test_memory_evicts_the_least_recently_used_entry_at_max_entries() -> None:
    store = MemoryCacheStore(max_entries=3, max_bytes=1 << 20, ttl_s=60, clock=FakeClock())
    for key in ("a", "b", "c"):
        await store.set(key, key.encode())
    assert await store.get("a") == b"a"  # "b" is now the least recently used
    await store.set("d", b"d")
    assert await store.get("b") is None
    assert [await store.get(k) for k in ("a", "c", "d")] == [b"a", b"c", b"d"]
    assert store.evictions == 1 and store.entry_count == 3


async def test_memory_evicts_by_bytes_and_refuses_an_entry_larger_than_the_bound() -> None:
    value = b"x" * 1000
    per_entry = 1 + len(value) + ENTRY_OVERHEAD_BYTES
    store = MemoryCacheStore(max_entries=1000, max_bytes=per_entry * 3, ttl_s=60, clock=FakeClock())
    for key in "abcd":
        assert await store.set(key, value)
    assert store.size_bytes <= per_entry * 3
    assert await store.get("a") is None and await store.get("d") == value
    assert not await store.set("huge", b"x" * (per_entry * 3))
    assert await store.get("huge") is None and await store.get("d") == value


async def test_memory_expired_entries_make_room_without_counting_as_evictions() -> None:
    clock = FakeClock()
    store = MemoryCacheStore(max_entries=2, max_bytes=1 << 20, ttl_s=10, clock=clock)
    await store.set("a", b"a")
    await store.set("b", b"b")
    clock.now += 11
    await store.set("c", b"c")
    assert store.evictions == 0 and store.entry_count == 2


async def test_replacing_a_key_keeps_the_byte_count_right() -> None:
    store = MemoryCacheStore(max_entries=10, max_bytes=1 << 20, ttl_s=60, clock=FakeClock())
    await store.set("k", b"x" * 100)
    await store.set("k", b"y" * 10)
    assert store.size_bytes == 1 + 10 + ENTRY_OVERHEAD_BYTES and await store.get("k") == b"y" * 10


# --- Redis ----------------------------------------------------------------------------------


async def test_redis_entries_carry_the_ttl(redis_url: str) -> None:
    store = RedisCacheStore(redis_url, ttl_s=120, max_entry_bytes=1 << 20)
    await store.set("k", b"v")
    client: Redis = redis.asyncio.from_url(redis_url)
    try:
        ttl_ms = await client.pttl(KEY_PREFIX + "k")
        assert 119_000 < ttl_ms <= 120_000
    finally:
        await client.aclose()
        await store.close()


async def test_redis_refuses_entries_over_the_byte_bound(redis_url: str) -> None:
    store = RedisCacheStore(redis_url, ttl_s=60, max_entry_bytes=100)
    assert not await store.set("big", b"x" * 101)
    assert await store.get("big") is None
    await store.close()


async def test_an_unreachable_redis_is_a_counted_miss_never_an_error() -> None:
    with socket.socket() as listener:  # a port nobody listens on
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    cache = ResponseCache(RedisCacheStore(f"redis://127.0.0.1:{port}/0", ttl_s=60, max_entry_bytes=1 << 20), default_strategy=RoutingStrategy.BALANCED)
    assert await cache.lookup("k") is None
    await cache.save("k", answer())
    assert await cache.lookup("k") is None  # marked down: not even tried
    stats = cache.stats.snapshot()
    assert stats["errors"] == 2 and stats["store_errors"] == 1 and stats["hits"] == 0
    await cache.close()


async def test_redis_dying_and_coming_back() -> None:
    server = RedisServer().start()
    try:
        store = RedisCacheStore(server.url, ttl_s=60, max_entry_bytes=1 << 20, down_for_s=0.0)
        cache = ResponseCache(store, default_strategy=RoutingStrategy.BALANCED)
        await cache.save("k", answer())
        assert await cache.lookup("k") == answer()
        server.stop()
        assert await cache.lookup("k") is None  # down: a miss, counted, no exception
        assert cache.stats.errors == 1
        # A new server on the same port: the cache recovers by itself (empty, of course).
        revived = RedisServer()
        revived.port = server.port
        revived.start()
        try:
            assert await cache.lookup("k") is None
            await cache.save("k", answer())
            assert await cache.lookup("k") == answer()
        finally:
            revived.stop()
        await cache.close()
    finally:
        server.stop()


def test_redis_urls_are_logged_without_their_password() -> None:
    assert redacted_url("redis://user:s3cret@10.0.0.1:6379/0") == "redis://user:***@10.0.0.1:6379/0"
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert "s3cret" not in redacted_url("rediss://:s3cret@host/1")

