"""The cache key: changing any one field that can change the answer is a miss (property
based), and fields that cannot change it do not split the cache."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from llm_manager_server.cache import cache_key, key_document
from llm_manager_server.cache.keys import EXCLUDED_REQUEST_FIELDS
from llm_manager_server.domain.types import (
    GenerationRequest,
    JsonObject,
    Message,
    Part,
    ResponseFormat,
    Role,
    RoutingStrategy,
    SamplingOptions,
    TaskType,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    ToolResult,
)

DEFAULT = RoutingStrategy.BALANCED

texts = st.text(min_size=1, max_size=40)
# JSON values as ``json.loads`` gives them (tool arguments, schemas); no NaN, which equals nothing.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=8,
)
json_objects: st.SearchStrategy[JsonObject] = st.dictionaries(texts, json_values, max_size=4)
tool_calls = st.builds(ToolCall, texts, texts, json_objects)
text_messages = st.builds(Message.of, st.sampled_from(list(Role)), texts)
# An assistant reply that calls tools (with or without text), and a tool's result.
tool_call_messages = st.builds(
    lambda text, calls: Message(Role.ASSISTANT, (*((TextPart(text),) if text else ()), *calls)),
    st.none() | texts,
    st.lists(tool_calls, min_size=1, max_size=3),
)
tool_result_messages = st.builds(lambda call_id, content: Message(Role.TOOL, (ToolResult(call_id, content),)), texts, texts)
messages = st.lists(text_messages | tool_call_messages | tool_result_messages, min_size=1, max_size=4).map(tuple)
tools = st.lists(st.builds(Tool, texts, st.text(max_size=40), json_objects), max_size=3).map(tuple)
tool_choices = st.none() | st.builds(ToolChoice, st.sampled_from([m for m in ToolChoiceMode if m is not ToolChoiceMode.TOOL])) | st.builds(
    ToolChoice, st.just(ToolChoiceMode.TOOL), texts
)
samplings = st.builds(
    SamplingOptions,
    max_tokens=st.none() | st.integers(1, 100_000),
    temperature=st.none() | st.floats(0.0, 2.0),
    top_p=st.none() | st.floats(0.01, 1.0),
    stop=st.lists(texts, max_size=4, unique=True).map(tuple),
    seed=st.none() | st.integers(-(2**63), 2**63 - 1),
    response_format=st.sampled_from(list(ResponseFormat)),
    response_schema=st.none() | json_objects,
)
requests = st.builds(
    GenerationRequest,
    messages=messages,
    task_type=st.sampled_from(list(TaskType)),
    sampling=samplings,
    model=st.none() | texts,
    strategy=st.none() | st.sampled_from(list(RoutingStrategy)),
    no_cache=st.booleans(),
    no_store=st.booleans(),
    tools=tools,
    tool_choice=tool_choices,
)

# Every field that can change the answer, with how to change it: (path, mutation).
FIELD_CHANGES = {
    # The last message's text grows by ``t`` (its other parts kept).
    "messages.content": lambda r, t: _last_message(r, lambda m: Message(m.role, (*m.parts, TextPart(t)))),
    "messages.role": lambda r, t: _last_message(r, lambda m: dataclasses.replace(m, role=_other_role(m.role))),
    "messages.extra": lambda r, t: dataclasses.replace(r, messages=(*r.messages, Message.of(Role.USER, t))),
    "messages.system": lambda r, t: dataclasses.replace(r, messages=(Message.of(Role.SYSTEM, t), *r.messages)),
    # A message's tool-call parts: one more call, or one call's id, name or arguments changed.
    "messages.tool_call.extra": lambda r, t: _last_message(r, lambda m: Message(m.role, (*m.parts, ToolCall("call_" + t, t, {})))),
    "messages.tool_call.id": lambda r, t: _tool_call(r, t, lambda c: dataclasses.replace(c, id=c.id + t)),
    "messages.tool_call.name": lambda r, t: _tool_call(r, t, lambda c: dataclasses.replace(c, name=c.name + t)),
    "messages.tool_call.arguments": lambda r, t: _tool_call(r, t, lambda c: dataclasses.replace(c, arguments=_with_new_key(c.arguments, t, t))),
    "messages.tool_result.tool_call_id": lambda r, t: _tool_result(r, t, lambda p: dataclasses.replace(p, tool_call_id=p.tool_call_id + t)),
    "messages.tool_result.content": lambda r, t: _tool_result(r, t, lambda p: dataclasses.replace(p, content=p.content + t)),
    "tools": lambda r, t: dataclasses.replace(r, tools=(*r.tools, Tool("extra_" + t))),
    "tools.name": lambda r, t: _last_tool(r, t, lambda tool: dataclasses.replace(tool, name=tool.name + t)),
    "tools.description": lambda r, t: _last_tool(r, t, lambda tool: dataclasses.replace(tool, description=tool.description + t)),
    "tools.parameters": lambda r, t: _last_tool(
        r, t, lambda tool: dataclasses.replace(tool, parameters=_with_new_key(tool.parameters, t, {"type": "string"}))
    ),
    "tool_choice": lambda r, t: dataclasses.replace(r, tool_choice=None if r.tool_choice is not None else ToolChoice(ToolChoiceMode.AUTO)),
    "tool_choice.mode": lambda r, t: dataclasses.replace(
        r, tool_choice=dataclasses.replace(r.tool_choice or ToolChoice(), mode=_next(list(ToolChoiceMode), (r.tool_choice or ToolChoice()).mode))
    ),
    "tool_choice.name": lambda r, t: dataclasses.replace(
        r, tool_choice=ToolChoice(ToolChoiceMode.TOOL, ((r.tool_choice.name if r.tool_choice else None) or "") + t)
    ),
    "task_type": lambda r, t: dataclasses.replace(r, task_type=_next(list(TaskType), r.task_type)),
    "model": lambda r, t: dataclasses.replace(r, model=(r.model or "") + t),
    "strategy": lambda r, t: dataclasses.replace(r, strategy=_next(list(RoutingStrategy), r.strategy or DEFAULT)),
    "max_tokens": lambda r, t: _sampling(r, max_tokens=(r.sampling.max_tokens or 0) + 1),
    "temperature": lambda r, t: _sampling(r, temperature=0.5 if r.sampling.temperature is None else r.sampling.temperature + 0.125),
    "top_p": lambda r, t: _sampling(r, top_p=0.5 if r.sampling.top_p is None else r.sampling.top_p / 2),
    "stop": lambda r, t: _sampling(r, stop=(*r.sampling.stop, "\x00" + t)),
    "seed": lambda r, t: _sampling(r, seed=0 if r.sampling.seed is None else r.sampling.seed ^ 1),
    "response_format": lambda r, t: _sampling(r, response_format=_next(list(ResponseFormat), r.sampling.response_format)),
    "response_schema": lambda r, t: _sampling(
        r, response_schema={"type": "object", "title": t} if r.sampling.response_schema is None else _with_new_key(r.sampling.response_schema, t, t)
    ),
}


def _next(values: list[Any], current: Any) -> Any:
    return values[(values.index(current) + 1) % len(values)]


def _other_role(role: Role) -> Role:
    return Role.ASSISTANT if role is Role.USER else Role.USER


def _sampling(request: GenerationRequest, **changes: Any) -> GenerationRequest:
    return dataclasses.replace(request, sampling=dataclasses.replace(request.sampling, **changes))


def _with_new_key(obj: JsonObject, key: str, value: Any) -> JsonObject:
    """``obj`` with one key it did not have."""
    while key in obj:
        key += "\x00"
    return {**obj, key: value}


def _last_message(request: GenerationRequest, change: Any) -> GenerationRequest:
    return dataclasses.replace(request, messages=(*request.messages[:-1], change(request.messages[-1])))


def _replace_part(request: GenerationRequest, kind: type, change: Any) -> GenerationRequest | None:
    """``change`` applied to the last part of type ``kind`` in the request's messages, or
    None when no message has one."""
    for i in reversed(range(len(request.messages))):
        message = request.messages[i]
        for j in reversed(range(len(message.parts))):
            if isinstance(message.parts[j], kind):
                parts: tuple[Part, ...] = (*message.parts[:j], change(message.parts[j]), *message.parts[j + 1 :])
                return dataclasses.replace(request, messages=(*request.messages[:i], Message(message.role, parts), *request.messages[i + 1 :]))
    return None


def _tool_call(request: GenerationRequest, t: str, change: Any) -> GenerationRequest:
    # Without a tool call to change, the change is that there is one.
    return _replace_part(request, ToolCall, change) or _last_message(request, lambda m: Message(m.role, (*m.parts, change(ToolCall("c", "f", {})))))


def _tool_result(request: GenerationRequest, t: str, change: Any) -> GenerationRequest:
    return _replace_part(request, ToolResult, change) or dataclasses.replace(
        request, messages=(*request.messages, Message(Role.TOOL, (change(ToolResult("c", "r")),)))
    )


def _last_tool(request: GenerationRequest, t: str, change: Any) -> GenerationRequest:
    if not request.tools:
        return dataclasses.replace(request, tools=(change(Tool("f")),))
    return dataclasses.replace(request, tools=(*request.tools[:-1], change(request.tools[-1])))


def _reordered(value: Any) -> Any:
    """The same JSON value with every object's keys in the reverse order."""
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


def test_every_request_field_is_covered_by_a_change_or_deliberately_excluded() -> None:
    """A field added to GenerationRequest or SamplingOptions is keyed automatically; this
    makes sure the property test below learns to change it too."""
    request_fields = {f.name for f in dataclasses.fields(GenerationRequest)} - EXCLUDED_REQUEST_FIELDS - {"sampling", "messages"}
    sampling_fields = {f.name for f in dataclasses.fields(SamplingOptions)}
    assert request_fields | sampling_fields <= set(FIELD_CHANGES)
    # The dataclasses inside: a message's fields and its parts', a tool's, the tool choice's.
    assert {f"messages.{f.name}" for f in dataclasses.fields(Message)} - {"messages.parts"} <= set(FIELD_CHANGES)
    part_names = {TextPart: "content", ToolCall: "tool_call", ToolResult: "tool_result"}
    assert set(part_names) == set(Part.__args__), "a new part type needs its mutations here"
    assert {f"messages.{part_names[ToolCall]}.{f.name}" for f in dataclasses.fields(ToolCall)} <= set(FIELD_CHANGES)
    assert {f"messages.{part_names[ToolResult]}.{f.name}" for f in dataclasses.fields(ToolResult)} <= set(FIELD_CHANGES)
    assert [f.name for f in dataclasses.fields(TextPart)] == ["text"]  # changed by "messages.content"
    assert {f"tools.{f.name}" for f in dataclasses.fields(Tool)} <= set(FIELD_CHANGES)
    assert {f"tool_choice.{f.name}" for f in dataclasses.fields(ToolChoice)} <= set(FIELD_CHANGES)
    document = key_document(GenerationRequest(messages=(Message.of(Role.USER, "x"),)), DEFAULT)
    assert set(document["sampling"]) == sampling_fields


@settings(max_examples=300, deadline=None, database=None)
@given(request=requests, field=st.sampled_from(sorted(FIELD_CHANGES)), text=texts)
def test_changing_any_one_field_is_a_miss(request: GenerationRequest, field: str, text: str) -> None:
    changed = FIELD_CHANGES[field](request, text)
    assert changed != request
    assert cache_key(changed, DEFAULT) != cache_key(request, DEFAULT)


@settings(max_examples=100, deadline=None, database=None)
@given(request=requests)
def test_fields_that_cannot_change_the_answer_share_a_key(request: GenerationRequest) -> None:
    key = cache_key(request, DEFAULT)
    assert cache_key(dataclasses.replace(request, no_cache=not request.no_cache, no_store=not request.no_store), DEFAULT) == key
    assert cache_key(_sampling(request, stop=tuple(reversed(request.sampling.stop))), DEFAULT) == key
    if request.strategy is None:
        assert cache_key(dataclasses.replace(request, strategy=DEFAULT), DEFAULT) == key
    # JSON values (schemas, tool arguments) are keyed in canonical form: key order is no change.
    reordered = dataclasses.replace(
        request,
        messages=tuple(
            Message(m.role, tuple(dataclasses.replace(p, arguments=_reordered(p.arguments)) if isinstance(p, ToolCall) else p for p in m.parts))
            for m in request.messages
        ),
        tools=tuple(dataclasses.replace(tool, parameters=_reordered(tool.parameters)) for tool in request.tools),
    )
    assert cache_key(_sampling(reordered, response_schema=_reordered(request.sampling.response_schema)), DEFAULT) == key
    assert cache_key(request, DEFAULT) == key  # deterministic


def test_the_server_default_strategy_is_part_of_the_key() -> None:
    request = GenerationRequest(messages=(Message.of(Role.USER, "hi"),))
    assert cache_key(request, RoutingStrategy.COST) != cache_key(request, RoutingStrategy.PERFORMANCE)


def test_a_callers_cache_scope_follows_the_models_its_key_allows() -> None:
    """A key whose models list an operator shortened is never served an answer cached (in a
    shared Redis, say) while it still allowed a model it has lost: the list is in the scope."""
    from llm_manager_server.cache.response_cache import ResponseCache
    from llm_manager_server.cache.stores import MemoryCacheStore
    from llm_manager_server.domain.caller import Caller, caller_var
    from llm_manager_server.domain.types import RoutingStrategy

    def scope(cache: ResponseCache, caller: Caller | None) -> str:
        token = caller_var.set(caller)
        try:
            return cache.scope()
        finally:
            caller_var.reset(token)

    own = ResponseCache(MemoryCacheStore(max_entries=10, max_bytes=1 << 20, ttl_s=60), default_strategy=RoutingStrategy.BALANCED)
    wide, narrow = Caller("x", frozenset({"gpt-4o", "gpt-4o-mini"})), Caller("x", frozenset({"gpt-4o-mini"}))
    assert scope(own, wide) != scope(own, narrow)
    assert scope(own, narrow) != scope(own, Caller("y", frozenset({"gpt-4o-mini"})))  # never another caller's
    assert scope(own, None) == ""
    shared = ResponseCache(
        MemoryCacheStore(max_entries=10, max_bytes=1 << 20, ttl_s=60), default_strategy=RoutingStrategy.BALANCED, shared_across_callers=True
    )
    assert scope(shared, narrow) == scope(shared, Caller("y", frozenset({"gpt-4o-mini"}))) != scope(shared, wide)
