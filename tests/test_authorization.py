"""What a key may do (LLM_API_KEYS_FILE ``models``), whose conversations it sees and whose
cached answers it gets, through the real gRPC server; the fault server plays the models."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from llm_manager.client import LLMManagerClient, error_details
from llm_manager.v1 import common_pb2, conversation_service_pb2 as conv, llm_manager_service_pb2 as api
from llm_manager_server.app import Application

from .conftest import StartApp, Stubs
from .support.fault_server import FaultServer
from .support.keys import write_keys_file
from .support.tools import REPO, run, tool

CALLERS: dict[str, dict[str, Any]] = {
    "alice": {},
    "bob": {},
    "alpha-only": {"models": ["alpha"]},
    "gamma-only": {"models": ["gamma"]},
    "also-alpha-only": {"models": ["alpha"]},
}


@pytest.fixture
async def fake() -> AsyncIterator[FaultServer]:
    server = await FaultServer().start()
    yield server
    await server.stop()


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory" if request.param == "memory" else f"sqlite:{tmp_path / 'conversations.db'}"


async def _app(start_app: StartApp, fake: FaultServer, tmp_path: Path, **extra: str) -> tuple[Application, dict[str, str]]:
    keys = write_keys_file(tmp_path / "keys.yaml", CALLERS)
    app = await start_app(
        LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="alpha", LLM_GENERAL_MODEL_2="beta", LLM_MAX_RETRIES="0",
        LLM_HEALTH_INTERVAL_SECONDS="600", LLM_API_KEYS_FILE=str(tmp_path / "keys.yaml"), **extra,
    )
    return app, keys


def _as(keys: dict[str, str], caller: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {keys[caller]}"),)


def _generate(model: str = "", prompt: str = "hi", **cache: bool) -> api.GenerateRequest:
    return api.GenerateRequest(prompt=prompt, preferences=common_pb2.GenerationPreferences(model=model), cache_control=common_pb2.CacheControl(**cache))


async def _failure(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


# --- models ---------------------------------------------------------------------------------


async def test_a_key_uses_only_its_models_pinned_or_routed(start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer, tmp_path: Path) -> None:
    app, keys = await _app(start_app, fake, tmp_path)
    stubs = connect(app)
    # Pinned: a model outside the list is PERMISSION_DENIED before anything is called.
    for model in ("beta", "gpt-4o-mini", "gamma"):
        error = await _failure(stubs.llm.Generate(_generate(model, no_cache=True), metadata=_as(keys, "alpha-only"), timeout=10))
        details = error_details(error)
        assert details.code == grpc.StatusCode.PERMISSION_DENIED and details.reason == "PERMISSION_DENIED", details
        assert details.metadata["model"] == model and keys["alpha-only"] not in details.message
    assert fake.requests == []
    pinned = await stubs.llm.Generate(_generate("alpha", no_cache=True), metadata=_as(keys, "alpha-only"), timeout=10)
    assert pinned.model == "alpha"
    # Routed: only allowed models are candidates; beta (the secondary) is neither tried nor named.
    fake.script("alpha", "status:500")
    error = await _failure(stubs.llm.Generate(_generate(no_cache=True), metadata=_as(keys, "alpha-only"), timeout=10))
    assert error.code() == grpc.StatusCode.UNAVAILABLE and "beta" not in (error.details() or "")
    assert fake.calls("beta") == 0
    fake.script("alpha", "ok")
    routed = await stubs.llm.Generate(_generate(no_cache=True), metadata=_as(keys, "alpha-only"), timeout=10)
    assert routed.model == "alpha" and list(routed.metadata.model_chain) == ["alpha"] and "beta" not in routed.metadata.routing_reason
    # Streams too.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in stubs.llm.StreamGenerate(api.StreamGenerateRequest(prompt="hi", preferences=common_pb2.GenerationPreferences(model="beta")), metadata=_as(keys, "alpha-only"), timeout=10):
            pass
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A key none of whose models serves the task: PERMISSION_DENIED naming no other model.
    error = await _failure(stubs.llm.Generate(_generate(no_cache=True), metadata=_as(keys, "gamma-only"), timeout=10))
    details = error_details(error)
    assert details.code == grpc.StatusCode.PERMISSION_DENIED and details.reason == "PERMISSION_DENIED", details
    assert "alpha" not in details.message and "beta" not in details.message and "model" not in details.metadata
    # ... but it may pin its model (served by the local endpoint, by name).
    assert (await stubs.llm.Generate(_generate("gamma", no_cache=True), metadata=_as(keys, "gamma-only"), timeout=10)).model == "gamma"
    # An unrestricted key routes over the whole chain.
    fake.script("alpha", "status:500")
    assert (await stubs.llm.Generate(_generate(no_cache=True), metadata=_as(keys, "alice"), timeout=10)).model == "beta"


async def test_list_models_shows_a_key_only_its_models(start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer, tmp_path: Path) -> None:
    app, keys = await _app(start_app, fake, tmp_path)
    stubs = connect(app)
    names = lambda reply: sorted(m.name for m in reply.models)  # noqa: E731
    assert names(await stubs.llm.ListModels(api.ListModelsRequest(), metadata=_as(keys, "alice"), timeout=10)) == ["alpha", "beta"]
    assert names(await stubs.llm.ListModels(api.ListModelsRequest(), metadata=_as(keys, "alpha-only"), timeout=10)) == ["alpha"]
    assert names(await stubs.llm.ListModels(api.ListModelsRequest(), metadata=_as(keys, "gamma-only"), timeout=10)) == []


# --- conversations ----------------------------------------------------------------------------


async def test_a_conversation_is_its_creators_alone(store: str, start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer, tmp_path: Path) -> None:
    app, keys = await _app(start_app, fake, tmp_path, LLM_CONVERSATION_STORE=store)
    stubs = connect(app)
    alice, bob = _as(keys, "alice"), _as(keys, "bob")
    created = (await stubs.conversations.CreateConversation(conv.CreateConversationRequest(conversation=conv.Conversation(system="secret plans")), metadata=alice, timeout=10)).conversation
    await stubs.conversations.SendMessage(conv.SendMessageRequest(conversation_id=created.id, message="hello"), metadata=alice, timeout=10)
    calls_before = len(fake.requests)
    for call in (
        stubs.conversations.GetConversation(conv.GetConversationRequest(id=created.id), metadata=bob, timeout=10),
        stubs.conversations.SendMessage(conv.SendMessageRequest(conversation_id=created.id, message="mine now"), metadata=bob, timeout=10),
        stubs.conversations.DeleteConversation(conv.DeleteConversationRequest(id=created.id), metadata=bob, timeout=10),
    ):
        details = error_details(await _failure(call))
        assert details.code == grpc.StatusCode.NOT_FOUND and details.reason == "CONVERSATION_NOT_FOUND", details
        assert "secret plans" not in details.message
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in stubs.conversations.StreamSendMessage(conv.StreamSendMessageRequest(conversation_id=created.id, message="x"), metadata=bob, timeout=10):
            pass
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    # The same answer as for an id that never existed (ids cannot be probed).
    never = error_details(await _failure(stubs.conversations.GetConversation(conv.GetConversationRequest(id="00000000-0000-4000-8000-000000000000"), metadata=bob, timeout=10)))
    assert never.code == grpc.StatusCode.NOT_FOUND and never.reason == "CONVERSATION_NOT_FOUND"
    assert len(fake.requests) == calls_before  # bob's turns never reached a model
    assert (await stubs.conversations.ListConversations(conv.ListConversationsRequest(), metadata=bob, timeout=10)).conversations == []
    # Alice's conversation is untouched and still hers.
    mine = (await stubs.conversations.GetConversation(conv.GetConversationRequest(id=created.id), metadata=alice, timeout=10)).conversation
    assert [m.content for m in mine.messages][0] == "hello" and len(mine.messages) == 2
    listed = await stubs.conversations.ListConversations(conv.ListConversationsRequest(), metadata=alice, timeout=10)
    assert [c.id for c in listed.conversations] == [created.id]
    await stubs.conversations.DeleteConversation(conv.DeleteConversationRequest(id=created.id), metadata=alice, timeout=10)


# --- the response cache ----------------------------------------------------------------------


async def test_the_cache_is_scoped_by_caller(start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer, tmp_path: Path) -> None:
    app, keys = await _app(start_app, fake, tmp_path)
    stubs = connect(app)
    first = await stubs.llm.Generate(_generate("alpha"), metadata=_as(keys, "alice"), timeout=10)
    again = await stubs.llm.Generate(_generate("alpha"), metadata=_as(keys, "alice"), timeout=10)
    other = await stubs.llm.Generate(_generate("alpha"), metadata=_as(keys, "bob"), timeout=10)
    streamed = [m async for m in stubs.llm.StreamGenerate(api.StreamGenerateRequest(prompt="hi", preferences=common_pb2.GenerationPreferences(model="alpha")), metadata=_as(keys, "alpha-only"), timeout=10)]
    assert not first.metadata.cached and again.metadata.cached
    assert not other.metadata.cached and not streamed[-1].metadata.cached
    assert fake.calls("alpha") == 3


async def test_an_operator_may_share_the_cache_between_callers_with_the_same_models(
    start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer, tmp_path: Path
) -> None:
    app, keys = await _app(start_app, fake, tmp_path, LLM_CACHE_SHARED_ACROSS_CALLERS="true")
    stubs = connect(app)
    assert not (await stubs.llm.Generate(_generate("alpha"), metadata=_as(keys, "alice"), timeout=10)).metadata.cached
    assert (await stubs.llm.Generate(_generate("alpha"), metadata=_as(keys, "bob"), timeout=10)).metadata.cached
    # A key limited to some models shares only with keys limited to the same ones.
    assert not (await stubs.llm.Generate(_generate("alpha"), metadata=_as(keys, "alpha-only"), timeout=10)).metadata.cached
    assert (await stubs.llm.Generate(_generate("alpha"), metadata=_as(keys, "also-alpha-only"), timeout=10)).metadata.cached
    assert fake.calls("alpha") == 2


# --- clients ----------------------------------------------------------------------------------


async def test_the_python_client_sends_its_api_key(start_app: StartApp, fake: FaultServer, tmp_path: Path) -> None:
    app, keys = await _app(start_app, fake, tmp_path)
    async with LLMManagerClient(app.address, api_key=keys["alpha-only"]) as client:
        reply = await client.generate("hi", model="alpha")
        assert reply.model == "alpha"
        assert [m.name for m in await client.list_models()] == ["alpha"]
        conversation = await client.create_conversation(system="s")
        assert [c.id async for c in client.list_conversations()] == [conversation.id]
    async with LLMManagerClient(app.address) as anonymous:
        details = error_details(await _failure(anonymous.generate("hi", model="alpha")))
        assert details.code == grpc.StatusCode.UNAUTHENTICATED and details.reason == "AUTHENTICATION_FAILED"
    async with LLMManagerClient(app.address, api_key=keys["alice"]) as other:
        assert [c async for c in other.list_conversations()] == []
    with pytest.raises(ValueError, match="api_key"):
        LLMManagerClient(app.address, api_key="two words")


async def test_the_go_peer_calls_with_an_api_key(start_app: StartApp, fake: FaultServer, tmp_path: Path) -> None:
    app, keys = await _app(start_app, fake, tmp_path)
    go = tool("go")
    env = {**os.environ, "GOFLAGS": "-mod=readonly"}
    env.pop("LLM_API_KEY", None)
    peer = str(tmp_path / "example-peer")
    code, output = await run(go, "build", "-o", peer, "./cmd/example-peer", cwd=REPO / "clients" / "go", env=env, timeout_s=300)
    assert code == 0, output
    code, output = await run(peer, "-addr", app.address, "-trace=false", "-prompt", "hi", env={**env, "LLM_API_KEY": keys["alpha-only"]}, timeout_s=60)
    assert code == 0 and "alpha" in output and "stream:" in output and keys["alpha-only"] not in output, output
    assert "beta" not in output.split("models:", 1)[1].split("\n\n", 1)[0]  # only its models listed
    code, output = await run(peer, "-addr", app.address, "-api-key", keys["alice"], "-prompt", "hi", env=env, timeout_s=60)
    assert code == 0 and "trace_id:" in output, output
    code, output = await run(peer, "-addr", app.address, "-trace=false", "-prompt", "hi", env=env, timeout_s=60)
    assert code == 1 and "Unauthenticated" in output and "AUTHENTICATION_FAILED" in output, output
