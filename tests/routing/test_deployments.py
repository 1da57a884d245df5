"""Deployments: several named endpoints serving one model, balanced by weighted least
outstanding requests, each with its own health and circuit breaker; a failing deployment's call
moves to another deployment of the model before the chain moves on. Against scriptable loopback
servers, and two real llama.cpp servers (SmolLM2) of which one is killed mid-run."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api
from llm_manager_server.config import ConfigError, load_settings

from ..conftest import StartApp, Stubs
from ..support.fault_server import FaultServer
from ..support.processes import LlamaServer, free_port

MODEL = "shared-model"


@pytest.fixture
async def boxes() -> AsyncIterator[tuple[FaultServer, FaultServer]]:
    a, b = await FaultServer().start(), await FaultServer().start()
    yield a, b
    await a.stop()
    await b.stop()


def config(tmp_path: Path, *deployments: dict[str, object]) -> str:
    path = tmp_path / "llm.json"
    path.write_text(json.dumps({"deployments": list(deployments)}))
    return str(path)


def box(name: str, url: str, weight: float = 1, models: tuple[str, ...] = (MODEL,)) -> dict[str, object]:
    return {"name": name, "provider": "openai_compatible", "base_url": url, "models": list(models), "weight": weight}


def pinned(prompt: str = "hi") -> api.GenerateRequest:
    return api.GenerateRequest(
        prompt=prompt, preferences=common_pb2.GenerationPreferences(model=MODEL), cache_control=common_pb2.CacheControl(no_cache=True)
    )


def dead_local() -> dict[str, str]:
    """A default local endpoint nothing listens on: no in-process model is loaded."""
    return {"LM_STUDIO_ENDPOINT": f"http://127.0.0.1:{free_port()}/v1", "LLM_HEALTH_INTERVAL_SECONDS": "600"}


async def test_concurrent_calls_are_balanced_by_weight(
    start_app: StartApp, connect: Callable[..., Stubs], boxes: tuple[FaultServer, FaultServer], tmp_path: Path
) -> None:
    a, b = boxes
    for server in boxes:
        server.script(MODEL, "slow:0.4")
    stubs = connect(await start_app(LLM_CONFIG_FILE=config(tmp_path, box("box-a", a.url, 3), box("box-b", b.url, 1)), **dead_local()))
    replies = await asyncio.gather(*(stubs.llm.Generate(pinned(f"q{i}"), timeout=10) for i in range(8)))
    # Weighted least outstanding requests: box-a takes three calls in flight for each of box-b's.
    assert Counter(r.metadata.deployment for r in replies) == {"box-a": 6, "box-b": 2}
    assert (a.calls(MODEL), b.calls(MODEL)) == (6, 2)
    listed = (await stubs.llm.ListModels(api.ListModelsRequest(), timeout=10)).models
    shared = next(m for m in listed if m.name == MODEL)
    assert [(d.name, d.weight) for d in shared.deployments] == [("box-a", 3.0), ("box-b", 1.0)]
    assert all(d.in_flight == 0 for d in shared.deployments)


async def test_a_failing_deployment_moves_the_call_to_another_before_the_next_model(
    start_app: StartApp, connect: Callable[..., Stubs], boxes: tuple[FaultServer, FaultServer], tmp_path: Path
) -> None:
    a, b = boxes
    a.script(MODEL, "status:500")
    stubs = connect(await start_app(
        LLM_CONFIG_FILE=config(tmp_path, box("box-a", a.url, 100), box("box-b", b.url, 1)), LLM_MAX_RETRIES="0", **dead_local()
    ))
    reply = await stubs.llm.Generate(pinned(), timeout=10)
    assert reply.metadata.deployment == "box-b" and list(reply.metadata.model_chain) == [MODEL, MODEL]
    assert reply.metadata.retry_count == 1 and not reply.metadata.fallback_used
    assert (a.calls(MODEL), b.calls(MODEL)) == (1, 1)


async def test_each_deployment_has_its_own_health_and_the_model_serves_while_one_does(
    start_app: StartApp, connect: Callable[..., Stubs], boxes: tuple[FaultServer, FaultServer], tmp_path: Path
) -> None:
    _, b = boxes
    dead = f"http://127.0.0.1:{free_port()}/v1"
    stubs = connect(await start_app(LLM_CONFIG_FILE=config(tmp_path, box("box-dead", dead, 100), box("box-b", b.url, 1)), **dead_local()))
    shared = next(m for m in (await stubs.llm.ListModels(api.ListModelsRequest(), timeout=10)).models if m.name == MODEL)
    states = {d.name: d.health_state for d in shared.deployments}
    assert states == {"box-dead": api.HEALTH_STATE_UNHEALTHY, "box-b": api.HEALTH_STATE_HEALTHY}
    assert shared.health_state == api.HEALTH_STATE_HEALTHY and "box-dead" in shared.health_detail
    health = await health_pb2_grpc.HealthStub(stubs.channel).Check(health_pb2.HealthCheckRequest(service=f"model/{MODEL}"), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    # The unhealthy deployment is not even tried, however heavy its weight.
    for _ in range(3):
        assert (await stubs.llm.Generate(pinned(), timeout=10)).metadata.deployment == "box-b"
    # Unpinned general requests reach the deployments' model too (in the local place of the chain).
    reply = await stubs.llm.Generate(api.GenerateRequest(prompt="hi"), timeout=10)
    assert reply.model == MODEL and reply.metadata.deployment == "box-b"


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"name": "x", "provider": "nope", "base_url": "http://127.0.0.1:1/v1", "models": ["m"]}, "provider"),
        ({"name": "local", "provider": "openai_compatible", "base_url": "http://127.0.0.1:1/v1", "models": ["m"]}, "name"),
        ({"name": "x", "provider": "openai_compatible", "base_url": "http://u:p4ssw0rd-x@127.0.0.1:1/v1", "models": ["m"]}, "base_url"),
        ({"name": "x", "provider": "openai_compatible", "base_url": "http://127.0.0.1:1/v1", "models": []}, "models"),
        ({"name": "x", "provider": "openai", "base_url": "http://127.0.0.1:1/v1", "models": ["gpt-4o"]}, "api_key_env"),
        ({"name": "x", "provider": "openai", "base_url": "http://127.0.0.1:1/v1", "models": ["gpt-4o"], "api_key_env": "UNSET_VAR_X"}, "api_key_env"),
        ({"name": "x", "provider": "openai_compatible", "base_url": "http://127.0.0.1:1/v1", "models": ["m"], "weight": 0}, "weight"),
    ],
)
def test_bad_deployments_are_one_line_configuration_errors(tmp_path: Path, entry: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"LLM_CONFIG_FILE": config(tmp_path, entry)})
    assert raised.value.variable.startswith("LLM_CONFIG_FILE deployments[0]") and field in raised.value.variable
    assert "\n" not in str(raised.value) and "p4ssw0rd" not in str(raised.value)


def test_a_deployment_key_comes_from_its_variable_and_is_never_shown(tmp_path: Path) -> None:
    path = config(tmp_path, {"name": "azure", "provider": "openai", "base_url": "http://127.0.0.1:1/v1", "models": ["gpt-4o"], "api_key_env": "AZURE_KEY"})
    settings = load_settings({"LLM_CONFIG_FILE": path, "AZURE_KEY": "azure-secret-value-123"})
    (deployment,) = settings.deployments
    assert deployment.api_key is not None and deployment.api_key.reveal() == "azure-secret-value-123"
    assert "azure-secret-value-123" not in repr(settings)


async def test_two_llama_servers_share_load_and_killing_one_loses_no_unary_call(
    start_app: StartApp, connect: Callable[..., Stubs], tmp_path: Path
) -> None:
    servers = [LlamaServer(threads=1, parallel=2).start(), LlamaServer(threads=1, parallel=2).start()]
    try:
        path = config(tmp_path, box("llama-a", f"{servers[0].url}/v1", 1, ("smollm2",)), box("llama-b", f"{servers[1].url}/v1", 1, ("smollm2",)))
        stubs = connect(await start_app(LLM_CONFIG_FILE=path, LLM_MAX_RETRIES="1", **dead_local()))

        def request(i: int) -> api.GenerateRequest:
            return api.GenerateRequest(
                prompt=f"Say the number {i}.", preferences=common_pb2.GenerationPreferences(model="smollm2", max_tokens=8, temperature=0),
                cache_control=common_pb2.CacheControl(no_cache=True),
            )

        first = await asyncio.gather(*(stubs.llm.Generate(request(i), timeout=60) for i in range(8)))
        assert set(Counter(r.metadata.deployment for r in first)) == {"llama-a", "llama-b"}, "both servers share the load"
        # Kill llama-a while calls are in flight: every unary call still gets an answer.
        calls = [asyncio.ensure_future(stubs.llm.Generate(request(i), timeout=60)) for i in range(8, 20)]
        await asyncio.sleep(0.3)
        servers[0].kill()
        replies = await asyncio.gather(*calls, return_exceptions=True)
        failed = [r for r in replies if isinstance(r, BaseException)]
        assert failed == [], [str(f) for f in failed]
        moved = [r for r in replies if not isinstance(r, BaseException) and r.metadata.model_chain and len(r.metadata.model_chain) > 1]
        assert all(r.metadata.deployment == "llama-b" for r in moved)
        after = await stubs.llm.Generate(request(99), timeout=60)
        assert after.metadata.deployment == "llama-b"
    finally:
        for server in servers:
            server.stop()


async def test_a_stream_that_started_on_a_killed_server_ends_with_an_error(start_app: StartApp, connect: Callable[..., Stubs], tmp_path: Path) -> None:
    server = LlamaServer(threads=1, parallel=1).start()
    try:
        path = config(tmp_path, box("llama-a", f"{server.url}/v1", 1, ("smollm2",)))
        stubs = connect(await start_app(LLM_CONFIG_FILE=path, **dead_local()))
        stream = stubs.llm.StreamGenerate(api.StreamGenerateRequest(
            prompt="Count from 1 to 300.", preferences=common_pb2.GenerationPreferences(model="smollm2", max_tokens=600, temperature=0, seed=1),
        ), timeout=60)
        assert (await stream.read()).text  # it has started
        server.kill()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            while await stream.read() is not grpc.aio.EOF:
                pass
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()


async def test_a_local_endpoint_without_model_names_is_asked_for_its_real_models(
    start_app: StartApp, connect: Callable[..., Stubs], boxes: tuple[FaultServer, FaultServer]
) -> None:
    """LM_STUDIO_ENDPOINT alone: the model name sent upstream is what the endpoint lists
    (Ollama and LM Studio refuse a placeholder), never "local-model"."""
    a, _ = boxes
    a.script("llama3.1:8b", "ok")
    a.script("qwen2.5-coder:7b", "ok")
    stubs = connect(await start_app(LM_STUDIO_ENDPOINT=a.url, LLM_HEALTH_INTERVAL_SECONDS="600"))
    names = [m.name for m in (await stubs.llm.ListModels(api.ListModelsRequest(), timeout=10)).models]
    assert names == ["llama3.1:8b", "qwen2.5-coder:7b"]
    reply = await stubs.llm.Generate(api.GenerateRequest(prompt="hi"), timeout=10)
    assert reply.model == "llama3.1:8b" and a.requests[-1].model == "llama3.1:8b"
    pinned_other = await stubs.llm.Generate(api.GenerateRequest(prompt="hi", preferences=common_pb2.GenerationPreferences(model="qwen2.5-coder:7b")), timeout=10)
    assert a.requests[-1].model == "qwen2.5-coder:7b" and pinned_other.model == "qwen2.5-coder:7b"
