"""Provider-neutral generation requests and replies.

A request is a :class:`GenerationRequest` of :class:`Message` s, each a role and a tuple of
typed parts (text, tool calls, tool results; images later are one more part). A reply is one
:class:`Answer`, from the provider through the router and the cache to the servicer: text,
tool calls, structured output, usage, cost and how it was produced. A stream is a sequence of
:class:`StreamDelta` s whose last one carries the complete :class:`Answer`.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# A JSON object as decoded by ``json.loads``: tool arguments, schemas, structured output.
JsonObject = dict[str, Any]


class Role(enum.Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class ProviderKind(enum.Enum):
    LOCAL = "local"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"


class TaskType(enum.Enum):
    GENERAL = "general"
    ANALYSIS = "analysis"
    UI_GENERATION = "ui_generation"
    CONFIG_MANAGEMENT = "config_management"
    SQL_GENERATION = "sql_generation"


class RoutingStrategy(enum.Enum):
    COST = "cost"
    PERFORMANCE = "performance"
    BALANCED = "balanced"


class FinishReason(enum.Enum):
    UNSPECIFIED = "unspecified"
    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    TOOL_CALLS = "tool_calls"
    OTHER = "other"


class Capability(enum.Enum):
    TOOLS = "tools"
    JSON_SCHEMA = "json_schema"
    VISION = "vision"
    REASONING = "reasoning"
    # Turns text into vectors (``Embed``): embedding models, and local models' pooled states.
    EMBEDDINGS = "embeddings"


class ResponseFormat(enum.Enum):
    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


# What a model name may be: letters, digits and the separators real names use
# ("gpt-4o-mini", "claude-sonnet-4-6", "llama3.1:8b", "hf.co/org/Model-GGUF:Q4_K_M",
# "lmstudio-community/meta-llama-3.1-8b-instruct@q4_k_m"), at most 256 characters.
MAX_MODEL_NAME_LENGTH = 256
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,255}")
MODEL_NAME_RULE = f"must be 1-{MAX_MODEL_NAME_LENGTH} letters, digits or . _ : / @ + - (starting with a letter or digit)"


def is_valid_model_name(name: str) -> bool:
    return _MODEL_NAME.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A model's call of one tool, complete; ``arguments`` valid against the tool's schema."""

    id: str
    name: str
    arguments: JsonObject


@dataclass(frozen=True, slots=True)
class ToolResult:
    """A tool's result, answering the call ``tool_call_id``."""

    tool_call_id: str
    content: str


Part = TextPart | ToolCall | ToolResult


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message: a role and its parts, in order."""

    role: Role
    parts: tuple[Part, ...]

    @staticmethod
    def of(role: Role, text: str) -> Message:
        """A message of one text part."""
        return Message(role, (TextPart(text),))

    @property
    def content(self) -> str:
        """The message's text: its text parts, or a tool message's result."""
        parts = self.parts
        if len(parts) == 1 and isinstance(parts[0], TextPart):
            return parts[0].text  # the common case, without a join
        return "".join(p.text if isinstance(p, TextPart) else p.content if isinstance(p, ToolResult) else "" for p in parts)

    @property
    def chars(self) -> int:
        """What a token estimate counts: text, tool calls (name and compact JSON arguments)
        and tool results."""
        parts = self.parts
        if len(parts) == 1 and isinstance(parts[0], TextPart):
            return len(parts[0].text)
        total = 0
        for part in parts:
            if isinstance(part, TextPart):
                total += len(part.text)
            elif isinstance(part, ToolCall):
                total += len(part.name) + len(json.dumps(part.arguments, ensure_ascii=False, separators=(",", ":")))
            else:
                total += len(part.content)
        return total

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(p for p in self.parts if isinstance(p, ToolCall))

    @property
    def tool_result(self) -> ToolResult | None:
        return next((p for p in self.parts if isinstance(p, ToolResult)), None)


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call; ``parameters`` is a JSON Schema object."""

    name: str
    description: str = ""
    parameters: JsonObject = field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolChoiceMode(enum.Enum):
    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"
    TOOL = "tool"  # the one tool named by ``ToolChoice.name``


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: ToolChoiceMode = ToolChoiceMode.AUTO
    name: str | None = None


@dataclass(frozen=True, slots=True)
class SamplingOptions:
    """What the caller asked of the model; ``None`` leaves the provider's default."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    response_format: ResponseFormat = ResponseFormat.TEXT
    # With ResponseFormat.JSON_SCHEMA: the schema the answer must conform to.
    response_schema: JsonObject | None = None


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A validated request as the router sees it (system prompt first in ``messages``)."""

    messages: tuple[Message, ...]
    task_type: TaskType = TaskType.GENERAL
    sampling: SamplingOptions = SamplingOptions()
    model: str | None = None
    strategy: RoutingStrategy | None = None
    no_cache: bool = False
    no_store: bool = False
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None


@dataclass(frozen=True, slots=True)
class ModelCall:
    """One request to one model: what a provider receives."""

    model: str
    messages: tuple[Message, ...]
    sampling: SamplingOptions
    # Seconds this attempt may take at most (already bounded by the caller's deadline).
    timeout_s: float | None = None
    # W3C trace context of this call's span, sent as HTTP headers to the provider.
    trace_headers: Mapping[str, str] = field(default_factory=dict)
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_prompt_tokens: int = 0
    cache_creation_tokens: int = 0


@dataclass(frozen=True, slots=True)
class BilledAttempt:
    """An attempt the provider answered in full (and so charged for) whose answer the router
    rejected: structured output or tool arguments that did not validate. Its usage and cost
    are booked to the caller besides the answer's, under the model that gave it."""

    model: str
    usage: Usage
    cost_usd: float


@dataclass
class CallMetadata:
    """How an answer was produced (filled by the router)."""

    model_chain: list[str] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)
    retry_count: int = 0
    fallback_used: bool = False
    cached: bool = False
    strategy: RoutingStrategy = RoutingStrategy.BALANCED
    provider: ProviderKind | None = None
    routing_reason: str = ""
    # The deployment (named endpoint) that answered.
    deployment: str = ""
    # Complete answers rejected before this one (the answer's own usage is not among them).
    billed_attempts: list[BilledAttempt] = field(default_factory=list)


@dataclass(slots=True)
class Answer:
    """A complete answer, the one type that flows from provider to servicer: the provider
    fills what the model said, the router adds the cost and how it was produced."""

    text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: FinishReason = FinishReason.UNSPECIFIED
    tool_calls: tuple[ToolCall, ...] = ()
    # With ResponseFormat.JSON_SCHEMA: ``text`` parsed and validated against the schema.
    structured_output: JsonObject | None = None
    cost_usd: float = 0.0
    metadata: CallMetadata = field(default_factory=CallMetadata)


@dataclass(frozen=True, slots=True)
class StreamDelta:
    """One piece of a stream: new text and tool calls that just completed (each once, whole);
    the last piece carries the complete :class:`Answer` (usage, finish reason, everything)."""

    text: str = ""
    model: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    answer: Answer | None = None
