"""The rules a generation request meets, whatever transport carries it.

gRPC (``servicers.convert``) and the OpenAI-compatible HTTP API (``http.chat``) each read their
own wire format into domain values and name fields their own way (``preferences.max_tokens``
here, ``max_tokens`` there); the limits and checks on those values live here, once, so a request
refused on one transport is refused on the other for the same reason. Each check appends a
:class:`FieldViolation` per bad field; the caller raises them together (``invalid_request``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from ..providers.anthropic_wire import RESPONSE_TOOL
from .errors import FieldViolation
from .schemas import schema_problem
from .types import MODEL_NAME_RULE, Message, Role, SamplingOptions, Tool, ToolCall, is_valid_model_name

MAX_STOP_SEQUENCES = 4
MAX_REQUEST_CHARS = 2_000_000
# No model this service knows has a window above ~1M tokens; a larger max_tokens is a mistake.
# (Each model's own window is checked by the router: prompt + max_tokens must fit it.)
MAX_MAX_TOKENS = 1 << 20
MAX_TOOLS = 128
MAX_TOOL_DESCRIPTION_CHARS = 4096
MAX_TOOL_CALL_ID_CHARS = 128
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
TOOL_NAME_RULE = "must be 1-64 of a-z, A-Z, 0-9, _ and -"
# Used by the server itself (Anthropic's structured-output tool): no caller's tool may be named so.
RESERVED_TOOL_NAMES = frozenset({RESPONSE_TOOL})

# A sampling field's name as the transport's caller knows it ("max_tokens" -> "preferences.max_tokens").
FieldName = Callable[[str], str]


def check_sampling(sampling: SamplingOptions, model: str | None, violations: list[FieldViolation], field: FieldName) -> None:
    """Ranges of the sampling options, the response schema (when one is given) and the
    model name. Whether a schema must or may accompany the response format is the wire
    format's business (the proto has separate fields, OpenAI's JSON nests one in the other)."""
    max_tokens = sampling.max_tokens
    if max_tokens is not None and not 0 < max_tokens <= MAX_MAX_TOKENS:
        violations.append(FieldViolation(field("max_tokens"), f"must be 1..{MAX_MAX_TOKENS}, got {max_tokens}"))
    temperature = sampling.temperature
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        violations.append(FieldViolation(field("temperature"), f"must be between 0 and 2, got {temperature:g}"))
    top_p = sampling.top_p
    if top_p is not None and not 0.0 < top_p <= 1.0:
        violations.append(FieldViolation(field("top_p"), f"must be in (0, 1], got {top_p:g}"))
    stop = sampling.stop
    if len(stop) > MAX_STOP_SEQUENCES:
        violations.append(FieldViolation(field("stop"), f"at most {MAX_STOP_SEQUENCES} sequences, got {len(stop)}"))
    for index, sequence in enumerate(stop):
        if not sequence:
            violations.append(FieldViolation(f"{field('stop')}[{index}]", "must not be empty"))
    if sampling.response_schema is not None and (problem := schema_problem(sampling.response_schema)) is not None:
        violations.append(FieldViolation(field("response_schema"), problem))
    if model and not is_valid_model_name(model):
        # The name itself is not echoed: it may be huge, or hold anything.
        violations.append(FieldViolation(field("model"), MODEL_NAME_RULE))


def check_tools(tools: Sequence[Tool], violations: list[FieldViolation], field: str = "tools") -> set[str]:
    """Names (the pattern, unique, not reserved), descriptions and parameter schemas of the
    request's tools; returns the names, for the tool choice."""
    names: set[str] = set()
    if len(tools) > MAX_TOOLS:
        violations.append(FieldViolation(field, f"at most {MAX_TOOLS} tools, got {len(tools)}"))
    for index, tool in enumerate(tools):
        where = f"{field}[{index}]"
        if not TOOL_NAME.fullmatch(tool.name):
            violations.append(FieldViolation(f"{where}.name", TOOL_NAME_RULE))
        elif tool.name in names:
            violations.append(FieldViolation(f"{where}.name", f"repeats tool name {tool.name!r}"))
        elif tool.name in RESERVED_TOOL_NAMES:
            violations.append(FieldViolation(f"{where}.name", f"{tool.name!r} is reserved by the server"))
        names.add(tool.name)
        if len(tool.description) > MAX_TOOL_DESCRIPTION_CHARS:
            violations.append(FieldViolation(f"{where}.description", f"must be at most {MAX_TOOL_DESCRIPTION_CHARS} characters"))
        if (problem := schema_problem(tool.parameters)) is not None:
            violations.append(FieldViolation(f"{where}.parameters", problem))
    return names


def check_chosen_tool(name: str, tool_names: set[str], violations: list[FieldViolation], field: str) -> None:
    """A tool choice naming one tool: it must be one of the request's."""
    if name not in tool_names:
        violations.append(FieldViolation(field, f"names no tool of the request: {name[:64]!r}"))


class ToolCallLedger:
    """The tool calls of a conversation in message order: each call's id well-formed and used
    once, its name a tool name, and each tool message answering an earlier call, once.
    ``open_calls`` are the calls a stored conversation's last reply left open."""

    __slots__ = ("_seen", "_answerable")

    def __init__(self, open_calls: Iterable[str] = ()) -> None:
        self._seen: set[str] = set()
        self._answerable = set(open_calls)

    def called(self, calls: Sequence[ToolCall], violations: list[FieldViolation], field: Callable[[int], str]) -> None:
        """An assistant message's calls; ``field(i)`` names the i-th call."""
        for index, call in enumerate(calls):
            where = field(index)
            if not call.id or len(call.id) > MAX_TOOL_CALL_ID_CHARS:
                violations.append(FieldViolation(f"{where}.id", f"must be 1-{MAX_TOOL_CALL_ID_CHARS} characters"))
            elif call.id in self._seen:
                violations.append(FieldViolation(f"{where}.id", f"repeats tool call id {call.id!r}"))
            if not TOOL_NAME.fullmatch(call.name):
                violations.append(FieldViolation(f"{where}.name", TOOL_NAME_RULE))
            self._seen.add(call.id)
            self._answerable.add(call.id)

    def answered(self, tool_call_id: str, violations: list[FieldViolation], field: str) -> bool:
        """A tool message answering ``tool_call_id``; False (with a violation) when no earlier
        call is open under that id."""
        if tool_call_id not in self._answerable:
            violations.append(FieldViolation(field, "does not answer an earlier assistant tool call"))
            return False
        self._answerable.discard(tool_call_id)
        return True


def check_answerable(messages: Sequence[Message], violations: list[FieldViolation], field: str) -> None:
    """The whole request's messages (system prompt first) hold something to answer besides
    system messages."""
    if messages and all(m.role is Role.SYSTEM for m in messages):
        violations.append(FieldViolation(field, "only system messages: give a prompt or a user message to answer"))


def check_request_size(messages: Sequence[Message], violations: list[FieldViolation], field: str) -> None:
    """The request's text within ``MAX_REQUEST_CHARS`` (every transport also bounds its body)."""
    if sum(len(m.content) for m in messages) > MAX_REQUEST_CHARS:
        violations.append(FieldViolation(field, f"the request's text exceeds {MAX_REQUEST_CHARS} characters"))
