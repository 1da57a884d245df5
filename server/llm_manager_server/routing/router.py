"""Chooses candidate models per request and walks them with retries, breakers and fallback.

Chains come from ``RoutingSettings.chains`` (the contract's table by default). Within a
provider's place in a chain, the model preference variables (LLM_GENERAL_MODEL_*,
LLM_SQL_MODEL_*) naming that provider's models win over the provider's own model variable;
SQL generation tries LLM_SQL_MODEL_1/2 before its chain. Candidates must be configured,
allowed to the caller (its API key's ``models``: a pinned model it may not use is
PERMISSION_DENIED, and so is a task none of whose models it may use), not known unhealthy,
not behind an open circuit, and have a context window large enough for the request; they
are then ordered by the strategy (see ``strategy.py``).

Failures: retryable kinds (429, 5xx, network, timeout) are retried on the same model with
exponential backoff and jitter up to ``max_retries``; a 429's retry-after is waited for
when it fits ``max_retry_wait_s`` and the deadline, otherwise the router moves on at once.
Every other failure but INVALID_REQUEST moves on to the next candidate. The caller's
deadline bounds everything: when it passes, the call ends DEADLINE_EXCEEDED naming the
limit that fired (the caller's deadline or LLM_TIMEOUT_MS), the models tried and those never
asked. When every candidate was rate limited the call ends RESOURCE_EXHAUSTED with the
shortest retry-after, so callers back off.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager, aclosing
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from ..catalog import EMBEDDING_ONLY, provider_for_model
from ..config import RoutingSettings
from ..domain.call_context import deadline_exceeded
from ..domain.caller import caller_var
from ..domain.embeddings import EmbeddingCall, EmbeddingRequest, Embeddings
from ..domain.errors import ErrorKind, FieldViolation, LLMError, invalid_request
from ..domain.types import (
    Answer,
    BilledAttempt,
    CallMetadata,
    Capability,
    ResponseFormat,
    ToolChoiceMode,
    GenerationRequest,
    ModelCall,
    ProviderKind,
    RoutingStrategy,
    StreamDelta,
    TaskType,
)
from ..providers.base import embed_with
from ..telemetry import Attempt, Telemetry
from .breaker import CircuitBreaker, CircuitState
from .output_check import OutputCheck
from .registry import ModelEntry, ModelRegistry, Route
from .strategy import Candidate, estimate_prompt_tokens, rank

log = logging.getLogger(__name__)

# The embedding model when nothing else is configured and OpenAI is (its cheapest current one).
DEFAULT_OPENAI_EMBEDDING_MODEL = "text-embedding-3-small"
BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 5.0
# Failures about the model itself, not the deployment that served it: another deployment of
# the same model would do no better, so they never move the call to one.
_ABOUT_THE_MODEL = frozenset({ErrorKind.INVALID_MODEL_OUTPUT, ErrorKind.CONTEXT_TOO_LARGE})
# Failures that say nothing about the model's health: they never trip its breaker. (An invalid
# tool call or structured answer is about this request: the model may answer others well.)
_NOT_THE_MODELS_FAULT = frozenset(
    {
        ErrorKind.INVALID_REQUEST,
        ErrorKind.CONTEXT_TOO_LARGE,
        ErrorKind.RATE_LIMIT_EXCEEDED,
        ErrorKind.RESOURCE_EXHAUSTED,
        ErrorKind.INVALID_MODEL_OUTPUT,
    }
)


_CAPABILITY_SKIP = "lacks"


_NOTHING_NEEDED: frozenset[Capability] = frozenset()


def needed_capabilities(request: GenerationRequest) -> frozenset[Capability]:
    """What a model must be able to do to answer ``request``."""
    if not request.tools and request.sampling.response_format is not ResponseFormat.JSON_SCHEMA:
        return _NOTHING_NEEDED  # plain text: the common case, without building sets
    needed = set()
    if request.tools and not (request.tool_choice is not None and request.tool_choice.mode is ToolChoiceMode.NONE):
        needed.add(Capability.TOOLS)
    if request.sampling.response_format is ResponseFormat.JSON_SCHEMA:
        needed.add(Capability.JSON_SCHEMA)
    return frozenset(needed)


Piece = TypeVar("Piece")
_Yielded = TypeVar("_Yielded", covariant=True)


@dataclass(slots=True)
class AttemptProgress:
    """What the attempt loop learns from one attempt while it runs: when it started, when its
    first output reached the caller (a stream's, which then may not fall back), whether the
    piece it yields is its result, and whether its failure says nothing of the model's health
    (``blameless``: it then trips no breaker)."""

    started: float
    first_output_s: float | None = None
    final: bool = False
    blameless: bool = False


class AttemptRunner(Protocol[_Yielded]):
    """One call of one model on one deployment, as the attempt loop makes it."""

    def __call__(self, entry: ModelEntry, route: Route, metadata: CallMetadata, progress: AttemptProgress, /) -> AsyncGenerator[_Yielded, None]: ...


@dataclass(frozen=True)
class RoutePlan:
    candidates: tuple[ModelEntry, ...]
    strategy: RoutingStrategy
    reason: str


class Router:
    def __init__(
        self,
        registry: ModelRegistry,
        settings: RoutingSettings,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._registry = registry
        self._settings = settings
        self._rng = rng or random.Random()
        self._clock = clock
        self._sleep = sleep
        self._telemetry = telemetry or Telemetry()

    def breaker(self, route: Route, model: str = "") -> CircuitBreaker:
        """The circuit breaker of one model on one deployment, kept on its route."""
        if route.breaker is None:
            breaker = CircuitBreaker(self._settings.breaker_failures, self._settings.breaker_cooldown_s, self._clock)

            def announce(state: CircuitState, name: str = model, deployment: str = route.deployment.name) -> None:
                log.warning("circuit of model %s on deployment %s is now %s", name, deployment, state.value)

            breaker.subscribe(announce)
            route.breaker = breaker
        return route.breaker

    def allows_call(self, entry: ModelEntry) -> bool:
        """True when some deployment of the model would take a call now."""
        return any(self.breaker(r, entry.name).allows_call() for r in entry.routes)

    @staticmethod
    def circuit_detail(entry: ModelEntry) -> str | None:
        """A human-readable note when no deployment of the model has its circuit closed."""
        tripped = [r.breaker for r in entry.routes if r.breaker is not None and r.breaker.state is not CircuitState.CLOSED]
        if not tripped or len(tripped) < len(entry.routes):
            return None
        breaker = tripped[0]
        if breaker.state is CircuitState.HALF_OPEN:
            return f"circuit half-open: next call probes the model (last error: {breaker.last_error})"
        return f"circuit open for {breaker.remaining_open_s():.0f} s after {breaker.consecutive_failures} failures (last error: {breaker.last_error})"

    # --- planning -------------------------------------------------------------------------

    def _chain_names(self, task: TaskType) -> list[str]:
        llama = self._registry.settings.llama
        names: list[str] = []
        if task is TaskType.SQL_GENERATION:
            names.extend(n for n in llama.sql_models if n in self._registry.models)
        for kind in self._settings.chains[task]:
            if kind not in self._registry.defaults:
                continue
            preferred = [m for m in llama.general_models if m in self._registry.models and provider_for_model(m) is kind]
            if preferred:
                names.extend(preferred)
                continue
            default = self._registry.default_models.get(kind)
            if default:
                names.append(default)
            # Models that configured deployments serve take their provider's place too.
            names.extend(self._registry.deployment_models.get(kind, ()))
        return list(dict.fromkeys(names))

    def _primaries(self, task: TaskType) -> list[str]:
        """The task's primary and secondary models (LLM_<TASK>_MODEL_1 / _2), tried first in
        that order whatever the strategy. SQL generation falls back to the general chain, whose
        own primary and secondary come next."""
        llama = self._registry.settings.llama
        names: list[str] = []
        if task is TaskType.SQL_GENERATION:
            names.extend(llama.sql_models)
        if task in (TaskType.GENERAL, TaskType.SQL_GENERATION):
            names.extend(llama.general_models)
        return [n for n in dict.fromkeys(names) if n in self._registry.models]

    @staticmethod
    def check_allowed(model: str) -> None:
        """PERMISSION_DENIED when the calling key may not use ``model`` (a pinned one)."""
        caller = caller_var.get()
        if caller is not None and not caller.may_use(model):
            raise LLMError(ErrorKind.PERMISSION_DENIED, f"this API key may not use model {model!r}", model=model)

    def plan(self, request: GenerationRequest, *, streaming: bool = False) -> RoutePlan:
        strategy = request.strategy or self._settings.strategy
        caller = caller_var.get()
        allowed = None if caller is None else caller.models  # None: any model
        if request.model:
            self.check_allowed(request.model)
            # A pinned model is tried even when its last probe failed: the caller asked for
            # it, and its own error says more than "no model available". An open circuit
            # still fails fast.
            entry = self._registry.resolve(request.model)
            if entry.capabilities == EMBEDDING_ONLY:
                raise invalid_request(FieldViolation("preferences.model", f"model {entry.name!r} only makes embeddings (use Embed)"))
            self._check_not_failing(entry)
            missing = needed_capabilities(request) - entry.capabilities
            if missing:
                raise LLMError(
                    ErrorKind.CONFIGURATION_ERROR,
                    f"model {entry.name!r} cannot serve this request: no {', '.join(sorted(c.value for c in missing))} support",
                    model=entry.name,
                    metadata={"missing_capabilities": ",".join(sorted(c.value for c in missing))},
                )
            self._check_fits(entry, request)
            return RoutePlan((entry,), strategy, f"model {request.model!r} pinned by the caller")
        prompt_tokens = estimate_prompt_tokens(request.messages)
        needed = prompt_tokens + (request.sampling.max_tokens or 0)
        usable: list[ModelEntry] = []
        skipped: dict[str, str] = {}
        needs = needed_capabilities(request)
        names = self._chain_names(request.task_type)
        if allowed is not None:
            # Models the caller may not use are not candidates, nor named in the plan's reason.
            names = [name for name in names if name in allowed]
            if not names:
                raise LLMError(
                    ErrorKind.PERMISSION_DENIED,
                    f"this API key may use none of the models that serve task {request.task_type.value}; pin one it may use in preferences.model",
                )
        for name in names:
            entry = self._registry.models[name]
            if needs and needs - entry.capabilities:
                skipped[name] = f"{_CAPABILITY_SKIP}: {', '.join(sorted(c.value for c in needs - entry.capabilities))}"
            elif not entry.available:
                skipped[name] = f"unhealthy: {entry.health_detail or entry.health}"
            elif not self.allows_call(entry):
                skipped[name] = self.circuit_detail(entry) or "circuit open"
            elif entry.context_window < needed:
                skipped[name] = f"context window {entry.context_window} < ~{needed} tokens needed"
            else:
                usable.append(entry)
        if not usable:
            raise self._nothing_usable(skipped, prompt_tokens, needed)
        by_name = {e.name: e for e in usable}
        first = [by_name[n] for n in self._primaries(request.task_type) if n in by_name]
        rest = [e for e in usable if e not in first]
        ranked = rank(
            [Candidate(e.name, e.price, e.stats) for e in rest],
            strategy,
            prompt_tokens=prompt_tokens,
            completion_tokens=request.sampling.max_tokens,
            streaming=streaming,
        )
        reason = f"task {request.task_type.value}"
        if first:
            roles = ("primary", "secondary")
            reason += ": " + ", ".join(f"{roles[i] if i < 2 else 'preferred'} {e.name}" for i, e in enumerate(first)) + " first"
        reason += f"; strategy {strategy.value}" + (" orders the rest" if first else "") + ": " + ("; ".join(s.explanation for s in ranked) or "(none)")
        if skipped:
            reason += " | skipped " + "; ".join(f"{name} ({why})" for name, why in skipped.items())
        log.debug("route plan: %s", reason)
        return RoutePlan((*first, *(by_name[s.name] for s in ranked)), strategy, reason)

    def _check_not_failing(self, entry: ModelEntry) -> None:
        """A pinned model behind open circuits on every deployment fails fast."""
        if not self.allows_call(entry):
            raise LLMError(
                ErrorKind.MODEL_UNAVAILABLE,
                f"model {entry.name!r} is failing: {self.circuit_detail(entry)}",
                model=entry.name,
                retry_after_s=min(self.breaker(r).remaining_open_s() for r in entry.routes),
            )

    def embedding_model(self) -> str:
        """The model of an embedding request that names none: ``LLM_EMBEDDING_MODEL``, else
        the local model (local first, as for answers), else OpenAI's text-embedding-3-small."""
        configured = self._registry.settings.embedding_model
        if configured:
            return configured
        local = self._registry.default_models.get(ProviderKind.LOCAL)
        if local:
            return local
        if ProviderKind.OPENAI in self._registry.defaults:
            return DEFAULT_OPENAI_EMBEDDING_MODEL
        raise LLMError(
            ErrorKind.CONFIGURATION_ERROR,
            "no embedding model is configured: set LLM_EMBEDDING_MODEL, a local model or OPENAI_API_KEY",
        )

    def plan_embedding(self, request: EmbeddingRequest) -> RoutePlan:
        """The one model that embeds ``request``: the caller's, or the default one. Vectors of
        different models are not comparable, so no other model ever stands in for it; its
        deployments, retries and breakers work as for answers."""
        name = request.model or self.embedding_model()
        self.check_allowed(name)
        entry = self._registry.resolve(name)
        if Capability.EMBEDDINGS not in entry.capabilities:
            why = {
                ProviderKind.ANTHROPIC: "Anthropic has no embeddings API",
                ProviderKind.GEMINI: "Gemini embeddings are not supported",
            }.get(entry.provider_kind, "it is a chat model")
            raise invalid_request(
                FieldViolation("model", f"model {name!r} does not make embeddings ({why}); use e.g. {DEFAULT_OPENAI_EMBEDDING_MODEL} or a local model")
            )
        self._check_not_failing(entry)
        reason = f"embedding model {name!r}" + ("" if request.model else " (the default)")
        return RoutePlan((entry,), self._settings.strategy, reason)

    @staticmethod
    def _check_fits(entry: ModelEntry, request: GenerationRequest) -> None:
        """A pinned model's context window must hold the prompt plus ``max_tokens``: a
        request the model's known limit rules out is the caller's to fix, not the model's."""
        prompt_tokens = estimate_prompt_tokens(request.messages)
        max_tokens = request.sampling.max_tokens or 0
        if prompt_tokens + max_tokens > entry.context_window:
            raise LLMError(
                ErrorKind.CONTEXT_TOO_LARGE,
                f"model {entry.name!r} has a context window of {entry.context_window} tokens; "
                f"the request needs ~{prompt_tokens} for the prompt plus max_tokens {max_tokens}",
                model=entry.name,
                metadata={"context_window": str(entry.context_window), "prompt_tokens": str(prompt_tokens), "max_tokens": str(max_tokens)},
            )

    @staticmethod
    def _nothing_usable(skipped: dict[str, str], prompt_tokens: int, needed: int) -> LLMError:
        if skipped and all(why.startswith(_CAPABILITY_SKIP) for why in skipped.values()):
            return LLMError(
                ErrorKind.CONFIGURATION_ERROR,
                "no configured model can serve this request: " + "; ".join(f"{n}: {w}" for n, w in skipped.items()),
                metadata={f"model.{n}": w for n, w in skipped.items()},
            )
        if skipped and all(why.startswith("context window") for why in skipped.values()):
            return LLMError(
                ErrorKind.CONTEXT_TOO_LARGE,
                f"the request needs ~{needed} tokens, more than any configured model's context window",
                metadata={"prompt_tokens": str(prompt_tokens), "needed_tokens": str(needed)} | {f"model.{n}": w for n, w in skipped.items()},
            )
        return LLMError(
            ErrorKind.ALL_MODELS_UNAVAILABLE,
            "no model can serve this request: " + ("; ".join(f"{n}: {w}" for n, w in skipped.items()) or "no provider is configured"),
            metadata={f"model.{n}": w for n, w in skipped.items()},
        )

    # --- execution ------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        delay: float = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt) * (0.5 + self._rng.random() / 2)
        return delay

    @staticmethod
    def _remaining(deadline: float) -> float:
        return deadline - asyncio.get_running_loop().time()

    def _call(self, entry: ModelEntry, request: GenerationRequest, deadline: float) -> ModelCall:
        return ModelCall(
            entry.name, request.messages, request.sampling, timeout_s=self._remaining(deadline), tools=request.tools, tool_choice=request.tool_choice
        )

    def _failed(self, entry: ModelEntry, route: Route, error: LLMError, deadline: float, *, blameless: bool = False) -> None:
        breaker = self.breaker(route, entry.name)
        caller_ran_out = error.kind is ErrorKind.TIMEOUT and self._remaining(deadline) <= 0
        if blameless or error.kind in _NOT_THE_MODELS_FAULT or caller_ran_out:
            breaker.probe_in_flight = False
            return
        entry.stats.record_failure()
        route.stats.record_failure()
        breaker.on_failure(f"{error.kind.value}: {error.message[:120]}")

    def _succeeded(self, entry: ModelEntry, route: Route, latency_s: float, first_token_s: float | None = None) -> None:
        entry.stats.record_success(latency_s, first_token_s)
        route.stats.record_success(latency_s, first_token_s)
        self.breaker(route, entry.name).on_success()

    def _pick(self, entry: ModelEntry, tried: set[int]) -> Route | None:
        """The deployment for the next attempt at ``entry``: weighted least outstanding
        requests (as Envoy balances) among those whose circuit allows a call, healthy ones and
        ones this call has not tried yet first; ties broken at random, so load spreads."""
        open_routes = [r for r in entry.routes if self.breaker(r, entry.name).allows_call()]
        if not open_routes:
            return None
        if len(open_routes) == 1:
            return open_routes[0]
        best = min(
            open_routes,
            key=lambda r: (id(r) in tried, not r.deployment.available, (r.deployment.in_flight + 1) / r.deployment.weight, self._rng.random()),
        )
        return best

    async def _retry_same_model(self, error: LLMError, attempt: int, deadline: float) -> bool:
        """Sleeps before retrying the same model; False when the router should move on."""
        if not error.retryable or attempt >= self._settings.max_retries:
            return False
        if error.retry_after_s is not None:
            if error.retry_after_s > self._settings.max_retry_wait_s:
                return False  # a long rate-limit pause: another model answers sooner
            delay = error.retry_after_s
        else:
            delay = self._backoff(attempt)
        if delay >= self._remaining(deadline):
            return False  # would outlive the caller
        await self._sleep(delay)
        return True

    async def _after_failure(
        self,
        entry: ModelEntry,
        route: Route,
        error: LLMError,
        attempt: int,
        deadline: float,
        metadata: CallMetadata,
        failures: list[tuple[str, LLMError]],
        tried: set[int],
        *,
        blameless: bool = False,
    ) -> str:
        """Books a failed attempt and says what next: ``"switch"`` to another deployment of the
        model at once (one this call has not tried, whose circuit allows it: a failing
        deployment's call moves before the chain does), ``"retry"`` the model after the backoff,
        or ``"next"`` model. The caller's own mistakes are raised at once."""
        self._failed(entry, route, error, deadline, blameless=blameless)
        log.info("model %s on %s attempt %d failed: %s", entry.name, route.deployment.name, attempt + 1, error)
        if error.kind is ErrorKind.INVALID_REQUEST:
            raise error
        if error.kind not in _ABOUT_THE_MODEL and any(
            id(r) not in tried and self.breaker(r, entry.name).allows_call() and r.deployment.available for r in entry.routes
        ):
            metadata.retry_count += 1
            return "switch"
        if await self._retry_same_model(error, attempt, deadline):
            metadata.retry_count += 1
            return "retry"
        failures.append((entry.name, error))
        return "next"

    def _final_error(self, plan: RoutePlan, failures: list[tuple[str, LLMError]], deadline: float) -> LLMError:
        """What the caller hears when no candidate answered."""
        if self._remaining(deadline) <= 0:
            return self._out_of_time(plan, failures)
        if len(failures) == 1:
            return failures[0][1]
        waits = [e.retry_after_s for _, e in failures if e.retry_after_s is not None]
        attempts = {f"attempt.{i + 1}": f"{m}: {e.kind.value}: {e.message[:200]}" for i, (m, e) in enumerate(failures)}
        summary = "; ".join(f"{m}: {e.kind.value}" for m, e in failures)
        if all(e.kind is ErrorKind.RATE_LIMIT_EXCEEDED for _, e in failures):
            # Back off, as each provider asked: the soonest any of them takes calls again.
            return LLMError(
                ErrorKind.RATE_LIMIT_EXCEEDED, "every candidate model is rate limited: " + summary, retry_after_s=min(waits, default=None), metadata=attempts
            )
        if all(e.kind is ErrorKind.INVALID_MODEL_OUTPUT for _, e in failures):
            first_model, first = failures[0]
            return LLMError(
                ErrorKind.INVALID_MODEL_OUTPUT,
                "no model gave a valid answer: " + summary,
                model=first_model,
                metadata={**attempts, "violation": first.metadata.get("violation", first.message[:300])},
            )
        return LLMError(ErrorKind.ALL_MODELS_UNAVAILABLE, "every candidate model failed: " + summary, retry_after_s=min(waits, default=None), metadata=attempts)

    @staticmethod
    def _out_of_time(plan: RoutePlan, failures: list[tuple[str, LLMError]]) -> LLMError:
        tried = {name for name, _ in failures}
        not_tried = [e.name for e in plan.candidates if e.name not in tried]
        return deadline_exceeded("a model answered", tried=failures, not_tried=not_tried, model=failures[-1][0] if failures else None)

    def _admit(
        self, entry: ModelEntry, plan: RoutePlan, metadata: CallMetadata, failures: list[tuple[str, LLMError]], deadline: float, tried: set[int]
    ) -> Route | None:
        """Picks the deployment and records the attempt; None when every deployment's circuit
        opened since planning. Raises DEADLINE_EXCEEDED when the call's time is up: no model
        is asked after that."""
        if self._remaining(deadline) <= 0:
            raise self._out_of_time(plan, failures)
        route = self._pick(entry, tried)
        if route is None:
            failures.append((entry.name, LLMError(ErrorKind.MODEL_UNAVAILABLE, self.circuit_detail(entry) or "circuit open", model=entry.name)))
            return None
        self.breaker(route, entry.name).on_call()
        tried.add(id(route))
        metadata.model_chain.append(entry.name)
        metadata.provider = route.deployment.kind
        metadata.deployment = route.deployment.name
        metadata.fallback_used = entry is not plan.candidates[0]
        return route

    async def generate(self, request: GenerationRequest, deadline: float) -> Answer:
        """The first valid complete answer of the plan's candidates (see :meth:`_attempts`)."""
        answer: Answer | None = None
        # Read to the end (one delta): an async generator left suspended is closed later by
        # the event loop's finalizer, which costs more than finishing it here.
        async for delta in self._generation(request, deadline, streaming=False):
            answer = delta.answer
        assert answer is not None, "the attempt loop ends with an answer or an error"
        return answer

    def stream(self, request: GenerationRequest, deadline: float) -> AsyncIterator[StreamDelta]:
        """Deltas of the first model that starts answering; the last carries the answer."""
        return self._generation(request, deadline, streaming=True)

    def _generation(self, request: GenerationRequest, deadline: float, *, streaming: bool) -> AsyncIterator[StreamDelta]:
        """A generation through the attempt loop: the plan for ``request``, and an attempt
        that asks the provider for an answer (or a stream) and checks it (:class:`OutputCheck`)."""
        plan = self.plan(request, streaming=streaming)
        check = OutputCheck(request)

        async def attempt(entry: ModelEntry, route: Route, metadata: CallMetadata, progress: AttemptProgress) -> AsyncGenerator[StreamDelta, None]:
            call = self._call(entry, request, deadline)
            with self._observe(route, call, plan, metadata, streaming=streaming) as observed:
                call = replace(call, trace_headers=self._telemetry.trace_headers(observed))
                final: Answer | None = None
                if streaming:
                    async for delta in self._guarded(entry, route, call):
                        if delta.answer is not None:
                            final = delta.answer  # the provider's stream ends with it
                            continue
                        if delta.tool_calls:
                            check.tool_calls(delta.tool_calls, entry.name)
                        if progress.first_output_s is None and (delta.text or delta.tool_calls):
                            progress.first_output_s = self._clock() - progress.started
                            observed.first_chunk()
                        yield delta
                    if final is None:
                        raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"model {entry.name!r} ended its stream without an answer", model=entry.name)
                else:
                    final = await route.deployment.provider.generate(call)
                try:
                    answer = check.answer(final, entry.name, tool_calls_checked=streaming)
                except LLMError:
                    # The provider answered in full, so it charged for it: the rejected
                    # answer's usage is the caller's to pay, whatever the call's outcome.
                    metadata.billed_attempts.append(BilledAttempt(final.model, final.usage, entry.price.cost(final.usage)))
                    raise
                answer.cost_usd = entry.price.cost(answer.usage)
                answer.metadata = metadata
                self._telemetry.succeeded(observed, answer=answer, streaming=streaming)
            progress.final = True
            yield StreamDelta(model=answer.model, answer=answer)

        return self._attempts(plan, deadline, attempt)

    async def embed(self, request: EmbeddingRequest, deadline: float) -> Embeddings:
        """``request``'s vectors from its model, through the attempt loop: a failing
        deployment's call moves to another deployment of the model, retryable failures are
        retried, and the model's breakers and statistics see every attempt."""
        plan = self.plan_embedding(request)

        async def attempt(entry: ModelEntry, route: Route, metadata: CallMetadata, progress: AttemptProgress) -> AsyncGenerator[Embeddings, None]:
            call = EmbeddingCall(entry.name, request.inputs, timeout_s=self._remaining(deadline))
            with self._observe(route, call, plan, metadata, streaming=False) as observed:
                call = replace(call, trace_headers=self._telemetry.trace_headers(observed))
                try:
                    embeddings = await embed_with(route.deployment.provider, call)
                except LLMError as error:
                    # An endpoint that serves no embeddings (llama.cpp without --embeddings
                    # answers 501; a backend without the API) says nothing of the model's
                    # health: its chat calls keep their circuit.
                    if error.kind is ErrorKind.CONFIGURATION_ERROR and error.metadata.get("upstream_status") in (None, "501"):
                        progress.blameless = True
                    raise
                embeddings.cost_usd = entry.price.cost(embeddings.usage)
                embeddings.metadata = metadata
                self._telemetry.embedded(observed, embeddings)
            progress.final = True
            yield embeddings

        result: Embeddings | None = None
        async for result in self._attempts(plan, deadline, attempt):
            pass  # one piece: the result (read to the end, see generate)
        assert result is not None, "the attempt loop ends with a result or an error"
        return result

    async def _attempts(self, plan: RoutePlan, deadline: float, attempt: AttemptRunner[Piece]) -> AsyncIterator[Piece]:
        """The one attempt loop, for unary calls, streams and embeddings alike: each candidate
        in the plan's order, on the deployment :meth:`_pick` chooses, retried per the policy,
        until one attempt succeeds.

        ``attempt`` makes one call to one model on one deployment: it yields what reaches the
        caller as it comes (a stream's deltas) and last its result, after setting
        ``progress.final``; an ``LLMError`` it raises is a failed attempt, booked on the
        model's breaker and statistics. Failures before anything reached the caller fall
        back; a failure after output was sent (``progress.first_output_s`` set) is raised
        with ``partial_output`` metadata: the caller already holds part of an answer, so no
        other model may silently continue it. The deadline bounds it all: DEADLINE_EXCEEDED
        names the limit, the models tried and the ones never asked.
        """
        metadata = CallMetadata(strategy=plan.strategy, candidates=[e.name for e in plan.candidates], routing_reason=plan.reason)
        failures: list[tuple[str, LLMError]] = []
        try:
            async with asyncio.timeout_at(deadline):
                for entry in plan.candidates:
                    tries = 0
                    tried: set[int] = set()
                    while (route := self._admit(entry, plan, metadata, failures, deadline, tried)) is not None:
                        progress = AttemptProgress(self._clock())
                        deployment = route.deployment
                        deployment.in_flight += 1
                        try:
                            try:
                                async with aclosing(attempt(entry, route, metadata, progress)) as pieces:
                                    async for piece in pieces:
                                        if progress.final:
                                            result = piece
                                            break
                                        yield piece
                                    else:
                                        raise AssertionError("an attempt ends with its result or an error")
                            finally:
                                deployment.in_flight -= 1
                            self._succeeded(entry, route, self._clock() - progress.started, progress.first_output_s)
                            yield result
                            return
                        except LLMError as error:
                            if progress.first_output_s is not None:
                                self._failed(entry, route, error, deadline)
                                error.metadata["partial_output"] = "true"
                                error.message = f"stream broke after partial output: {error.message}"
                                raise
                            outcome = await self._after_failure(
                                entry, route, error, tries, deadline, metadata, failures, tried, blameless=progress.blameless
                            )
                            if outcome == "next":
                                break
                            tries += outcome == "retry"
                            continue
                        except (asyncio.CancelledError, GeneratorExit):
                            self.breaker(route, entry.name).probe_in_flight = False
                            raise
                raise self._final_error(plan, failures, deadline)
        except TimeoutError:
            # The deadline fired while a model was answering: it is the one that timed out.
            running = metadata.model_chain[-1] if metadata.model_chain else None
            if running is not None and (not failures or failures[-1][0] != running):
                failures.append((running, LLMError(ErrorKind.TIMEOUT, "still answering when the time ran out", model=running)))
            timed_out = self._out_of_time(plan, failures)
            timed_out.billed_attempts = metadata.billed_attempts
            raise timed_out from None
        except LLMError as error:
            # A failed call still owes what its rejected attempts cost upstream.
            error.billed_attempts = metadata.billed_attempts
            raise

    def _observe(
        self, route: Route, call: ModelCall | EmbeddingCall, plan: RoutePlan, metadata: CallMetadata, *, streaming: bool
    ) -> AbstractContextManager[Attempt]:
        return self._telemetry.attempt(
            call,
            route.deployment.kind,
            deployment=route.deployment.name,
            attempt=len(metadata.model_chain),
            fallback=metadata.fallback_used,
            streaming=streaming,
            candidates=metadata.candidates,
            strategy=plan.strategy.value,
        )

    async def _guarded(self, entry: ModelEntry, route: Route, call: ModelCall) -> AsyncIterator[StreamDelta]:
        """The provider's stream with a stall timeout between pieces; always closed."""
        stall_s = self._settings.stall_timeout_s
        iterator = aiter(route.deployment.provider.stream(call))
        try:
            while True:
                try:
                    async with asyncio.timeout(stall_s):
                        delta = await anext(iterator)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise LLMError(
                        ErrorKind.TIMEOUT, f"model {entry.name!r} stalled: nothing for {stall_s:g} s", model=entry.name
                    ) from None
                yield delta
        finally:
            await iterator.aclose()  # type: ignore[attr-defined]
