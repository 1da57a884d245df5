"""Checks a model's answer against what the request asked for, before anything reaches the
caller: every tool call names one of the request's tools and its arguments validate against
the tool's schema; ``tool_choice`` is obeyed; a JSON-schema answer parses and validates (and is
then carried, parsed, as ``structured_output``). A failure is ``INVALID_MODEL_OUTPUT``: a failed
attempt of that model (retried, or the next model tried, as for any retryable failure).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..domain.errors import ErrorKind, LLMError
from ..domain.schemas import violation
from ..domain.types import Answer, GenerationRequest, ResponseFormat, Tool, ToolCall, ToolChoiceMode


def _invalid(model: str, problem: str) -> LLMError:
    return LLMError(ErrorKind.INVALID_MODEL_OUTPUT, f"model {model!r} gave an invalid answer: {problem}", model=model, metadata={"violation": problem[:300]})


@dataclass(frozen=True, slots=True)
class OutputCheck:
    request: GenerationRequest

    @property
    def needed(self) -> bool:
        """False for plain text requests: nothing to check, nothing to cost."""
        request = self.request
        return bool(request.tools) or request.sampling.response_format is ResponseFormat.JSON_SCHEMA

    def _tool(self, name: str) -> Tool | None:
        return next((t for t in self.request.tools if t.name == name), None)

    def tool_calls(self, calls: tuple[ToolCall, ...], model: str) -> None:
        """Raises unless every call is of a known, allowed tool with valid arguments."""
        choice = self.request.tool_choice
        for call in calls:
            tool = self._tool(call.name)
            if tool is None:
                raise _invalid(model, f"called tool {call.name!r}, which the request does not offer")
            if choice is not None and choice.mode is ToolChoiceMode.NONE:
                raise _invalid(model, f"called tool {call.name!r} although tool_choice is none")
            if choice is not None and choice.mode is ToolChoiceMode.TOOL and call.name != choice.name:
                raise _invalid(model, f"called tool {call.name!r} although tool_choice requires {choice.name!r}")
            problem = violation(tool.parameters, call.arguments)
            if problem is not None:
                raise _invalid(model, f"arguments of tool {call.name!r} {problem}")

    def answer(self, answer: Answer, model: str, *, tool_calls_checked: bool) -> Answer:
        """The answer, with ``structured_output`` set when the request asked for a schema;
        raises INVALID_MODEL_OUTPUT when it does not conform."""
        if not self.needed:
            return answer
        if not tool_calls_checked:
            self.tool_calls(answer.tool_calls, model)
        choice = self.request.tool_choice
        if self.request.tools and choice is not None and choice.mode in (ToolChoiceMode.REQUIRED, ToolChoiceMode.TOOL) and not answer.tool_calls:
            raise _invalid(model, "answered without calling a tool although tool_choice requires one")
        sampling = self.request.sampling
        if sampling.response_format is ResponseFormat.JSON_SCHEMA and sampling.response_schema is not None and not answer.tool_calls:
            try:
                document = json.loads(answer.text)
            except ValueError:
                raise _invalid(model, "the answer is not JSON") from None
            if not isinstance(document, dict):
                raise _invalid(model, "the answer is not a JSON object")
            problem = violation(sampling.response_schema, document)
            if problem is not None:
                raise _invalid(model, f"the answer {problem}")
            answer.structured_output = document
        return answer
