"""Tools and structured output through the real gRPC server against the wire-faithful OpenAI
and Anthropic fakes (recorded replies; streams in fragments): what the server sends upstream,
what the caller gets, how invalid model output falls back, and a stream cut after a call."""

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
from ..fakes import Ending, FakeAnthropic, FakeOpenAI
from .conftest import ANTHROPIC_KEY, OPENAI_KEY

GPT, CLAUDE = "gpt-4o-mini", "claude-sonnet-4-5"

QUERY_METRICS = {
    "type": "object",
    "properties": {"service": {"type": "string"}, "metric": {"type": "string"}, "window": {"type": "string", "pattern": "^[0-9]+[mhd]$"}},
    "required": ["service", "metric", "window"],
}
SEARCH_LOGS = {
    "type": "object",
    "properties": {"service": {"type": "string"}, "query": {"type": "string"}, "limit": {"type": "integer", "maximum": 100}},
    "required": ["service", "query"],
}
INCIDENT = {
    "type": "object",
    "properties": {
        "service": {"type": "string"},
        "severity": {"enum": ["low", "medium", "high"]},
        "summary": {"type": "string"},
        "actions": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["service", "severity", "summary", "actions"],
}
# What the recorded fixtures call, in both APIs.
FIXTURE_CALLS = [
    ("query_metrics", {"service": "checkout", "metric": "latency_p95_ms", "window": "1h"}),
    ("search_logs", {"service": "checkout", "query": 'level:error "payment declined"', "limit": 20}),
]


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(value)
    return result


def as_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    converted: dict[str, Any] = json_format.MessageToDict(value)
    return converted


TOOLS = [
    common_pb2.Tool(name="query_metrics", description="Query a service metric.", parameters=struct(QUERY_METRICS)),
    common_pb2.Tool(name="search_logs", description="Search a service's logs.", parameters=struct(SEARCH_LOGS)),
]
NO_CACHE = common_pb2.CacheControl(no_cache=True, no_store=True)


def tool_request(model: str, **fields: Any) -> api.GenerateRequest:
    return api.GenerateRequest(
        prompt="Why is checkout slow?", tools=TOOLS, preferences=common_pb2.GenerationPreferences(model=model, max_tokens=256), cache_control=NO_CACHE, **fields
    )


def streamed(request: api.GenerateRequest) -> api.StreamGenerateRequest:
    return api.StreamGenerateRequest.FromString(request.SerializeToString())  # same fields, same numbers


def calls_of(calls: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(c.name, as_dict(c.arguments)) for c in calls]


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeAnthropic]]:
    openai_fake = await FakeOpenAI(api_key=OPENAI_KEY).start()
    anthropic_fake = await FakeAnthropic(api_key=ANTHROPIC_KEY).start()
    yield openai_fake, anthropic_fake
    await openai_fake.stop()
    await anthropic_fake.stop()


@pytest.fixture
async def stubs(start_app: StartApp, connect: Callable[..., Stubs], fakes: tuple[FakeOpenAI, FakeAnthropic], unused_loopback_url: str) -> Stubs:
    openai_fake, anthropic_fake = fakes
    return connect(await start_app(
        OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=f"{openai_fake.url}/v1", OPENAI_MODEL=GPT,
        CLAUDE_API_KEY=ANTHROPIC_KEY, CLAUDE_BASE_URL=anthropic_fake.url, CLAUDE_MODEL=CLAUDE,
        LM_STUDIO_ENDPOINT=unused_loopback_url, LLM_MAX_RETRIES="0", LLM_HEALTH_INTERVAL_SECONDS="600",
    ))


async def test_openai_parallel_tool_calls_plain_and_streamed(stubs: Stubs, fakes: tuple[FakeOpenAI, FakeAnthropic]) -> None:
    openai_fake, _ = fakes
    openai_fake.reply_tool_calls()
    reply = await stubs.llm.Generate(tool_request(GPT, tool_choice=common_pb2.ToolChoice(mode=common_pb2.TOOL_CHOICE_MODE_REQUIRED)), timeout=10)
    assert calls_of(reply.tool_calls) == FIXTURE_CALLS
    assert [c.id for c in reply.tool_calls] == ["call_Vq3LmT8xRk2NbY7wHs5JdPcF", "call_Gz6KpW1nXe4QvM9tLr2ByAuS"]
    assert reply.finish_reason == common_pb2.FINISH_REASON_TOOL_CALLS
    sent = openai_fake.generation_requests[-1].body
    assert [t["function"]["name"] for t in sent["tools"]] == ["query_metrics", "search_logs"]
    assert sent["tools"][0]["function"]["parameters"] == QUERY_METRICS and sent["tool_choice"] == "required"

    openai_fake.reply_tool_calls()  # the recorded stream: arguments in fragments cut inside strings
    messages = [m async for m in stubs.llm.StreamGenerate(streamed(tool_request(GPT)), timeout=10)]
    with_calls = [m for m in messages if m.tool_calls]
    assert [calls_of(m.tool_calls) for m in with_calls] == [[FIXTURE_CALLS[0]], [FIXTURE_CALLS[1]]], "each call once, complete, as it completed"
    assert messages.index(with_calls[0]) < messages.index(with_calls[1]) < len(messages) - 1
    assert messages[-1].finish_reason == common_pb2.FINISH_REASON_TOOL_CALLS and messages[-1].usage.total_tokens > 0


async def test_openai_forced_tool_and_json_schema_go_upstream_in_openai_terms(stubs: Stubs, fakes: tuple[FakeOpenAI, FakeAnthropic]) -> None:
    openai_fake, _ = fakes
    openai_fake.reply_tool_calls([("call_1", "query_metrics", FIXTURE_CALLS[0][1])])
    await stubs.llm.Generate(tool_request(GPT, tool_choice=common_pb2.ToolChoice(tool_name="query_metrics")), timeout=10)
    assert openai_fake.generation_requests[-1].body["tool_choice"] == {"type": "function", "function": {"name": "query_metrics"}}

    openai_fake.reply_json()
    preferences = common_pb2.GenerationPreferences(model=GPT, response_format=common_pb2.RESPONSE_FORMAT_JSON_SCHEMA, response_schema=struct(INCIDENT))
    reply = await stubs.llm.Generate(api.GenerateRequest(prompt="Summarise the incident.", preferences=preferences, cache_control=NO_CACHE), timeout=10)
    assert as_dict(reply.structured_output)["severity"] == "high" and json.loads(reply.text) == as_dict(reply.structured_output)
    assert openai_fake.generation_requests[-1].body["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": INCIDENT}}

    openai_fake.stream_json()
    messages = [m async for m in stubs.llm.StreamGenerate(streamed(api.GenerateRequest(prompt="Summarise.", preferences=preferences, cache_control=NO_CACHE)), timeout=10)]
    assert len(messages) > 5 and json.loads("".join(m.text for m in messages)) == as_dict(messages[-1].structured_output)


async def test_anthropic_tool_use_plain_and_streamed(stubs: Stubs, fakes: tuple[FakeOpenAI, FakeAnthropic]) -> None:
    _, anthropic_fake = fakes
    anthropic_fake.reply_tool_use()
    reply = await stubs.llm.Generate(tool_request(CLAUDE, tool_choice=common_pb2.ToolChoice(mode=common_pb2.TOOL_CHOICE_MODE_REQUIRED)), timeout=10)
    assert calls_of(reply.tool_calls) == FIXTURE_CALLS and reply.text.startswith("I'll check")
    assert reply.finish_reason == common_pb2.FINISH_REASON_TOOL_CALLS
    sent = anthropic_fake.generation_requests[-1].body
    assert [t["name"] for t in sent["tools"]] == ["query_metrics", "search_logs"] and sent["tools"][0]["input_schema"] == QUERY_METRICS
    assert sent["tool_choice"] == {"type": "any"}

    anthropic_fake.reply_tool_use()  # streamed: text, then input_json_delta fragments per block
    messages = [m async for m in stubs.llm.StreamGenerate(streamed(tool_request(CLAUDE)), timeout=10)]
    text_before = "".join(m.text for m in messages[: next(i for i, m in enumerate(messages) if m.tool_calls)])
    assert text_before.startswith("I'll check"), "text before a call streams as it arrives"
    assert [calls_of(m.tool_calls) for m in messages if m.tool_calls] == [[FIXTURE_CALLS[0]], [FIXTURE_CALLS[1]]]


async def test_anthropic_structured_output_through_the_forced_response_tool(stubs: Stubs, fakes: tuple[FakeOpenAI, FakeAnthropic]) -> None:
    _, anthropic_fake = fakes
    incident = {"service": "checkout", "severity": "medium", "summary": "slow", "actions": ["roll back"]}
    preferences = common_pb2.GenerationPreferences(model=CLAUDE, response_format=common_pb2.RESPONSE_FORMAT_JSON_SCHEMA, response_schema=struct(INCIDENT))
    for streaming in (False, True):
        anthropic_fake.reply_tool_use([("toolu_1", "structured_response", incident)], stop_reason="tool_use")
        request = api.GenerateRequest(prompt="Summarise the incident.", preferences=preferences, cache_control=NO_CACHE)
        if streaming:
            messages = [m async for m in stubs.llm.StreamGenerate(streamed(request), timeout=10)]
            last, text, calls = messages[-1], "".join(m.text for m in messages), [c for m in messages for c in m.tool_calls]
        else:
            last = await stubs.llm.Generate(request, timeout=10)
            text, calls = last.text, list(last.tool_calls)
        assert as_dict(last.structured_output) == incident and json.loads(text) == incident and calls == []
        assert last.finish_reason == common_pb2.FINISH_REASON_STOP
        sent = anthropic_fake.generation_requests[-1].body
        assert sent["tool_choice"] == {"type": "tool", "name": "structured_response"} and sent["tools"][-1]["input_schema"] == INCIDENT


async def test_tool_round_trip_history_reaches_both_apis_in_their_terms(stubs: Stubs, fakes: tuple[FakeOpenAI, FakeAnthropic]) -> None:
    openai_fake, anthropic_fake = fakes
    history = [
        common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content="Why is checkout slow?"),
        common_pb2.ChatMessage(role=common_pb2.ROLE_ASSISTANT, content="Checking.", tool_calls=[
            common_pb2.ToolCall(id="call_a", name="query_metrics", arguments=struct(FIXTURE_CALLS[0][1])),
        ]),
        common_pb2.ChatMessage(role=common_pb2.ROLE_TOOL, tool_call_id="call_a", content='{"latency_p95_ms": 950}'),
    ]
    for model in (GPT, CLAUDE):
        request = api.GenerateRequest(messages=history, tools=TOOLS, preferences=common_pb2.GenerationPreferences(model=model), cache_control=NO_CACHE)
        reply = await stubs.llm.Generate(request, timeout=10)  # the fakes refuse a malformed tool conversation with a 400
        assert reply.text and not reply.tool_calls
    openai_messages = openai_fake.generation_requests[-1].body["messages"]
    sent_call = openai_messages[1]["tool_calls"][0]
    assert (sent_call["id"], sent_call["type"], sent_call["function"]["name"]) == ("call_a", "function", "query_metrics")
    assert json.loads(sent_call["function"]["arguments"]) == FIXTURE_CALLS[0][1]  # JSON text, as OpenAI takes it
    assert openai_messages[2] == {"role": "tool", "tool_call_id": "call_a", "content": '{"latency_p95_ms": 950}'}
    anthropic_messages = anthropic_fake.generation_requests[-1].body["messages"]
    assert anthropic_messages[1]["content"][-1] == {"type": "tool_use", "id": "call_a", "name": "query_metrics", "input": FIXTURE_CALLS[0][1]}
    assert anthropic_messages[2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_a", "content": '{"latency_p95_ms": 950}'}]}


async def test_invalid_tool_arguments_fall_back_to_the_next_model(stubs: Stubs, fakes: tuple[FakeOpenAI, FakeAnthropic]) -> None:
    openai_fake, anthropic_fake = fakes
    openai_fake.reply_tool_calls([("call_1", "query_metrics", {"service": "checkout", "metric": "p95", "window": "one hour"})])
    anthropic_fake.reply_tool_use([("toolu_1", "query_metrics", FIXTURE_CALLS[0][1])])
    # The UI-generation chain is GPT -> Claude -> local.
    request = tool_request("", task_type=common_pb2.TASK_TYPE_UI_GENERATION)
    reply = await stubs.llm.Generate(request, timeout=10)
    assert reply.model.startswith("claude") and reply.metadata.fallback_used
    assert list(reply.metadata.model_chain)[:2] == [GPT, CLAUDE] and calls_of(reply.tool_calls) == [FIXTURE_CALLS[0]]

    openai_fake.reply_tool_calls([("call_1", "query_metrics", {"service": "checkout"})])  # required fields missing
    anthropic_fake.reply_tool_use([("toolu_1", "drop_tables", {})])  # a tool the request does not offer
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Generate(request, timeout=10)
    details = error_details(raised.value)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "INVALID_MODEL_OUTPUT")
    assert details.metadata["model"] == GPT and "required" in details.metadata["violation"]


async def test_a_stream_cut_after_a_tool_call_was_sent_ends_with_an_error(stubs: Stubs, fakes: tuple[FakeOpenAI, FakeAnthropic]) -> None:
    openai_fake, _ = fakes
    openai_fake.stream_tool_calls(
        [("call_1", "query_metrics", FIXTURE_CALLS[0][1]), ("call_2", "search_logs", FIXTURE_CALLS[1][1])], ending=Ending.CUT
    )
    received: list[api.StreamGenerateResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for message in stubs.llm.StreamGenerate(streamed(tool_request(GPT)), timeout=10):
            received.append(message)
    assert [calls_of(m.tool_calls) for m in received if m.tool_calls] == [[FIXTURE_CALLS[0]]]  # the first completed when the second began
    details = error_details(raised.value)
    assert details.code == grpc.StatusCode.UNAVAILABLE and details.metadata.get("partial_output") == "true"


async def test_tool_arguments_that_are_not_json_are_invalid_output(stubs: Stubs, fakes: tuple[FakeOpenAI, FakeAnthropic]) -> None:
    openai_fake, _ = fakes
    openai_fake.reply_tool_calls([("call_1", "query_metrics", '{"service": "checkout", "metric": ')])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Generate(tool_request(GPT), timeout=10)
    details = error_details(raised.value)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "INVALID_MODEL_OUTPUT")
