"""``Generator`` with a response cache (memory and real Redis) in front of a fake router:
hits, what a cached answer reports, streams, bypass, what is never cached, single-flight,
and Redis being down."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from llm_manager_server.cache import RedisCacheStore, ResponseCache
from llm_manager_server.cache.response_cache import CACHED_STREAM_CHUNK_CHARS
from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import (
    Answer,
    FinishReason,
    GenerationRequest,
    Message,
    ProviderKind,
    Role,
    RoutingStrategy,
    SamplingOptions,
    StreamDelta,
    ToolCall,
)
from llm_manager_server.engine import Generator

from .fake_router import COST, MODEL, USAGE, FakeRouter


def request(prompt: str = "What is 2+2?", **changes: Any) -> GenerationRequest:
    return GenerationRequest(
        messages=(Message.of(Role.SYSTEM, "Be brief."), Message.of(Role.USER, prompt)),
        sampling=SamplingOptions(max_tokens=16, temperature=0.0),
        **changes,
    )


def generator(router: FakeRouter, cache: ResponseCache | None) -> Generator:
    return Generator(router, cache)  # type: ignore[arg-type]


async def collect(gen: Generator, req: GenerationRequest) -> tuple[list[str], Answer]:
    """A stream's text pieces and the answer its last delta carries."""
    texts: list[str] = []
    answer: Answer | None = None
    async for delta in gen.stream(req):
        assert delta.model == MODEL
        assert answer is None, "the delta with the answer is the stream's last"
        if delta.answer is not None:
            answer = delta.answer
            assert answer.text == "".join(texts)
        else:
            texts.append(delta.text)
    assert answer is not None
    return texts, answer


def fields(answer: Answer) -> tuple[str, str, object, FinishReason]:
    return answer.text, answer.model, answer.usage, answer.finish_reason


async def test_a_repeated_request_is_answered_from_the_cache(response_cache: ResponseCache) -> None:
    router = FakeRouter()
    gen = generator(router, response_cache)
    first = await gen.generate(request())
    second = await gen.generate(request())
    assert router.calls == 1
    assert fields(second) == fields(first) == ("Four. It is four.", MODEL, USAGE, FinishReason.STOP)
    assert not first.metadata.cached and first.cost_usd == COST
    assert second.metadata.cached
    assert response_cache.stats.hits == 1 and response_cache.stats.misses == 1


async def test_a_cached_answer_reports_original_usage_zero_cost_and_no_model_attempts(response_cache: ResponseCache) -> None:
    gen = generator(FakeRouter(), response_cache)
    await gen.generate(request(strategy=RoutingStrategy.COST))
    answer = await gen.generate(request(strategy=RoutingStrategy.COST))
    metadata = answer.metadata
    assert answer.model == MODEL
    assert answer.usage == USAGE  # what the provider reported for the original call, not invented
    assert answer.cost_usd == 0.0  # this call spent nothing
    assert metadata.cached and metadata.model_chain == [] and metadata.candidates == []
    assert metadata.retry_count == 0 and not metadata.fallback_used
    assert metadata.provider is ProviderKind.LOCAL and metadata.strategy is RoutingStrategy.COST
    assert MODEL in metadata.routing_reason
    assert response_cache.stats.saved_cost_usd == pytest.approx(COST)


async def test_a_stream_is_answered_from_the_cache_as_a_stream(response_cache: ResponseCache) -> None:
    router = FakeRouter(text="word " * 400)  # 2000 characters: several cached pieces
    gen = generator(router, response_cache)
    fresh_texts, fresh = await collect(gen, request())
    cached_texts, cached = await collect(gen, request())
    assert router.calls == 1
    assert "".join(cached_texts) == "".join(fresh_texts) == router.text
    assert len(cached_texts) == -(-len(router.text) // CACHED_STREAM_CHUNK_CHARS) > 1
    assert all(len(t) == CACHED_STREAM_CHUNK_CHARS for t in cached_texts[:-1])
    assert cached.usage == fresh.usage == USAGE and cached.finish_reason == fresh.finish_reason == FinishReason.STOP
    assert cached.metadata.cached and not fresh.metadata.cached and cached.cost_usd == 0.0


async def test_a_tool_call_answer_is_replayed_whole_text_then_calls_then_answer(response_cache: ResponseCache) -> None:
    calls = (ToolCall("call_1", "get_weather", {"city": "Oslo"}), ToolCall("call_2", "get_time", {"zone": "CET"}))
    router = FakeRouter(text="x" * (CACHED_STREAM_CHUNK_CHARS + 10), finish=FinishReason.TOOL_CALLS, tool_calls=calls)
    gen = generator(router, response_cache)
    fresh = [d async for d in gen.stream(request())]
    replayed: list[StreamDelta] = [d async for d in gen.stream(request())]
    assert router.calls == 1 and response_cache.stats.hits == 1
    # Text in pieces of CACHED_STREAM_CHUNK_CHARS, then one delta with the calls, then the answer.
    assert [d.text for d in replayed[:2]] == [router.text[:CACHED_STREAM_CHUNK_CHARS], router.text[CACHED_STREAM_CHUNK_CHARS:]]
    assert all(not d.tool_calls and d.answer is None for d in replayed[:2])
    assert (replayed[2].text, replayed[2].tool_calls, replayed[2].answer) == ("", calls, None)
    assert len(replayed) == 4 and replayed[3].text == "" and not replayed[3].tool_calls
    answer, original = replayed[3].answer, fresh[-1].answer
    assert answer is not None and original is not None
    assert fields(answer) == fields(original) and answer.tool_calls == original.tool_calls == calls
    assert answer.finish_reason is FinishReason.TOOL_CALLS
    assert answer.metadata.cached and answer.cost_usd == 0.0 and not original.metadata.cached
    unary = await gen.generate(request())
    assert unary.tool_calls == calls and unary.metadata.cached and router.calls == 1


async def test_generate_and_stream_share_entries(response_cache: ResponseCache) -> None:
    router = FakeRouter()
    gen = generator(router, response_cache)
    await gen.generate(request("a"))
    texts, _ = await collect(gen, request("a"))
    assert "".join(texts) == router.text
    await collect(gen, request("b"))
    assert (await gen.generate(request("b"))).text == router.text
    assert router.calls == 2


async def test_no_cache_asks_the_model_and_refreshes_the_entry(response_cache: ResponseCache) -> None:
    router = FakeRouter(text="old")
    gen = generator(router, response_cache)
    await gen.generate(request())
    router.text = "new"
    answer = await gen.generate(request(no_cache=True))
    assert answer.text == "new"
    assert not answer.metadata.cached and router.calls == 2
    assert (await gen.generate(request())).text == "new"
    assert response_cache.stats.bypassed == 1


async def test_no_store_answers_are_not_stored(response_cache: ResponseCache) -> None:
    router = FakeRouter()
    gen = generator(router, response_cache)
    await gen.generate(request(no_store=True))
    await collect(gen, request(no_store=True))
    assert router.calls == 2 and response_cache.stats.stored == 0
    await gen.generate(request())
    await gen.generate(request(no_store=True))  # reading is still allowed
    assert router.calls == 3


async def test_errors_are_never_cached(response_cache: ResponseCache) -> None:
    router = FakeRouter()
    router.error = LLMError(ErrorKind.MODEL_UNAVAILABLE, "down")
    gen = generator(router, response_cache)
    for _ in range(2):
        with pytest.raises(LLMError):
            await gen.generate(request())
    router.error = None
    answer = await gen.generate(request())
    assert router.calls == 3 and not answer.metadata.cached


async def test_a_cut_stream_is_never_cached(response_cache: ResponseCache) -> None:
    router = FakeRouter()
    router.cut_after = 2
    gen = generator(router, response_cache)
    with pytest.raises(LLMError):
        await collect(gen, request())
    router.cut_after = None
    _, answer = await collect(gen, request())
    assert not answer.metadata.cached and router.calls == 2 and response_cache.stats.stored == 1


async def test_a_cancelled_stream_is_never_cached(response_cache: ResponseCache) -> None:
    router = FakeRouter(text="one two three four five")
    router.delay_s = 0.05
    gen = generator(router, response_cache)
    first_piece = asyncio.Event()

    async def consume() -> None:
        async for _ in gen.stream(request()):
            first_piece.set()

    task = asyncio.create_task(consume())
    await first_piece.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    router.delay_s = 0.0
    answer = await gen.generate(request())
    assert not answer.metadata.cached and router.calls == 2


async def test_a_consumer_that_stops_reading_does_not_store_a_partial_answer(response_cache: ResponseCache) -> None:
    router = FakeRouter(text="one two three four five")
    gen = generator(router, response_cache)
    stream = gen.stream(request())
    await anext(stream)
    await stream.aclose()
    assert response_cache.stats.stored == 0
    answer = await gen.generate(request())
    assert not answer.metadata.cached


async def test_identical_concurrent_requests_reach_the_model_once(response_cache: ResponseCache) -> None:
    router = FakeRouter()
    router.release.clear()
    gen = generator(router, response_cache)
    calls = [asyncio.create_task(gen.generate(request())) for _ in range(3)]
    calls += [asyncio.create_task(_drain(gen)) for _ in range(3)]  # streams join too
    await asyncio.sleep(0.05)
    router.release.set()
    answers = await asyncio.gather(*calls)
    assert router.calls == 1
    assert {a.text for a in answers} == {router.text}
    assert sum(not a.metadata.cached for a in answers) == 1  # the leader
    assert response_cache.stats.coalesced == 5


async def _drain(gen: Generator) -> Answer:
    texts, answer = await collect(gen, request())
    assert "".join(texts) == answer.text
    return answer


async def test_followers_retry_when_the_leader_fails(response_cache: ResponseCache) -> None:
    router = FakeRouter()
    router.release.clear()
    router.error = LLMError(ErrorKind.TIMEOUT, "the leader's own deadline")
    gen = generator(router, response_cache)
    leader = asyncio.create_task(gen.generate(request()))
    await asyncio.sleep(0.01)
    follower = asyncio.create_task(gen.generate(request()))
    await asyncio.sleep(0.01)
    router.release.set()
    with pytest.raises(LLMError):
        await leader
    router.error = None
    assert (await follower).text == router.text
    assert router.calls == 2


async def test_a_cancelled_leader_hands_over_to_a_follower(response_cache: ResponseCache) -> None:
    router = FakeRouter()
    router.release.clear()
    gen = generator(router, response_cache)
    leader = asyncio.create_task(gen.generate(request()))
    async with asyncio.timeout(5):  # the leader is asking the router (a store lookup first)
        while router.calls == 0:
            await asyncio.sleep(0.005)
    follower = asyncio.create_task(gen.generate(request()))
    await asyncio.sleep(0.05)  # the follower waits for the leader
    leader.cancel()
    await asyncio.sleep(0.05)
    router.release.set()
    answer = await follower
    assert answer.text == router.text
    assert not answer.metadata.cached and router.calls == 2


async def test_different_requests_do_not_wait_for_each_other(response_cache: ResponseCache) -> None:
    router = FakeRouter()
    gen = generator(router, response_cache)
    await asyncio.gather(gen.generate(request("a")), gen.generate(request("b")))
    assert router.calls == 2 and response_cache.stats.coalesced == 0


async def test_without_a_cache_every_request_reaches_the_model() -> None:
    router = FakeRouter()
    gen = generator(router, None)
    await gen.generate(request())
    answer = await gen.generate(request())
    assert router.calls == 2 and not answer.metadata.cached


async def test_answers_keep_flowing_while_redis_is_down() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    cache = ResponseCache(RedisCacheStore(f"redis://127.0.0.1:{port}/0", ttl_s=60, max_entry_bytes=1 << 20), default_strategy=RoutingStrategy.BALANCED)
    router = FakeRouter()
    gen = generator(router, cache)
    for _ in range(3):
        assert (await gen.generate(request())).text == router.text
        texts, _ = await collect(gen, request())
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
