"""Attempts the provider answered in full (and charged for) but the router rejected are the
caller's to pay: the real gRPC server, GPT against the OpenAI fake answering a json_schema
request with invalid JSON, limits and the ledger read back through the generated stubs. And a
call the router's plan refuses spends no request of the caller's per-minute limit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from llm_manager.client import error_details
from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api, usage_service_pb2 as usage

from ..conftest import StartApp, Stubs
from ..fakes import FakeOpenAI, TokenCounts
from ..support.keys import write_keys_file
from .test_usage_e2e import COST, COUNTS, MODEL, auth, cloud_env, fake, generate, quota_refusal, same_minute, usage_stub  # noqa: F401 - fake: fixture

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}
VALID = TokenCounts(prompt=1_000, completion=20)
# The model the fake's answers name (the snapshot behind the alias), as providers report it.
SNAPSHOT = "gpt-4o-mini-2024-07-18"
VALID_COST = (1_000 * 0.15 + 20 * 0.60) / 1e6


def structured(prompt: str = "Which city?") -> api.GenerateRequest:
    schema = struct_pb2.Struct()
    schema.update(CITY)
    preferences = common_pb2.GenerationPreferences(
        model=MODEL, max_tokens=64, response_format=common_pb2.RESPONSE_FORMAT_JSON_SCHEMA, response_schema=schema
    )
    return api.GenerateRequest(prompt=prompt, preferences=preferences, cache_control=common_pb2.CacheControl(no_cache=True, no_store=True))


def retrying_env(fake: FakeOpenAI, keys_file: Path) -> dict[str, str]:
    # One retry: an invalid structured answer is sampled again on the same (pinned) model.
    return {**cloud_env(fake, keys_file), "LLM_MAX_RETRIES": "1"}


async def rows_of(stubs: Stubs, key: str) -> list[tuple[str, int, int, int, float]]:
    answer = await usage_stub(stubs).GetUsage(usage.GetUsageRequest(), metadata=auth(key), timeout=10)
    return [(r.model, r.requests, r.prompt_tokens, r.completion_tokens, round(r.cost_usd, 9)) for r in answer.rows]


async def test_an_answer_after_a_rejected_attempt_books_both_and_spends_the_tokens_per_minute(
    fake: FakeOpenAI, start_app: StartApp, connect: Callable[..., Stubs], tmp_path: Path
) -> None:
    keys = write_keys_file(tmp_path / "keys.yaml", {"reports": {"tokens_per_minute": 2_000}})
    stubs = connect(await start_app(**retrying_env(fake, tmp_path / "keys.yaml")))
    await same_minute()
    fake.reply_json('{"city": "Par', COUNTS)  # cut JSON: rejected, but charged (1,500 tokens)
    fake.reply_json('{"city": "Paris"}', VALID)  # 1,020 tokens
    reply = await stubs.llm.Generate(structured(), metadata=auth(keys["reports"]), timeout=10)
    assert json.loads(reply.text) == {"city": "Paris"} and reply.metadata.retry_count == 1 and reply.model == SNAPSHOT
    # The reply's usage is the answering attempt's; the ledger holds what upstream charged.
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (1_000, 20)
    assert reply.usage.cost_usd == pytest.approx(VALID_COST)
    assert await rows_of(stubs, keys["reports"]) == [(reply.model, 1, 2_200, 320, round(COST + VALID_COST, 9))]
    # 2,520 tokens this minute: over the limit, which the answer's 1,020 alone is not.
    refusal = await quota_refusal(stubs.llm.Generate(generate(), metadata=auth(keys["reports"]), timeout=10))
    assert refusal.limit == "tokens_per_minute"
    assert len(fake.generation_requests) == 2


async def test_a_call_whose_attempts_were_all_rejected_books_them_and_spends_the_budget(
    fake: FakeOpenAI, start_app: StartApp, connect: Callable[..., Stubs], tmp_path: Path
) -> None:
    keys = write_keys_file(tmp_path / "keys.yaml", {"analytics": {"budget_usd_per_day": 0.0005}})
    stubs = connect(await start_app(**retrying_env(fake, tmp_path / "keys.yaml")))
    for _ in range(2):
        fake.reply_json("not json at all", COUNTS)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Generate(structured(), metadata=auth(keys["analytics"]), timeout=10)
    assert error_details(raised.value).reason == "INVALID_MODEL_OUTPUT"
    assert len(fake.generation_requests) == 2
    # Both attempts were charged (0.00036 each): a failed call is no request, but its tokens
    # and cost are booked under the model that gave them, and the budget is spent.
    assert await rows_of(stubs, keys["analytics"]) == [(SNAPSHOT, 0, 2_400, 600, round(2 * COST, 9))]
    refusal = await quota_refusal(stubs.llm.Generate(structured(), metadata=auth(keys["analytics"]), timeout=10))
    assert refusal.limit == "budget_usd_per_day"
    assert len(fake.generation_requests) == 2


async def test_a_streamed_answer_rejected_at_its_end_books_its_usage(
    fake: FakeOpenAI, start_app: StartApp, connect: Callable[..., Stubs], tmp_path: Path
) -> None:
    keys = write_keys_file(tmp_path / "keys.yaml", {"alice": {}})
    stubs = connect(await start_app(**retrying_env(fake, tmp_path / "keys.yaml")))
    fake.stream_json(['{"town"', ': "Paris"}'], COUNTS)  # valid JSON, not the schema's
    request = structured()
    stream = stubs.llm.StreamGenerate(
        api.StreamGenerateRequest(prompt=request.prompt, preferences=request.preferences, cache_control=request.cache_control),
        metadata=auth(keys["alice"]),
        timeout=10,
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        [m async for m in stream]
    assert error_details(raised.value).reason == "INVALID_MODEL_OUTPUT"
    # The stream started (one request) and was charged in full.
    assert await rows_of(stubs, keys["alice"]) == [(SNAPSHOT, 1, 1_200, 300, round(COST, 9))]


async def test_a_call_the_plan_refuses_spends_no_request(
    fake: FakeOpenAI, start_app: StartApp, connect: Callable[..., Stubs], tmp_path: Path
) -> None:
    keys = write_keys_file(tmp_path / "keys.yaml", {"dashboards": {"requests_per_minute": 1, "models": [MODEL, "text-embedding-3-small"]}})
    stubs = connect(await start_app(**cloud_env(fake, tmp_path / "keys.yaml")))
    await same_minute()
    me = auth(keys["dashboards"])
    denied = api.GenerateRequest(prompt="hi", preferences=common_pb2.GenerationPreferences(model="gpt-4o"))
    refusals: list[Any] = [
        stubs.llm.Generate(denied, metadata=me, timeout=10),
        stubs.llm.StreamGenerate(api.StreamGenerateRequest(prompt="hi", preferences=denied.preferences), metadata=me, timeout=10).read(),
        stubs.llm.Embed(api.EmbedRequest(inputs=["x"], model="text-embedding-3-large"), metadata=me, timeout=10),
    ]
    for refused in refusals:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await refused
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED, raised.value.details()
    # The minute's one request is still there.
    fake.reply_text("Paris.", COUNTS)
    await stubs.llm.Generate(generate(), metadata=me, timeout=10)
    assert (await quota_refusal(stubs.llm.Generate(generate(), metadata=me, timeout=10))).limit == "requests_per_minute"
    assert len(fake.generation_requests) == 1
