"""LLM_<TASK>_MODEL_1 / _2 are the task's primary and secondary models: tried first, in that
order, whatever the strategy; the strategy orders the rest of the chain (the contract's
"Routing preferences"). The seed's own example: Claude primary, GPT secondary, local last."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from llm_manager_server.config import load_settings
from llm_manager_server.domain.types import GenerationRequest, Message, Role, RoutingStrategy, TaskType
from llm_manager_server.routing.registry import ModelRegistry
from llm_manager_server.routing.router import Router

from ..support.fault_server import FaultServer

CLAUDE, GPT = "claude-3-haiku-20240307", "gpt-4o-mini"


@pytest.fixture
async def fake() -> AsyncIterator[FaultServer]:
    server = await FaultServer().start()
    yield server
    await server.stop()


def router(fake: FaultServer, **env: str) -> Router:
    settings = load_settings({
        "LM_STUDIO_ENDPOINT": fake.url, "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.url,
        "CLAUDE_API_KEY": "sk-ant-test", "CLAUDE_BASE_URL": "http://127.0.0.1:9", **env,
    })
    return Router(ModelRegistry.from_settings(settings), settings.routing)


def request(task: TaskType, strategy: RoutingStrategy) -> GenerationRequest:
    return GenerationRequest(messages=(Message.of(Role.USER, "hello " * 50),), task_type=task, strategy=strategy)


@pytest.mark.parametrize("strategy", list(RoutingStrategy))
async def test_general_primary_and_secondary_come_first_whatever_the_strategy(fake: FaultServer, strategy: RoutingStrategy) -> None:
    routes = router(fake, LLM_GENERAL_MODEL_1=CLAUDE, LLM_GENERAL_MODEL_2=GPT)
    plan = routes.plan(request(TaskType.GENERAL, strategy))
    names = [e.name for e in plan.candidates]
    assert names[:2] == [CLAUDE, GPT], names
    assert "local-model" in names[2:]  # the rest of the chain follows
    assert f"primary {CLAUDE}" in plan.reason and f"secondary {GPT}" in plan.reason and f"strategy {strategy.value}" in plan.reason


@pytest.mark.parametrize("strategy", list(RoutingStrategy))
async def test_sql_primary_and_secondary_then_the_general_chain(fake: FaultServer, strategy: RoutingStrategy) -> None:
    routes = router(fake, LLM_SQL_MODEL_1=GPT, LLM_SQL_MODEL_2=CLAUDE, LLM_GENERAL_MODEL_1="local-model")
    names = [e.name for e in routes.plan(request(TaskType.SQL_GENERATION, strategy)).candidates]
    assert names[:3] == [GPT, CLAUDE, "local-model"], names


async def test_a_primary_that_is_down_is_skipped_and_said_so(fake: FaultServer) -> None:
    routes = router(fake, LLM_GENERAL_MODEL_1=CLAUDE, LLM_GENERAL_MODEL_2=GPT)
    registry = routes._registry
    registry.deployments["anthropic"].health = "unhealthy"
    plan = routes.plan(request(TaskType.GENERAL, RoutingStrategy.COST))
    assert [e.name for e in plan.candidates][0] == GPT and f"skipped {CLAUDE}" in plan.reason
    await asyncio.sleep(0)


async def test_the_primary_is_asked_first(fake: FaultServer) -> None:
    """The defect as a user met it: Claude primary, GPT secondary; a general request must go
    to Claude first (here Claude is unreachable, so the call falls back to GPT after it)."""
    routes = router(fake, LLM_GENERAL_MODEL_1=CLAUDE, LLM_GENERAL_MODEL_2=GPT, LLM_MAX_RETRIES="0")
    await asyncio.gather(*(d.provider.start() for d in routes._registry.deployments.values()))
    try:
        answer = await routes.generate(request(TaskType.GENERAL, RoutingStrategy.BALANCED), asyncio.get_running_loop().time() + 10)
    finally:
        await asyncio.gather(*(d.provider.close() for d in routes._registry.deployments.values()))
    assert answer.metadata.model_chain == [CLAUDE, GPT] and answer.model == GPT and answer.metadata.fallback_used
