"""The Python client's tools and structured-output helpers: a real tool round trip, streamed
tool calls, structured output and a conversation's tool turn, through ``LLMManagerClient`` on
the in-process SmolLM2; and the helpers' plain-data conversions (no server needed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from llm_manager.client import (
    FinishReason,
    LLMManagerClient,
    MessageLike,
    Role,
    assistant_tool_calls_message,
    require_tool,
    struct_from_dict,
    struct_to_dict,
    structured_output,
    tool,
    tool_calls,
    tool_choice,
    tool_result_message,
)
from llm_manager.v1 import common_pb2, conversation_service_pb2, llm_manager_service_pb2 as api

from .conftest import StartApp, Stubs
from .support.schemas import QUERY_METRICS, SERVICE_CONFIG

METRICS_TOOL = tool("query_metrics", "Query a telemetry metric over the last N minutes.", QUERY_METRICS)
GREEDY: dict[str, Any] = {"temperature": 0.0, "seed": 1}
QUESTION = "What is the p99 latency of checkout over the last 15 minutes?"


@pytest.fixture
async def client(start_app: StartApp, connect: Callable[..., Stubs]) -> LLMManagerClient:
    """The client over a channel to the in-process SmolLM2 (the fixture closes the channel)."""
    return LLMManagerClient(channel=connect(await start_app()).channel, timeout=120)


def check_call(call: dict[str, Any]) -> None:
    assert call["id"] and call["name"] == "query_metrics"
    jsonschema.validate(call["arguments"], QUERY_METRICS)
    # Plain data: whole numbers are ints again (Struct carries doubles).
    assert type(call["arguments"]["minutes"]) is int


async def test_a_tool_round_trip_through_the_client(client: LLMManagerClient) -> None:
    first = await client.generate(QUESTION, tools=[METRICS_TOOL], tool_choice="required", max_tokens=400, **GREEDY)
    assert first.finish_reason == FinishReason.FINISH_REASON_TOOL_CALLS and first.text == ""
    calls = tool_calls(first)
    assert calls and len(calls) == len(first.tool_calls)
    for call in calls:
        check_call(dict(call))

    result = {"metric": calls[0]["arguments"]["metric"], "p99_ms": 412}
    messages: list[MessageLike] = [
        (Role.ROLE_USER, QUESTION),
        assistant_tool_calls_message(calls),  # from the dicts: the same message as from the protos
        *(tool_result_message(call["id"], result) for call in calls),
    ]
    assert messages[1] == assistant_tool_calls_message(first.tool_calls)
    final = await client.generate(messages=messages, tools=[METRICS_TOOL], tool_choice="none", max_tokens=40, **GREEDY)
    assert final.text.strip() and not final.tool_calls and tool_calls(final) == []
    assert final.finish_reason in (FinishReason.FINISH_REASON_STOP, FinishReason.FINISH_REASON_LENGTH)
    assert structured_output(final) is None


async def test_a_named_tool_is_called(client: LLMManagerClient) -> None:
    other = tool("restart_service", "Restart a service.", {"type": "object", "properties": {"service": {"type": "string"}}, "required": ["service"]})
    reply = await client.generate(QUESTION, tools=[other, METRICS_TOOL], tool_choice=require_tool("query_metrics"), max_tokens=400, **GREEDY)
    calls = tool_calls(reply)
    assert calls and {c["name"] for c in calls} == {"query_metrics"}
    for call in calls:
        check_call(dict(call))


async def test_streamed_tool_calls_are_collected_from_the_messages(client: LLMManagerClient) -> None:
    messages = [
        m
        async for m in client.stream_generate(
            "Check the error rate of the payments service over the last hour.",
            tools=[METRICS_TOOL], tool_choice="required", max_tokens=400, no_cache=True, **GREEDY,
        )
    ]
    calls = tool_calls(messages)
    assert calls and len({c["id"] for c in calls}) == len(calls), "each call arrives once"
    for call in calls:
        check_call(dict(call))
    assert messages[-1].finish_reason == FinishReason.FINISH_REASON_TOOL_CALLS


async def test_structured_output_through_the_client(client: LLMManagerClient) -> None:
    reply = await client.generate("The checkout service: a frontend with 3 replicas.", response_schema=SERVICE_CONFIG, max_tokens=96, **GREEDY)
    document = structured_output(reply)
    assert document is not None
    jsonschema.validate(document, SERVICE_CONFIG)
    assert document == json.loads(reply.text) and type(document["replicas"]) is int
    assert reply.finish_reason == FinishReason.FINISH_REASON_STOP and not reply.tool_calls

    messages = [m async for m in client.stream_generate("The batch importer runs 2 replicas.", response_schema=SERVICE_CONFIG, max_tokens=96, **GREEDY)]
    streamed = structured_output(messages[-1])
    assert streamed is not None and all(structured_output(m) is None for m in messages[:-1])
    jsonschema.validate(streamed, SERVICE_CONFIG)
    assert streamed == json.loads("".join(m.text for m in messages))


async def test_a_conversation_turn_answers_its_tool_calls(client: LLMManagerClient) -> None:
    conversation = await client.create_conversation(system="You are an SRE assistant.")
    first = await client.send_message(conversation.id, QUESTION, tools=[METRICS_TOOL], tool_choice="required", max_tokens=400, seed=1, temperature=0)
    calls = tool_calls(first)
    assert calls and first.finish_reason == FinishReason.FINISH_REASON_TOOL_CALLS
    for call in calls:
        check_call(dict(call))
    final = await client.send_message(
        conversation.id,
        tools=[METRICS_TOOL],
        tool_choice="none",
        tool_results=[tool_result_message(call["id"], {"p99_ms": 412}) for call in calls],
        max_tokens=40,
        seed=1,
        temperature=0,
    )
    assert final.text.strip() and not final.tool_calls
    stored = await client.get_conversation(conversation.id)
    roles = [m.role for m in stored.messages]
    assert roles == [Role.ROLE_USER, Role.ROLE_ASSISTANT, *[Role.ROLE_TOOL] * len(calls), Role.ROLE_ASSISTANT], roles
    assert tool_calls([stored.messages[1]]) == calls


# The helpers alone.


def test_tool_builds_the_proto_with_its_schema() -> None:
    built = tool("query_metrics", "Query a metric.", QUERY_METRICS)
    assert isinstance(built, common_pb2.Tool) and built.name == "query_metrics" and built.description == "Query a metric."
    assert struct_to_dict(built.parameters) == QUERY_METRICS
    assert not tool("ping").HasField("parameters")
    with pytest.raises(TypeError):
        struct_from_dict([1, 2])  # type: ignore[arg-type]


def test_tool_choice_forms() -> None:
    assert tool_choice("auto") == common_pb2.ToolChoice(mode=common_pb2.TOOL_CHOICE_MODE_AUTO)
    assert tool_choice("none") == common_pb2.ToolChoice(mode=common_pb2.TOOL_CHOICE_MODE_NONE)
    assert tool_choice("required") == common_pb2.ToolChoice(mode=common_pb2.TOOL_CHOICE_MODE_REQUIRED)
    assert tool_choice(common_pb2.TOOL_CHOICE_MODE_REQUIRED).mode == common_pb2.TOOL_CHOICE_MODE_REQUIRED
    assert tool_choice(require_tool("query_metrics")).tool_name == "query_metrics"
    with pytest.raises(ValueError, match="require_tool"):
        tool_choice("query_metrics")  # type: ignore[arg-type]


def test_requests_carry_tools_choice_and_schema() -> None:
    request = LLMManagerClient.generate_request("hi", tools=[METRICS_TOOL], tool_choice="required", response_schema=SERVICE_CONFIG, seed=7)
    assert list(request.tools) == [METRICS_TOOL] and request.tool_choice.mode == common_pb2.TOOL_CHOICE_MODE_REQUIRED
    assert request.preferences.response_format == common_pb2.RESPONSE_FORMAT_JSON_SCHEMA
    assert struct_to_dict(request.preferences.response_schema) == SERVICE_CONFIG and request.preferences.seed == 7
    plain = LLMManagerClient.generate_request("hi")
    assert not plain.HasField("tool_choice") and not plain.tools
    assert plain.preferences.response_format == common_pb2.RESPONSE_FORMAT_UNSPECIFIED and not plain.preferences.HasField("response_schema")


def test_tool_calls_and_messages_as_plain_data() -> None:
    reply = api.GenerateResponse(tool_calls=[common_pb2.ToolCall(id="call_1", name="query_metrics", arguments=struct_from_dict({"metric": "p99", "minutes": 15, "ratio": 0.5, "tags": [1, "a"]}))])
    calls = tool_calls(reply)
    assert calls == [{"id": "call_1", "name": "query_metrics", "arguments": {"metric": "p99", "minutes": 15, "ratio": 0.5, "tags": [1, "a"]}}]
    assert type(calls[0]["arguments"]["minutes"]) is int and type(calls[0]["arguments"]["ratio"]) is float
    assistant = assistant_tool_calls_message(calls)
    assert assistant.role == common_pb2.ROLE_ASSISTANT and list(assistant.tool_calls) == list(reply.tool_calls)
    assert tool_result_message("call_1", "412 ms") == common_pb2.ChatMessage(role=common_pb2.ROLE_TOOL, tool_call_id="call_1", content="412 ms")
    assert json.loads(tool_result_message("call_1", {"p99_ms": 412}).content) == {"p99_ms": 412}
    assert structured_output(api.GenerateResponse()) is None
    assert structured_output(conversation_service_pb2.SendMessageResponse(structured_output=struct_from_dict({"a": 1.0}))) == {"a": 1}
