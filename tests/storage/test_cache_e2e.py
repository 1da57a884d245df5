"""The response cache end to end: the real server (in-process SmolLM2) through the generated
stubs, with the default memory store, a real Redis shared by two replicas, and a Redis that
is down."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api

from ..conftest import StartApp, Stubs

PREFERENCES = common_pb2.GenerationPreferences(max_tokens=12, temperature=0.0)


def generate_request(prompt: str = "Name a color.", **cache: bool) -> api.GenerateRequest:
    return api.GenerateRequest(prompt=prompt, preferences=PREFERENCES, cache_control=common_pb2.CacheControl(**cache))


async def stream_text(stubs: Stubs, request: api.GenerateRequest) -> tuple[str, api.StreamGenerateResponse]:
    messages = [m async for m in stubs.llm.StreamGenerate(api.StreamGenerateRequest.FromString(request.SerializeToString()), timeout=60)]
    return "".join(m.text for m in messages), messages[-1]


async def test_a_repeated_generate_is_served_from_the_memory_cache(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    app = await start_app()  # cache on by default, in memory
    stubs = connect(app)
    first = await stubs.llm.Generate(generate_request(), timeout=60)
    second = await stubs.llm.Generate(generate_request(), timeout=60)
    assert not first.metadata.cached and second.metadata.cached
    assert second.text == first.text and second.model == first.model and second.finish_reason == first.finish_reason
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    assert second.usage.completion_tokens == first.usage.completion_tokens
    assert second.usage.cost_usd == 0.0 and list(second.metadata.model_chain) == []
    assert second.metadata.provider == common_pb2.PROVIDER_LOCAL and "response cache" in second.metadata.routing_reason
    # And as a stream.
    text, final = await stream_text(stubs, generate_request())
    assert text == first.text and final.metadata.cached and final.usage.completion_tokens == first.usage.completion_tokens
    # Bypass: a fresh answer.
    fresh = await stubs.llm.Generate(generate_request(no_cache=True), timeout=60)
    assert not fresh.metadata.cached and fresh.metadata.model_chain
    stats = app.response_cache.stats.snapshot() if app.response_cache else {}
    assert stats["hits"] == 2 and stats["bypassed"] == 1


async def test_identical_concurrent_calls_reach_the_model_once(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    app = await start_app()
    stubs = connect(app)
    replies = await asyncio.gather(*(stubs.llm.Generate(generate_request("Name an animal."), timeout=60) for _ in range(4)))
    assert len({r.text for r in replies}) == 1
    assert sum(not r.metadata.cached for r in replies) == 1
    assert app.response_cache is not None and app.response_cache.stats.coalesced == 3


async def test_replicas_share_answers_through_redis(start_app: StartApp, connect: Callable[..., Stubs], redis_url: str) -> None:
    first = connect(await start_app(LLM_CACHE_STORE=redis_url))
    second = connect(await start_app(LLM_CACHE_STORE=redis_url))
    original = await first.llm.Generate(generate_request(), timeout=60)
    shared = await second.llm.Generate(generate_request(), timeout=60)
    assert not original.metadata.cached and shared.metadata.cached and shared.text == original.text
    text, final = await stream_text(second, generate_request())
    assert text == original.text and final.metadata.cached


async def test_the_service_answers_uncached_while_redis_is_down(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    with socket.socket() as listener:  # a loopback port nobody listens on
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    app = await start_app(LLM_CACHE_STORE=f"redis://127.0.0.1:{port}/0")
    stubs = connect(app)
    for _ in range(2):
        reply = await stubs.llm.Generate(generate_request(), timeout=60)
        assert reply.text and not reply.metadata.cached
        text, final = await stream_text(stubs, generate_request())
        assert text and not final.metadata.cached
    assert app.response_cache is not None and app.response_cache.stats.errors == 4


async def test_with_the_cache_disabled_every_call_reaches_the_model(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    app = await start_app(LLM_CACHE_ENABLED="false")
    stubs = connect(app)
    for _ in range(2):
        assert not (await stubs.llm.Generate(generate_request(), timeout=60)).metadata.cached
    assert app.response_cache is None
