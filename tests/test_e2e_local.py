"""End to end: the real gRPC server, called through the generated stubs, in front of a real
llama.cpp server (SmolLM2) reached as an OpenAI-compatible endpoint (LM_STUDIO_ENDPOINT)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_manager.client import error_details
from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api

from .conftest import StartApp, Stubs
from .support.processes import LlamaServer

COUNTING = "Count from 1 to 100, separated by commas."
# The name llama.cpp's /v1/models gives the bundled model (its GGUF file), as the server discovers it.
LOCAL_MODEL = "SmolLM2-135M-Instruct.Q4_1"


def endpoint(server: LlamaServer) -> dict[str, str]:
    return {"LM_STUDIO_ENDPOINT": server.url}


async def test_generate_returns_text_usage_and_metadata(
    start_app: StartApp, connect: Callable[..., Stubs], llama_server: LlamaServer
) -> None:
    stubs = connect(await start_app(**endpoint(llama_server)))
    reply = await stubs.llm.Generate(
        api.GenerateRequest(prompt="Name three colors.", preferences=common_pb2.GenerationPreferences(max_tokens=24)),
        timeout=60,
    )
    assert reply.text.strip()
    assert reply.model == LOCAL_MODEL
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.usage.completion_tokens <= 24
    assert reply.usage.cost_usd == 0.0
    assert reply.finish_reason in (common_pb2.FINISH_REASON_STOP, common_pb2.FINISH_REASON_LENGTH)
    meta = reply.metadata
    assert meta.latency_ms > 0 and meta.retry_count == 0 and not meta.cached and not meta.fallback_used
    assert list(meta.model_chain) == [LOCAL_MODEL]
    assert meta.provider == common_pb2.PROVIDER_LOCAL
    assert meta.routing_strategy == common_pb2.ROUTING_STRATEGY_BALANCED
    assert len(meta.request_id) == 32


async def test_system_and_messages_reach_the_model(
    start_app: StartApp, connect: Callable[..., Stubs], llama_server: LlamaServer
) -> None:
    stubs = connect(await start_app(**endpoint(llama_server)))
    plain = await stubs.llm.Generate(
        api.GenerateRequest(system="You are terse.", prompt="Hi", preferences=common_pb2.GenerationPreferences(max_tokens=4))
    )
    chat = await stubs.llm.Generate(
        api.GenerateRequest(
            system="You are terse.",
            messages=[
                common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content="Hello there, how are you today?"),
                common_pb2.ChatMessage(role=common_pb2.ROLE_ASSISTANT, content="Fine."),
                common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content="Hi"),
            ],
            preferences=common_pb2.GenerationPreferences(max_tokens=4),
        )
    )
    # The model saw the earlier turns: its reported prompt is longer than the last turn's alone.
    assert chat.usage.prompt_tokens > plain.usage.prompt_tokens + 10


async def test_stream_arrives_chunk_by_chunk(
    start_app: StartApp, connect: Callable[..., Stubs], llama_server: LlamaServer
) -> None:
    stubs = connect(await start_app(**endpoint(llama_server)))
    started = time.monotonic()
    arrivals: list[tuple[float, api.StreamGenerateResponse]] = []
    async for message in stubs.llm.StreamGenerate(
        api.StreamGenerateRequest(prompt=COUNTING, preferences=common_pb2.GenerationPreferences(max_tokens=96, temperature=0)),
        timeout=60,
    ):
        arrivals.append((time.monotonic() - started, message))
    texts = [(t, m.text) for t, m in arrivals if m.text]
    assert len(texts) >= 10, "expected many small chunks, not one blob"
    first_text_at, end_at = texts[0][0], arrivals[-1][0]
    assert first_text_at < end_at / 2, f"first text at {first_text_at:.2f}s of {end_at:.2f}s: not streamed"
    final = arrivals[-1][1]
    assert final.text == "" and final.usage.completion_tokens > 0
    assert final.usage.total_tokens == final.usage.prompt_tokens + final.usage.completion_tokens
    assert final.finish_reason in (common_pb2.FINISH_REASON_LENGTH, common_pb2.FINISH_REASON_STOP)
    assert 0 < final.metadata.time_to_first_token_ms <= final.metadata.latency_ms
    assert list(final.metadata.model_chain) == [LOCAL_MODEL]
    assert "1" in "".join(text for _, text in texts)
    # Only the last message carries usage and metadata.
    assert all(not m.HasField("usage") and not m.HasField("metadata") for _, m in arrivals[:-1])


async def test_list_models_and_health(start_app: StartApp, connect: Callable[..., Stubs], llama_server: LlamaServer) -> None:
    app = await start_app(**endpoint(llama_server), LLM_GENERAL_MODEL_1="smollm2", LLM_SQL_MODEL_1="smollm2-sql")
    stubs = connect(app)
    listed = await stubs.llm.ListModels(api.ListModelsRequest())
    by_name = {m.name: m for m in listed.models}
    assert set(by_name) == {"smollm2", "smollm2-sql"}
    assert all(m.provider == common_pb2.PROVIDER_LOCAL and m.health_state == api.HEALTH_STATE_HEALTHY for m in listed.models)
    assert by_name["smollm2"].context_window == 2048 and by_name["smollm2"].price.input_per_million_usd == 0
    page = await stubs.llm.ListModels(api.ListModelsRequest(page_size=1))
    assert len(page.models) == 1 and page.next_page_token
    rest = await stubs.llm.ListModels(api.ListModelsRequest(page_size=1, page_token=page.next_page_token))
    assert [m.name for m in [*page.models, *rest.models]] == [m.name for m in listed.models] and not rest.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.ListModels(api.ListModelsRequest(page_token="garbage!"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in error_details(raised.value).field_violations

    health = health_pb2_grpc.HealthStub(stubs.channel)
    for service in ("", "llm_manager.v1.LLMManagerService", "llm_manager.v1.ConversationService", "model/smollm2"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await health.Check(health_pb2.HealthCheckRequest(service="model/nope"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("request_fields", "violations"),
    [
        ({"prompt": ""}, {"prompt"}),
        ({"prompt": "   "}, {"prompt"}),
        ({"prompt": "hi", "preferences": {"max_tokens": -1}}, {"preferences.max_tokens"}),
        ({"prompt": "hi", "preferences": {"max_tokens": 0, "temperature": 5}}, {"preferences.max_tokens", "preferences.temperature"}),
        ({"prompt": "hi", "task_type": 99}, {"task_type"}),
        ({"prompt": "hi", "preferences": {"routing_strategy": 42}}, {"preferences.routing_strategy"}),
        ({"prompt": "hi", "preferences": {"top_p": 0}}, {"preferences.top_p"}),
        ({"prompt": "hi", "preferences": {"stop": ["a", "b", "c", "d", "e"]}}, {"preferences.stop"}),
        ({"messages": [{"role": 0, "content": "x"}]}, {"messages[0].role"}),
        ({"messages": [{"role": 2, "content": ""}]}, {"messages[0].content"}),
    ],
)
async def test_invalid_requests_list_field_violations(
    start_app: StartApp, connect: Callable[..., Stubs], llama_server: LlamaServer, request_fields: dict[str, object], violations: set[str]
) -> None:
    from google.protobuf import json_format

    stubs = connect(await start_app(**endpoint(llama_server)))
    request = json_format.ParseDict(request_fields, api.GenerateRequest())
    for call in (
        lambda: stubs.llm.Generate(request),
        lambda: stubs.llm.StreamGenerate(api.StreamGenerateRequest.FromString(request.SerializeToString())).read(),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call()
        details = error_details(raised.value)
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.reason == "INVALID_REQUEST" and details.domain == "llm-manager"
        assert set(details.field_violations) == violations
        assert all(details.field_violations.values())


async def test_client_deadline_cancels_upstream_generation(
    start_app: StartApp, connect: Callable[..., Stubs], llama_server: LlamaServer
) -> None:
    stubs = connect(await start_app(**endpoint(llama_server)))
    long_request = common_pb2.GenerationPreferences(max_tokens=1500, temperature=0)
    for call in (
        lambda: stubs.llm.Generate(api.GenerateRequest(prompt=COUNTING, preferences=long_request), timeout=0.7),
        lambda: _drain(stubs.llm.StreamGenerate(api.StreamGenerateRequest(prompt=COUNTING, preferences=long_request), timeout=0.7)),
    ):
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call()
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 3
        # 1500 tokens take the server ~15 s; the cancelled request must free its slot at once.
        # (A plain request would hold it about a second longer: llama.cpp polls the socket of
        # a plain request only now and then, while a closed stream stops it at the next token.)
        cancelled = time.monotonic()
        await _until(lambda: llama_server.slots_busy() == 0, timeout_s=3)
        assert time.monotonic() - cancelled < 0.8


async def test_local_server_killed_mid_stream_is_unavailable(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    server = LlamaServer(threads=1, parallel=1).start()
    try:
        # A long health interval keeps the probe from noticing first: this test is about the call.
        stubs = connect(await start_app(**endpoint(server), LLM_HEALTH_INTERVAL_SECONDS="600"))
        received: list[str] = []
        stream = stubs.llm.StreamGenerate(
            api.StreamGenerateRequest(prompt=COUNTING, preferences=common_pb2.GenerationPreferences(max_tokens=1500, temperature=0.0)), timeout=60
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for message in stream:
                received.append(message.text)
                if len(received) == 3:
                    server.kill()
        details = error_details(raised.value)
        assert details.code == grpc.StatusCode.UNAVAILABLE
        assert details.reason == "MODEL_UNAVAILABLE"
        assert details.metadata["partial_output"] == "true" and details.metadata["model"] == LOCAL_MODEL
        assert "partial output" in details.message
        assert len(received) >= 3

        # Now the connection is refused: still UNAVAILABLE / MODEL_UNAVAILABLE, quickly.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stubs.llm.Generate(api.GenerateRequest(prompt="hi"), timeout=20)
        details = error_details(raised.value)
        assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "MODEL_UNAVAILABLE")
        assert "unreachable" in details.message
    finally:
        server.stop()


async def test_health_follows_the_local_server(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    server = LlamaServer(threads=1, parallel=1).start()
    try:
        app = await start_app(**endpoint(server), LLM_HEALTH_INTERVAL_SECONDS="0.2")
        stubs = connect(app)
        health = health_pb2_grpc.HealthStub(stubs.channel)

        async def model_status() -> int:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=f"model/{LOCAL_MODEL}"))
            return int(reply.status)

        assert await model_status() == health_pb2.HealthCheckResponse.SERVING
        server.kill()
        await _until_async(lambda: _is(model_status(), health_pb2.HealthCheckResponse.NOT_SERVING), timeout_s=5)
        listed = await stubs.llm.ListModels(api.ListModelsRequest())
        assert listed.models[0].health_state == api.HEALTH_STATE_UNHEALTHY and listed.models[0].health_detail
        # Unpinned requests fail fast: no healthy candidate.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stubs.llm.Generate(api.GenerateRequest(prompt="hi"), timeout=5)
        details = error_details(raised.value)
        assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "ALL_MODELS_UNAVAILABLE")
        assert LOCAL_MODEL in details.metadata.get(f"model.{LOCAL_MODEL}", "") or details.metadata

        server.start()  # same port
        await _until_async(lambda: _is(model_status(), health_pb2.HealthCheckResponse.SERVING), timeout_s=10)
        reply = await stubs.llm.Generate(api.GenerateRequest(prompt="hi", preferences=common_pb2.GenerationPreferences(max_tokens=4)))
        assert reply.text
    finally:
        server.stop()


async def _drain(call: grpc.aio.UnaryStreamCall) -> None:  # type: ignore[type-arg]
    async for _ in call:
        pass


async def _is(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]


async def _until(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.05)


async def _until_async(predicate: Callable[[], object], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():  # type: ignore[misc]
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.05)
