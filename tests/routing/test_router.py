"""Fault injection: retries, backoff, retry-after, breakers, fallback, strategies, context
windows, stalls and cut streams, against a scriptable OpenAI-compatible fake on loopback."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from llm_manager_server.config import load_settings
from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import CallMetadata, GenerationRequest, Message, Role, RoutingStrategy, SamplingOptions, TaskType
from llm_manager_server.routing.registry import ModelRegistry
from llm_manager_server.routing.router import Router

from ..support.fault_server import FaultServer


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    router: Router
    registry: ModelRegistry
    clock: FakeClock
    sleeps: list[float] = field(default_factory=list)

    async def generate(self, prompt: str = "hi", *, deadline_s: float = 30, **fields: object) -> tuple[str, CallMetadata]:
        answer = await self.router.generate(request(prompt, **fields), _deadline(deadline_s))
        return answer.model, answer.metadata

    async def stream(self, prompt: str = "hi", *, deadline_s: float = 30, **fields: object) -> tuple[str, CallMetadata]:
        deltas = [d async for d in self.router.stream(request(prompt, **fields), _deadline(deadline_s))]
        answer = deltas[-1].answer
        assert answer is not None and all(d.answer is None for d in deltas[:-1]), "the last delta, and only it, carries the answer"
        text = "".join(d.text for d in deltas)
        assert answer.text == text
        return text, answer.metadata


def request(prompt: str, **fields: object) -> GenerationRequest:
    return GenerationRequest(messages=(Message.of(Role.USER, prompt),), **fields)  # type: ignore[arg-type]


def _deadline(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


@pytest.fixture
async def fake() -> AsyncIterator[FaultServer]:
    server = await FaultServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def make_harness(fake: FaultServer) -> AsyncIterator[object]:
    made: list[Harness] = []

    async def build(**env: str) -> Harness:
        base = {
            "LM_STUDIO_ENDPOINT": fake.url,
            "LLM_GENERAL_MODEL_1": "alpha",
            "LLM_GENERAL_MODEL_2": "beta",
            "LLM_MAX_RETRIES": "2",
        }
        settings = load_settings({**base, **env})
        registry = ModelRegistry.from_settings(settings)
        await asyncio.gather(*(d.provider.start() for d in registry.deployments.values()))
        clock = FakeClock()
        harness = Harness(Router(registry, settings.routing, rng=random.Random(7), clock=clock), registry, clock)

        async def fake_sleep(seconds: float) -> None:
            harness.sleeps.append(seconds)

        harness.router._sleep = fake_sleep
        made.append(harness)
        return harness

    yield build
    for harness in made:
        await asyncio.gather(*(d.provider.close() for d in harness.registry.deployments.values()))


async def test_500_then_success_retries_with_backoff(make_harness, fake: FaultServer) -> None:
    harness = await make_harness()
    fake.script("alpha", "status:500", "ok")
    model, metadata = await harness.generate()
    assert model == "alpha" and metadata.model_chain == ["alpha", "alpha"]
    assert metadata.retry_count == 1 and not metadata.fallback_used
    assert len(harness.sleeps) == 1 and 0.1 <= harness.sleeps[0] <= 0.2  # base 0.2 s, jitter 50-100 %


async def test_persistent_500_makes_exact_attempts_then_falls_back(make_harness, fake: FaultServer) -> None:
    harness = await make_harness()
    fake.script("alpha", "status:500")
    model, metadata = await harness.generate()
    assert model == "beta"
    assert (fake.calls("alpha"), fake.calls("beta")) == (3, 1)  # 1 + LLM_MAX_RETRIES, then the next model
    assert metadata.model_chain == ["alpha", "alpha", "alpha", "beta"]
    assert metadata.retry_count == 2 and metadata.fallback_used
    assert len(harness.sleeps) == 2 and harness.sleeps[1] > harness.sleeps[0] * 0.9  # exponential


async def test_429_retry_after_is_honoured(make_harness, fake: FaultServer) -> None:
    harness = await make_harness()
    fake.script("alpha", "status:429,retry-after=2", "ok")
    model, metadata = await harness.generate()
    assert model == "alpha" and harness.sleeps == [2.0] and metadata.retry_count == 1


async def test_429_with_long_retry_after_moves_on_at_once(make_harness, fake: FaultServer) -> None:
    harness = await make_harness()
    fake.script("alpha", "status:429,retry-after=60")
    model, metadata = await harness.generate()
    assert model == "beta" and harness.sleeps == [] and fake.calls("alpha") == 1


@pytest.mark.parametrize("status", ["401", "403", "404"])
async def test_non_retryable_failures_move_on_without_retry(make_harness, fake: FaultServer, status: str) -> None:
    harness = await make_harness()
    fake.script("alpha", f"status:{status}")
    model, _ = await harness.generate()
    assert model == "beta" and fake.calls("alpha") == 1 and harness.sleeps == []


async def test_bad_request_is_the_callers_fault_and_stops(make_harness, fake: FaultServer) -> None:
    harness = await make_harness()
    fake.script("alpha", "status:400")
    with pytest.raises(LLMError) as raised:
        await harness.generate()
    assert raised.value.kind is ErrorKind.INVALID_REQUEST
    assert (fake.calls("alpha"), fake.calls("beta")) == (1, 0)


async def test_every_model_down_lists_each_attempt(make_harness, fake: FaultServer) -> None:
    harness = await make_harness(LLM_MAX_RETRIES="1")
    fake.script("alpha", "status:503")
    fake.script("beta", "status:500")
    with pytest.raises(LLMError) as raised:
        await harness.generate()
    error = raised.value
    assert error.kind is ErrorKind.ALL_MODELS_UNAVAILABLE
    assert (fake.calls("alpha"), fake.calls("beta")) == (2, 2)
    assert error.metadata["attempt.1"].startswith("alpha: MODEL_UNAVAILABLE")
    assert error.metadata["attempt.2"].startswith("beta: MODEL_UNAVAILABLE")


async def test_deadline_bounds_all_retries(make_harness, fake: FaultServer) -> None:
    harness = await make_harness(LLM_MAX_RETRIES="10")
    harness.router._sleep = asyncio.sleep  # real backoff: 0.1-0.2, 0.2-0.4, 0.4-0.8 s, ...
    fake.script("alpha", "status:500")
    fake.script("beta", "slow:5")
    started = asyncio.get_running_loop().time()
    with pytest.raises(LLMError) as raised:
        await harness.generate(deadline_s=1.0)
    assert asyncio.get_running_loop().time() - started < 1.5
    assert fake.calls("alpha") < 11, "retries stop when the next backoff would outlive the caller"
    # Running out of time is TIMEOUT (DEADLINE_EXCEEDED), whatever the models did before.
    assert raised.value.kind is ErrorKind.TIMEOUT
    assert "MODEL_UNAVAILABLE" in raised.value.metadata["attempt.1"]
    assert "TIMEOUT" in raised.value.metadata["attempt.2"]


async def test_circuit_opens_skips_then_probes_and_closes(make_harness, fake: FaultServer) -> None:
    harness = await make_harness(LLM_MAX_RETRIES="0", LLM_BREAKER_FAILURES="2", LLM_BREAKER_COOLDOWN_SECONDS="30")
    fake.script("alpha", "status:500", "status:500", "ok")
    for _ in range(2):
        assert (await harness.generate())[0] == "beta"
    assert fake.calls("alpha") == 2
    # Open: alpha is not even tried.
    model, metadata = await harness.generate()
    assert model == "beta" and metadata.candidates == ["beta"] and fake.calls("alpha") == 2
    assert "circuit open" in metadata.routing_reason
    assert "circuit open" in (harness.router.circuit_detail(harness.registry.models["alpha"]) or "")
    # After the cooldown one probe goes through; it succeeds and closes the circuit.
    harness.clock.now += 31
    assert "half-open" in (harness.router.circuit_detail(harness.registry.models["alpha"]) or "")
    assert (await harness.generate())[0] == "alpha"
    assert harness.router.circuit_detail(harness.registry.models["alpha"]) is None
    assert (await harness.generate())[0] == "alpha"


async def test_failed_probe_reopens_and_all_open_fails_fast(make_harness, fake: FaultServer) -> None:
    harness = await make_harness(LLM_MAX_RETRIES="0", LLM_BREAKER_FAILURES="1", LLM_BREAKER_COOLDOWN_SECONDS="10")
    fake.script("alpha", "status:500")
    fake.script("beta", "status:500")
    with pytest.raises(LLMError):
        await harness.generate()
    calls = len(fake.requests)
    with pytest.raises(LLMError) as raised:
        await harness.generate()
    assert raised.value.kind is ErrorKind.ALL_MODELS_UNAVAILABLE
    assert len(fake.requests) == calls, "an all-open chain must fail without calling anyone"
    assert "circuit open" in raised.value.metadata["model.alpha"]
    harness.clock.now += 11
    with pytest.raises(LLMError):
        await harness.generate()  # both probed, both fail: open again
    assert len(fake.requests) == calls + 2
    with pytest.raises(LLMError):
        await harness.generate()
    assert len(fake.requests) == calls + 2


async def test_rate_limits_do_not_trip_the_breaker(make_harness, fake: FaultServer) -> None:
    harness = await make_harness(LLM_MAX_RETRIES="0", LLM_BREAKER_FAILURES="1")
    fake.script("alpha", "status:429,retry-after=60", "ok")
    assert (await harness.generate())[0] == "beta"
    assert harness.router.circuit_detail(harness.registry.models["alpha"]) is None
    assert (await harness.generate())[0] == "alpha"


async def test_cost_strategy_orders_by_expected_price(make_harness, fake: FaultServer) -> None:
    # Analysis (Claude -> GPT -> local): the general preferences are not its primaries, so
    # the strategy orders the whole chain.
    harness = await make_harness(
        LLM_GENERAL_MODEL_1="gpt-4o", LLM_GENERAL_MODEL_2="local-model", OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=fake.url,
        OPENAI_MODEL="gpt-4o-mini", LLM_ROUTING_STRATEGY="cost",
    )
    plan = harness.router.plan(request("hello " * 100, task_type=TaskType.ANALYSIS))
    # The local model is free; then the cheaper GPT.
    assert [e.name for e in plan.candidates] == ["local-model", "gpt-4o"]
    assert "$" in plan.reason
    # For the general task, its primary and secondary come first whatever the price.
    assert [e.name for e in harness.router.plan(request("hello " * 100)).candidates][:2] == ["gpt-4o", "local-model"]


async def test_local_first_under_cost_and_balanced(make_harness, fake: FaultServer) -> None:
    harness = await make_harness(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=fake.url, OPENAI_MODEL="gpt-4o-mini")
    for strategy in (RoutingStrategy.COST, RoutingStrategy.BALANCED):
        plan = harness.router.plan(request("hi", strategy=strategy))
        assert [e.name for e in plan.candidates] == ["alpha", "beta", "gpt-4o-mini"]


async def test_performance_strategy_orders_by_measured_latency_and_errors(make_harness, fake: FaultServer) -> None:
    harness = await make_harness(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=fake.url, OPENAI_MODEL="gpt-4o-mini")
    harness.registry.models["alpha"].stats.record_success(0.9)
    harness.registry.models["beta"].stats.record_success(0.3)
    harness.registry.models["gpt-4o-mini"].stats.record_success(0.5)
    # Config management (local -> GPT -> Claude) has no primaries: the strategy orders it all.
    task = TaskType.CONFIG_MANAGEMENT
    plan = harness.router.plan(request("hi", strategy=RoutingStrategy.PERFORMANCE, task_type=task))
    assert [e.name for e in plan.candidates] == ["beta", "gpt-4o-mini", "alpha"]
    for _ in range(5):  # beta starts failing: its expected latency grows with its error rate
        harness.registry.models["beta"].stats.record_failure()
    plan = harness.router.plan(request("hi", strategy=RoutingStrategy.PERFORMANCE, task_type=task))
    assert [e.name for e in plan.candidates][0] == "gpt-4o-mini"
    # Streams rank by time to first token when measured.
    harness.registry.models["alpha"].stats.record_success(0.9, first_token_s=0.01)
    plan = harness.router.plan(request("hi", strategy=RoutingStrategy.PERFORMANCE, task_type=task), streaming=True)
    assert plan.candidates[0].name == "alpha"
    # The general task's primary (alpha) and secondary (beta) stay first, whatever they measure.
    plan = harness.router.plan(request("hi", strategy=RoutingStrategy.PERFORMANCE))
    assert [e.name for e in plan.candidates] == ["alpha", "beta", "gpt-4o-mini"]


async def test_latency_is_measured_from_real_calls(make_harness, fake: FaultServer) -> None:
    harness = await make_harness(LLM_ROUTING_STRATEGY="performance")
    harness.router._clock = asyncio.get_running_loop().time
    fake.script("alpha", "slow:0.3")
    fake.script("beta", "ok")
    for model in ("alpha", "beta"):
        await harness.generate(model=model)
    assert harness.registry.models["alpha"].stats.latency_s > harness.registry.models["beta"].stats.latency_s  # type: ignore[operator]
    assert harness.router.plan(request("hi", task_type=TaskType.CONFIG_MANAGEMENT)).candidates[0].name == "beta"


async def test_context_window_skips_small_models(make_harness, fake: FaultServer) -> None:
    harness = await make_harness(
        LLM_LOCAL_CONTEXT_LENGTH="512", OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=fake.url, OPENAI_MODEL="gpt-4o-mini"
    )
    long_prompt = "word " * 1000  # ~1250 tokens
    plan = harness.router.plan(request(long_prompt))
    assert [e.name for e in plan.candidates] == ["gpt-4o-mini"]
    assert "context window 512" in plan.reason
    model, _ = await harness.generate(long_prompt)
    assert model == "gpt-4o-mini" and fake.calls("alpha") == 0


async def test_nothing_big_enough_is_context_too_large(make_harness) -> None:
    harness = await make_harness(LLM_LOCAL_CONTEXT_LENGTH="512")
    with pytest.raises(LLMError) as raised:
        harness.router.plan(request("word " * 1000))
    assert raised.value.kind is ErrorKind.CONTEXT_TOO_LARGE
    assert int(raised.value.metadata["prompt_tokens"]) > 512


async def test_context_too_large_from_a_model_moves_to_the_next(make_harness, fake: FaultServer) -> None:
    harness = await make_harness()
    fake.script("alpha", "status:400,code=context_length_exceeded")
    model, metadata = await harness.generate()
    assert model == "beta" and metadata.model_chain == ["alpha", "beta"] and fake.calls("alpha") == 1


async def test_stream_failing_before_first_token_falls_back(make_harness, fake: FaultServer) -> None:
    harness = await make_harness(LLM_MAX_RETRIES="0")
    fake.script("alpha", "status:503")
    text, metadata = await harness.stream()
    assert text.strip() == fake.text
    assert metadata.model_chain == ["alpha", "beta"] and metadata.fallback_used


async def test_stream_stalled_before_first_token_falls_back(make_harness, fake: FaultServer) -> None:
    harness = await make_harness(LLM_MAX_RETRIES="0", LLM_STREAM_STALL_TIMEOUT_MS="300")
    fake.script("alpha", "stall_after:0")
    text, metadata = await harness.stream()
    assert text.strip() == fake.text and metadata.model_chain == ["alpha", "beta"]


@pytest.mark.parametrize(("behaviour", "kind"), [("stall_after:2", ErrorKind.TIMEOUT), ("cut_after:2", ErrorKind.MODEL_UNAVAILABLE)])
async def test_stream_breaking_after_text_is_an_error_never_a_silent_end(
    make_harness, fake: FaultServer, behaviour: str, kind: ErrorKind
) -> None:
    harness = await make_harness(LLM_STREAM_STALL_TIMEOUT_MS="300")
    fake.script("alpha", behaviour)
    received: list[str] = []
    with pytest.raises(LLMError) as raised:
        async for delta in harness.router.stream(request("hi"), _deadline(10)):
            assert delta.answer is None
            received.append(delta.text)
    assert raised.value.kind is kind
    assert raised.value.metadata["partial_output"] == "true"
    assert "".join(received).split() == fake.text.split()[:2]
    assert fake.calls("beta") == 0, "no other model may continue a half-sent answer"


async def test_task_chains_and_overrides(make_harness, fake: FaultServer) -> None:
    harness = await make_harness(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=fake.url, OPENAI_MODEL="gpt-4o-mini",
                                 LLM_SQL_MODEL_1="sqlcoder", LLM_ROUTE_CONFIG_MANAGEMENT="gpt,llama")
    names = lambda task: [e.name for e in harness.router.plan(request("hi", task_type=task)).candidates]  # noqa: E731
    assert names(TaskType.GENERAL) == ["alpha", "beta", "gpt-4o-mini"]
    assert names(TaskType.UI_GENERATION) == ["gpt-4o-mini", "alpha", "beta"]
    assert names(TaskType.ANALYSIS) == ["gpt-4o-mini", "alpha", "beta"]  # no Claude configured
    assert names(TaskType.CONFIG_MANAGEMENT) == ["gpt-4o-mini", "alpha", "beta"]
    assert names(TaskType.SQL_GENERATION)[0] == "sqlcoder"
