"""Embed with API keys on (LLM_API_KEYS_FILE): a key uses only its models (the default
embedding model included), and one caller's cached vectors are never another's hit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from llm_manager.v1 import llm_manager_service_pb2 as api
from llm_manager_server.app import Application

from ..conftest import StartApp, Stubs
from ..fakes import FakeOpenAI
from ..providers.conftest import OPENAI_KEY, unused_loopback_url  # noqa: F401  (a fixture)
from ..support.keys import write_keys_file

Connect = Callable[[Application], Stubs]
SMALL, LARGE = "text-embedding-3-small", "text-embedding-3-large"
CALLERS = {"alice": {}, "bob": {}, "small-only": {"models": [SMALL]}}


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI(api_key=OPENAI_KEY).start()
    yield fake
    await fake.stop()


async def test_keys_limit_the_models_and_scope_the_cache(
    start_app: StartApp, connect: Connect, openai_fake: FakeOpenAI, unused_loopback_url: str, tmp_path: Path
) -> None:
    keys = write_keys_file(tmp_path / "keys.yaml", CALLERS)
    stubs = connect(await start_app(
        OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=f"{openai_fake.url}/v1", LM_STUDIO_ENDPOINT=unused_loopback_url,
        LLM_EMBEDDING_MODEL=LARGE, LLM_API_KEYS_FILE=str(tmp_path / "keys.yaml"),
    ))

    def as_(caller: str) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {keys[caller]}"),)

    ok = await stubs.llm.Embed(api.EmbedRequest(inputs=["x"], model=SMALL), metadata=as_("small-only"), timeout=10)
    assert len(ok.embeddings) == 1
    for request in (api.EmbedRequest(inputs=["x"], model=LARGE), api.EmbedRequest(inputs=["x"])):  # pinned, and the default
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stubs.llm.Embed(request, metadata=as_("small-only"), timeout=10)
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED and LARGE in (raised.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Embed(api.EmbedRequest(inputs=["x"], model=SMALL), timeout=10)  # no key
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED

    request = api.EmbedRequest(inputs=["alice's private log line"], model=SMALL)
    first = await stubs.llm.Embed(request, metadata=as_("alice"), timeout=10)
    again = await stubs.llm.Embed(request, metadata=as_("alice"), timeout=10)
    other = await stubs.llm.Embed(request, metadata=as_("bob"), timeout=10)
    assert not first.metadata.cached and again.metadata.cached
    assert not other.metadata.cached, "bob never gets alice's cached vectors"
    assert len(openai_fake.embedding_requests) == 3
