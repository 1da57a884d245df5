"""Model facts the service ships with: provider by name, context windows and prices.

Prices are US dollars per million tokens from the providers' public price lists (2025);
local models cost nothing. Unknown cloud models fall back to their family's entry so a new
model name still gets a sensible window and a non-zero price.
"""

from __future__ import annotations

from dataclasses import dataclass

from .domain.types import ProviderKind, Usage


@dataclass(frozen=True)
class Price:
    input_per_million: float = 0.0
    output_per_million: float = 0.0
    cached_input_per_million: float = 0.0

    def cost(self, usage: Usage) -> float:
        """The price of ``usage``; cached prompt tokens are billed at the cached rate."""
        uncached = max(usage.prompt_tokens - usage.cached_prompt_tokens, 0)
        total = (
            uncached * self.input_per_million
            + usage.cached_prompt_tokens * self.cached_input_per_million
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
    "claude-3-haiku": ModelFacts(200_000, Price(0.25, 1.25, 0.03)),
    "claude-3-5-haiku": ModelFacts(200_000, Price(0.80, 4.00, 0.08)),
    "claude-haiku-4-5": ModelFacts(200_000, Price(1.00, 5.00, 0.10)),
    "claude-3-opus": ModelFacts(200_000, Price(15.00, 75.00, 1.50)),
    "claude-opus-4": ModelFacts(200_000, Price(15.00, 75.00, 1.50)),
    "claude-opus-4-5": ModelFacts(200_000, Price(5.00, 25.00, 0.50)),
    "claude-": ModelFacts(200_000, Price(3.00, 15.00, 0.30)),
}


def provider_for_model(name: str) -> ProviderKind:
    """The contract's name rule: claude-* -> Anthropic, gpt-*/o1*/o3*/o4* -> OpenAI, else local."""
    lowered = name.lower()
    if lowered.startswith("claude-"):
        return ProviderKind.ANTHROPIC
    if lowered.startswith(("gpt-", "o1", "o3", "o4")):
        return ProviderKind.OPENAI
    return ProviderKind.LOCAL


def facts_for(name: str, *, local_context_window: int) -> ModelFacts:
    """Context window and price of a model by name."""
    if provider_for_model(name) is ProviderKind.LOCAL:
        return ModelFacts(local_context_window, FREE)
    lowered = name.lower()
    matches = [prefix for prefix in _CLOUD_FACTS if lowered.startswith(prefix)]
    if matches:
        return _CLOUD_FACTS[max(matches, key=len)]
    return ModelFacts(128_000, Price(2.50, 10.00, 1.25))
