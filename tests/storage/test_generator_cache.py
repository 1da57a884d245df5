"""``Generator`` with a response cache (memory and real Redis) in front of a fake router:
hits, what a cached answer reports, streams, bypass, what is never cached, single-flight,
and Redis being down."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from llm_manager_server.cache import RedisCacheStore, ResponseCache
from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import (
    CallMetadata,
    FinishReason,
    GenerationRequest,
    Message,
    ProviderKind,
    Role,
    RoutingStrategy,
    SamplingOptions,
    Usage,
)
from llm_manager_server.servicers.llm_manager import CACHED_STREAM_CHUNK_CHARS, Generator

from .fake_router import COST, MODEL, USAGE, FakeRouter


def request(prompt: str = "What is 2+2?", **changes: Any) -> GenerationRequest:
    return GenerationRequest(
        messages=(Message(Role.SYSTEM, "Be brief."), Message(Role.USER, prompt)),
        sampling=SamplingOptions(max_tokens=16, temperature=0.0),
        **changes,
    )


def generator(router: FakeRouter, cache: ResponseCache | None) -> Generator:
    return Generator(router, cache)  # type: ignore[arg-type]


async def collect(gen: Generator, req: GenerationRequest) -> tuple[list[str], Usage | None, FinishReason | None, CallMetadata]:
    metadata = CallMetadata()
    texts: list[str] = []
    usage: Usage | None = None
    finish: FinishReason | None = None
    async for text, model, piece_usage, piece_finish in gen.stream(req, metadata):
        assert model == MODEL
        texts.append(text)
        usage = piece_usage or usage
        finish = piece_finish or finish
    return texts, usage, finish, metadata


async def test_a_repeated_request_is_answered_from_the_cache(response_cache: ResponseCache) -> None:
    router = FakeRouter()
    gen = generator(router, response_cache)
    first_meta, second_meta = CallMetadata(), CallMetadata()
    first = await gen.generate(request(), first_meta)
    second = await gen.generate(request(), second_meta)
    assert router.calls == 1
    assert second == first == ("Four. It is four.", MODEL, USAGE, FinishReason.STOP)
    assert not first_meta.cached and first_meta.cost_usd == COST
    assert second_meta.cached
    assert response_cache.stats.hits == 1 and response_cache.stats.misses == 1


async def test_a_cached_answer_reports_original_usage_zero_cost_and_no_model_attempts(response_cache: ResponseCache) -> None:
    gen = generator(FakeRouter(), response_cache)
    await gen.generate(request(strategy=RoutingStrategy.COST), CallMetadata())
    metadata = CallMetadata()
    _, model, usage, _ = await gen.generate(request(strategy=RoutingStrategy.COST), metadata)
    assert model == MODEL
    assert usage == USAGE  # what the provider reported for the original call, not invented
    assert metadata.cost_usd == 0.0  # this call spent nothing
    assert metadata.cached and metadata.model_chain == [] and metadata.candidates == []
    assert metadata.retry_count == 0 and not metadata.fallback_used
    assert metadata.provider is ProviderKind.LOCAL and metadata.strategy is RoutingStrategy.COST
    assert MODEL in metadata.routing_reason
    assert response_cache.stats.saved_cost_usd == pytest.approx(COST)


async def test_a_stream_is_answered_from_the_cache_as_a_stream(response_cache: ResponseCache) -> None:
    router = FakeRouter(text="word " * 400)  # 2000 characters: several cached pieces
    gen = generator(router, response_cache)
    fresh_texts, fresh_usage, fresh_finish, fresh_meta = await collect(gen, request())
    cached_texts, cached_usage, cached_finish, cached_meta = await collect(gen, request())
    assert router.calls == 1
    assert "".join(cached_texts) == "".join(fresh_texts) == router.text
    assert len(cached_texts) == -(-len(router.text) // CACHED_STREAM_CHUNK_CHARS) > 1
    assert cached_usage == fresh_usage == USAGE and cached_finish == fresh_finish == FinishReason.STOP
    assert cached_meta.cached and not fresh_meta.cached and cached_meta.cost_usd == 0.0


async def test_generate_and_stream_share_entries(response_cache: ResponseCache) -> None:
    router = FakeRouter()
    gen = generator(router, response_cache)
    await gen.generate(request("a"), CallMetadata())
    texts, *_ = await collect(gen, request("a"))
    assert "".join(texts) == router.text
    await collect(gen, request("b"))
    assert (await gen.generate(request("b"), CallMetadata()))[0] == router.text
    assert router.calls == 2


async def test_no_cache_asks_the_model_and_refreshes_the_entry(response_cache: ResponseCache) -> None:
    router = FakeRouter(text="old")
    gen = generator(router, response_cache)
    await gen.generate(request(), CallMetadata())
    router.text = "new"
    metadata = CallMetadata()
    assert (await gen.generate(request(no_cache=True), metadata))[0] == "new"
    assert not metadata.cached and router.calls == 2
    assert (await gen.generate(request(), CallMetadata()))[0] == "new"
    assert response_cache.stats.bypassed == 1


async def test_no_store_answers_are_not_stored(response_cache: ResponseCache) -> None:
    router = FakeRouter()
    gen = generator(router, response_cache)
    await gen.generate(request(no_store=True), CallMetadata())
    await collect(gen, request(no_store=True))
    assert router.calls == 2 and response_cache.stats.stored == 0
    await gen.generate(request(), CallMetadata())
    await gen.generate(request(no_store=True), CallMetadata())  # reading is still allowed
    assert router.calls == 3


async def test_errors_are_never_cached(response_cache: ResponseCache) -> None:
    router = FakeRouter()
    router.error = LLMError(ErrorKind.MODEL_UNAVAILABLE, "down")
    gen = generator(router, response_cache)
    for _ in range(2):
        with pytest.raises(LLMError):
            await gen.generate(request(), CallMetadata())
    router.error = None
    metadata = CallMetadata()
    await gen.generate(request(), metadata)
    assert router.calls == 3 and not metadata.cached


async def test_a_cut_stream_is_never_cached(response_cache: ResponseCache) -> None:
    router = FakeRouter()
    router.cut_after = 2
    gen = generator(router, response_cache)
    with pytest.raises(LLMError):
        await collect(gen, request())
    router.cut_after = None
    _, _, _, metadata = await collect(gen, request())
    assert not metadata.cached and router.calls == 2 and response_cache.stats.stored == 1


async def test_a_cancelled_stream_is_never_cached(response_cache: ResponseCache) -> None:
    router = FakeRouter(text="one two three four five")
    router.delay_s = 0.05
    gen = generator(router, response_cache)
    first_piece = asyncio.Event()

    async def consume() -> None:
        async for _ in gen.stream(request(), CallMetadata()):
            first_piece.set()

    task = asyncio.create_task(consume())
    await first_piece.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    router.delay_s = 0.0
    metadata = CallMetadata()
    await gen.generate(request(), metadata)
    assert not metadata.cached and router.calls == 2


async def test_a_consumer_that_stops_reading_does_not_store_a_partial_answer(response_cache: ResponseCache) -> None:
    router = FakeRouter(text="one two three four five")
    gen = generator(router, response_cache)
    stream = gen.stream(request(), CallMetadata())
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert response_cache.stats.stored == 0
    metadata = CallMetadata()
    await gen.generate(request(), metadata)
    assert not metadata.cached


async def test_identical_concurrent_requests_reach_the_model_once(response_cache: ResponseCache) -> None:
    router = FakeRouter()
    router.release.clear()
    gen = generator(router, response_cache)
    metadatas = [CallMetadata() for _ in range(6)]
    calls = [asyncio.create_task(gen.generate(request(), m)) for m in metadatas[:3]]
    calls += [asyncio.create_task(_drain_text(gen, m)) for m in metadatas[3:]]  # streams join too
    await asyncio.sleep(0.05)
    router.release.set()
    results = await asyncio.gather(*calls)
    assert router.calls == 1
    assert {r if isinstance(r, str) else r[0] for r in results} == {router.text}
    assert sum(not m.cached for m in metadatas) == 1  # the leader
    assert response_cache.stats.coalesced == 5


async def _drain_text(gen: Generator, metadata: CallMetadata) -> str:
    return "".join([text async for text, *_ in gen.stream(request(), metadata)])


async def test_followers_retry_when_the_leader_fails(response_cache: ResponseCache) -> None:
    router = FakeRouter()
    router.release.clear()
    router.error = LLMError(ErrorKind.TIMEOUT, "the leader's own deadline")
    gen = generator(router, response_cache)
    leader = asyncio.create_task(gen.generate(request(), CallMetadata()))
    await asyncio.sleep(0.01)
    follower = asyncio.create_task(gen.generate(request(), CallMetadata()))
    await asyncio.sleep(0.01)
    router.release.set()
    with pytest.raises(LLMError):
        await leader
    router.error = None
    assert (await follower)[0] == router.text
    assert router.calls == 2


async def test_a_cancelled_leader_hands_over_to_a_follower(response_cache: ResponseCache) -> None:
    router = FakeRouter()
    router.release.clear()
    gen = generator(router, response_cache)
    leader = asyncio.create_task(gen.generate(request(), CallMetadata()))
    await asyncio.sleep(0.01)
    follower_meta = CallMetadata()
    follower = asyncio.create_task(gen.generate(request(), follower_meta))
    await asyncio.sleep(0.01)
    leader.cancel()
    await asyncio.sleep(0.01)
    router.release.set()
    assert (await follower)[0] == router.text
    assert not follower_meta.cached and router.calls == 2


async def test_different_requests_do_not_wait_for_each_other(response_cache: ResponseCache) -> None:
    router = FakeRouter()
    gen = generator(router, response_cache)
    await asyncio.gather(gen.generate(request("a"), CallMetadata()), gen.generate(request("b"), CallMetadata()))
    assert router.calls == 2 and response_cache.stats.coalesced == 0


async def test_without_a_cache_every_request_reaches_the_model() -> None:
    router = FakeRouter()
    gen = generator(router, None)
    await gen.generate(request(), CallMetadata())
    metadata = CallMetadata()
    await gen.generate(request(), metadata)
    assert router.calls == 2 and not metadata.cached


async def test_answers_keep_flowing_while_redis_is_down() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    cache = ResponseCache(RedisCacheStore(f"redis://127.0.0.1:{port}/0", ttl_s=60, max_entry_bytes=1 << 20), default_strategy=RoutingStrategy.BALANCED)
    router = FakeRouter()
    gen = generator(router, cache)
    for _ in range(3):
        assert (await gen.generate(request(), CallMetadata()))[0] == router.text
        texts, *_ = await collect(gen, request())
        assert "".join(texts) == router.text
    assert router.calls == 6
    assert cache.stats.errors == 6 and cache.stats.hits == 0
    await cache.close()


def test_context_window_is_the_first_candidates() -> None:
    router = FakeRouter()
    router.windows = (200_000, 2048, 128_000)
    assert generator(router, None).context_window(request()) == 200_000
    router.windows = (2048, 200_000)
    assert generator(router, None).context_window(request()) == 2048
