"""Resilience seen by a gRPC caller: cancellation reaches the upstream at once, and the
service keeps answering while one provider is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from llm_manager.client import error_details
from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api

from ..conftest import StartApp, Stubs
from ..support.fault_server import FaultServer
from ..support.processes import free_port


@pytest.fixture
async def fake() -> AsyncIterator[FaultServer]:
    server = await FaultServer().start()
    yield server
    await server.stop()


async def _until(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"condition not met within {timeout_s} s"
        await asyncio.sleep(0.02)


async def test_cancelled_stream_cancels_the_upstream_request(start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer) -> None:
    fake.script("drip-model", "drip:0.05")
    stubs = connect(await start_app(LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="drip-model"))
    call = stubs.llm.StreamGenerate(api.StreamGenerateRequest(prompt="go"), timeout=30)
    received = 0
    async for message in call:
        received += bool(message.text)
        if received == 3:
            break
    call.cancel()
    cancelled_at = time.monotonic()
    await _until(lambda: fake.requests[-1].disconnected_at is not None, timeout_s=2)
    assert fake.requests[-1].disconnected_at - cancelled_at < 1.0  # type: ignore[operator]


async def test_deadline_cancels_a_plain_upstream_request(start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer) -> None:
    fake.script("slow-model", "slow:30")
    stubs = connect(await start_app(LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="slow-model"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Generate(api.GenerateRequest(prompt="go"), timeout=0.5)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await _until(lambda: fake.requests[-1].disconnected_at is not None, timeout_s=2)


async def test_generate_keeps_answering_while_a_provider_is_down(start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer) -> None:
    dead_local = f"http://127.0.0.1:{free_port()}/v1"
    stubs = connect(await start_app(
        LM_STUDIO_ENDPOINT=dead_local, OPENAI_API_KEY="sk-test-key", OPENAI_BASE_URL=fake.url, OPENAI_MODEL="gpt-4o-mini",
        LLM_HEALTH_INTERVAL_SECONDS="600",
    ))
    for request in (api.GenerateRequest(prompt="hi"), api.GenerateRequest(prompt="hi", task_type=common_pb2.TASK_TYPE_CONFIG_MANAGEMENT)):
        reply = await stubs.llm.Generate(request, timeout=10)
        assert reply.text == fake.text and reply.model == "gpt-4o-mini"
        # The dead local endpoint was found unhealthy at start-up, so it is not even tried.
        assert list(reply.metadata.candidates) == ["gpt-4o-mini"]
        assert "unhealthy" in reply.metadata.routing_reason
    # Pinned to the dead model: its own error, clearly.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Generate(api.GenerateRequest(prompt="hi", preferences=common_pb2.GenerationPreferences(model="local-model")))
    details = error_details(raised.value)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "MODEL_UNAVAILABLE")
    # And streams fall back before the first token too.
    fake.script("gpt-4o-mini", "ok")
    messages = [m async for m in stubs.llm.StreamGenerate(api.StreamGenerateRequest(prompt="hi"), timeout=10)]
    assert "".join(m.text for m in messages).strip() == fake.text
    assert messages[-1].metadata.provider == common_pb2.PROVIDER_OPENAI


async def test_fallback_metadata_through_grpc(start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer) -> None:
    fake.script("alpha", "status:500")
    stubs = connect(await start_app(LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="alpha", LLM_GENERAL_MODEL_2="beta", LLM_MAX_RETRIES="1"))
    reply = await stubs.llm.Generate(api.GenerateRequest(prompt="hi", cache_control=common_pb2.CacheControl(no_cache=True)), timeout=10)
    meta = reply.metadata
    assert reply.model == "beta" and meta.fallback_used and meta.retry_count == 1
    assert list(meta.model_chain) == ["alpha", "alpha", "beta"]
    fake.script("beta", "status:500")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Generate(api.GenerateRequest(prompt="again", cache_control=common_pb2.CacheControl(no_cache=True)), timeout=10)
    details = error_details(raised.value)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "ALL_MODELS_UNAVAILABLE")
    assert {"attempt.1", "attempt.2"} <= set(details.metadata)
