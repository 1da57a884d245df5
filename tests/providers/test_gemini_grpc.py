"""Gemini end to end through the real gRPC server and the generated stubs, against the
wire-faithful fake: text with usage and cost, a stream, tool calls, structured output, and a
rate limit as the contract's status with RetryInfo."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from llm_manager.client import error_details
from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api

from ..conftest import StartApp, Stubs
from ..fakes import TokenCounts
from ..fakes.gemini_fake import FakeGemini

KEY = "AIzaSyTESTONLY-gemini-key-4f9a2c7e1b8d"
MODEL = "gemini-2.5-flash"


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(value)
    return result


@pytest.fixture
async def gemini() -> AsyncIterator[FakeGemini]:
    fake = await FakeGemini(api_key=KEY).start()
    yield fake
    await fake.stop()


@pytest.fixture
async def stubs(start_app: StartApp, connect: Callable[..., Stubs], gemini: FakeGemini, unused_loopback_url: str) -> Stubs:
    return connect(await start_app(
        GEMINI_API_KEY=KEY, GEMINI_BASE_URL=gemini.url, LM_STUDIO_ENDPOINT=unused_loopback_url, LLM_CACHE_ENABLED="false",
        LLM_MAX_RETRIES="0", LLM_HEALTH_INTERVAL_SECONDS="600",
    ))


def pinned(**fields: Any) -> api.GenerateRequest:
    preferences = fields.pop("preferences", common_pb2.GenerationPreferences(model=MODEL))
    return api.GenerateRequest(prompt=fields.pop("prompt", "What is the capital of France?"), preferences=preferences, **fields)


async def test_text_usage_cost_and_a_stream(stubs: Stubs, gemini: FakeGemini) -> None:
    gemini.reply_text("Paris.", TokenCounts(prompt=1_000, completion=100, cached=400))
    reply = await stubs.llm.Generate(pinned(), timeout=10)
    assert reply.text == "Paris." and reply.metadata.provider == common_pb2.PROVIDER_GEMINI and reply.metadata.deployment == "gemini"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.cached_prompt_tokens) == (1_000, 100, 400)
    # gemini-2.5-flash: $0.30 input, $0.075 cached input, $2.50 output per million tokens.
    assert reply.usage.cost_usd == pytest.approx((600 * 0.30 + 400 * 0.075 + 100 * 2.50) / 1e6)
    sent = gemini.generation_requests[-1]
    assert sent.model == MODEL and sent.headers.get("x-goog-api-key") == KEY

    gemini.stream_text(["The capital ", "is ", "Paris."], TokenCounts(prompt=10, completion=5))
    messages = [m async for m in stubs.llm.StreamGenerate(api.StreamGenerateRequest.FromString(pinned().SerializeToString()), timeout=10)]
    assert "".join(m.text for m in messages) == "The capital is Paris." and len(messages) >= 3
    assert messages[-1].usage.completion_tokens == 5 and messages[-1].finish_reason == common_pb2.FINISH_REASON_STOP


async def test_tool_calls_and_structured_output(stubs: Stubs, gemini: FakeGemini) -> None:
    params = {"type": "object", "properties": {"service": {"type": "string"}, "metric": {"type": "string"}, "window": {"type": "string"}}}
    logs = {"type": "object", "properties": {"service": {"type": "string"}, "query": {"type": "string"}, "limit": {"type": "integer"}}}
    tools = [common_pb2.Tool(name="query_metrics", parameters=struct(params)), common_pb2.Tool(name="search_logs", parameters=struct(logs))]
    gemini.reply_function_calls()  # the recorded fixture: two parallel calls
    reply = await stubs.llm.Generate(pinned(tools=tools), timeout=10)
    assert [c.name for c in reply.tool_calls] == ["query_metrics", "search_logs"]
    assert json_format.MessageToDict(reply.tool_calls[0].arguments) == {"service": "checkout", "metric": "latency_p95_ms", "window": "1h"}
    assert reply.finish_reason == common_pb2.FINISH_REASON_TOOL_CALLS
    declared = gemini.generation_requests[-1].body["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in declared] == ["query_metrics", "search_logs"]

    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    gemini.reply_json('{"city": "Paris"}')
    preferences = common_pb2.GenerationPreferences(model=MODEL, response_format=common_pb2.RESPONSE_FORMAT_JSON_SCHEMA, response_schema=struct(schema))
    reply = await stubs.llm.Generate(pinned(preferences=preferences), timeout=10)
    assert json_format.MessageToDict(reply.structured_output) == {"city": "Paris"} and json.loads(reply.text) == {"city": "Paris"}
    config = gemini.generation_requests[-1].body["generationConfig"]
    assert config["responseMimeType"] == "application/json" and config["responseJsonSchema"] == schema


async def test_a_rate_limit_is_resource_exhausted_with_the_providers_delay(stubs: Stubs, gemini: FakeGemini) -> None:
    gemini.rate_limit(retry_after_s=7)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Generate(pinned(), timeout=10)
    details = error_details(raised.value)
    assert (details.code, details.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMIT_EXCEEDED")
    assert details.retry_delay_s == 7 and KEY not in raised.value.details() + repr(details.metadata)


async def test_gemini_models_are_listed_with_their_capabilities(stubs: Stubs) -> None:
    models = {m.name: m for m in (await stubs.llm.ListModels(api.ListModelsRequest(), timeout=10)).models}
    gemini_model = models[MODEL]
    assert gemini_model.provider == common_pb2.PROVIDER_GEMINI and gemini_model.context_window == 1_048_576
    assert {common_pb2.CAPABILITY_TOOLS, common_pb2.CAPABILITY_JSON_SCHEMA} <= set(gemini_model.capabilities)
