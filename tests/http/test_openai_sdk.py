"""The official ``openai`` Python SDK, unchanged, against the HTTP API: plain and streamed chat
completions (async and sync clients), its stream helper for tool calls, its structured-output
``parse``, the models list, and its exception class for each kind of error. Every answer comes
from the OpenAI fake through the server's router."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from pydantic import BaseModel

from ..fakes import RetryHint, TokenCounts
from .conftest import OPENAI_MODEL, Served

PARAMS = {
    "type": "object",
    "properties": {"metric": {"type": "string"}, "minutes": {"type": "integer"}},
    "required": ["metric", "minutes"],
    "additionalProperties": False,
}
TOOL = {"type": "function", "function": {"name": "query_metrics", "description": "Query a metric.", "parameters": PARAMS}}


async def test_plain_completion_through_the_router(client: openai.AsyncOpenAI, served: Served) -> None:
    served.fake.reply_text("Bonjour", TokenCounts(prompt=12, completion=3, cached=4))
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        max_tokens=20, temperature=0.2, top_p=0.9, stop=["\n\n"], seed=7, extra_headers={"x-request-id": "req-http-1"},
    )
    completion = raw.parse()
    assert raw.headers["x-request-id"] == "req-http-1"
    assert completion.id == "chatcmpl-req-http-1"
    assert completion.choices[0].message.content == "Bonjour"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model.startswith(OPENAI_MODEL)
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (12, 3, 15)
    assert completion.usage.prompt_tokens_details is not None and completion.usage.prompt_tokens_details.cached_tokens == 4
    extension = completion.model_extra["llm_manager"] if completion.model_extra else {}
    assert extension["model_chain"] == [OPENAI_MODEL] and extension["cost_usd"] > 0 and extension["cached"] is False
    # What reached the upstream is the same request: system and user messages, the sampling options.
    sent = served.fake.generation_requests[-1].body
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert (sent["temperature"], sent["top_p"], sent["stop"], sent["seed"]) == (0.2, 0.9, ["\n\n"], 7)


async def test_stream_with_usage(client: openai.AsyncOpenAI, served: Served) -> None:
    served.fake.stream_text(["Grüße ", "aus ", "🚀"], TokenCounts(prompt=10, completion=4))
    stream = await client.chat.completions.create(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": "greet"}], stream=True, stream_options={"include_usage": True},
        max_completion_tokens=30,
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Grüße aus 🚀"
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert (usage_chunk.usage.prompt_tokens, usage_chunk.usage.completion_tokens) == (10, 4)
    assert all(c.usage is None for c in chunks[:-1])
    assert served.fake.generation_requests[-1].body["max_tokens" if "max_tokens" in served.fake.generation_requests[-1].body else "max_completion_tokens"] == 30


async def test_stream_without_usage_has_no_usage_chunk(client: openai.AsyncOpenAI, served: Served) -> None:
    served.fake.stream_text(["a", "b"], TokenCounts(prompt=3, completion=2))
    stream = await client.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": "ab"}], stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "ab"


async def test_sync_client_plain_and_stream(served: Served) -> None:
    def call() -> tuple[str, str]:
        with openai.OpenAI(api_key="unused", base_url=served.base_url, max_retries=0) as sync:
            plain = sync.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": "one"}])
            streamed = sync.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": "two"}], stream=True)
            return plain.choices[0].message.content or "", "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)

    served.fake.reply_text("first", TokenCounts(prompt=2, completion=1))
    served.fake.stream_text(["sec", "ond"], TokenCounts(prompt=2, completion=2))
    # The sync client blocks: in a thread, so the server on this loop can answer it.
    assert await asyncio.to_thread(call) == ("first", "second")


async def test_stream_helper_accumulates_tool_calls(client: openai.AsyncOpenAI, served: Served) -> None:
    served.fake.reply_tool_calls([("call_a", "query_metrics", {"metric": "p99", "minutes": 15})], TokenCounts(prompt=40, completion=12))
    async with client.chat.completions.stream(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": "p99 of checkout?"}], tools=[TOOL], tool_choice="required",  # type: ignore[list-item]
    ) as stream:
        done = [event async for event in stream if event.type == "tool_calls.function.arguments.done"]
        final = await stream.get_final_completion()
    assert [(e.name, json.loads(e.arguments)) for e in done] == [("query_metrics", {"metric": "p99", "minutes": 15})]
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None and message.tool_calls[0].id == "call_a"
    assert json.loads(message.tool_calls[0].function.arguments) == {"metric": "p99", "minutes": 15}  # type: ignore[union-attr]
    sent = served.fake.generation_requests[-1].body
    assert sent["tools"][0]["function"]["name"] == "query_metrics" and sent["tool_choice"] == "required"


async def test_tool_round_trip_and_named_tool_choice(client: openai.AsyncOpenAI, served: Served) -> None:
    served.fake.reply_text("p99 is 412 ms", TokenCounts(prompt=50, completion=6))
    completion = await client.chat.completions.create(
        model=OPENAI_MODEL,
        messages=[
            {"role": "user", "content": "p99 of checkout?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "query_metrics", "arguments": '{"metric":"p99","minutes":15}'}}]},
            {"role": "tool", "tool_call_id": "call_a", "content": '{"p99_ms": 412}'},
        ],
        tools=[TOOL],  # type: ignore[list-item]
        tool_choice="none",
    )
    assert completion.choices[0].message.content == "p99 is 412 ms"
    sent = served.fake.generation_requests[-1].body
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
    assert sent["messages"][2]["tool_call_id"] == "call_a"
    # A named tool: the upstream is told to call that one.
    served.fake.reply_tool_calls([("call_b", "query_metrics", {"metric": "p50", "minutes": 5})])
    named = await client.chat.completions.create(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": "p50?"}], tools=[TOOL],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "query_metrics"}},
    )
    assert named.choices[0].message.tool_calls is not None and named.choices[0].message.tool_calls[0].function.name == "query_metrics"  # type: ignore[union-attr]
    assert served.fake.generation_requests[-1].body["tool_choice"] == {"type": "function", "function": {"name": "query_metrics"}}


class Service(BaseModel):
    service: str
    replicas: int


async def test_parse_structured_output(client: openai.AsyncOpenAI, served: Served) -> None:
    served.fake.reply_json('{"service": "checkout", "replicas": 3}', TokenCounts(prompt=30, completion=9))
    completion = await client.chat.completions.parse(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": "checkout has 3 replicas"}], response_format=Service
    )
    assert completion.choices[0].message.parsed == Service(service="checkout", replicas=3)
    extension = completion.model_extra["llm_manager"] if completion.model_extra else {}
    assert extension["structured_output"] == {"service": "checkout", "replicas": 3}
    sent = served.fake.generation_requests[-1].body
    assert sent["response_format"]["type"] == "json_schema"


async def test_json_object_format_reaches_the_upstream(client: openai.AsyncOpenAI, served: Served) -> None:
    served.fake.reply_text('{"ok": true}', TokenCounts(prompt=5, completion=4))
    completion = await client.chat.completions.create(
        model=OPENAI_MODEL, messages=[{"role": "user", "content": "json please"}], response_format={"type": "json_object"}
    )
    assert json.loads(completion.choices[0].message.content or "") == {"ok": True}
    assert served.fake.generation_requests[-1].body["response_format"] == {"type": "json_object"}


async def test_models_list_and_retrieve(client: openai.AsyncOpenAI, served: Served) -> None:
    listed = [m.id async for m in client.models.list()]
    assert listed[0] == "auto" and OPENAI_MODEL in listed
    model = await client.models.retrieve(OPENAI_MODEL)
    assert model.owned_by == "openai"
    with pytest.raises(openai.NotFoundError) as raised:
        await client.models.retrieve("no-such-model")
    assert raised.value.code == "model_not_found" and raised.value.param == "model"


# --- errors: each kind as the SDK's exception ---------------------------------------------------


async def test_bad_request_lists_every_field(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(
            model=OPENAI_MODEL, messages=[{"role": "tool", "tool_call_id": "nope", "content": "x"}], temperature=3, max_tokens=0,
        )
    error = raised.value
    assert error.status_code == 400 and error.type == "invalid_request_error" and error.code == "invalid_request"
    body = error.body if isinstance(error.body, dict) else {}
    fields = {v["field"] for v in body["field_violations"]}
    assert {"messages[0].tool_call_id", "temperature", "max_tokens"} <= fields
    assert error.param == "messages[0].tool_call_id"
    assert error.response.headers["x-request-id"] == body["request_id"]


async def test_unknown_task_type_in_the_header_and_the_extension(client: openai.AsyncOpenAI) -> None:
    for kwargs in ({"extra_headers": {"x-llm-task": "poetry"}}, {"extra_body": {"llm_manager": {"task_type": "poetry"}}}):
        with pytest.raises(openai.BadRequestError) as raised:
            await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}], **kwargs)  # type: ignore[arg-type]
        assert raised.value.param in {"x-llm-task", "llm_manager.task_type"}


async def test_rate_limit_is_429_with_retry_after(client: openai.AsyncOpenAI, served: Served) -> None:
    served.fake.rate_limit(7, RetryHint.RETRY_AFTER)
    with pytest.raises(openai.RateLimitError) as raised:
        await client.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": "x"}])
    assert raised.value.status_code == 429 and raised.value.code == "rate_limit_exceeded"
    assert raised.value.response.headers["retry-after"] == "7"


async def test_upstream_failure_is_503(client: openai.AsyncOpenAI, served: Served) -> None:
    served.fake.server_error(500)
    with pytest.raises(openai.InternalServerError) as raised:
        await client.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": "x"}])
    assert raised.value.status_code == 503 and raised.value.type == "service_unavailable_error"


async def test_our_rejected_provider_key_is_a_500_without_the_key(client: openai.AsyncOpenAI, served: Served) -> None:
    served.fake.fail_auth()
    with pytest.raises(openai.InternalServerError) as raised:
        await client.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": "x"}])
    assert raised.value.status_code == 500
    assert "sk-" not in json.dumps(raised.value.body)


async def test_error_after_the_stream_started_is_an_error_event(client: openai.AsyncOpenAI, served: Served) -> None:
    served.fake.error_mid_stream(["Once", " upon"])
    stream = await client.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": "story"}], stream=True)
    seen: list[str] = []
    with pytest.raises(openai.APIError) as raised:
        async for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "Once" in "".join(seen)
    assert isinstance(raised.value.body, dict) and raised.value.body.get("type") == "service_unavailable_error"


async def test_timeout_is_504(served: Served, data_dir: str) -> None:
    from .conftest import start_served

    app = await start_served(served.fake, data_dir, LLM_TIMEOUT_MS="400")
    try:
        served.fake.stall_stream(["slow"])
        async with openai.AsyncOpenAI(api_key="unused", base_url=f"http://{app.http_address}/v1", max_retries=0) as sdk:
            with pytest.raises(openai.InternalServerError) as raised:
                await sdk.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": "x"}])
        assert raised.value.status_code == 504 and raised.value.code == "timeout"
    finally:
        await app.stop(grace_s=0)
