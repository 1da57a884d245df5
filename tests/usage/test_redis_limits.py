"""Limits in a real Redis: the Lua claims are atomic across clients (two stores, as two
replicas, admitting concurrently never pass a limit together, permit by permit or in leases),
bookings add up across them, keys expire with their window, and an unreachable Redis falls
back to per-process counters."""

from __future__ import annotations

import asyncio
import socket

import pytest
from redis.asyncio import Redis

from llm_manager_server.domain.caller import Caller
from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.usage.limits import BUDGET, TOKENS, Limiter
from llm_manager_server.usage.redis_limits import KEY_PREFIX, RedisLimitStore

from .test_limits import START, Clock


async def outcome(limiter: Limiter, caller: Caller) -> str | None:
    """None when admitted, else the limit named."""
    try:
        await limiter.admit(caller)
    except LLMError as error:
        assert error.kind is ErrorKind.QUOTA_EXCEEDED
        return error.metadata["limit"]
    return None


async def test_replicas_admitting_at_once_never_pass_the_limit_together(redis_url: str) -> None:
    stores = [RedisLimitStore(redis_url), RedisLimitStore(redis_url)]
    clock = Clock(START + 1)
    replicas = [Limiter(store, clock=clock) for store in stores]
    caller = Caller("dashboards", requests_per_minute=25)
    try:
        outcomes = await asyncio.gather(*(outcome(replicas[i % 2], caller) for i in range(120)))
        assert outcomes.count(None) == 25 and outcomes.count("requests_per_minute") == 95
        assert replicas[0].stats["admitted"] + replicas[1].stats["admitted"] == 25
        assert replicas[0].stats["admitted"] > 0 and replicas[1].stats["admitted"] > 0
        assert replicas[0].stats["store_errors"] == replicas[1].stats["store_errors"] == 0
        # The next minute has its own counter.
        clock.now = START + 61
        assert await outcome(replicas[1], caller) is None
    finally:
        for store in stores:
            await store.close()


async def test_bookings_of_both_replicas_add_up_and_keys_expire_with_their_window(redis_url: str) -> None:
    # Leases of no time: every admission claims, so what each replica sent is seen at once.
    stores = [RedisLimitStore(redis_url, lease_s=0), RedisLimitStore(redis_url, lease_s=0)]
    clock = Clock(START + 5)
    replicas = [Limiter(store, clock=clock) for store in stores]
    tokens = Caller("reports", tokens_per_minute=1_000)
    budget = Caller("analytics", budget_usd_per_day=0.05)
    try:
        await asyncio.gather(*(replicas[i % 2].book(tokens, 100, 0.0) for i in range(10)))
        # Each replica sends its bookings with its next claim, or within a lease's time.
        await asyncio.gather(*(store.flush() for store in stores))
        assert await outcome(replicas[0], tokens) == TOKENS  # 500 + 500
        await asyncio.gather(*(replicas[i % 2].book(budget, 10, 0.004) for i in range(12)))
        await asyncio.gather(*(store.flush() for store in stores))
        assert await outcome(replicas[1], budget) is None  # 0.048 < 0.05
        await replicas[0].book(budget, 10, 0.002)
        assert await outcome(replicas[0], budget) == BUDGET  # its claim sends its own booking first
        assert await outcome(replicas[1], budget) == BUDGET  # and the other replica's claim reads it
        redis = Redis.from_url(redis_url)
        try:
            keys = sorted([k.decode() async for k in redis.scan_iter(match=f"{KEY_PREFIX}*")])
            minute, day = int((START + 5) // 60), int((START + 5) // 86_400)
            assert keys == [f"{KEY_PREFIX}analytics:usd:{day}", f"{KEY_PREFIX}reports:t:{minute}"]
            assert float(await redis.get(f"{KEY_PREFIX}analytics:usd:{day}")) == pytest.approx(0.05)
            assert 0 < await redis.pttl(f"{KEY_PREFIX}reports:t:{minute}") <= 120_000
            assert 86_400_000 < await redis.pttl(f"{KEY_PREFIX}analytics:usd:{day}") <= 86_460_000
        finally:
            await redis.aclose()
    finally:
        for store in stores:
            await store.close()


async def test_large_limits_are_leased_in_blocks_and_still_hold_across_replicas(redis_url: str) -> None:
    stores = [RedisLimitStore(redis_url, lease_s=60), RedisLimitStore(redis_url, lease_s=60)]
    clock = Clock(START + 1)
    replicas = [Limiter(store, clock=clock) for store in stores]
    caller = Caller("batch", requests_per_minute=1_000)  # leases of 20 permits
    redis = Redis.from_url(redis_url)
    try:
        assert await outcome(replicas[0], caller) is None
        key = f"{KEY_PREFIX}batch:r:{int((START + 1) // 60)}"
        assert int(await redis.get(key)) == 20  # one claim, a block of 1000 / 50
        for _ in range(19):
            assert await outcome(replicas[0], caller) is None
        assert int(await redis.get(key)) == 20  # served from the lease: Redis not asked
        outcomes = await asyncio.gather(*(outcome(replicas[i % 2], caller) for i in range(1_100)))
        assert outcomes.count(None) == 980 and int(await redis.get(key)) == 1_000
    finally:
        await redis.aclose()
        for store in stores:
            await store.close()


async def test_bookings_reach_redis_within_a_lease_time_without_another_call(redis_url: str) -> None:
    store = RedisLimitStore(redis_url, lease_s=0.2)
    limiter = Limiter(store, clock=Clock(START + 1))
    caller = Caller("reports", tokens_per_minute=1_000_000)
    redis = Redis.from_url(redis_url)
    try:
        await limiter.admit(caller)
        await limiter.book(caller, 1_234, 0.0)
        key = f"{KEY_PREFIX}reports:t:{int((START + 1) // 60)}"
        assert await redis.get(key) is None  # not yet: no round trip per booking
        await asyncio.sleep(0.5)
        assert int(await redis.get(key)) == 1_234
    finally:
        await redis.aclose()
        await store.close()


async def test_an_unreachable_redis_falls_back_to_this_process_counters() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = RedisLimitStore(f"redis://127.0.0.1:{port}/0", command_timeout_s=0.2)
    limiter = Limiter(store, clock=Clock())
    caller = Caller("ops", requests_per_minute=2)
    try:
        assert [await outcome(limiter, caller) for _ in range(3)] == [None, None, "requests_per_minute"]
        # One failed connection attempt; then the store is marked down and not tried again.
        assert limiter.stats["store_errors"] == 3
    finally:
        await store.close()
