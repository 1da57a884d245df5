"""Provider-neutral generation requests and replies."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field


class Role(enum.Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class ProviderKind(enum.Enum):
    LOCAL = "local"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


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
    OTHER = "other"


class ResponseFormat(enum.Enum):
    TEXT = "text"
    JSON_OBJECT = "json_object"


# What a model name may be: letters, digits and the separators real names use
# ("gpt-4o-mini", "claude-sonnet-4-6", "llama3.1:8b", "hf.co/org/Model-GGUF:Q4_K_M",
# "lmstudio-community/meta-llama-3.1-8b-instruct@q4_k_m"), at most 256 characters.
MAX_MODEL_NAME_LENGTH = 256
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,255}")
MODEL_NAME_RULE = f"must be 1-{MAX_MODEL_NAME_LENGTH} letters, digits or . _ : / @ + - (starting with a letter or digit)"


def is_valid_model_name(name: str) -> bool:
    return _MODEL_NAME.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class SamplingOptions:
    """What the caller asked of the model; ``None`` leaves the provider's default."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    response_format: ResponseFormat = ResponseFormat.TEXT


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


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_prompt_tokens: int = 0
    cache_creation_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Completion:
    """A provider's complete answer."""

    text: str
    model: str
    usage: Usage
    finish_reason: FinishReason


@dataclass(frozen=True, slots=True)
class StreamDelta:
    """One piece of a provider stream: new text, and on the final piece usage and finish."""

    text: str = ""
    model: str | None = None
    usage: Usage | None = None
    finish_reason: FinishReason | None = None

    def summary_with(self, later: StreamDelta) -> StreamDelta:
        """The stream's summary so far (no text): ``later``'s model, usage and finish reason
        where it has them, else these."""
        return StreamDelta(
            model=later.model or self.model,
            usage=later.usage or self.usage,
            finish_reason=later.finish_reason or self.finish_reason,
        )


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
    cost_usd: float = 0.0
