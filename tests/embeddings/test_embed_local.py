"""``Embed`` on local models, end to end through the real gRPC server: a real llama.cpp server
started with embeddings on (as operators run ``llama-server --embeddings --pooling mean``),
and the bundled SmolLM2 loaded in-process (its mean-pooled hidden states). Both are the same
GGUF with the same pooling, so their vectors agree; each is checked against what llama.cpp
itself answers on ``/v1/embeddings``."""

from __future__ import annotations

import math
from collections.abc import Callable

import aiohttp
import grpc
import pytest

from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api
from llm_manager_server.app import Application
from llm_manager_server.providers.llama_inprocess import BUNDLED_MODEL_NAME

from ..conftest import StartApp, Stubs
from ..support.processes import LlamaServer

Connect = Callable[[Application], Stubs]
TIMEOUT_S = 60
# SmolLM2-135M's hidden size.
DIMENSIONS = 576
TEXTS = ["checkout p99 latency spiked after the deploy", "the payment service returned HTTP 502", "checkout p99 latency spiked after the deploy"]


def vectors(reply: api.EmbedResponse) -> list[list[float]]:
    return [list(e.values) for e in reply.embeddings]


def cosine(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(math.fsum(x * x for x in a) * math.fsum(y * y for y in b))


async def llama_cpp_vectors(server: LlamaServer, texts: list[str]) -> list[list[float]]:
    """What llama.cpp's own /v1/embeddings answers, asked directly."""
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/v1/embeddings", json={"input": texts}) as response:
            assert response.status == 200, await response.text()
            body = await response.json()
    return [item["embedding"] for item in sorted(body["data"], key=lambda item: item["index"])]


def assert_batch(reply: api.EmbedResponse) -> None:
    got = vectors(reply)
    assert len(got) == len(TEXTS) and all(len(v) == DIMENSIONS for v in got)
    assert got[0] == got[2], "the same text gets the same vector"
    assert got[0] != got[1]
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-4) for v in got), "unit vectors"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens == 0 and reply.usage.cost_usd == 0
    assert reply.metadata.provider == common_pb2.PROVIDER_LOCAL and reply.metadata.deployment == "local"


async def test_a_llama_cpp_server_embeds_through_the_service(
    start_app: StartApp, connect: Connect, embedding_llama_server: LlamaServer
) -> None:
    app = await start_app(LM_STUDIO_ENDPOINT=embedding_llama_server.url, LLM_CACHE_ENABLED="false")
    stubs = connect(app)
    # The endpoint lists its GGUF; the service names the model after the file.
    [listed] = (await stubs.llm.ListModels(api.ListModelsRequest(), timeout=TIMEOUT_S)).models
    model = listed.name
    assert common_pb2.CAPABILITY_EMBEDDINGS in listed.capabilities

    reply = await stubs.llm.Embed(api.EmbedRequest(inputs=TEXTS), timeout=TIMEOUT_S)  # no model: the local one
    assert_batch(reply)
    assert reply.model == model
    direct = await llama_cpp_vectors(embedding_llama_server, TEXTS)
    for ours, theirs in zip(vectors(reply), direct, strict=True):
        assert ours == pytest.approx(theirs, abs=1e-6), "the server's vectors, unchanged (float32 on the wire)"

    # The same endpoint still answers chat.
    answer = await stubs.llm.Generate(api.GenerateRequest(prompt="Say hi", preferences=common_pb2.GenerationPreferences(max_tokens=8)), timeout=TIMEOUT_S)
    assert answer.text


async def test_a_llama_cpp_server_without_embeddings_is_a_clear_error(start_app: StartApp, connect: Connect, llama_server: LlamaServer) -> None:
    stubs = connect(await start_app(LM_STUDIO_ENDPOINT=llama_server.url, LLM_CACHE_ENABLED="false", LLM_MAX_RETRIES="0", LLM_BREAKER_FAILURES="1"))
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stubs.llm.Embed(api.EmbedRequest(inputs=["x"]), timeout=TIMEOUT_S)
        # llama.cpp's 501: the endpoint's configuration, not worth a retry, with its own advice.
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "Start it with `--embeddings`" in (raised.value.details() or "")
    # Nothing about the model's health: its circuit stays closed (one failure would open it)
    # and it answers chat.
    answer = await stubs.llm.Generate(api.GenerateRequest(prompt="Say hi", preferences=common_pb2.GenerationPreferences(max_tokens=8)), timeout=TIMEOUT_S)
    assert answer.text


async def test_the_in_process_model_embeds_like_llama_cpp_does(
    start_app: StartApp, connect: Connect, embedding_llama_server: LlamaServer
) -> None:
    stubs = connect(await start_app())  # the bundled SmolLM2, in-process
    reply = await stubs.llm.Embed(api.EmbedRequest(inputs=TEXTS, model=BUNDLED_MODEL_NAME), timeout=TIMEOUT_S)
    assert_batch(reply)
    assert reply.model == BUNDLED_MODEL_NAME
    direct = await llama_cpp_vectors(embedding_llama_server, TEXTS)
    for ours, theirs in zip(vectors(reply), direct, strict=True):
        assert cosine(ours, theirs) > 0.999, "same GGUF, same pooling: the same vectors"

    # Cached like answers: the repeat is a hit and costs nothing; different inputs are fresh.
    again = await stubs.llm.Embed(api.EmbedRequest(inputs=TEXTS), timeout=TIMEOUT_S)
    assert again.metadata.cached and vectors(again) == vectors(reply)
    other = await stubs.llm.Embed(api.EmbedRequest(inputs=["disk full on node-7"]), timeout=TIMEOUT_S)
    assert not other.metadata.cached and len(other.embeddings[0].values) == DIMENSIONS

    # Generation still works beside the embedding context.
    answer = await stubs.llm.Generate(api.GenerateRequest(prompt="Say hi", preferences=common_pb2.GenerationPreferences(max_tokens=8)), timeout=TIMEOUT_S)
    assert answer.text


async def test_a_long_input_is_embedded_whole(start_app: StartApp, connect: Connect) -> None:
    """More tokens than llama.cpp's default physical batch (512): pooling needs them in one."""
    stubs = connect(await start_app(LLM_CACHE_ENABLED="false"))
    text = " ".join(f"span {i} of trace abc took {i * 7} ms;" for i in range(40))
    reply = await stubs.llm.Embed(api.EmbedRequest(inputs=[text, "short"]), timeout=2 * TIMEOUT_S)
    assert reply.usage.prompt_tokens > 512 and [len(e.values) for e in reply.embeddings] == [DIMENSIONS, DIMENSIONS]


async def test_an_unloaded_local_model_is_model_unavailable(start_app: StartApp, connect: Connect) -> None:
    stubs = connect(await start_app())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Embed(api.EmbedRequest(inputs=["x"], model="nomic-embed-text"), timeout=TIMEOUT_S)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "not loaded" in (raised.value.details() or "")


async def test_an_input_beyond_the_context_is_the_callers_and_leaves_the_model_healthy(start_app: StartApp, connect: Connect) -> None:
    stubs = connect(await start_app(LLM_LOCAL_CONTEXT_LENGTH="256", LLM_BREAKER_FAILURES="1", LLM_CACHE_ENABLED="false"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Embed(api.EmbedRequest(inputs=["word " * 400]), timeout=TIMEOUT_S)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 256 tokens per input (LLM_LOCAL_CONTEXT_LENGTH)" in (raised.value.details() or "")
    # Not the model's fault: its circuit stays closed (one failure would open it here).
    [model] = (await stubs.llm.ListModels(api.ListModelsRequest(), timeout=TIMEOUT_S)).models
    assert model.health_state != api.HEALTH_STATE_UNHEALTHY, model.health_detail
    reply = await stubs.llm.Embed(api.EmbedRequest(inputs=["short"]), timeout=TIMEOUT_S)
    assert len(reply.embeddings[0].values) == DIMENSIONS
