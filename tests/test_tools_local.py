"""Tools and schema-checked structured output end to end on the real SmolLM2, both ways it runs
locally: the llama.cpp HTTP server (LM_STUDIO_ENDPOINT) and the in-process engine. Through the
real gRPC server and the generated stubs.

SmolLM2's chat template has no tool support, so tools reach it as a schema-constrained answer
(LLM_LOCAL_TOOL_CALLING=schema, the default); llama.cpp's grammar makes the JSON valid, and the
server validates it against the caller's schemas all the same."""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc
import jsonschema
import pytest
from google.protobuf import json_format, struct_pb2

from llm_manager.client import error_details
from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api

from .conftest import StartApp, Stubs
from .support.processes import LlamaServer
from .support.schemas import QUERY_METRICS, SERVICE_CONFIG


def struct(value: dict[str, object]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(value)
    return result


def as_dict(value: struct_pb2.Struct) -> dict[str, object]:
    converted: dict[str, object] = json_format.MessageToDict(value)
    return converted


TOOL = common_pb2.Tool(name="query_metrics", description="Query a telemetry metric over the last N minutes.", parameters=struct(QUERY_METRICS))
GREEDY = {"temperature": 0.0, "seed": 1}


def schema_preferences(max_tokens: int = 96) -> common_pb2.GenerationPreferences:
    return common_pb2.GenerationPreferences(
        response_format=common_pb2.RESPONSE_FORMAT_JSON_SCHEMA, response_schema=struct(SERVICE_CONFIG), max_tokens=max_tokens, **GREEDY
    )


@pytest.fixture(params=["http", "in-process"])
async def local(request: pytest.FixtureRequest, start_app: StartApp, connect: Callable[..., Stubs]) -> Stubs:
    if request.param == "http":
        server: LlamaServer = request.getfixturevalue("llama_server")
        return connect(await start_app(LM_STUDIO_ENDPOINT=server.url))
    return connect(await start_app())


async def test_structured_output_conforms_to_the_schema(local: Stubs) -> None:
    reply = await local.llm.Generate(
        api.GenerateRequest(prompt="The checkout service: a frontend with 3 replicas.", preferences=schema_preferences()), timeout=120
    )
    document = as_dict(reply.structured_output)
    jsonschema.validate(document, SERVICE_CONFIG)
    assert json.loads(reply.text) == document  # text is the same JSON (Struct numbers are doubles: 3 == 3.0)
    assert reply.finish_reason == common_pb2.FINISH_REASON_STOP


async def test_streamed_structured_output_arrives_whole_on_the_last_message(local: Stubs) -> None:
    messages = [
        m
        async for m in local.llm.StreamGenerate(
            api.StreamGenerateRequest(prompt="The batch importer runs 2 replicas.", preferences=schema_preferences()), timeout=120
        )
    ]
    assert len(messages) > 2, "the JSON text streams as it is generated"
    text = "".join(m.text for m in messages)
    last = messages[-1]
    assert last.HasField("structured_output") and not any(m.HasField("structured_output") for m in messages[:-1])
    jsonschema.validate(as_dict(last.structured_output), SERVICE_CONFIG)
    assert json.loads(text) == as_dict(last.structured_output)  # (Struct numbers are doubles: 3 == 3.0)


@pytest.mark.parametrize("choice", [common_pb2.ToolChoice(mode=common_pb2.TOOL_CHOICE_MODE_REQUIRED), common_pb2.ToolChoice(tool_name="query_metrics")])
async def test_a_required_tool_call_comes_back_complete_and_valid(local: Stubs, choice: common_pb2.ToolChoice) -> None:
    request = api.GenerateRequest(
        prompt="What was the p99 latency of checkout over the last 15 minutes?",
        tools=[TOOL],
        tool_choice=choice,
        preferences=common_pb2.GenerationPreferences(max_tokens=400, **GREEDY),
    )
    reply = await local.llm.Generate(request, timeout=120)
    assert reply.finish_reason == common_pb2.FINISH_REASON_TOOL_CALLS and reply.text == ""
    assert reply.tool_calls and {c.name for c in reply.tool_calls} == {"query_metrics"}
    for call in reply.tool_calls:
        assert call.id
        jsonschema.validate(as_dict(call.arguments), QUERY_METRICS)


async def test_a_streamed_tool_call_is_sent_once_complete(local: Stubs) -> None:
    request = api.StreamGenerateRequest(
        prompt="Check the error rate of the payments service over the last hour.",
        tools=[TOOL],
        tool_choice=common_pb2.ToolChoice(mode=common_pb2.TOOL_CHOICE_MODE_REQUIRED),
        preferences=common_pb2.GenerationPreferences(max_tokens=400, **GREEDY),
        cache_control=common_pb2.CacheControl(no_cache=True),
    )
    messages = [m async for m in local.llm.StreamGenerate(request, timeout=120)]
    calls = [c for m in messages for c in m.tool_calls]
    assert calls and len({c.id for c in calls}) == len(calls), "each call is sent once"
    for call in calls:
        jsonschema.validate(as_dict(call.arguments), QUERY_METRICS)
    assert not messages[-1].tool_calls and messages[-1].finish_reason == common_pb2.FINISH_REASON_TOOL_CALLS
    assert "".join(m.text for m in messages) == "", "the tool-call envelope never reaches the caller as text"


async def test_a_tool_round_trip_ends_in_a_text_answer(local: Stubs) -> None:
    first = await local.llm.Generate(
        api.GenerateRequest(
            prompt="What is the p99 latency of checkout over the last 15 minutes?",
            tools=[TOOL],
            tool_choice=common_pb2.ToolChoice(mode=common_pb2.TOOL_CHOICE_MODE_REQUIRED),
            preferences=common_pb2.GenerationPreferences(max_tokens=400, **GREEDY),
        ),
        timeout=120,
    )
    call = first.tool_calls[0]
    history = [
        common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content="What is the p99 latency of checkout over the last 15 minutes?"),
        common_pb2.ChatMessage(role=common_pb2.ROLE_ASSISTANT, tool_calls=[call]),
        common_pb2.ChatMessage(role=common_pb2.ROLE_TOOL, tool_call_id=call.id, content='{"p99_ms": 412}'),
    ]
    final = await local.llm.Generate(
        api.GenerateRequest(
            messages=history, tools=[TOOL], tool_choice=common_pb2.ToolChoice(mode=common_pb2.TOOL_CHOICE_MODE_NONE),
            preferences=common_pb2.GenerationPreferences(max_tokens=40, **GREEDY),
        ),
        timeout=120,
    )
    assert final.text.strip() and not final.tool_calls
    assert final.finish_reason in (common_pb2.FINISH_REASON_STOP, common_pb2.FINISH_REASON_LENGTH)


async def test_a_tool_call_answer_is_cached_and_replayed_complete(local: Stubs) -> None:
    request = api.GenerateRequest(
        prompt="Query the request rate of search over the last 5 minutes.",
        tools=[TOOL],
        tool_choice=common_pb2.ToolChoice(tool_name="query_metrics"),
        preferences=common_pb2.GenerationPreferences(max_tokens=400, **GREEDY),
    )
    first = await local.llm.Generate(request, timeout=120)
    again = await local.llm.Generate(request, timeout=120)
    assert again.metadata.cached and not first.metadata.cached
    assert list(again.tool_calls) == list(first.tool_calls) and again.finish_reason == common_pb2.FINISH_REASON_TOOL_CALLS
    streamed = [m async for m in local.llm.StreamGenerate(api.StreamGenerateRequest(**{f.name: v for f, v in request.ListFields()}), timeout=120)]
    assert streamed[-1].metadata.cached and [c for m in streamed for c in m.tool_calls] == list(first.tool_calls)
    # The tools are part of the key: another tool description is another request.
    other = api.GenerateRequest()
    other.CopyFrom(request)
    other.tools[0].description = "Query a metric (another description)."
    assert not (await local.llm.Generate(other, timeout=120)).metadata.cached


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.tools.add(name="bad name!"), "tools[1].name"),
        (lambda r: r.tools.add(name="query_metrics"), "tools[1].name"),
        (lambda r: r.tools.add(name="structured_response"), "tools[1].name"),
        (lambda r: r.tools.add(name="t2", parameters=struct({"type": "string"})), "tools[1].parameters"),
        (lambda r: r.tools.add(name="t3", parameters=struct({"type": "object", "properties": {"x": {"type": 12}}})), "tools[1].parameters"),
        (lambda r: r.tool_choice.CopyFrom(common_pb2.ToolChoice(tool_name="nope")), "tool_choice.tool_name"),
        (lambda r: r.preferences.CopyFrom(common_pb2.GenerationPreferences(response_format=common_pb2.RESPONSE_FORMAT_JSON_SCHEMA)), "preferences.response_schema"),
        (lambda r: r.preferences.CopyFrom(common_pb2.GenerationPreferences(response_schema=struct(SERVICE_CONFIG))), "preferences.response_schema"),
        (lambda r: r.messages.add(role=common_pb2.ROLE_TOOL, tool_call_id="call_9", content="{}"), "messages[0].tool_call_id"),
        (lambda r: r.messages.add(role=common_pb2.ROLE_USER, content="x", tool_calls=[common_pb2.ToolCall(id="a", name="query_metrics")]), "messages[0].tool_calls"),
    ],
)
async def test_bad_tools_schemas_and_tool_messages_are_invalid_argument(
    start_app: StartApp, connect: Callable[..., Stubs], change: Callable[[api.GenerateRequest], object], field: str
) -> None:
    stubs = connect(await start_app())
    request = api.GenerateRequest(prompt="hi", tools=[TOOL])
    change(request)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Generate(request, timeout=30)
    details = error_details(raised.value)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert field in details.field_violations, details.field_violations


async def test_list_models_shows_capabilities(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    stubs = connect(await start_app())
    models = (await stubs.llm.ListModels(api.ListModelsRequest(), timeout=30)).models
    assert set(models[0].capabilities) == {common_pb2.CAPABILITY_TOOLS, common_pb2.CAPABILITY_JSON_SCHEMA, common_pb2.CAPABILITY_EMBEDDINGS}
    stubs_off = connect(await start_app(LLM_LOCAL_TOOL_CALLING="off"))
    models = (await stubs_off.llm.ListModels(api.ListModelsRequest(), timeout=30)).models
    assert list(models[0].capabilities) == [common_pb2.CAPABILITY_EMBEDDINGS, common_pb2.CAPABILITY_JSON_SCHEMA]
    # No configured model can call tools now: a clear error, never an answer without the tool.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs_off.llm.Generate(api.GenerateRequest(prompt="hi", tools=[TOOL]), timeout=30)
    details = error_details(raised.value)
    assert (details.code, details.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONFIGURATION_ERROR")
    assert "tools" in details.message


async def test_a_conversation_stores_tool_calls_and_answers_them_in_the_next_turn(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    from llm_manager.v1 import conversation_service_pb2 as conv

    stubs = connect(await start_app())
    conversation = (await stubs.conversations.CreateConversation(conv.CreateConversationRequest(), timeout=30)).conversation
    asked = await stubs.conversations.SendMessage(
        conv.SendMessageRequest(
            conversation_id=conversation.id,
            message="What was the p99 latency of checkout over the last 15 minutes?",
            tools=[TOOL],
            tool_choice=common_pb2.ToolChoice(mode=common_pb2.TOOL_CHOICE_MODE_REQUIRED),
            preferences=common_pb2.GenerationPreferences(max_tokens=400, **GREEDY),
        ),
        timeout=120,
    )
    assert asked.tool_calls and asked.finish_reason == common_pb2.FINISH_REASON_TOOL_CALLS
    results = [common_pb2.ChatMessage(role=common_pb2.ROLE_TOOL, tool_call_id=c.id, content='{"p99_ms": 412}') for c in asked.tool_calls]
    # A result for a call the conversation never made is refused, and nothing is stored.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.conversations.SendMessage(
            conv.SendMessageRequest(conversation_id=conversation.id, tool_results=[common_pb2.ChatMessage(role=common_pb2.ROLE_TOOL, tool_call_id="call_x", content="{}")]),
            timeout=30,
        )
    assert error_details(raised.value).code == grpc.StatusCode.INVALID_ARGUMENT
    messages = [
        m
        async for m in stubs.conversations.StreamSendMessage(
            conv.StreamSendMessageRequest(
                conversation_id=conversation.id, tool_results=results, tools=[TOOL],
                tool_choice=common_pb2.ToolChoice(mode=common_pb2.TOOL_CHOICE_MODE_NONE),
                preferences=common_pb2.GenerationPreferences(max_tokens=40, **GREEDY),
            ),
            timeout=120,
        )
    ]
    assert "".join(m.text for m in messages).strip() and not any(m.tool_calls for m in messages)
    stored = (await stubs.conversations.GetConversation(conv.GetConversationRequest(id=conversation.id), timeout=30)).conversation.messages
    roles = [m.role for m in stored]
    assert roles == [common_pb2.ROLE_USER, common_pb2.ROLE_ASSISTANT] + [common_pb2.ROLE_TOOL] * len(results) + [common_pb2.ROLE_ASSISTANT]
    assert list(stored[1].tool_calls) == list(asked.tool_calls) and stored[1].content == ""
    assert [m.tool_call_id for m in stored[2:-1]] == [c.id for c in asked.tool_calls]
