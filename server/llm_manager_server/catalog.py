"""Model facts the service ships with: provider by name, context windows and prices.

Prices are US dollars per million tokens from the providers' public price lists (2025);
local models cost nothing unless the operator's price file says otherwise. Unknown cloud
models fall back to their family's entry so a new model name still gets a sensible window
and a non-zero price. ``LLM_PRICES_FILE`` entries are merged over the shipped table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .domain.types import Capability, ProviderKind, Usage
from .providers.registry import MODEL_PREFIXES


@dataclass(frozen=True)
class Price:
    input_per_million: float = 0.0
    output_per_million: float = 0.0
    cached_input_per_million: float = 0.0
    # Anthropic bills prompt-cache writes above the input rate; None means the input rate.
    cache_write_per_million: float | None = None

    def cost(self, usage: Usage) -> float:
        """The price of ``usage``: cache reads at the cached rate, cache writes at the write
        rate, the rest of the prompt at the input rate (``prompt_tokens`` includes both)."""
        cache_write_rate = self.input_per_million if self.cache_write_per_million is None else self.cache_write_per_million
        uncached = max(usage.prompt_tokens - usage.cached_prompt_tokens - usage.cache_creation_tokens, 0)
        total = (
            uncached * self.input_per_million
            + usage.cached_prompt_tokens * self.cached_input_per_million
            + usage.cache_creation_tokens * cache_write_rate
            + usage.completion_tokens * self.output_per_million
        )
        return total / 1_000_000


@dataclass(frozen=True)
class ModelFacts:
    context_window: int
    price: Price


FREE = Price()

# Longest matching prefix wins.
_CLOUD_FACTS: dict[str, ModelFacts] = {
    "gpt-4o-mini": ModelFacts(128_000, Price(0.15, 0.60, 0.075)),
    "gpt-4o": ModelFacts(128_000, Price(2.50, 10.00, 1.25)),
    "gpt-4.1-nano": ModelFacts(1_047_576, Price(0.10, 0.40, 0.025)),
    "gpt-4.1-mini": ModelFacts(1_047_576, Price(0.40, 1.60, 0.10)),
    "gpt-4.1": ModelFacts(1_047_576, Price(2.00, 8.00, 0.50)),
    "gpt-4-turbo": ModelFacts(128_000, Price(10.00, 30.00, 10.00)),
    "gpt-4": ModelFacts(8_192, Price(30.00, 60.00, 30.00)),
    "gpt-3.5-turbo": ModelFacts(16_385, Price(0.50, 1.50, 0.50)),
    "gpt-5-mini": ModelFacts(400_000, Price(0.25, 2.00, 0.025)),
    "gpt-5-nano": ModelFacts(400_000, Price(0.05, 0.40, 0.005)),
    "gpt-5": ModelFacts(400_000, Price(1.25, 10.00, 0.125)),
    "gpt-": ModelFacts(128_000, Price(2.50, 10.00, 1.25)),
    "o1-mini": ModelFacts(128_000, Price(1.10, 4.40, 0.55)),
    "o1": ModelFacts(200_000, Price(15.00, 60.00, 7.50)),
    "o3-mini": ModelFacts(200_000, Price(1.10, 4.40, 0.55)),
    "o3": ModelFacts(200_000, Price(2.00, 8.00, 0.50)),
    "o4-mini": ModelFacts(200_000, Price(1.10, 4.40, 0.275)),
    # Anthropic: cache reads 0.1x input, 5-minute cache writes 1.25x input.
    "claude-3-haiku": ModelFacts(200_000, Price(0.25, 1.25, 0.03, 0.30)),
    "claude-3-5-haiku": ModelFacts(200_000, Price(0.80, 4.00, 0.08, 1.00)),
    "claude-haiku-4-5": ModelFacts(200_000, Price(1.00, 5.00, 0.10, 1.25)),
    "claude-3-opus": ModelFacts(200_000, Price(15.00, 75.00, 1.50, 18.75)),
    "claude-opus-4": ModelFacts(200_000, Price(15.00, 75.00, 1.50, 18.75)),
    "claude-opus-4-5": ModelFacts(200_000, Price(5.00, 25.00, 0.50, 6.25)),
    "claude-opus-4-6": ModelFacts(200_000, Price(5.00, 25.00, 0.50, 6.25)),
    "claude-": ModelFacts(200_000, Price(3.00, 15.00, 0.30, 3.75)),
    # Embedding models: input tokens only, up to 8191 per input.
    "text-embedding-3-small": ModelFacts(8_191, Price(0.02, 0.0, 0.02)),
    "text-embedding-3-large": ModelFacts(8_191, Price(0.13, 0.0, 0.13)),
    "text-embedding-ada-002": ModelFacts(8_191, Price(0.10, 0.0, 0.10)),
    "text-embedding-": ModelFacts(8_191, Price(0.13, 0.0, 0.13)),
}

_CLOUD_FACTS.update({
    # Gemini API paid tier, prompts up to 200k tokens (longer prompts cost more).
    "gemini-2.5-pro": ModelFacts(1_048_576, Price(1.25, 10.00, 0.31)),
    "gemini-2.5-flash-lite": ModelFacts(1_048_576, Price(0.10, 0.40, 0.025)),
    "gemini-2.5-flash": ModelFacts(1_048_576, Price(0.30, 2.50, 0.075)),
    "gemini-2.0-flash": ModelFacts(1_048_576, Price(0.10, 0.40, 0.025)),
    "gemini-": ModelFacts(1_048_576, Price(0.30, 2.50, 0.075)),
})
_UNKNOWN_CLOUD = ModelFacts(128_000, Price(2.50, 10.00, 1.25))


def provider_for_model(name: str) -> ProviderKind:
    """The contract's name rule: a name maps to the provider whose model-family prefix it has
    (each provider's spec declares them: claude-* -> Anthropic, gpt-*/o1*/o3*/o4* -> OpenAI,
    gemini-* -> Gemini), anything else -> local."""
    lowered = name.lower()
    for prefixes, kind in MODEL_PREFIXES:
        if lowered.startswith(prefixes):
            return kind
    return ProviderKind.LOCAL


def _longest_prefix(name: str, prefixes: Mapping[str, object]) -> str | None:
    matches = [prefix for prefix in prefixes if name.startswith(prefix.lower())]
    return max(matches, key=len) if matches else None


def facts_for(name: str, *, local_context_window: int, price_overrides: Mapping[str, Price] | None = None) -> ModelFacts:
    """Context window and price of a model by name.

    ``price_overrides`` (model-name prefix -> price, from ``LLM_PRICES_FILE``) are merged over
    the shipped table and the longest matching prefix wins, so an override for ``gpt-4o``
    does not reprice ``gpt-4o-mini``, which has an entry of its own.
    """
    lowered = name.lower()
    if provider_for_model(name) is ProviderKind.LOCAL:
        window, price, shipped_prefix = local_context_window, FREE, ""
    else:
        shipped = _longest_prefix(lowered, _CLOUD_FACTS)
        facts = _CLOUD_FACTS[shipped] if shipped else _UNKNOWN_CLOUD
        window, price, shipped_prefix = facts.context_window, facts.price, shipped or ""
    overrides = price_overrides or {}
    overridden = _longest_prefix(lowered, overrides)
    if overridden is not None and len(overridden) >= len(shipped_prefix):
        price = overrides[overridden]
    return ModelFacts(window, price)


# Older chat models without function calling or JSON-schema answers.
_NO_TOOLS_PREFIXES = ("gpt-3.5-turbo-instruct", "gpt-4-0314", "gpt-4-32k-0314")
_VISION_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4-turbo", "gpt-5", "o1", "o3", "o4", "claude-", "gemini-")
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5", "claude-3-7", "claude-sonnet-4", "claude-opus-4", "claude-haiku-4", "gemini-2.5")


_EMBEDDING_PREFIXES = ("text-embedding-",)
EMBEDDING_ONLY = frozenset({Capability.EMBEDDINGS})


def capabilities_for(name: str, *, local_tools: bool = True, kind: ProviderKind | None = None) -> frozenset[Capability]:
    """What a model can do, by name. Every cloud chat model this service maps calls tools and
    answers JSON schemas (OpenAI natively; Claude through tools); local models answer JSON
    schemas through llama.cpp's grammar, and call tools through it too (the server offers the
    tools as a schema-constrained answer) unless ``local_tools`` is off. OpenAI's
    ``text-embedding-*`` models only make embeddings; every local model makes them too (its
    pooled hidden states: llama.cpp serves ``/v1/embeddings`` for any GGUF)."""
    lowered = name.lower()
    kind = kind or provider_for_model(name)
    if kind is ProviderKind.LOCAL:
        return frozenset({Capability.JSON_SCHEMA, Capability.EMBEDDINGS, *((Capability.TOOLS,) if local_tools else ())})
    if lowered.startswith(_EMBEDDING_PREFIXES):
        return EMBEDDING_ONLY
    found = {Capability.JSON_SCHEMA, Capability.TOOLS} if not lowered.startswith(_NO_TOOLS_PREFIXES) else set()
    if lowered.startswith(_VISION_PREFIXES):
        found.add(Capability.VISION)
    if lowered.startswith(_REASONING_PREFIXES):
        found.add(Capability.REASONING)
    return frozenset(found)
