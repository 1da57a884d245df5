"""``Embed`` end to end through the real gRPC server against the OpenAI fake (the fake's
``/v1/embeddings`` is proven with the official SDK in test_fakes_against_official_sdks.py):
vectors in the inputs' order, usage and cost from the price table, the cache, routing by
model name and capability, validation, and upstream failures as the contract's statuses."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api

from ..conftest import StartApp, Stubs
from ..fakes import FakeOpenAI, RetryHint
from ..fakes.openai_fake import embedding_tokens, fake_vector
from ..providers.conftest import OPENAI_KEY, unused_loopback_url  # noqa: F401  (a fixture)

from llm_manager_server.app import Application

Connect = Callable[[Application], Stubs]
TIMEOUT_S = 10
MODEL = "text-embedding-3-small"


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI(api_key=OPENAI_KEY).start()
    yield fake
    await fake.stop()


def env_for(fake: FakeOpenAI, unused_loopback_url: str, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": f"{fake.url}/v1",
        # A local endpoint nothing listens on: no in-process model is loaded.
        "LM_STUDIO_ENDPOINT": unused_loopback_url,
        "LLM_MAX_RETRIES": "1",
        **extra,
    }


def details(error: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo, list[error_details_pb2.BadRequest.FieldViolation]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    bad = error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(bad.DESCRIPTOR):
            detail.Unpack(bad)
    return info, list(bad.field_violations)


async def test_a_batch_comes_back_in_order_with_usage_and_cost(
    start_app: StartApp, connect: Connect, openai_fake: FakeOpenAI, unused_loopback_url: str
) -> None:
    app = await start_app(**env_for(openai_fake, unused_loopback_url, LLM_CACHE_ENABLED="false"))
    stubs = connect(app)
    inputs = ["checkout p99 latency spiked", "payment service returned 502", "disk full on node-7", "checkout p99 latency spiked"]
    reply = await stubs.llm.Embed(api.EmbedRequest(inputs=inputs, model=MODEL), timeout=TIMEOUT_S)

    assert len(reply.embeddings) == len(inputs)
    for text, embedding in zip(inputs, reply.embeddings, strict=True):
        assert list(embedding.values) == pytest.approx(fake_vector(MODEL, text, 1536), abs=1e-7)
    assert list(reply.embeddings[0].values) == list(reply.embeddings[3].values), "same text, same vector"
    assert list(reply.embeddings[0].values) != list(reply.embeddings[1].values)
    assert math.isclose(math.fsum(v * v for v in reply.embeddings[1].values), 1.0, rel_tol=1e-4)
    tokens = sum(embedding_tokens(t) for t in inputs)
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (tokens, 0, tokens)
    assert reply.usage.cost_usd == pytest.approx(tokens * 0.02 / 1e6)
    assert reply.model == MODEL
    assert reply.metadata.provider == common_pb2.PROVIDER_OPENAI and reply.metadata.deployment == "openai"
    assert list(reply.metadata.model_chain) == [MODEL] and not reply.metadata.cached and reply.metadata.request_id

    [sent] = openai_fake.embedding_requests
    # Base64 float32s, as OpenAI's own SDK asks (a quarter of the JSON, decoded in C).
    assert sent.body == {"model": MODEL, "input": inputs, "encoding_format": "base64"}
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert sent.headers["traceparent"].startswith("00-")


async def test_a_repeated_batch_is_answered_by_the_cache_at_no_cost(
    start_app: StartApp, connect: Connect, openai_fake: FakeOpenAI, unused_loopback_url: str
) -> None:
    stubs = connect(await start_app(**env_for(openai_fake, unused_loopback_url)))
    inputs = ["error rate up on checkout", "gc pauses on the JVM"]
    fresh = await stubs.llm.Embed(api.EmbedRequest(inputs=inputs, model=MODEL), timeout=TIMEOUT_S)
    cached = await stubs.llm.Embed(api.EmbedRequest(inputs=inputs, model=MODEL), timeout=TIMEOUT_S)

    assert len(openai_fake.embedding_requests) == 1, "the hit made no upstream call"
    assert cached.metadata.cached and not fresh.metadata.cached
    assert [list(e.values) for e in cached.embeddings] == [list(e.values) for e in fresh.embeddings]
    assert cached.usage.prompt_tokens == fresh.usage.prompt_tokens > 0
    assert fresh.usage.cost_usd > 0 and cached.usage.cost_usd == 0
    assert cached.model == MODEL and "response cache" in cached.metadata.routing_reason

    # The key covers the inputs in order and the model; no_cache goes upstream again.
    await stubs.llm.Embed(api.EmbedRequest(inputs=inputs[::-1], model=MODEL), timeout=TIMEOUT_S)
    await stubs.llm.Embed(api.EmbedRequest(inputs=inputs, model="text-embedding-3-large"), timeout=TIMEOUT_S)
    bypass = await stubs.llm.Embed(
        api.EmbedRequest(inputs=inputs, model=MODEL, cache_control=common_pb2.CacheControl(no_cache=True)), timeout=TIMEOUT_S
    )
    assert not bypass.metadata.cached
    assert len(openai_fake.embedding_requests) == 4


async def test_the_default_model_is_llm_embedding_model(
    start_app: StartApp, connect: Connect, openai_fake: FakeOpenAI, unused_loopback_url: str
) -> None:
    stubs = connect(await start_app(**env_for(openai_fake, unused_loopback_url, LLM_EMBEDDING_MODEL="text-embedding-3-large")))
    reply = await stubs.llm.Embed(api.EmbedRequest(inputs=["node-7 disk full"]), timeout=TIMEOUT_S)
    assert reply.model == "text-embedding-3-large" and len(reply.embeddings[0].values) == 3072
    assert reply.usage.cost_usd == pytest.approx(reply.usage.prompt_tokens * 0.13 / 1e6)
    assert openai_fake.embedding_requests[-1].body["model"] == "text-embedding-3-large"
    # Configured, so listed with its capability; and never a candidate for an answer.
    listed = {m.name: m for m in (await stubs.llm.ListModels(api.ListModelsRequest(), timeout=TIMEOUT_S)).models}
    assert list(listed["text-embedding-3-large"].capabilities) == [common_pb2.CAPABILITY_EMBEDDINGS]
    answer = await stubs.llm.Generate(api.GenerateRequest(prompt="hi", task_type=common_pb2.TASK_TYPE_ANALYSIS), timeout=TIMEOUT_S)
    assert "text-embedding-3-large" not in answer.metadata.candidates


@pytest.mark.parametrize(
    ("request_fields", "field", "words"),
    [
        ({"inputs": []}, "inputs", "at least one"),
        ({"inputs": ["fine", ""]}, "inputs[1]", "empty"),
        ({"inputs": ["fine", "   "]}, "inputs[1]", "empty"),
        ({"inputs": ["x"] * 2049}, "inputs", "at most 2048"),
        ({"inputs": ["x" * 1_000_001, "y" * 1_000_000]}, "inputs", "characters"),
        ({"inputs": ["fine"], "model": "bad model!"}, "model", "letters, digits"),
        ({"inputs": ["fine"], "model": "gpt-4o-mini"}, "model", "does not make embeddings"),
        ({"inputs": ["fine"], "model": "claude-sonnet-4-5"}, "model", "Anthropic has no embeddings API"),
    ],
)
async def test_bad_requests_are_invalid_argument_with_the_field(
    start_app: StartApp,
    connect: Connect,
    openai_fake: FakeOpenAI,
    unused_loopback_url: str,
    request_fields: dict[str, object],
    field: str,
    words: str,
) -> None:
    env = env_for(openai_fake, unused_loopback_url, CLAUDE_API_KEY="sk-ant-api03-TESTONLY-embeddings", CLAUDE_BASE_URL=unused_loopback_url)
    stubs = connect(await start_app(**env))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Embed(api.EmbedRequest(**request_fields), timeout=TIMEOUT_S)  # type: ignore[arg-type]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = details(raised.value)
    assert info.reason == "INVALID_REQUEST"
    assert any(v.field == field and words in v.description for v in violations), violations
    assert not openai_fake.embedding_requests, "nothing invalid reaches the provider"


async def test_upstream_failures_are_retried_then_reported_without_the_key(
    start_app: StartApp, connect: Connect, openai_fake: FakeOpenAI, unused_loopback_url: str
) -> None:
    stubs = connect(await start_app(**env_for(openai_fake, unused_loopback_url, LLM_CACHE_ENABLED="false")))
    # A 500 is retried on the same model (the router's attempt loop), then answered.
    openai_fake.server_error(500)
    reply = await stubs.llm.Embed(api.EmbedRequest(inputs=["retry me"], model=MODEL), timeout=TIMEOUT_S)
    assert reply.metadata.retry_count == 1 and len(reply.embeddings) == 1
    assert len(openai_fake.embedding_requests) == 2

    # A rate limit with a long retry-after: RESOURCE_EXHAUSTED carrying it, at once.
    openai_fake.rate_limit(20, RetryHint.RETRY_AFTER)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Embed(api.EmbedRequest(inputs=["slow down"], model=MODEL), timeout=TIMEOUT_S)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info, _ = details(raised.value)
    assert info.reason == "RATE_LIMIT_EXCEEDED"

    # A rejected key: the status names the provider, never the key.
    openai_fake.fail_auth()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Embed(api.EmbedRequest(inputs=["who am i"], model=MODEL), timeout=TIMEOUT_S)
    # The service's own key was rejected: nothing the caller can fix.
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(raised.value)[0].reason == "AUTHENTICATION_FAILED"
    assert OPENAI_KEY not in (raised.value.details() or "") and OPENAI_KEY[8:-4] not in str(raised.value.trailing_metadata())


async def test_an_unknown_embedding_model_gets_the_providers_message(
    start_app: StartApp, connect: Connect, openai_fake: FakeOpenAI, unused_loopback_url: str
) -> None:
    stubs = connect(await start_app(**env_for(openai_fake, unused_loopback_url, LLM_CACHE_ENABLED="false")))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Embed(api.EmbedRequest(inputs=["x"], model="text-embedding-9-huge"), timeout=TIMEOUT_S)
    # The service's mapping of an upstream 404 (a model this key cannot use: configuration).
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "text-embedding-9-huge` does not exist" in (raised.value.details() or "")


async def test_generate_with_an_embedding_model_is_refused(
    start_app: StartApp, connect: Connect, openai_fake: FakeOpenAI, unused_loopback_url: str
) -> None:
    stubs = connect(await start_app(**env_for(openai_fake, unused_loopback_url)))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Generate(api.GenerateRequest(prompt="hi", preferences=common_pb2.GenerationPreferences(model=MODEL)), timeout=TIMEOUT_S)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, violations = details(raised.value)
    assert [(v.field, v.description) for v in violations] == [("preferences.model", f"model {MODEL!r} only makes embeddings (use Embed)")]
    assert not openai_fake.generation_requests
