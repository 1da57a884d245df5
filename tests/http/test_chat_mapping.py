"""Chat Completions JSON -> GenerationRequest, table-tested: what each OpenAI field becomes in
the domain, and the violation each bad field gets (named as in OpenAI's JSON)."""

from __future__ import annotations

from typing import Any

import pytest

from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import ResponseFormat, Role, RoutingStrategy, TaskType, TextPart, ToolCall, ToolChoiceMode, ToolResult
from llm_manager_server.http.chat import generation_request

USER = {"role": "user", "content": "hi"}


def _request(**fields: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [USER], **fields}


def test_fields_become_the_domain_request() -> None:
    request = generation_request(
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "developer", "content": "terse"},
                {"role": "user", "content": [{"type": "text", "text": "p99 "}, {"type": "text", "text": "now?"}]},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "q", "arguments": '{"m": 1}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "412"},
            ],
            "tools": [{"type": "function", "function": {"name": "q", "parameters": {"type": "object", "properties": {"m": {"type": "integer"}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "q"}},
            "max_tokens": 10, "max_completion_tokens": 20, "temperature": 0, "top_p": 0.5, "stop": "END", "seed": 3,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            "llm_manager": {"task_type": "SQL_GENERATION", "strategy": "cost", "no_cache": True},
        }
    )
    assert [m.role for m in request.messages] == [Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.TOOL]
    assert request.messages[1].content == "p99 now?"
    assert request.messages[2].parts == (ToolCall("c1", "q", {"m": 1}),)
    assert request.messages[3].parts == (ToolResult("c1", "412"),)
    assert request.model == "gpt-4o-mini" and request.task_type is TaskType.SQL_GENERATION and request.strategy is RoutingStrategy.COST
    assert request.no_cache and not request.no_store
    assert request.tool_choice is not None and request.tool_choice.mode is ToolChoiceMode.TOOL and request.tool_choice.name == "q"
    sampling = request.sampling
    assert (sampling.max_tokens, sampling.temperature, sampling.top_p, sampling.stop, sampling.seed) == (20, 0.0, 0.5, ("END",), 3)
    assert sampling.response_format is ResponseFormat.JSON_SCHEMA and sampling.response_schema == {"type": "object"}


def test_auto_routes_and_the_header_names_the_task() -> None:
    request = generation_request(_request(), task_header="ui-generation")
    assert request.model is None and request.task_type is TaskType.UI_GENERATION
    assert request.messages[0].parts == (TextPart("hi"),)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages[0].content[0].type"),
        ({"messages": [USER, {"role": "tool", "tool_call_id": "nope", "content": "x"}]}, "messages[1].tool_call_id"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "q", "arguments": "[1]"}}]}]}, "messages[0].tool_calls[0].function.arguments"),
        ({"model": 5}, "model"),
        ({"model": "bad name!"}, "model"),
        ({"n": 2}, "n"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"max_tokens": True}, "max_tokens"),
        ({"stop": ["a", ""]}, "stop[1]"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools[0].name"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema.schema"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"llm_manager": {"task_type": "poetry"}}, "llm_manager.task_type"),
        ({"llm_manager": {"strategy": "cheapest"}}, "llm_manager.strategy"),
        ({"llm_manager": {"tenant": "x"}}, "llm_manager.tenant"),
        ({"stream": "yes"}, "stream"),
    ],
)
def test_each_bad_field_is_named(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(LLMError) as raised:
        generation_request(_request(**fields))
    assert raised.value.kind is ErrorKind.INVALID_REQUEST
    assert field in {v.field for v in raised.value.field_violations}, raised.value.field_violations
