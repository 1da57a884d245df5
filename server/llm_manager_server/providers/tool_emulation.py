"""Tool calling for any model that answers JSON schemas: the tools are offered as a
schema-constrained answer.

Small local models often have no tool template (SmolLM2's has none), but llama.cpp turns a
JSON schema into a grammar, so the model can only answer in the shape it is given. For a call
with tools this provider wraps the real one: the tools are described in a system message and
the answer is constrained to an *envelope*, either ``{"tool_calls": [{"name": <tool>,
"arguments": <that tool's parameters>}, ...]}`` or ``{"answer": <text, or the caller's schema>}``
(``tool_choice`` decides which are allowed). The envelope is then unwrapped into tool calls or
text, so the router and the caller see the same answer as from a model with native tools.

The envelope is JSON the caller must not see, so a stream with tools is read whole and then
answered: its text (if any) and its tool calls, then the final answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from ..domain.embeddings import EmbeddingCall, Embeddings
from ..domain.errors import ErrorKind, LLMError
from ..domain.types import (
    Answer,
    FinishReason,
    JsonObject,
    Message,
    ModelCall,
    ProviderKind,
    ResponseFormat,
    Role,
    StreamDelta,
    ToolCall,
    ToolChoiceMode,
)
from .base import HealthReport, Provider, answer_from_stream, embed_with


# Calls one emulated answer may make: small models otherwise repeat a call until max_tokens.
MAX_EMULATED_CALLS = 4


def _answer_branch(call: ModelCall) -> JsonObject:
    sampling = call.sampling
    content: JsonObject = {"type": "string"}
    if sampling.response_format is ResponseFormat.JSON_SCHEMA and sampling.response_schema is not None:
        content = sampling.response_schema
    return {"type": "object", "properties": {"answer": content}, "required": ["answer"], "additionalProperties": False}


def _calls_branch(call: ModelCall) -> JsonObject:
    choice = call.tool_choice
    tools = [t for t in call.tools if choice is None or choice.mode is not ToolChoiceMode.TOOL or t.name == choice.name]
    one_call = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": t.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    items: JsonObject = one_call[0] if len(one_call) == 1 else {"anyOf": one_call}
    return {
        "type": "object",
        "properties": {"tool_calls": {"type": "array", "items": items, "minItems": 1, "maxItems": MAX_EMULATED_CALLS}},
        "required": ["tool_calls"],
        "additionalProperties": False,
    }


def envelope_schema(call: ModelCall) -> JsonObject:
    """The schema the answer to a call with tools must conform to."""
    mode = call.tool_choice.mode if call.tool_choice is not None else ToolChoiceMode.AUTO
    if mode in (ToolChoiceMode.REQUIRED, ToolChoiceMode.TOOL):
        return _calls_branch(call)
    return {"anyOf": [_calls_branch(call), _answer_branch(call)]}


def _instructions(call: ModelCall) -> str:
    described = "\n".join(f"- {t.name}: {t.description or '(no description)'}; arguments schema: {json.dumps(t.parameters)}" for t in call.tools)
    return (
        "You can call these tools:\n"
        f"{described}\n"
        'To call tools, answer {"tool_calls": [{"name": ..., "arguments": {...}}]}. '
        'To answer without tools, answer {"answer": ...}. Answer with JSON only.'
    )


def _history(message: Message) -> Message:
    """Earlier tool calls and results as text the model understands in the same terms."""
    if message.role is Role.TOOL:
        result = message.tool_result
        return Message.of(Role.USER, f"Result of tool call {result.tool_call_id if result else ''}: {message.content}")
    if message.tool_calls:
        envelope = {"tool_calls": [{"name": c.name, "arguments": c.arguments} for c in message.tool_calls]}
        return Message.of(Role.ASSISTANT, json.dumps(envelope, ensure_ascii=False))
    return message


def emulated_call(call: ModelCall) -> ModelCall:
    """The call as the wrapped model receives it: no tools, an instruction, an envelope schema."""
    messages = (Message.of(Role.SYSTEM, _instructions(call)), *(_history(m) for m in call.messages))
    sampling = replace(call.sampling, response_format=ResponseFormat.JSON_SCHEMA, response_schema=envelope_schema(call))
    return replace(call, messages=messages, sampling=sampling, tools=(), tool_choice=None)


def unwrap(answer: Answer, call: ModelCall) -> Answer:
    """The envelope answer as text or tool calls (invalid envelopes are the model's invalid
    output: a failed attempt, as with any tool-capable model)."""
    try:
        envelope: Any = json.loads(answer.text)
    except ValueError:
        envelope = None
    if isinstance(envelope, dict) and isinstance(envelope.get("tool_calls"), list) and envelope["tool_calls"]:
        calls = []
        for index, item in enumerate(envelope["tool_calls"]):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not isinstance(item.get("arguments"), dict):
                break
            calls.append(ToolCall(f"call_{index}", item["name"], item["arguments"]))
        else:
            return replace(answer, text="", tool_calls=tuple(calls), finish_reason=FinishReason.TOOL_CALLS)
    if isinstance(envelope, dict) and "answer" in envelope:
        content = envelope["answer"]
        return replace(answer, text=content if isinstance(content, str) else json.dumps(content, ensure_ascii=False))
    if answer.finish_reason is FinishReason.LENGTH:
        problem = "its answer was cut by max_tokens before the tool-call JSON was complete"
    else:
        problem = "its answer is not a tool call or an answer in the requested JSON shape"
    raise LLMError(ErrorKind.INVALID_MODEL_OUTPUT, f"model {call.model!r} gave an invalid answer: {problem}", model=call.model, metadata={"violation": problem})


class EmulatedToolsProvider:
    """Wraps a provider whose models answer JSON schemas; calls with tools are emulated,
    every other call passes straight through."""

    def __init__(self, inner: Provider) -> None:
        self._inner = inner

    def __repr__(self) -> str:
        return f"EmulatedToolsProvider({self._inner!r})"

    @property
    def inner(self) -> Provider:
        return self._inner

    @property
    def kind(self) -> ProviderKind:
        return self._inner.kind

    async def start(self) -> None:
        await self._inner.start()

    async def close(self) -> None:
        await self._inner.close()

    async def health(self) -> HealthReport:
        return await self._inner.health()

    async def list_models(self) -> list[str]:
        lister = getattr(self._inner, "list_models", None)
        return list(await lister()) if lister is not None else []

    async def embed(self, call: EmbeddingCall) -> Embeddings:
        """Embeddings need no tools: straight to the wrapped provider."""
        return await embed_with(self._inner, call)

    @staticmethod
    def _emulates(call: ModelCall) -> bool:
        return bool(call.tools) and not (call.tool_choice is not None and call.tool_choice.mode is ToolChoiceMode.NONE)

    async def generate(self, call: ModelCall) -> Answer:
        if not self._emulates(call):
            return await self._inner.generate(replace(call, tools=(), tool_choice=None) if call.tools else call)
        return unwrap(await self._inner.generate(emulated_call(call)), call)

    async def stream(self, call: ModelCall) -> AsyncIterator[StreamDelta]:
        if not self._emulates(call):
            async for delta in self._inner.stream(replace(call, tools=(), tool_choice=None) if call.tools else call):
                yield delta
            return
        answer = unwrap(await answer_from_stream(self._inner.stream(emulated_call(call)), call.model), call)
        if answer.text:
            yield StreamDelta(text=answer.text, model=answer.model)
        if answer.tool_calls:
            yield StreamDelta(model=answer.model, tool_calls=answer.tool_calls)
        yield StreamDelta(model=answer.model, answer=answer)
