"""API keys (LLM_API_KEYS_FILE) on the HTTP API: the same keys as gRPC, sent the OpenAI way
(``Authorization: Bearer``, which the SDKs send from ``api_key``) or as ``x-api-key``; a
missing or unknown key is 401, the SDK's ``AuthenticationError``; /metrics stays open."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest

from llm_manager_server.app import Application

from ..fakes import FakeOpenAI, TokenCounts
from ..support.keys import write_keys_file
from .conftest import OPENAI_MODEL, start_served
from ..providers.conftest import OPENAI_KEY


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[tuple[Application, FakeOpenAI, dict[str, str]]]:
    keys = write_keys_file(tmp_path / "keys.yaml", {"alice": {}, "bob": {"models": ["gpt-4o"]}, "carol": {"models": ["local-model"]}})
    fake = await FakeOpenAI(api_key=OPENAI_KEY).start()
    app = await start_served(fake, str(tmp_path), LLM_API_KEYS_FILE=str(tmp_path / "keys.yaml"))
    try:
        yield app, fake, keys
    finally:
        await app.stop(grace_s=0)
        await fake.stop()


async def test_bearer_key_is_the_callers_key(keyed: tuple[Application, FakeOpenAI, dict[str, str]]) -> None:
    app, fake, keys = keyed
    base_url = f"http://{app.http_address}/v1"
    fake.reply_text("hello alice", TokenCounts(prompt=3, completion=2))
    async with openai.AsyncOpenAI(api_key=keys["alice"], base_url=base_url, max_retries=0) as alice:
        completion = await alice.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": "hi"}])
        assert completion.choices[0].message.content == "hello alice"
        assert [m.id async for m in alice.models.list()][0] == "auto"
    for wrong in ("sk-not-a-key-of-ours", "llm-unknown"):
        async with openai.AsyncOpenAI(api_key=wrong, base_url=base_url, max_retries=0) as stranger:
            with pytest.raises(openai.AuthenticationError) as raised:
                await stranger.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": "hi"}])
        assert raised.value.status_code == 401 and raised.value.code == "authentication_failed"
        assert raised.value.type == "authentication_error"
        assert wrong not in str(raised.value.body)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base_url}/models", headers={"x-api-key": keys["alice"]}) as response:
            assert response.status == 200
        async with session.get(f"{base_url}/models") as response:
            assert response.status == 401 and response.headers["x-request-id"]
            assert (await response.json())["error"]["code"] == "authentication_failed"
        async with session.get(f"http://{app.http_address}/metrics") as response:
            assert response.status == 200


async def test_a_model_the_key_may_not_use_is_403(keyed: tuple[Application, FakeOpenAI, dict[str, str]]) -> None:
    app, fake, keys = keyed
    async with openai.AsyncOpenAI(api_key=keys["bob"], base_url=f"http://{app.http_address}/v1", max_retries=0) as bob:
        with pytest.raises(openai.PermissionDeniedError) as raised:
            await bob.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 403 and raised.value.code == "permission_denied" and raised.value.type == "permission_error"
    assert fake.generation_requests == []


async def test_a_key_sees_only_the_models_it_may_use_on_both_transports(keyed: tuple[Application, FakeOpenAI, dict[str, str]]) -> None:
    """carol's key lists local-model: GET /v1/models shows her that one (and "auto"), as gRPC
    ListModels does; GET /v1/models/<another> is the 404 of a model that is not there."""
    import grpc

    from llm_manager.v1 import llm_manager_service_pb2 as api, llm_manager_service_pb2_grpc

    app, _, keys = keyed
    base_url = f"http://{app.http_address}/v1"
    assert {OPENAI_MODEL, "local-model"} <= set(app.registry.models)
    channel = grpc.aio.insecure_channel(app.address)
    try:
        stub = llm_manager_service_pb2_grpc.LLMManagerServiceStub(channel)
        seen: dict[str, tuple[set[str], set[str]]] = {}
        for name in ("alice", "carol"):
            async with openai.AsyncOpenAI(api_key=keys[name], base_url=base_url, max_retries=0) as sdk:
                over_http = {m.id async for m in sdk.models.list()}
            listed = await stub.ListModels(api.ListModelsRequest(page_size=1000), metadata=(("authorization", f"Bearer {keys[name]}"),), timeout=10)
            seen[name] = over_http, {m.name for m in listed.models}
    finally:
        await channel.close()
    assert seen["carol"] == ({"auto", "local-model"}, {"local-model"})
    assert seen["alice"][0] == {"auto", *app.registry.models} and seen["alice"][1] == set(app.registry.models)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base_url}/models/{OPENAI_MODEL}", headers={"x-api-key": keys["carol"]}) as response:
            assert response.status == 404 and (await response.json())["error"]["code"] == "model_not_found"
        async with session.get(f"{base_url}/models/local-model", headers={"x-api-key": keys["carol"]}) as response:
            assert response.status == 200 and (await response.json())["id"] == "local-model"
        async with session.get(f"{base_url}/models/{OPENAI_MODEL}", headers={"x-api-key": keys["alice"]}) as response:
            assert response.status == 200
