"""Ordering candidates by strategy. Pure functions over (model, price, measured stats).

- ``cost``: expected price of this request, cheapest first: input price x estimated prompt
  tokens + output price x expected completion tokens (``max_tokens`` or 256).
- ``performance``: expected latency (time to first token for streams, else total latency),
  inflated by the error rate (``latency / (1 - error_rate)``: a model failing half its calls
  costs twice its latency in expectation); unmeasured models go last.
- ``balanced``: ``0.5 * chain position + 0.2 * cost + 0.2 * latency + 0.1 * error rate``,
  position, cost and latency each min-max normalised to [0, 1] across the candidates (an
  unmeasured latency counts 0.5). The task chain (the contract's routing table) stays the
  main order; a model that is much slower or pricier than the next one in the chain, or
  failing, drops behind it. Ties keep the chain order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..catalog import Price
from ..domain.types import Message, RoutingStrategy
from .stats import ModelStats

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4  # role and separator tokens of chat templates
DEFAULT_COMPLETION_TOKENS = 256
WEIGHT_POSITION, WEIGHT_COST, WEIGHT_LATENCY, WEIGHT_ERRORS = 0.5, 0.2, 0.2, 0.1


def estimate_prompt_tokens(messages: Sequence[Message]) -> int:
    """A provider-neutral estimate (~4 characters a token) used for cost and context checks."""
    return sum(m.chars // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE for m in messages) + 1


@dataclass(frozen=True)
class Candidate:
    name: str
    price: Price
    stats: ModelStats


@dataclass(frozen=True)
class Scored:
    name: str
    score: float
    explanation: str


def expected_cost(price: Price, prompt_tokens: int, completion_tokens: int) -> float:
    return (price.input_per_million * prompt_tokens + price.output_per_million * completion_tokens) / 1_000_000


def _normalised(values: list[float | None], unknown: float) -> list[float]:
    known = [v for v in values if v is not None]
    if not known:
        return [unknown for _ in values]
    low, high = min(known), max(known)
    span = high - low
    return [unknown if v is None else (0.0 if span == 0 else (v - low) / span) for v in values]


def rank(
    candidates: Sequence[Candidate],
    strategy: RoutingStrategy,
    *,
    prompt_tokens: int,
    completion_tokens: int | None,
    streaming: bool,
) -> list[Scored]:
    """Candidates best first (stable: equal scores keep the chain order)."""
    completion = completion_tokens or DEFAULT_COMPLETION_TOKENS
    costs = [expected_cost(c.price, prompt_tokens, completion) for c in candidates]
    latencies = [c.stats.expected_latency_s(streaming) for c in candidates]
    scored: list[Scored] = []
    if strategy is RoutingStrategy.COST:
        scored = [Scored(c.name, cost, f"{c.name}: ${cost:.6f} expected") for c, cost in zip(candidates, costs, strict=True)]
    elif strategy is RoutingStrategy.PERFORMANCE:
        for c, latency in zip(candidates, latencies, strict=True):
            if latency is None:
                scored.append(Scored(c.name, float("inf"), f"{c.name}: unmeasured"))
            else:
                effective = latency / max(1e-3, 1.0 - c.stats.error_rate)
                scored.append(Scored(c.name, effective, f"{c.name}: {latency * 1000:.0f} ms, {c.stats.error_rate:.0%} errors"))
    else:
        positions = _normalised([float(i) for i in range(len(candidates))], 0.0)
        columns = zip(candidates, costs, positions, _normalised(list(costs), 0.5), _normalised(latencies, 0.5), strict=True)
        for c, cost, position_n, cost_n, latency_n in columns:
            score = (
                WEIGHT_POSITION * position_n
                + WEIGHT_COST * cost_n
                + WEIGHT_LATENCY * latency_n
                + WEIGHT_ERRORS * c.stats.error_rate
            )
            scored.append(
                Scored(c.name, score, f"{c.name}: score {score:.2f} (${cost:.6f}, latency {latency_n:.2f}, errors {c.stats.error_rate:.0%})")
            )
    return sorted(scored, key=lambda s: s.score)
