"""Embed shares the router's attempt loop: a model served by two deployments moves a failing
call to the other deployment, each deployment's breaker opens on its own, and no other model
ever stands in (vectors of two models are not comparable)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api
from llm_manager_server.app import Application

from ..conftest import StartApp, Stubs
from ..fakes import FakeOpenAI
from ..fakes.openai_fake import fake_vector
from ..support.processes import free_port

Connect = Callable[[Application], Stubs]
MODEL = "text-embedding-3-small"  # served here by two OpenAI-compatible boxes


@pytest.fixture
async def boxes() -> AsyncIterator[tuple[FakeOpenAI, FakeOpenAI]]:
    a, b = await FakeOpenAI().start(), await FakeOpenAI().start()
    yield a, b
    await a.stop()
    await b.stop()


def config(tmp_path: Path, a: FakeOpenAI, b: FakeOpenAI) -> str:
    path = tmp_path / "llm.json"
    boxes = [
        {"name": "box-a", "provider": "openai_compatible", "base_url": f"{a.url}/v1", "models": [MODEL], "weight": 100},
        {"name": "box-b", "provider": "openai_compatible", "base_url": f"{b.url}/v1", "models": [MODEL], "weight": 1},
    ]
    path.write_text(json.dumps({"deployments": boxes}))
    return str(path)


def request(text: str) -> api.EmbedRequest:
    return api.EmbedRequest(inputs=[text], model=MODEL, cache_control=common_pb2.CacheControl(no_cache=True))


async def test_a_failing_deployment_moves_the_call_and_its_breaker_opens(
    start_app: StartApp, connect: Connect, boxes: tuple[FakeOpenAI, FakeOpenAI], tmp_path: Path
) -> None:
    a, b = boxes
    stubs = connect(await start_app(
        LLM_CONFIG_FILE=config(tmp_path, a, b), LM_STUDIO_ENDPOINT=f"http://127.0.0.1:{free_port()}/v1",
        LLM_MAX_RETRIES="0", LLM_BREAKER_FAILURES="2", LLM_HEALTH_INTERVAL_SECONDS="600",
    ))
    first = await stubs.llm.Embed(request("one"), timeout=10)
    assert first.metadata.deployment == "box-a", "the heavier deployment first"

    for text in ("two", "three"):
        a.server_error(503)
        reply = await stubs.llm.Embed(request(text), timeout=10)
        assert reply.metadata.deployment == "box-b" and list(reply.metadata.model_chain) == [MODEL, MODEL]
        assert reply.metadata.retry_count == 1 and not reply.metadata.fallback_used
        assert list(reply.embeddings[0].values) == pytest.approx(fake_vector(MODEL, text, 1536), abs=1e-7)
    # Two failures opened box-a's circuit: the next call goes to box-b without trying it.
    calls_a = len(a.embedding_requests)
    reply = await stubs.llm.Embed(request("four"), timeout=10)
    assert reply.metadata.deployment == "box-b" and list(reply.metadata.model_chain) == [MODEL]
    assert len(a.embedding_requests) == calls_a == 3

    # Both failing: the model's own error, never another model's vectors.
    b.server_error(503)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Embed(request("five"), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
