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
from ..fakes import FakeOpenAI
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
    assert sent.body == {"model": MODEL, "input": inputs, "encoding_format": "float"}
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert sent.headers["traceparent"].startswith("00-")
