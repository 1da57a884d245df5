"""Limits, budgets and the usage ledger end to end: the real gRPC server with an API keys
file, GPT against the OpenAI fake with known usage and gpt-4o-mini's prices, through the
generated stubs with real keys."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from llm_manager.client import error_details
from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api, usage_service_pb2 as usage, usage_service_pb2_grpc
from llm_manager_server.usage import utc_day

from ..conftest import StartApp, Stubs
from ..fakes import FakeOpenAI, TokenCounts
from ..support.keys import write_keys_file
from ..support.tools import run, tool

MODEL = "gpt-4o-mini"
OPENAI_KEY = "sk-proj-TESTONLYq7Vx2mR9sK4pL8wN3bZ6yH1cD5fJ0gTa"
COUNTS = TokenCounts(prompt=1_200, completion=300)
# gpt-4o-mini: $0.15 per million input tokens, $0.60 per million output tokens.
COST = (1_200 * 0.15 + 300 * 0.60) / 1e6


def unused_loopback_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def cloud_env(fake: FakeOpenAI, keys_file: Path) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": f"{fake.url}/v1",
        # A local endpoint nothing listens on: no local model; each call pins GPT.
        "LM_STUDIO_ENDPOINT": unused_loopback_url(),
        "LLM_MAX_RETRIES": "0",
        "LLM_API_KEYS_FILE": str(keys_file),
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = await FakeOpenAI(api_key=OPENAI_KEY).start()
    yield server
    await server.stop()


def generate(prompt: str = "What is the capital of France?", *, cached: bool = False) -> api.GenerateRequest:
    control = common_pb2.CacheControl() if cached else common_pb2.CacheControl(no_cache=True, no_store=True)
    return api.GenerateRequest(prompt=prompt, preferences=common_pb2.GenerationPreferences(model=MODEL, max_tokens=64), cache_control=control)


def auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def same_minute() -> None:
    """Waits out the last seconds of a minute, so a test's calls share one window."""
    left = 60 - time.time() % 60
    if left < 8:
        await asyncio.sleep(left + 0.05)


@dataclass
class Quota:
    reason: str
    limit: str
    violations: list[tuple[str, str]]
    retry_s: float


async def quota_refusal(call: Any) -> Quota:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    error = raised.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    quota = error_details_pb2.QuotaFailure()
    assert any(packed.Unpack(quota) for packed in status.details), "a QuotaFailure detail"
    details = error_details(error)
    assert details.retry_delay_s is not None
    violations = [(v.subject, v.description) for v in quota.violations]
    assert details.quota_violations == violations, "the Python client unpacks QuotaFailure"
    return Quota(details.reason, details.metadata["limit"], violations, details.retry_delay_s)


def usage_stub(stubs: Stubs) -> usage_service_pb2_grpc.UsageServiceStub:
    return usage_service_pb2_grpc.UsageServiceStub(stubs.channel)


async def test_requests_per_minute_refuse_before_the_upstream_call(
    fake: FakeOpenAI, start_app: StartApp, connect: Callable[..., Stubs], tmp_path: Path
) -> None:
    keys = write_keys_file(tmp_path / "keys.yaml", {"dashboards": {"requests_per_minute": 2}, "alerts": {}})
    stubs = connect(await start_app(**cloud_env(fake, tmp_path / "keys.yaml")))
    await same_minute()
    for _ in range(2):
        fake.reply_text("Paris.", COUNTS)
        await stubs.llm.Generate(generate(), metadata=auth(keys["dashboards"]), timeout=10)
    refusal = await quota_refusal(stubs.llm.Generate(generate(), metadata=auth(keys["dashboards"]), timeout=10))
    assert (refusal.reason, refusal.limit) == ("QUOTA_EXCEEDED", "requests_per_minute")
    assert refusal.violations == [("dashboards", "requests_per_minute: 2 requests per minute")]
    assert 0 < refusal.retry_s <= 60
    # Streams are counted and refused the same way.
    stream = stubs.llm.StreamGenerate(api.StreamGenerateRequest(prompt="hi", preferences=generate().preferences), metadata=auth(keys["dashboards"]), timeout=10)
    assert (await quota_refusal(stream.read())).limit == "requests_per_minute"
    assert len(fake.generation_requests) == 2  # refused calls never reached the upstream
    # Another caller (without limits) is not affected.
    fake.reply_text("Paris.", COUNTS)
    await stubs.llm.Generate(generate(), metadata=auth(keys["alerts"]), timeout=10)


async def test_tokens_per_minute_refuse_once_the_reported_usage_reaches_the_limit(
    fake: FakeOpenAI, start_app: StartApp, connect: Callable[..., Stubs], tmp_path: Path
) -> None:
    keys = write_keys_file(tmp_path / "keys.yaml", {"reports": {"tokens_per_minute": 2_000}})
    stubs = connect(await start_app(**cloud_env(fake, tmp_path / "keys.yaml")))
    await same_minute()
    fake.reply_text("One.", COUNTS)
    await stubs.llm.Generate(generate(), metadata=auth(keys["reports"]), timeout=10)  # 1,500 booked
    fake.stream_text(["Two", "."], COUNTS)
    streamed = [m async for m in stubs.llm.StreamGenerate(api.StreamGenerateRequest(prompt="2?", preferences=generate().preferences), metadata=auth(keys["reports"]), timeout=10)]
    assert streamed[-1].usage.total_tokens == 1_500  # 3,000 booked: over
    refusal = await quota_refusal(stubs.llm.Generate(generate(), metadata=auth(keys["reports"]), timeout=10))
    assert refusal.limit == "tokens_per_minute" and refusal.violations == [("reports", "tokens_per_minute: 2000 tokens per minute")]
    assert len(fake.generation_requests) == 2


async def test_the_daily_budget_refuses_once_the_priced_usage_reaches_it(
    fake: FakeOpenAI, start_app: StartApp, connect: Callable[..., Stubs], tmp_path: Path
) -> None:
    keys = write_keys_file(tmp_path / "keys.yaml", {"analytics": {"budget_usd_per_day": 0.0005}})
    stubs = connect(await start_app(**cloud_env(fake, tmp_path / "keys.yaml")))
    for _ in range(2):  # 0.00036 each: the second call crosses the budget
        fake.reply_text("Paris.", COUNTS)
        reply = await stubs.llm.Generate(generate(), metadata=auth(keys["analytics"]), timeout=10)
        assert reply.usage.cost_usd == pytest.approx(COST)
    refusal = await quota_refusal(stubs.llm.Generate(generate(), metadata=auth(keys["analytics"]), timeout=10))
    assert refusal.limit == "budget_usd_per_day" and refusal.violations == [("analytics", "budget_usd_per_day: 0.0005 USD per UTC day")]
    until_midnight = 86_400 - time.time() % 86_400
    assert refusal.retry_s == pytest.approx(until_midnight, abs=5)


async def test_the_ledger_books_unary_calls_streams_and_cache_hits_for_the_calling_key_only(
    fake: FakeOpenAI, start_app: StartApp, connect: Callable[..., Stubs], tmp_path: Path
) -> None:
    keys = write_keys_file(tmp_path / "keys.yaml", {"alice": {}, "bob": {}})
    stubs = connect(await start_app(**cloud_env(fake, tmp_path / "keys.yaml")))
    alice, bob = auth(keys["alice"]), auth(keys["bob"])
    fake.reply_text("Paris.", COUNTS)
    first = await stubs.llm.Generate(generate("Capital of France?", cached=True), metadata=alice, timeout=10)
    hit = await stubs.llm.Generate(generate("Capital of France?", cached=True), metadata=alice, timeout=10)
    assert not first.metadata.cached and hit.metadata.cached
    fake.stream_text(["Ber", "lin."], TokenCounts(prompt=100, completion=20))
    streamed = [m async for m in stubs.llm.StreamGenerate(api.StreamGenerateRequest(prompt="Capital of Germany?", preferences=generate().preferences), metadata=alice, timeout=10)]
    fake.reply_text("Rome.", TokenCounts(prompt=7, completion=3))
    await stubs.llm.Generate(generate("Capital of Italy?"), metadata=bob, timeout=10)

    mine = await usage_stub(stubs).GetUsage(usage.GetUsageRequest(), metadata=alice, timeout=10)
    assert mine.caller == "alice" and len(mine.rows) == 1
    row = mine.rows[0]
    assert row.date == utc_day(time.time()) and row.model == first.model == streamed[-1].model
    assert (row.requests, row.cache_hits, row.prompt_tokens, row.completion_tokens) == (3, 1, 1_300, 320)
    assert row.cost_usd == pytest.approx(COST + (100 * 0.15 + 20 * 0.60) / 1e6)
    assert mine.total.requests == 3 and mine.total.cost_usd == pytest.approx(row.cost_usd) and mine.total.date == ""
    theirs = await usage_stub(stubs).GetUsage(usage.GetUsageRequest(), metadata=bob, timeout=10)
    assert theirs.caller == "bob" and [(r.requests, r.prompt_tokens, r.completion_tokens) for r in theirs.rows] == [(1, 7, 3)]
    # Day and model filters; another day has nothing.
    today = row.date
    same = await usage_stub(stubs).GetUsage(usage.GetUsageRequest(start_date=today, end_date=today, model=row.model), metadata=alice, timeout=10)
    assert list(same.rows) == list(mine.rows)
    assert not (await usage_stub(stubs).GetUsage(usage.GetUsageRequest(end_date="2020-01-01"), metadata=alice, timeout=10)).rows
    assert not (await usage_stub(stubs).GetUsage(usage.GetUsageRequest(model="gpt-4o"), metadata=alice, timeout=10)).rows


async def test_get_usage_validates_and_needs_a_key(fake: FakeOpenAI, start_app: StartApp, connect: Callable[..., Stubs], tmp_path: Path) -> None:
    keys = write_keys_file(tmp_path / "keys.yaml", {"alice": {}})
    stubs = connect(await start_app(**cloud_env(fake, tmp_path / "keys.yaml")))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await usage_stub(stubs).GetUsage(usage.GetUsageRequest(start_date="2026-13-01", end_date="yesterday", model="bad model!"), metadata=auth(keys["alice"]), timeout=10)
    details = error_details(raised.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT and set(details.field_violations) == {"start_date", "end_date", "model"}
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await usage_stub(stubs).GetUsage(usage.GetUsageRequest(start_date="2026-12-02", end_date="2026-12-01"), metadata=auth(keys["alice"]), timeout=10)
    assert error_details(raised.value).field_violations.keys() == {"end_date"}
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await usage_stub(stubs).GetUsage(usage.GetUsageRequest(), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_with_authentication_off_calls_are_booked_for_the_anonymous_caller(
    fake: FakeOpenAI, start_app: StartApp, connect: Callable[..., Stubs], tmp_path: Path
) -> None:
    env = cloud_env(fake, tmp_path / "unused")
    del env["LLM_API_KEYS_FILE"]
    stubs = connect(await start_app(**env))
    fake.reply_text("Paris.", COUNTS)
    await stubs.llm.Generate(generate(), timeout=10)
    answer = await usage_stub(stubs).GetUsage(usage.GetUsageRequest(), timeout=10)
    assert answer.caller == "" and [(r.requests, r.prompt_tokens, r.completion_tokens) for r in answer.rows] == [(1, 1_200, 300)]


async def test_the_readme_grpcurl_commands_read_usage_and_show_a_quota_refusal(
    fake: FakeOpenAI, start_app: StartApp, connect: Callable[..., Stubs], tmp_path: Path
) -> None:
    keys = write_keys_file(tmp_path / "keys.yaml", {"dashboards": {"requests_per_minute": 1}})
    app = await start_app(**cloud_env(fake, tmp_path / "keys.yaml"), LLM_GENERAL_MODEL_1=MODEL)
    await same_minute()
    fake.reply_text("Paris.", COUNTS)
    await connect(app).llm.Generate(generate(), metadata=auth(keys["dashboards"]), timeout=10)
    grpcurl = tool("grpcurl")
    today = utc_day(time.time())
    code, output = await run(
        grpcurl, "-plaintext", "-H", f"authorization: Bearer {keys['dashboards']}", "-d", json.dumps({"start_date": today}),
        app.address, "llm_manager.v1.UsageService/GetUsage",
    )
    assert code == 0, output
    answer = json.loads(output)
    assert answer["caller"] == "dashboards" and answer["rows"][0]["date"] == today
    assert (answer["total"]["requests"], answer["total"]["prompt_tokens"], answer["total"]["completion_tokens"]) == ("1", "1200", "300")
    code, output = await run(
        grpcurl, "-plaintext", "-H", f"x-api-key: {keys['dashboards']}", "-d", '{"prompt":"hi"}', app.address, "llm_manager.v1.LLMManagerService/Generate"
    )
    assert code != 0 and "ResourceExhausted" in output and "QUOTA_EXCEEDED" in output, output
    assert keys["dashboards"] not in output


async def test_embeddings_are_limited_and_booked_like_generations(
    fake: FakeOpenAI, start_app: StartApp, connect: Callable[..., Stubs], tmp_path: Path
) -> None:
    keys = write_keys_file(tmp_path / "keys.yaml", {"search": {"requests_per_minute": 2}})
    stubs = connect(await start_app(**cloud_env(fake, tmp_path / "keys.yaml")))
    await same_minute()
    request = api.EmbedRequest(inputs=["disk full on node-7", "checkout p99 latency spiked"], model="text-embedding-3-small")
    first = await stubs.llm.Embed(request, metadata=auth(keys["search"]), timeout=10)
    hit = await stubs.llm.Embed(request, metadata=auth(keys["search"]), timeout=10)  # the response cache's
    assert first.usage.prompt_tokens > 0 and first.usage.cost_usd > 0
    refusal = await quota_refusal(stubs.llm.Embed(request, metadata=auth(keys["search"]), timeout=10))
    assert refusal.limit == "requests_per_minute" and len(fake.embedding_requests) == 1
    rows = (await usage_stub(stubs).GetUsage(usage.GetUsageRequest(), metadata=auth(keys["search"]), timeout=10)).rows
    assert [(r.model, r.requests, r.cache_hits, r.prompt_tokens, r.completion_tokens) for r in rows] == [
        (first.model, 2, 1, first.usage.prompt_tokens, 0)
    ]
    assert rows[0].cost_usd == pytest.approx(first.usage.cost_usd) and hit.usage.cost_usd == 0
