"""End to end through the real gRPC server: GPT and Claude configured against the fakes
(``OPENAI_BASE_URL``, ``CLAUDE_BASE_URL``), no local model, called through the generated
stubs with the model pinned; usage and cost arrive intact and upstream failures arrive as
the contract's statuses with ``ErrorInfo``/``RetryInfo``, never carrying the key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api

from ..conftest import StartApp, Stubs
from ..fakes import FakeAnthropic, FakeOpenAI, RetryHint, TokenCounts
from .conftest import ANTHROPIC_KEY, OPENAI_KEY

CALL_TIMEOUT_S = 10
MODELS = ["gpt-4o-mini", "claude-sonnet-4-5"]
PROVIDER_OF = {"gpt-4o-mini": common_pb2.PROVIDER_OPENAI, "claude-sonnet-4-5": common_pb2.PROVIDER_ANTHROPIC}

# Dollars per million tokens: gpt-4o-mini $0.15 input, $0.075 cached, $0.60 output;
# claude-sonnet-4-5 $3 input, $0.30 cache read, $15 output.
PLAIN_COUNTS = TokenCounts(prompt=1_200, completion=300, cached=1_000)
PLAIN_COST = {
    "gpt-4o-mini": (200 * 0.15 + 1_000 * 0.075 + 300 * 0.60) / 1e6,
    "claude-sonnet-4-5": (200 * 3.00 + 1_000 * 0.30 + 300 * 15.00) / 1e6,
}
STREAM_COUNTS = TokenCounts(prompt=800, completion=12)
STREAM_COST = {"gpt-4o-mini": (800 * 0.15 + 12 * 0.60) / 1e6, "claude-sonnet-4-5": (800 * 3.00 + 12 * 15.00) / 1e6}


@dataclass
class Cloud:
    openai: FakeOpenAI
    anthropic: FakeAnthropic
    env: dict[str, str]

    def fake_for(self, model: str) -> FakeOpenAI | FakeAnthropic:
        return self.openai if model.startswith("gpt-") else self.anthropic


@pytest.fixture
async def cloud(unused_loopback_url: str) -> AsyncIterator[Cloud]:
    openai_fake = await FakeOpenAI(api_key=OPENAI_KEY, echo_key_in_errors=True).start()
    anthropic_fake = await FakeAnthropic(api_key=ANTHROPIC_KEY, echo_key_in_errors=True).start()
    env = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": f"{openai_fake.url}/v1",
        "CLAUDE_API_KEY": ANTHROPIC_KEY,
        "CLAUDE_BASE_URL": anthropic_fake.url,
        # A local endpoint nothing listens on: no in-process model is loaded, and calls
        # reach the cloud because each test pins its model.
        "LM_STUDIO_ENDPOINT": unused_loopback_url,
        "LLM_CACHE_ENABLED": "false",
        "LLM_MAX_RETRIES": "0",
    }
    yield Cloud(openai_fake, anthropic_fake, env)
    await openai_fake.stop()
    await anthropic_fake.stop()


def request(model: str, prompt: str = "What is the capital of France?") -> api.GenerateRequest:
    return api.GenerateRequest(
        prompt=prompt,
        system="Answer in one sentence.",
        preferences=common_pb2.GenerationPreferences(model=model, max_tokens=64),
        cache_control=common_pb2.CacheControl(no_cache=True, no_store=True),
    )


def stream_request(model: str) -> api.StreamGenerateRequest:
    plain = request(model)
    return api.StreamGenerateRequest(
        prompt=plain.prompt, system=plain.system, preferences=plain.preferences, cache_control=plain.cache_control
    )


@dataclass
class Failure:
    code: grpc.StatusCode
    message: str
    info: error_details_pb2.ErrorInfo
    retry_delay_s: float | None
    raw: bytes  # everything the caller received, for the leak check


def failure(error: grpc.aio.AioRpcError) -> Failure:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "rich error details are attached"
    info = error_details_pb2.ErrorInfo()
    retry: float | None = None
    for packed in status.details:
        retry_info = error_details_pb2.RetryInfo()
        if packed.Unpack(retry_info):
            retry = retry_info.retry_delay.seconds + retry_info.retry_delay.nanos / 1e9
        else:
            packed.Unpack(info)
    raw = status.SerializeToString() + repr(error.trailing_metadata()).encode() + (error.details() or "").encode()
    return Failure(error.code(), error.details() or "", info, retry, raw)


@pytest.mark.parametrize("model", MODELS)
async def test_generate_through_the_cloud_with_usage_and_cost(
    cloud: Cloud, start_app: StartApp, connect: Callable[..., Stubs], model: str
) -> None:
    cloud.fake_for(model).reply_text("Paris is the capital of France.", PLAIN_COUNTS)
    stubs = connect(await start_app(**cloud.env))

    reply = await stubs.llm.Generate(request(model), timeout=CALL_TIMEOUT_S)

    assert reply.text == "Paris is the capital of France."
    assert reply.model.startswith(model)
    usage = reply.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.cached_prompt_tokens) == (1_200, 300, 1_500, 1_000)
    assert usage.cost_usd == pytest.approx(PLAIN_COST[model])
    assert reply.finish_reason == common_pb2.FINISH_REASON_STOP
    assert reply.metadata.provider == PROVIDER_OF[model]
    assert list(reply.metadata.model_chain) == [model]
    sent = cloud.fake_for(model).generation_requests[-1].body
    assert sent["model"] == model and sent["max_tokens"] == 64


@pytest.mark.parametrize("model", MODELS)
async def test_stream_generate_through_the_cloud(
    cloud: Cloud, start_app: StartApp, connect: Callable[..., Stubs], model: str
) -> None:
    cloud.fake_for(model).stream_text(["Paris", " is the", " capital ", "— très bien 🚀"], STREAM_COUNTS, split_utf8=True)
    stubs = connect(await start_app(**cloud.env))

    messages = [message async for message in stubs.llm.StreamGenerate(stream_request(model), timeout=CALL_TIMEOUT_S)]

    texts = [m.text for m in messages if m.text]
    assert texts == ["Paris", " is the", " capital ", "— très bien 🚀"]
    final = messages[-1]
    assert (final.usage.prompt_tokens, final.usage.completion_tokens, final.usage.total_tokens) == (800, 12, 812)
    assert final.usage.cost_usd == pytest.approx(STREAM_COST[model])
    assert final.finish_reason == common_pb2.FINISH_REASON_STOP
    assert cloud.fake_for(model).generation_requests[-1].body["stream"] is True


@pytest.mark.parametrize("model", MODELS)
async def test_upstream_429_is_resource_exhausted_with_retry_info(
    cloud: Cloud, start_app: StartApp, connect: Callable[..., Stubs], model: str
) -> None:
    cloud.fake_for(model).rate_limit(2.5, RetryHint.RETRY_AFTER_MS)
    stubs = connect(await start_app(**cloud.env))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Generate(request(model), timeout=CALL_TIMEOUT_S)

    details = failure(raised.value)
    assert details.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (details.info.reason, details.info.domain) == ("RATE_LIMIT_EXCEEDED", "llm-manager")
    assert details.info.metadata["model"] == model
    assert details.retry_delay_s == pytest.approx(2.5)


@pytest.mark.parametrize("model", MODELS)
async def test_rejected_key_is_failed_precondition_and_never_shown(
    cloud: Cloud, start_app: StartApp, connect: Callable[..., Stubs], model: str
) -> None:
    wrong_key = "sk-wrongTESTONLY-Zq81LmX0vB7nC4"
    env = {**cloud.env, "OPENAI_API_KEY": wrong_key, "CLAUDE_API_KEY": wrong_key}
    stubs = connect(await start_app(**env))

    with pytest.raises(grpc.aio.AioRpcError) as plain:
        await stubs.llm.Generate(request(model), timeout=CALL_TIMEOUT_S)
    with pytest.raises(grpc.aio.AioRpcError) as streamed:
        [m async for m in stubs.llm.StreamGenerate(stream_request(model), timeout=CALL_TIMEOUT_S)]

    for error in (plain.value, streamed.value):
        details = failure(error)
        assert details.code is grpc.StatusCode.FAILED_PRECONDITION
        assert details.info.reason == "AUTHENTICATION_FAILED"
        assert details.info.metadata["model"] == model
        assert wrong_key.encode() not in details.raw
        assert OPENAI_KEY.encode() not in details.raw and ANTHROPIC_KEY.encode() not in details.raw


@pytest.mark.parametrize("model", MODELS)
async def test_context_too_large_is_invalid_argument_with_counts(
    cloud: Cloud, start_app: StartApp, connect: Callable[..., Stubs], model: str
) -> None:
    cloud.fake_for(model).context_too_large()
    stubs = connect(await start_app(**cloud.env))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Generate(request(model), timeout=CALL_TIMEOUT_S)

    details = failure(raised.value)
    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.info.reason == "CONTEXT_TOO_LARGE"
    assert {"prompt_tokens", "context_window"} <= set(details.info.metadata)


@pytest.mark.parametrize("model", MODELS)
async def test_error_after_streamed_text_ends_the_call_with_an_error(
    cloud: Cloud, start_app: StartApp, connect: Callable[..., Stubs], model: str
) -> None:
    cloud.fake_for(model).error_mid_stream(["Once", " upon"])
    stubs = connect(await start_app(**cloud.env))

    received: list[str] = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for message in stubs.llm.StreamGenerate(stream_request(model), timeout=CALL_TIMEOUT_S):
            received.append(message.text)

    assert "".join(received) == "Once upon"
    details = failure(raised.value)
    assert details.code is grpc.StatusCode.UNAVAILABLE
    assert details.info.reason == "MODEL_UNAVAILABLE"
