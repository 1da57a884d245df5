"""Table tests for the pure tool and structured-output mappings: domain -> wire bodies (OpenAI,
Anthropic, the schema-constrained emulation), wire replies and stream fragments -> answers, and
the output checks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import (
    Answer,
    FinishReason,
    GenerationRequest,
    Message,
    ModelCall,
    ResponseFormat,
    Role,
    SamplingOptions,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    ToolResult,
)
from llm_manager_server.providers import anthropic_wire, openai_wire, tool_emulation
from llm_manager_server.routing.output_check import OutputCheck

PARAMS = {"type": "object", "properties": {"metric": {"type": "string"}, "minutes": {"type": "integer", "minimum": 1}}, "required": ["metric"]}
TOOL = Tool("query_metrics", "Query a metric.", PARAMS)
OTHER = Tool("search_logs", "Search logs.", {"type": "object", "properties": {"q": {"type": "string"}}})
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
CALL = ToolCall("call_1", "query_metrics", {"metric": "p99", "minutes": 15})
HISTORY = (
    Message.of(Role.USER, "How slow?"),
    Message(Role.ASSISTANT, (TextPart("Checking."), CALL)),
    Message(Role.TOOL, (ToolResult("call_1", '{"p99": 412}'),)),
)


def call(*, tools: tuple[Tool, ...] = (TOOL,), choice: ToolChoice | None = None, schema: dict[str, Any] | None = None, messages: tuple[Message, ...] = HISTORY) -> ModelCall:
    sampling = SamplingOptions(response_format=ResponseFormat.JSON_SCHEMA, response_schema=schema) if schema else SamplingOptions()
    return ModelCall("gpt-4o-mini", messages, sampling, tools=tools, tool_choice=choice)


# --- OpenAI -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        (None, None),
        (ToolChoice(ToolChoiceMode.AUTO), "auto"),
        (ToolChoice(ToolChoiceMode.NONE), "none"),
        (ToolChoice(ToolChoiceMode.REQUIRED), "required"),
        (ToolChoice(ToolChoiceMode.TOOL, "query_metrics"), {"type": "function", "function": {"name": "query_metrics"}}),
    ],
)
def test_openai_tools_and_tool_choice(choice: ToolChoice | None, wire: object) -> None:
    body = openai_wire.chat_body(call(choice=choice), stream=False)
    assert body["tools"] == [{"type": "function", "function": {"name": "query_metrics", "description": "Query a metric.", "parameters": PARAMS}}]
    assert body.get("tool_choice") == wire


def test_openai_tool_history_and_json_schema() -> None:
    body = openai_wire.chat_body(call(schema=SCHEMA), stream=True)
    assert body["messages"] == [
        {"role": "user", "content": "How slow?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "query_metrics", "arguments": json.dumps(CALL.arguments)}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"p99": 412}'},
    ]
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": SCHEMA}}
    assert "tools" not in openai_wire.chat_body(call(tools=()), stream=False)


def _completion(message: dict[str, Any], finish: str = "tool_calls") -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}


@pytest.mark.parametrize(
    ("message", "finish", "expected"),
    [
        ({"content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}, "tool_calls", [ToolCall("c1", "f", {"a": 1})]),
        ({"content": None, "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": ""}}]}, "tool_calls", [ToolCall("c1", "f", {})]),
        ({"content": "x", "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}]}, "stop", [ToolCall("c1", "f", {})]),
    ],
)
def test_openai_parse_tool_calls(message: dict[str, Any], finish: str, expected: list[ToolCall]) -> None:
    answer = openai_wire.parse_completion(_completion(message, finish), "gpt-4o-mini")
    assert list(answer.tool_calls) == expected and answer.finish_reason is FinishReason.TOOL_CALLS


@pytest.mark.parametrize("arguments", ['{"a": ', "[1, 2]", '"text"', "null"])
def test_openai_arguments_that_are_not_a_json_object_are_invalid_output(arguments: str) -> None:
    message = {"content": None, "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": arguments}}]}
    with pytest.raises(LLMError) as raised:
        openai_wire.parse_completion(_completion(message), "gpt-4o-mini")
    assert raised.value.kind is ErrorKind.INVALID_MODEL_OUTPUT


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _fn(index: int, *, id: str | None = None, name: str | None = None, args: str | None = None) -> dict[str, Any]:
    fragment: dict[str, Any] = {"index": index, "function": {}}
    if id:
        fragment["id"] = id
    if name:
        fragment["function"]["name"] = name
    if args is not None:
        fragment["function"]["arguments"] = args
    return {"tool_calls": [fragment]}


def fold(chunks: list[dict[str, Any]]) -> tuple[list[tuple[int, list[ToolCall]]], Answer]:
    folder = openai_wire.ChunkFold("m")
    sent = []
    for position, chunk in enumerate(chunks):
        delta = folder.take(chunk)
        if delta is not None and delta.tool_calls:
            sent.append((position, list(delta.tool_calls)))
    return sent, folder.answer()


def test_openai_fragments_assemble_into_each_call_once_when_complete() -> None:
    sent, answer = fold([
        _chunk({"content": "Let me look."}),
        _chunk(_fn(0, id="c1", name="f", args="")),
        _chunk(_fn(0, args='{"a"')),
        _chunk(_fn(0, args=': "x y"}')),
        _chunk(_fn(1, id="c2", name="g", args='{"b": ')),  # the first call completes here
        _chunk(_fn(1, args="2}")),
        _chunk({}, finish="tool_calls"),  # and the second here
    ])
    assert sent == [(4, [ToolCall("c1", "f", {"a": "x y"})]), (6, [ToolCall("c2", "g", {"b": 2})])]
    assert answer.text == "Let me look." and answer.finish_reason is FinishReason.TOOL_CALLS and len(answer.tool_calls) == 2


def test_openai_fragments_repeating_id_and_name_are_not_doubled() -> None:
    # Some OpenAI-compatible servers repeat id and name in every fragment.
    sent, _ = fold([_chunk(_fn(0, id="c1", name="f", args='{"a":')), _chunk(_fn(0, id="c1", name="f", args="1}")), _chunk({}, finish="stop")])
    assert sent == [(2, [ToolCall("c1", "f", {"a": 1})])]


def test_openai_a_call_without_a_name_is_invalid_output() -> None:
    with pytest.raises(LLMError) as raised:
        fold([_chunk(_fn(0, id="c1", args="{}")), _chunk({}, finish="tool_calls")])
    assert raised.value.kind is ErrorKind.INVALID_MODEL_OUTPUT


# --- Anthropic ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        (ToolChoice(ToolChoiceMode.AUTO), {"type": "auto"}),
        (ToolChoice(ToolChoiceMode.NONE), {"type": "none"}),
        (ToolChoice(ToolChoiceMode.REQUIRED), {"type": "any"}),
        (ToolChoice(ToolChoiceMode.TOOL, "query_metrics"), {"type": "tool", "name": "query_metrics"}),
    ],
)
def test_anthropic_tools_and_tool_choice(choice: ToolChoice, wire: dict[str, str]) -> None:
    body = anthropic_wire.messages_body(call(choice=choice), default_max_tokens=64, stream=False)
    assert body["tools"] == [{"name": "query_metrics", "description": "Query a metric.", "input_schema": PARAMS}]
    assert body["tool_choice"] == wire


def test_anthropic_history_blocks() -> None:
    body = anthropic_wire.messages_body(call(), default_max_tokens=64, stream=False)
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "How slow?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, {"type": "tool_use", "id": "call_1", "name": "query_metrics", "input": CALL.arguments}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": '{"p99": 412}'}]},
    ]


@pytest.mark.parametrize(("tools", "choice"), [((), {"type": "tool", "name": "structured_response"}), ((TOOL,), {"type": "any"})])
def test_anthropic_structured_output_is_a_forced_response_tool(tools: tuple[Tool, ...], choice: dict[str, str]) -> None:
    body = anthropic_wire.messages_body(call(tools=tools, schema=SCHEMA), default_max_tokens=64, stream=False)
    assert body["tools"][-1] == {"name": "structured_response", "description": body["tools"][-1]["description"], "input_schema": SCHEMA}
    assert body["tool_choice"] == choice


def test_anthropic_response_tool_becomes_the_answer_text() -> None:
    message = {"type": "message", "model": "claude", "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1},
               "content": [{"type": "tool_use", "id": "t1", "name": "structured_response", "input": {"ok": True}}]}
    answer = anthropic_wire.parse_message(message, "claude")
    assert json.loads(answer.text) == {"ok": True} and answer.tool_calls == () and answer.finish_reason is FinishReason.STOP


def test_anthropic_input_json_deltas_assemble_on_block_stop() -> None:
    state = anthropic_wire.StreamState(requested_model="claude")
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"message": {"model": "claude", "usage": {"input_tokens": 5}}}),
        ("content_block_start", {"index": 0, "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"a": "x'}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta", "partial_json": ' y"}'}}),
        ("content_block_stop", {"index": 0}),
        ("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
        ("message_stop", {}),
    ]
    deltas = [anthropic_wire.parse_stream_event(kind, data, state) for kind, data in events]
    assert [d.tool_calls for d in deltas if d is not None and d.tool_calls] == [(ToolCall("t1", "f", {"a": "x y"}),)]
    final = deltas[-1]
    assert final is not None and final.answer is not None
    assert final.answer.finish_reason is FinishReason.TOOL_CALLS and final.answer.usage.completion_tokens == 9


# --- Emulation for local models -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "branches"),
    [(None, 2), (ToolChoice(ToolChoiceMode.AUTO), 2), (ToolChoice(ToolChoiceMode.REQUIRED), 1), (ToolChoice(ToolChoiceMode.TOOL, "search_logs"), 1)],
)
def test_envelope_schema_follows_tool_choice(choice: ToolChoice | None, branches: int) -> None:
    schema = tool_emulation.envelope_schema(call(tools=(TOOL, OTHER), choice=choice))
    options = schema.get("anyOf", [schema])
    assert len(options) == branches
    items = options[0]["properties"]["tool_calls"]["items"]
    names = [o["properties"]["name"]["const"] for o in items.get("anyOf", [items])]
    assert names == (["search_logs"] if choice is not None and choice.mode is ToolChoiceMode.TOOL else ["query_metrics", "search_logs"])


def test_emulated_call_carries_no_tools_and_history_as_text() -> None:
    emulated = tool_emulation.emulated_call(call())
    assert emulated.tools == () and emulated.sampling.response_format is ResponseFormat.JSON_SCHEMA
    assert emulated.messages[0].role is Role.SYSTEM and "query_metrics" in emulated.messages[0].content
    assert json.loads(emulated.messages[2].content) == {"tool_calls": [{"name": "query_metrics", "arguments": CALL.arguments}]}
    assert emulated.messages[3].role is Role.USER and '{"p99": 412}' in emulated.messages[3].content


@pytest.mark.parametrize(
    ("text", "calls", "answer_text"),
    [
        ('{"tool_calls": [{"name": "query_metrics", "arguments": {"metric": "p99"}}]}', [ToolCall("call_0", "query_metrics", {"metric": "p99"})], ""),
        ('{"answer": "It is fine."}', [], "It is fine."),
        ('{"answer": {"ok": true}}', [], '{"ok": true}'),
    ],
)
def test_unwrap_envelopes(text: str, calls: list[ToolCall], answer_text: str) -> None:
    unwrapped = tool_emulation.unwrap(Answer(text=text, model="m", finish_reason=FinishReason.STOP), call())
    assert list(unwrapped.tool_calls) == calls and unwrapped.text == answer_text


@pytest.mark.parametrize("text", ["", "{", '{"other": 1}', '{"tool_calls": [{"name": 3}]}'])
def test_a_broken_envelope_is_invalid_output(text: str) -> None:
    with pytest.raises(LLMError) as raised:
        tool_emulation.unwrap(Answer(text=text, model="m"), call())
    assert raised.value.kind is ErrorKind.INVALID_MODEL_OUTPUT


# --- Output checks ---------------------------------------------------------------------------------------


def check(choice: ToolChoice | None = None, schema: dict[str, Any] | None = None) -> OutputCheck:
    sampling = SamplingOptions(response_format=ResponseFormat.JSON_SCHEMA, response_schema=schema) if schema else SamplingOptions()
    return OutputCheck(GenerationRequest(messages=HISTORY, sampling=sampling, tools=(TOOL,), tool_choice=choice))


@pytest.mark.parametrize(
    ("choice", "calls", "problem"),
    [
        (None, [ToolCall("c", "nope", {})], "does not offer"),
        (None, [ToolCall("c", "query_metrics", {"minutes": 5})], "required"),
        (None, [ToolCall("c", "query_metrics", {"metric": "p99", "minutes": 0})], "minimum"),
        (ToolChoice(ToolChoiceMode.NONE), [ToolCall("c", "query_metrics", {"metric": "p99"})], "none"),
        (ToolChoice(ToolChoiceMode.REQUIRED), [], "requires one"),
    ],
)
def test_invalid_tool_calls(choice: ToolChoice | None, calls: list[ToolCall], problem: str) -> None:
    with pytest.raises(LLMError) as raised:
        check(choice).answer(Answer(text="", model="m", tool_calls=tuple(calls)), "m", tool_calls_checked=False)
    assert raised.value.kind is ErrorKind.INVALID_MODEL_OUTPUT and problem in raised.value.metadata["violation"]


@pytest.mark.parametrize(("text", "valid"), [('{"ok": true}', True), ('{"ok": "yes"}', False), ("[true]", False), ("ok", False)])
def test_structured_output_is_validated(text: str, valid: bool) -> None:
    answer = Answer(text=text, model="m")
    if valid:
        assert check(schema=SCHEMA).answer(answer, "m", tool_calls_checked=True).structured_output == {"ok": True}
    else:
        with pytest.raises(LLMError) as raised:
            check(schema=SCHEMA).answer(answer, "m", tool_calls_checked=True)
        assert raised.value.kind is ErrorKind.INVALID_MODEL_OUTPUT
