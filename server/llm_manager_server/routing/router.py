"""Chooses candidate models per request and walks them with retries and fallback.

Chains (contract): analysis Claude -> GPT -> local; ui-generation GPT -> Claude -> local;
config-management and general local -> GPT -> Claude; sql-generation LLM_SQL_MODEL_1 ->
LLM_SQL_MODEL_2 -> the general chain. Within a provider's place in a chain, the model
preference variables (LLM_GENERAL_MODEL_*/LLM_SQL_MODEL_*) naming that provider's models win
over the provider's own model variable. ``balanced`` keeps the chain order (local first);
``cost`` orders by expected price; ``performance`` by measured latency.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..catalog import provider_for_model
from ..config import RoutingSettings
from ..domain.errors import ErrorKind, LLMError
from ..domain.types import (
    CallMetadata,
    Completion,
    GenerationRequest,
    ModelCall,
    ProviderKind,
    RoutingStrategy,
    StreamDelta,
    TaskType,
)
from .registry import ModelEntry, ModelRegistry

log = logging.getLogger(__name__)

TASK_CHAINS: dict[TaskType, tuple[ProviderKind, ...]] = {
    TaskType.ANALYSIS: (ProviderKind.ANTHROPIC, ProviderKind.OPENAI, ProviderKind.LOCAL),
    TaskType.UI_GENERATION: (ProviderKind.OPENAI, ProviderKind.ANTHROPIC, ProviderKind.LOCAL),
    TaskType.CONFIG_MANAGEMENT: (ProviderKind.LOCAL, ProviderKind.OPENAI, ProviderKind.ANTHROPIC),
    TaskType.GENERAL: (ProviderKind.LOCAL, ProviderKind.OPENAI, ProviderKind.ANTHROPIC),
    TaskType.SQL_GENERATION: (ProviderKind.LOCAL, ProviderKind.OPENAI, ProviderKind.ANTHROPIC),
}

BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 5.0
# Rough prompt size used for cost ordering: ~4 characters a token.
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class RoutePlan:
    candidates: tuple[ModelEntry, ...]
    strategy: RoutingStrategy
    reason: str


class Router:
    def __init__(self, registry: ModelRegistry, settings: RoutingSettings, *, rng: random.Random | None = None) -> None:
        self._registry = registry
        self._settings = settings
        self._rng = rng or random.Random()
        # Exponentially weighted moving average of latency per model, seconds.
        self._latency: dict[str, float] = {}

    # --- planning -------------------------------------------------------------------------

    def _chain_names(self, task: TaskType) -> list[str]:
        llama = self._registry.settings.llama
        names: list[str] = []
        if task is TaskType.SQL_GENERATION:
            names.extend(self._usable(llama.sql_models))
        for kind in TASK_CHAINS[task]:
            if kind not in self._registry.providers:
                continue
            preferred = [m for m in self._usable(llama.general_models) if provider_for_model(m) is kind]
            names.extend(preferred or [self._registry.default_models[kind]])
        return list(dict.fromkeys(names))

    def _usable(self, names: tuple[str, ...]) -> list[str]:
        return [n for n in names if n in self._registry.models]

    def plan(self, request: GenerationRequest) -> RoutePlan:
        strategy = request.strategy or self._settings.strategy
        if request.model:
            # A pinned model is tried even when its last probe failed: the caller asked for it,
            # and its own error says more than "no model available".
            entry = self._registry.resolve(request.model)
            return RoutePlan((entry,), strategy, f"model {request.model!r} pinned by the caller")
        names = self._chain_names(request.task_type)
        entries = [self._registry.models[n] for n in names]
        down = [e for e in entries if not e.available]
        entries = [e for e in entries if e.available]
        if strategy is RoutingStrategy.COST:
            prompt_tokens = sum(len(m.content) for m in request.messages) // CHARS_PER_TOKEN + 1
            completion_tokens = request.sampling.max_tokens or 256
            entries.sort(key=lambda e: e.price.input_per_million * prompt_tokens + e.price.output_per_million * completion_tokens)
            order = "cheapest expected price first"
        elif strategy is RoutingStrategy.PERFORMANCE:
            entries.sort(key=lambda e: self._latency.get(e.name, float("inf")))
            order = "lowest measured latency first (unmeasured last)"
        else:
            order = "task chain order, local first"
        reason = f"task {request.task_type.value}: {order}"
        if down:
            reason += "; skipped unhealthy " + ", ".join(f"{e.name} ({e.health_detail or e.health})" for e in down)
        if not entries:
            raise LLMError(
                ErrorKind.ALL_MODELS_UNAVAILABLE,
                "no model can serve this request: " + (reason if down else "no provider is configured"),
                metadata={f"model.{e.name}": e.health_detail or e.health for e in down},
            )
        log.debug("route plan: %s -> %s", reason, [e.name for e in entries])
        return RoutePlan(tuple(entries), strategy, reason)

    # --- execution ------------------------------------------------------------------------

    def _record_latency(self, model: str, seconds: float) -> None:
        previous = self._latency.get(model)
        self._latency[model] = seconds if previous is None else 0.8 * previous + 0.2 * seconds

    def _backoff(self, attempt: int) -> float:
        delay: float = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt) * (0.5 + self._rng.random() / 2)
        return delay

    @staticmethod
    def _remaining(deadline: float) -> float:
        return deadline - asyncio.get_running_loop().time()

    def _call(self, entry: ModelEntry, request: GenerationRequest, deadline: float) -> ModelCall:
        remaining = self._remaining(deadline)
        if remaining <= 0:
            raise LLMError(ErrorKind.TIMEOUT, "the deadline passed before the model answered", model=entry.name)
        return ModelCall(entry.name, request.messages, request.sampling, timeout_s=remaining)

    def _start(self, request: GenerationRequest, metadata: CallMetadata) -> RoutePlan:
        plan = self.plan(request)
        metadata.strategy = plan.strategy
        metadata.candidates = [e.name for e in plan.candidates]
        metadata.routing_reason = plan.reason
        return plan

    async def _wait_before_retry(self, error: LLMError, attempt: int, deadline: float) -> bool:
        """Sleeps before retrying the same model; False when the retry is not worth it."""
        if not error.retryable or attempt >= self._settings.max_retries:
            return False
        delay = error.retry_after_s if error.retry_after_s is not None else self._backoff(attempt)
        if delay >= self._remaining(deadline):
            return False  # would outlive the caller: move on to the next model now
        await asyncio.sleep(delay)
        return True

    @staticmethod
    def _final_error(failures: list[tuple[str, LLMError]]) -> LLMError:
        if len(failures) == 1:
            return failures[0][1]
        return LLMError(
            ErrorKind.ALL_MODELS_UNAVAILABLE,
            "every candidate model failed: " + "; ".join(f"{m}: {e.kind.value}" for m, e in failures),
            metadata={f"attempt.{i + 1}": f"{m}: {e.kind.value}: {e.message[:200]}" for i, (m, e) in enumerate(failures)},
        )

    def _note_attempt(self, entry: ModelEntry, metadata: CallMetadata, plan: RoutePlan) -> None:
        metadata.model_chain.append(entry.name)
        metadata.provider = entry.provider_kind
        metadata.fallback_used = entry is not plan.candidates[0]

    async def generate(self, request: GenerationRequest, deadline: float, metadata: CallMetadata) -> Completion:
        plan = self._start(request, metadata)
        failures: list[tuple[str, LLMError]] = []
        for entry in plan.candidates:
            attempt = 0
            while True:
                self._note_attempt(entry, metadata, plan)
                started = time.monotonic()
                try:
                    completion = await entry.provider.generate(self._call(entry, request, deadline))
                except LLMError as error:
                    log.info("model %s attempt %d failed: %s", entry.name, attempt + 1, error)
                    if error.kind is ErrorKind.INVALID_REQUEST:
                        raise
                    if await self._wait_before_retry(error, attempt, deadline):
                        attempt += 1
                        metadata.retry_count += 1
                        continue
                    failures.append((entry.name, error))
                    break
                self._record_latency(entry.name, time.monotonic() - started)
                metadata.cost_usd = entry.price.cost(completion.usage)
                return completion
        raise self._final_error(failures)

    async def stream(self, request: GenerationRequest, deadline: float, metadata: CallMetadata) -> AsyncIterator[StreamDelta]:
        """Deltas of the first model that starts streaming.

        Failures before the first text fall back like ``generate``; a failure after text was
        sent is raised with ``partial_output`` metadata (the caller already has part of an
        answer, so no other model may silently continue it).
        """
        plan = self._start(request, metadata)
        failures: list[tuple[str, LLMError]] = []
        for entry in plan.candidates:
            attempt = 0
            while True:
                self._note_attempt(entry, metadata, plan)
                started = time.monotonic()
                sent_text = False
                try:
                    async for delta in entry.provider.stream(self._call(entry, request, deadline)):
                        sent_text = sent_text or bool(delta.text)
                        if delta.usage is not None:
                            metadata.cost_usd = entry.price.cost(delta.usage)
                        yield delta
                except LLMError as error:
                    if sent_text:
                        error.metadata["partial_output"] = "true"
                        error.message = f"stream broke after partial output: {error.message}"
                        raise
                    log.info("model %s stream attempt %d failed: %s", entry.name, attempt + 1, error)
                    if error.kind is ErrorKind.INVALID_REQUEST:
                        raise
                    if await self._wait_before_retry(error, attempt, deadline):
                        attempt += 1
                        metadata.retry_count += 1
                        continue
                    failures.append((entry.name, error))
                    break
                self._record_latency(entry.name, time.monotonic() - started)
                return
        raise self._final_error(failures)
