"""The fakes are faithful: the official ``openai`` and ``anthropic`` SDKs (test-only
dependencies) parse their replies, streams and errors into the same objects and exception
classes they produce for the real APIs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

import anthropic
import httpx2
import openai
import pydantic
import pytest

from ..fakes import Ending, FakeAnthropic, FakeOpenAI, RetryHint, TokenCounts
from ..fakes.http_fake import fixture_json
from .conftest import ANTHROPIC_KEY, OPENAI_KEY

USER_HELLO = [{"role": "user", "content": "Hello!"}]
# Not on the SDK's deprecation list (it warns for claude-sonnet-4-5); the fake accepts any name.
ANTHROPIC_SDK_MODEL = "claude-haiku-4-5"


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI(api_key=OPENAI_KEY).start()
    yield fake
    await fake.stop()


@pytest.fixture
async def anthropic_fake() -> AsyncIterator[FakeAnthropic]:
    fake = await FakeAnthropic(api_key=ANTHROPIC_KEY).start()
    yield fake
    await fake.stop()


@pytest.fixture
async def openai_client(openai_fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=f"{openai_fake.url}/v1", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def anthropic_client(anthropic_fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(api_key=ANTHROPIC_KEY, base_url=anthropic_fake.url, max_retries=0)
    yield client
    await client.close()


# --- OpenAI -------------------------------------------------------------------------------


async def test_openai_sdk_parses_recorded_completion(openai_client: openai.AsyncOpenAI) -> None:
    completion = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=USER_HELLO)  # type: ignore[arg-type]

    assert isinstance(completion, openai.types.chat.ChatCompletion)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Hello! How can I help you today?"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 28
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 0


async def test_openai_sdk_parses_the_fakes_embeddings(openai_client: openai.AsyncOpenAI, openai_fake: FakeOpenAI) -> None:
    """``embeddings.create`` as the SDK sends it by default (base64 float32s, decoded by the
    SDK) and with floats: the same vectors, one per input by index, and the usage."""
    texts = ["checkout p99 latency spiked", "payment service returned 502", "checkout p99 latency spiked"]
    default = await openai_client.embeddings.create(model="text-embedding-3-small", input=texts)
    floats = await openai_client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")

    assert isinstance(default, openai.types.CreateEmbeddingResponse) and default.object == "list"
    assert [d.index for d in default.data] == [0, 1, 2] and all(d.object == "embedding" for d in default.data)
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert len(default.data[0].embedding) == 1536 and default.data[0].embedding == default.data[2].embedding
    assert default.data[0].embedding != default.data[1].embedding
    assert default.model == "text-embedding-3-small"
    assert default.usage.prompt_tokens == default.usage.total_tokens > 0
    bodies = [r.body for r in openai_fake.embedding_requests]
    assert bodies[0]["encoding_format"] == "base64" and bodies[1]["encoding_format"] == "float"

    shorter = await openai_client.embeddings.create(model="text-embedding-3-large", input="one text", dimensions=256)
    assert len(shorter.data) == 1 and len(shorter.data[0].embedding) == 256


async def test_openai_sync_sdk_gets_the_embeddings_errors(openai_fake: FakeOpenAI) -> None:
    """The fake's embedding errors are the exception classes the real API raises (the sync
    client, on a thread: the fake serves on this test's event loop)."""
    url = f"{openai_fake.url}/v1"

    async def raised_by(key: str, **create: Any) -> type[BaseException] | None:
        def call() -> type[BaseException] | None:
            with openai.OpenAI(api_key=key, base_url=url, max_retries=0) as client:
                try:
                    client.embeddings.create(**create)
                except openai.APIStatusError as error:
                    return type(error)
            return None

        return await asyncio.to_thread(call)

    assert await raised_by(OPENAI_KEY, model="text-embedding-3-small", input=["fine", ""]) is openai.BadRequestError
    assert await raised_by(OPENAI_KEY, model="text-embedding-9-huge", input="x") is openai.NotFoundError
    openai_fake.rate_limit(1, RetryHint.RETRY_AFTER)
    assert await raised_by(OPENAI_KEY, model="text-embedding-3-small", input="x") is openai.RateLimitError
    assert await raised_by("sk-wrong", model="text-embedding-3-small", input="x") is openai.AuthenticationError
    assert await raised_by(OPENAI_KEY, model="text-embedding-3-small", input="x") is None


async def test_openai_sdk_parses_scenario_completion_with_cached_tokens(
    openai_client: openai.AsyncOpenAI, openai_fake: FakeOpenAI
) -> None:
    openai_fake.reply_text("Bonjour", TokenCounts(prompt=2048, completion=3, cached=1024))

    completion = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=USER_HELLO)  # type: ignore[arg-type]

    assert completion.choices[0].message.content == "Bonjour"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (2048, 3, 2051)
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 1024


@pytest.mark.parametrize("scenario", ["recorded", "scenario"])
async def test_openai_sdk_parses_streams(openai_client: openai.AsyncOpenAI, openai_fake: FakeOpenAI, scenario: str) -> None:
    expected = "Hello! How can I help you today?"
    if scenario == "scenario":
        openai_fake.stream_text(["Grüße ", "🚀"], TokenCounts(prompt=10, completion=4, cached=2), split_utf8=True)
        expected = "Grüße 🚀"

    stream = await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=USER_HELLO, stream=True, stream_options={"include_usage": True}  # type: ignore[arg-type]
    )
    chunks = [chunk async for chunk in stream]

    assert all(isinstance(c, openai.types.chat.ChatCompletionChunk) for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None, "include_usage: a last chunk with usage only"
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.parametrize(
    ("plan", "exception", "status"),
    [
        (lambda fake: fake.fail_auth(), openai.AuthenticationError, 401),
        (lambda fake: fake.rate_limit(1.5, RetryHint.RETRY_AFTER_MS), openai.RateLimitError, 429),
        (lambda fake: fake.server_error(500), openai.InternalServerError, 500),
        (lambda fake: fake.server_error(503), openai.InternalServerError, 503),
        (lambda fake: fake.context_too_large(), openai.BadRequestError, 400),
    ],
    ids=["401", "429", "500", "503", "context"],
)
async def test_openai_sdk_raises_its_exception_classes(
    openai_client: openai.AsyncOpenAI, openai_fake: FakeOpenAI, plan: object, exception: type[openai.APIStatusError], status: int
) -> None:
    plan(openai_fake)  # type: ignore[operator]

    with pytest.raises(exception) as raised:
        await openai_client.chat.completions.create(model="gpt-4o-mini", messages=USER_HELLO)  # type: ignore[arg-type]

    assert raised.value.status_code == status
    assert raised.value.request_id == "req_7c2f3d1e9b8a4f60a1d2c3b4e5f60718"
    if status == 400:
        assert raised.value.code == "context_length_exceeded"
    if status == 429:
        assert raised.value.response.headers["retry-after-ms"] == "1500"


async def test_openai_sdk_rejects_a_wrong_key(openai_fake: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(api_key="sk-wrong-key", base_url=f"{openai_fake.url}/v1", max_retries=0)
    try:
        with pytest.raises(openai.AuthenticationError) as raised:
            await client.chat.completions.create(model="gpt-4o-mini", messages=USER_HELLO)  # type: ignore[arg-type]
        assert raised.value.code == "invalid_api_key"
    finally:
        await client.close()


async def test_openai_sdk_raises_on_error_mid_stream(openai_client: openai.AsyncOpenAI, openai_fake: FakeOpenAI) -> None:
    openai_fake.error_mid_stream(["Once", " upon"])

    stream = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=USER_HELLO, stream=True)  # type: ignore[arg-type]
    received: list[str] = []
    with pytest.raises(openai.APIError) as raised:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    assert "".join(received) == "Once upon"
    assert "server had an error" in raised.value.message


async def test_openai_sdk_raises_on_cut_stream(openai_client: openai.AsyncOpenAI, openai_fake: FakeOpenAI) -> None:
    openai_fake.cut_stream(["Once"])

    stream = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=USER_HELLO, stream=True)  # type: ignore[arg-type]
    with pytest.raises(openai.APIConnectionError):
        async for _ in stream:
            pass


async def test_openai_sdk_lists_models(openai_client: openai.AsyncOpenAI) -> None:
    models = [model.id async for model in openai_client.models.list()]

    assert "gpt-4o-mini" in models


# --- Anthropic ----------------------------------------------------------------------------


async def test_anthropic_sdk_parses_recorded_message(anthropic_client: anthropic.AsyncAnthropic) -> None:
    message = await anthropic_client.messages.create(model=ANTHROPIC_SDK_MODEL, max_tokens=64, messages=USER_HELLO)  # type: ignore[arg-type]

    assert isinstance(message, anthropic.types.Message)
    assert message.content[0].type == "text" and message.content[0].text == "Hello! How can I help you today?"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 12)
    assert message.usage.cache_read_input_tokens == 0


async def test_anthropic_sdk_parses_scenario_message_with_cache_usage(
    anthropic_client: anthropic.AsyncAnthropic, anthropic_fake: FakeAnthropic
) -> None:
    anthropic_fake.reply_text("Bonjour", TokenCounts(prompt=3000, completion=5, cached=2000, cache_write=500))

    message = await anthropic_client.messages.create(model=ANTHROPIC_SDK_MODEL, max_tokens=64, messages=USER_HELLO)  # type: ignore[arg-type]

    assert message.content[0].type == "text" and message.content[0].text == "Bonjour"
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens, usage.output_tokens) == (500, 2000, 500, 5)


@pytest.mark.parametrize("scenario", ["recorded", "scenario"])
async def test_anthropic_sdk_parses_streams(
    anthropic_client: anthropic.AsyncAnthropic, anthropic_fake: FakeAnthropic, scenario: str
) -> None:
    expected = "Hello! How can I help you today?"
    if scenario == "scenario":
        anthropic_fake.stream_text(["Grüße ", "🚀"], TokenCounts(prompt=40, completion=4, cached=30), split_utf8=True)
        expected = "Grüße 🚀"

    async with anthropic_client.messages.stream(model=ANTHROPIC_SDK_MODEL, max_tokens=64, messages=USER_HELLO) as stream:  # type: ignore[arg-type]
        event_types = [event.type async for event in stream]
        final = await stream.get_final_message()

    assert event_types[0] == "message_start" and event_types[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop", "message_delta"} <= set(event_types)
    assert final.content[0].type == "text" and final.content[0].text == expected
    assert final.stop_reason == "end_turn"
    if scenario == "scenario":
        assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (10, 30, 4)


@pytest.mark.parametrize(
    ("plan", "exception", "status"),
    [
        (lambda fake: fake.fail_auth(), anthropic.AuthenticationError, 401),
        (lambda fake: fake.rate_limit(7, RetryHint.RETRY_AFTER), anthropic.RateLimitError, 429),
        (lambda fake: fake.server_error(500), anthropic.InternalServerError, 500),
        (lambda fake: fake.server_error(529), anthropic.OverloadedError, 529),
        (lambda fake: fake.context_too_large(), anthropic.BadRequestError, 400),
    ],
    ids=["401", "429", "500", "529", "prompt-too-long"],
)
async def test_anthropic_sdk_raises_its_exception_classes(
    anthropic_client: anthropic.AsyncAnthropic,
    anthropic_fake: FakeAnthropic,
    plan: object,
    exception: type[anthropic.APIStatusError],
    status: int,
) -> None:
    plan(anthropic_fake)  # type: ignore[operator]

    with pytest.raises(exception) as raised:
        await anthropic_client.messages.create(model=ANTHROPIC_SDK_MODEL, max_tokens=64, messages=USER_HELLO)  # type: ignore[arg-type]

    assert raised.value.status_code == status
    body = raised.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["request_id"].startswith("req_")
    if status == 529:
        assert body["error"]["type"] == "overloaded_error"
    if status == 429:
        assert raised.value.response.headers["retry-after"] == "7"


async def test_anthropic_sdk_rejects_wrong_key_and_missing_max_tokens(anthropic_fake: FakeAnthropic) -> None:
    wrong = anthropic.AsyncAnthropic(api_key="sk-ant-wrong", base_url=anthropic_fake.url, max_retries=0)
    right = anthropic.AsyncAnthropic(api_key=ANTHROPIC_KEY, base_url=anthropic_fake.url, max_retries=0)
    try:
        with pytest.raises(anthropic.AuthenticationError):
            await wrong.messages.create(model=ANTHROPIC_SDK_MODEL, max_tokens=64, messages=USER_HELLO)  # type: ignore[arg-type]
        with pytest.raises(anthropic.BadRequestError) as raised:
            await right.post("/v1/messages", body={"model": ANTHROPIC_SDK_MODEL, "messages": USER_HELLO}, cast_to=object)
        assert "max_tokens" in str(raised.value)
    finally:
        await wrong.close()
        await right.close()


async def test_anthropic_sdk_raises_on_error_event_mid_stream(
    anthropic_client: anthropic.AsyncAnthropic, anthropic_fake: FakeAnthropic
) -> None:
    anthropic_fake.error_mid_stream(["Once", " upon"])

    stream = await anthropic_client.messages.create(model=ANTHROPIC_SDK_MODEL, max_tokens=64, messages=USER_HELLO, stream=True)  # type: ignore[arg-type]
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as raised:
        async for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                received.append(event.delta.text)

    assert "".join(received) == "Once upon"
    assert isinstance(raised.value.body, dict) and raised.value.body["error"]["type"] == "overloaded_error"


async def test_anthropic_sdk_raises_on_cut_stream(anthropic_client: anthropic.AsyncAnthropic, anthropic_fake: FakeAnthropic) -> None:
    anthropic_fake.cut_stream(["Once"])

    stream = await anthropic_client.messages.create(model=ANTHROPIC_SDK_MODEL, max_tokens=64, messages=USER_HELLO, stream=True)  # type: ignore[arg-type]
    # The anthropic SDK lets the HTTP client's error through (the openai SDK wraps it).
    with pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)):
        async for _ in stream:
            pass


async def test_anthropic_sdk_lists_models(anthropic_client: anthropic.AsyncAnthropic) -> None:
    models = [model.id async for model in anthropic_client.models.list()]

    assert models == ["claude-sonnet-4-5-20250929"]


# --- Tool calling and structured output ---------------------------------------------------
#
# The recorded fixtures (tests/fixtures/README.md) hold one answer each: the same two parallel
# calls, non-streamed and streamed in fragments; the same JSON document, non-streamed and
# streamed. The official SDKs' own accumulators must rebuild the streamed ones into exactly
# the non-streamed ones.

USER_INCIDENT = [{"role": "user", "content": "Checkout is slow since 10:05. What is going on?"}]
METRICS_INPUT = {"service": "checkout", "metric": "latency_p95_ms", "window": "1h"}
LOGS_INPUT = {"service": "checkout", "query": 'level:error "payment declined"', "limit": 20}
RECORDED_OPENAI_CALLS = [
    ("call_Vq3LmT8xRk2NbY7wHs5JdPcF", "query_metrics", METRICS_INPUT),
    ("call_Gz6KpW1nXe4QvM9tLr2ByAuS", "search_logs", LOGS_INPUT),
]
RECORDED_ANTHROPIC_TEXT = "I'll check the checkout service's p95 latency and search its recent error logs."
RECORDED_ANTHROPIC_CALLS = [
    ("toolu_01Hq7XwRk3NmVb9TcLp2YsDf", "query_metrics", METRICS_INPUT),
    ("toolu_01Mz4KeWn8QrGu2JxBv6HtLa", "search_logs", LOGS_INPUT),
]
# Non-ASCII text in the arguments, so split_utf8 also cuts inside the argument fragments.
SCRIPTED_CALLS: list[tuple[str, str, dict[str, object]]] = [
    ("call_scripted_1", "search_logs", {"service": "café-api", "query": 'msg:"délai dépassé" 🚨', "limit": 5}),
    ("call_scripted_2", "query_metrics", {"service": "café-api", "metric": "errors_total", "window": "15m"}),
    ("call_scripted_3", "query_metrics", {"service": "payments", "metric": "latency_p99_ms", "window": "15m"}),
]


class QueryMetrics(pydantic.BaseModel):
    service: str
    metric: str
    window: str


class SearchLogs(pydantic.BaseModel):
    service: str
    query: str
    limit: int


class IncidentTriage(pydantic.BaseModel):
    service: str
    severity: Literal["low", "medium", "high"]
    summary: str
    actions: list[str]


EXPECTED_TRIAGE = IncidentTriage(
    service="checkout",
    severity="high",
    summary="p95 latency has been above the 800 ms objective since 10:05 UTC",
    actions=["Roll back release 2025.10.27-1", "Page the payments on-call engineer"],
)
# Strict function tools, as the SDK builds them: its stream helper then also parses the
# arguments of each finished call into the model.
OPENAI_TOOLS = [
    openai.pydantic_function_tool(QueryMetrics, name="query_metrics", description="Read a service metric over a window."),
    openai.pydantic_function_tool(SearchLogs, name="search_logs", description="Search a service's logs."),
]
ANTHROPIC_TOOLS = [
    {"name": "query_metrics", "description": "Read a service metric over a window.", "input_schema": QueryMetrics.model_json_schema()},
    {"name": "search_logs", "description": "Search a service's logs.", "input_schema": SearchLogs.model_json_schema()},
]


def _openai_calls(message: object) -> list[tuple[str, str, str, object]]:
    tool_calls = getattr(message, "tool_calls", None) or []
    return [(call.id, call.type, call.function.name, json.loads(call.function.arguments)) for call in tool_calls]


def _anthropic_blocks(message: anthropic.types.Message) -> list[tuple[str, ...] | tuple[str, str, str, object]]:
    blocks: list[tuple[str, ...] | tuple[str, str, str, object]] = []
    for block in message.content:
        if block.type == "text":
            blocks.append(("text", block.text))
        elif block.type == "tool_use":
            blocks.append(("tool_use", block.id, block.name, block.input))
    return blocks


# --- OpenAI: tool calls ----------------------------------------------------------------


async def test_openai_sdk_parses_recorded_tool_calls(openai_client: openai.AsyncOpenAI, openai_fake: FakeOpenAI) -> None:
    openai_fake.reply_tool_calls()

    completion = await openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=USER_INCIDENT, tools=OPENAI_TOOLS, tool_choice="auto", parallel_tool_calls=True  # type: ignore[arg-type]
    )

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None and choice.message.refusal is None
    assert _openai_calls(choice.message) == [(call_id, "function", name, args) for call_id, name, args in RECORDED_OPENAI_CALLS]
    assert completion.usage is not None and (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (151, 58)
    sent = openai_fake.generation_requests[-1].body
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["query_metrics", "search_logs"]
    assert sent["tools"][0]["type"] == "function" and sent["tools"][0]["function"]["strict"] is True
    assert sent["tools"][1]["function"]["parameters"]["required"] == ["service", "query", "limit"]
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == ("auto", True)


async def test_openai_stream_helper_rebuilds_the_recorded_fragmented_tool_calls(
    openai_client: openai.AsyncOpenAI, openai_fake: FakeOpenAI
) -> None:
    openai_fake.stream_tool_calls()

    async with openai_client.chat.completions.stream(
        model="gpt-4o-mini", messages=USER_INCIDENT, tools=OPENAI_TOOLS, stream_options={"include_usage": True}  # type: ignore[arg-type]
    ) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_completion()

    recorded = fixture_json("openai", "chat_completion_tool_calls.json")["choices"][0]["message"]["tool_calls"]
    assert [(c.id, c.type, c.function.name, c.function.arguments) for c in final.choices[0].message.tool_calls or []] == [
        (c["id"], c["type"], c["function"]["name"], c["function"]["arguments"]) for c in recorded
    ], "the stream's fragments join into the non-streamed fixture's calls, argument strings byte for byte"
    assert final.choices[0].finish_reason == "tool_calls" and final.choices[0].message.content is None
    assert final.usage is not None and final.usage.total_tokens == 209
    deltas = [e for e in events if e.type == "tool_calls.function.arguments.delta"]
    assert {e.index for e in deltas} == {0, 1} and len(deltas) >= 2 * 10, "each call's arguments arrive in many fragments"
    assert [e.index for e in deltas] == sorted(e.index for e in deltas), "the second call starts after the first is complete"
    done = [e for e in events if e.type == "tool_calls.function.arguments.done"]
    assert [(e.index, e.name, e.parsed_arguments) for e in done] == [
        (0, "query_metrics", QueryMetrics(**METRICS_INPUT)),
        (1, "search_logs", SearchLogs(**LOGS_INPUT)),
    ]


async def test_openai_recorded_tool_call_stream_has_the_documented_delta_shape(
    openai_client: openai.AsyncOpenAI, openai_fake: FakeOpenAI
) -> None:
    openai_fake.stream_tool_calls()

    stream = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=USER_INCIDENT, tools=OPENAI_TOOLS, stream=True)  # type: ignore[arg-type]
    deltas = [(chunk.choices[0].delta, chunk.choices[0].finish_reason) async for chunk in stream if chunk.choices]

    assert deltas[0][0].role == "assistant" and deltas[0][0].content is None and not deltas[0][0].tool_calls
    fragments = [call for delta, _ in deltas for call in delta.tool_calls or []]
    firsts = [call for call in fragments if call.id is not None]
    assert [(c.index, c.id, c.type, c.function and c.function.name, c.function and c.function.arguments) for c in firsts] == [
        (0, "call_Vq3LmT8xRk2NbY7wHs5JdPcF", "function", "query_metrics", ""),
        (1, "call_Gz6KpW1nXe4QvM9tLr2ByAuS", "function", "search_logs", ""),
    ], "a call's first delta carries its id, type and name, with empty arguments"
    later = [call for call in fragments if call.id is None]
    assert all(c.type is None and c.function is not None and c.function.name is None for c in later)
    assert any(piece.function and piece.function.arguments == "lat" for piece in later), "cut inside a JSON string"
    assert deltas[-1] == (deltas[-1][0], "tool_calls") and deltas[-1][0].tool_calls is None


@pytest.mark.parametrize("count", [1, 3], ids=["one-call", "three-calls"])
async def test_openai_sdk_rebuilds_scripted_tool_calls_in_both_shapes(
    openai_client: openai.AsyncOpenAI, openai_fake: FakeOpenAI, count: int
) -> None:
    calls = SCRIPTED_CALLS[:count]
    counts = TokenCounts(prompt=300, completion=40, cached=128)
    expected = [(call_id, "function", name, args) for call_id, name, args in calls]
    openai_fake.stream_tool_calls(calls, counts, fragments=5, split_utf8=True)
    openai_fake.reply_tool_calls(calls, counts, fragments=4)  # a plain request: a chat.completion
    openai_fake.reply_tool_calls(calls, counts, fragments=4)  # a stream request: chunks

    async with openai_client.chat.completions.stream(model="gpt-4o-mini", messages=USER_INCIDENT, tools=OPENAI_TOOLS) as stream:  # type: ignore[arg-type]
        events = [event async for event in stream]
        streamed = await stream.get_final_completion()
    plain = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=USER_INCIDENT, tools=OPENAI_TOOLS)  # type: ignore[arg-type]
    async with openai_client.chat.completions.stream(model="gpt-4o-mini", messages=USER_INCIDENT, tools=OPENAI_TOOLS) as again:  # type: ignore[arg-type]
        adapted = await again.get_final_completion()

    for completion in (streamed, plain, adapted):
        assert _openai_calls(completion.choices[0].message) == expected
        assert completion.choices[0].finish_reason == "tool_calls"
        assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.prompt_tokens_details.cached_tokens) == (300, 40, 128)
    per_call = [len([e for e in events if e.type == "tool_calls.function.arguments.delta" and e.index == i]) for i in range(count)]
    assert per_call == [6] * count, "the first delta (empty arguments) and 5 fragments per call"


async def test_openai_sdk_sees_text_then_tool_calls_and_a_length_cut(openai_client: openai.AsyncOpenAI, openai_fake: FakeOpenAI) -> None:
    openai_fake.stream_tool_calls(SCRIPTED_CALLS[1:2], text="Let me look at the metrics.")
    openai_fake.stream_tool_calls([("call_cut", "search_logs", '{"service":"checkout","que')], finish_reason="length")

    async with openai_client.chat.completions.stream(model="gpt-4o-mini", messages=USER_INCIDENT) as stream:  # type: ignore[arg-type]
        with_text = await stream.get_final_completion()
    cut = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=USER_INCIDENT, stream=True)  # type: ignore[arg-type]
    chunks = [chunk async for chunk in cut]

    assert with_text.choices[0].message.content == "Let me look at the metrics."
    assert _openai_calls(with_text.choices[0].message) == [("call_scripted_2", "function", "query_metrics", SCRIPTED_CALLS[1][2])]
    arguments = "".join(c.function.arguments or "" for ch in chunks if ch.choices for c in ch.choices[0].delta.tool_calls or [] if c.function)
    assert arguments == '{"service":"checkout","que' and [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"


async def test_openai_sdk_raises_on_a_tool_call_stream_cut_mid_arguments(openai_client: openai.AsyncOpenAI, openai_fake: FakeOpenAI) -> None:
    openai_fake.stream_tool_calls(ending=Ending.CUT)

    stream = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=USER_INCIDENT, stream=True)  # type: ignore[arg-type]
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received += [c.function.arguments or "" for c in chunk.choices[0].delta.tool_calls or [] if c.function] if chunk.choices else []

    assert "".join(received).endswith('"payment declined\\"","limit":20}'), "every fragment arrived, then no finish chunk"


async def test_openai_fake_records_tool_results_and_refuses_what_the_api_refuses(
    openai_client: openai.AsyncOpenAI, openai_fake: FakeOpenAI
) -> None:
    assistant = fixture_json("openai", "chat_completion_tool_calls.json")["choices"][0]["message"]
    assistant = {"role": "assistant", "content": None, "tool_calls": assistant["tool_calls"]}
    answers = [
        {"role": "tool", "tool_call_id": "call_Vq3LmT8xRk2NbY7wHs5JdPcF", "content": '{"p95_ms": 1830}'},
        {"role": "tool", "tool_call_id": "call_Gz6KpW1nXe4QvM9tLr2ByAuS", "content": "37 matches"},
    ]
    history = [*USER_INCIDENT, assistant, *answers]
    openai_fake.reply_text("Roll back release 2025.10.27-1.", TokenCounts(prompt=260, completion=9))

    completion = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=history, tools=OPENAI_TOOLS, tool_choice="none")  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Roll back release 2025.10.27-1."
    sent = openai_fake.generation_requests[-1].body
    assert sent["messages"] == history and sent["tool_choice"] == "none"

    bad_arguments = {**assistant, "tool_calls": [{**assistant["tool_calls"][0], "function": {"name": "query_metrics", "arguments": METRICS_INPUT}}]}
    refusals = [
        ([*USER_INCIDENT, assistant, answers[0]], "messages.[3].role", None, "did not have response messages: call_Gz6KpW1nXe4QvM9tLr2ByAuS"),
        ([*USER_INCIDENT, answers[0]], "messages.[1].role", None, "messages with role 'tool' must be a response to a preceeding message with 'tool_calls'"),
        ([*USER_INCIDENT, assistant, {**answers[0], "tool_call_id": "call_unknown"}], "messages.[2].tool_call_id", None, "'call_unknown' not found"),
        ([*USER_INCIDENT, bad_arguments, answers[0]], "messages[1].tool_calls[0].function.arguments", "invalid_type", "expected a string, but got an object"),
    ]
    openai_fake.reply_text("kept for the next valid request", TokenCounts(prompt=1, completion=1))
    for messages, param, code, wording in refusals:
        with pytest.raises(openai.BadRequestError) as raised:
            await openai_client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
        assert (raised.value.param, raised.value.code) == (param, code) and wording in raised.value.message
    kept = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=USER_HELLO)  # type: ignore[arg-type]
    assert kept.choices[0].message.content == "kept for the next valid request", "a refused request leaves the plan in place"


# --- OpenAI: structured output ---------------------------------------------------------


async def test_openai_sdk_parses_the_recorded_json_schema_answer(openai_client: openai.AsyncOpenAI, openai_fake: FakeOpenAI) -> None:
    openai_fake.reply_json()

    completion = await openai_client.chat.completions.parse(model="gpt-4o-mini", messages=USER_INCIDENT, response_format=IncidentTriage)  # type: ignore[arg-type]

    message = completion.choices[0].message
    assert message.parsed == EXPECTED_TRIAGE and message.refusal is None
    assert json.loads(message.content or "") == EXPECTED_TRIAGE.model_dump()
    assert completion.choices[0].finish_reason == "stop"
    response_format = openai_fake.generation_requests[-1].body["response_format"]
    assert response_format["type"] == "json_schema"
    assert (response_format["json_schema"]["name"], response_format["json_schema"]["strict"]) == ("IncidentTriage", True)
    assert response_format["json_schema"]["schema"]["additionalProperties"] is False


async def test_openai_stream_helper_rebuilds_the_recorded_json_schema_stream(
    openai_client: openai.AsyncOpenAI, openai_fake: FakeOpenAI
) -> None:
    openai_fake.stream_json()

    async with openai_client.chat.completions.stream(
        model="gpt-4o-mini", messages=USER_INCIDENT, response_format=IncidentTriage, stream_options={"include_usage": True}  # type: ignore[arg-type]
    ) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_completion()

    recorded = fixture_json("openai", "chat_completion_json_schema.json")["choices"][0]["message"]["content"]
    assert final.choices[0].message.content == recorded, "the content fragments join into the non-streamed document"
    assert final.choices[0].message.parsed == EXPECTED_TRIAGE
    assert len([e for e in events if e.type == "content.delta"]) > 20
    assert [e.parsed for e in events if e.type == "content.done"] == [EXPECTED_TRIAGE]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_openai_sdk_reads_a_scripted_json_answer_given_a_schema_dict(
    openai_client: openai.AsyncOpenAI, openai_fake: FakeOpenAI, stream: bool
) -> None:
    document = {"service": "café-api", "severity": "low", "summary": "Délai résorbé 🚀", "actions": []}
    openai_fake.reply_json(json.dumps(document, ensure_ascii=False), TokenCounts(prompt=90, completion=20), fragments=7)
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "incident_triage", "strict": True, "schema": IncidentTriage.model_json_schema()},
    }

    if stream:
        chunks = await openai_client.chat.completions.create(
            model="gpt-4o-mini", messages=USER_INCIDENT, response_format=response_format, stream=True  # type: ignore[arg-type]
        )
        pieces = [chunk.choices[0].delta.content or "" async for chunk in chunks if chunk.choices]
        content = "".join(pieces)
        assert len([piece for piece in pieces if piece]) == 7
    else:
        completion = await openai_client.chat.completions.create(model="gpt-4o-mini", messages=USER_INCIDENT, response_format=response_format)  # type: ignore[arg-type]
        content = completion.choices[0].message.content or ""

    assert json.loads(content) == document
    assert openai_fake.generation_requests[-1].body["response_format"] == response_format


# --- Anthropic: tool use -----------------------------------------------------------------


async def test_anthropic_sdk_parses_recorded_tool_use(anthropic_client: anthropic.AsyncAnthropic, anthropic_fake: FakeAnthropic) -> None:
    anthropic_fake.reply_tool_use()

    message = await anthropic_client.messages.create(
        model=ANTHROPIC_SDK_MODEL, max_tokens=1024, messages=USER_INCIDENT, tools=ANTHROPIC_TOOLS, tool_choice={"type": "auto"}  # type: ignore[arg-type]
    )

    assert message.stop_reason == "tool_use"
    assert _anthropic_blocks(message) == [("text", RECORDED_ANTHROPIC_TEXT)] + [("tool_use", *call) for call in RECORDED_ANTHROPIC_CALLS]
    assert all(isinstance(block, anthropic.types.ToolUseBlock) for block in message.content[1:])
    assert (message.usage.input_tokens, message.usage.output_tokens) == (612, 118)
    sent = anthropic_fake.generation_requests[-1].body
    assert [tool["name"] for tool in sent["tools"]] == ["query_metrics", "search_logs"]
    assert sent["tools"][1]["input_schema"]["required"] == ["service", "query", "limit"] and sent["tool_choice"] == {"type": "auto"}


async def test_anthropic_stream_helper_rebuilds_the_recorded_input_json_fragments(
    anthropic_client: anthropic.AsyncAnthropic, anthropic_fake: FakeAnthropic
) -> None:
    anthropic_fake.stream_tool_use()

    async with anthropic_client.messages.stream(model=ANTHROPIC_SDK_MODEL, max_tokens=1024, messages=USER_INCIDENT, tools=ANTHROPIC_TOOLS) as stream:  # type: ignore[arg-type]
        events = [event async for event in stream]
        final = await stream.get_final_message()

    recorded = anthropic.types.Message.model_validate(fixture_json("anthropic", "message_tool_use.json"))
    assert _anthropic_blocks(final) == _anthropic_blocks(recorded), "the fragments join into the non-streamed fixture's blocks"
    assert final.stop_reason == "tool_use" and final.stop_sequence is None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (612, 118)
    partials = [(e.partial_json, e.snapshot) for e in events if e.type == "input_json"]
    assert len(partials) == 2 * 5 and partials[0][0] == "", "each block opens with an empty fragment, then 4 pieces"
    assert partials[4][1] == METRICS_INPUT and partials[-1][1] == LOGS_INPUT
    stops = [e.content_block for e in events if e.type == "content_block_stop"]
    assert [block.type for block in stops] == ["text", "tool_use", "tool_use"]


@pytest.mark.parametrize("count", [1, 3], ids=["one-call", "three-calls"])
async def test_anthropic_sdk_rebuilds_scripted_tool_use_in_both_shapes(
    anthropic_client: anthropic.AsyncAnthropic, anthropic_fake: FakeAnthropic, count: int
) -> None:
    calls = [(f"toolu_0{i}scripted", name, args) for i, (_, name, args) in enumerate(SCRIPTED_CALLS[:count])]
    counts = TokenCounts(prompt=900, completion=70, cached=600, cache_write=100)
    expected = [("tool_use", *call) for call in calls]
    anthropic_fake.stream_tool_use(calls, counts, fragments=6, split_utf8=True)
    anthropic_fake.reply_tool_use(calls, counts)  # a plain request: a message
    anthropic_fake.reply_tool_use(calls, counts, fragments=2)  # a stream request: events

    async with anthropic_client.messages.stream(model=ANTHROPIC_SDK_MODEL, max_tokens=256, messages=USER_INCIDENT) as stream:  # type: ignore[arg-type]
        events = [event async for event in stream]
        streamed = await stream.get_final_message()
    plain = await anthropic_client.messages.create(model=ANTHROPIC_SDK_MODEL, max_tokens=256, messages=USER_INCIDENT)  # type: ignore[arg-type]
    async with anthropic_client.messages.stream(model=ANTHROPIC_SDK_MODEL, max_tokens=256, messages=USER_INCIDENT) as again:  # type: ignore[arg-type]
        adapted = await again.get_final_message()

    for message in (streamed, plain, adapted):
        assert _anthropic_blocks(message) == expected and message.stop_reason == "tool_use"
        usage = message.usage
        assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens, usage.output_tokens) == (200, 600, 100, 70)
    assert len([e for e in events if e.type == "input_json"]) == count * 7, "an empty fragment and 6 pieces per block"


async def test_anthropic_sdk_raises_on_a_tool_use_stream_cut_mid_input(
    anthropic_client: anthropic.AsyncAnthropic, anthropic_fake: FakeAnthropic
) -> None:
    anthropic_fake.stream_tool_use(ending=Ending.CUT)

    stream = await anthropic_client.messages.create(model=ANTHROPIC_SDK_MODEL, max_tokens=64, messages=USER_INCIDENT, stream=True)  # type: ignore[arg-type]
    received: list[str] = []
    with pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)):
        async for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                received.append(event.delta.partial_json)

    assert json.loads("".join(received[5:])) == LOGS_INPUT, "every fragment arrived, then neither block stop nor message_stop"


async def test_anthropic_fake_records_tool_results_and_refuses_what_the_api_refuses(
    anthropic_client: anthropic.AsyncAnthropic, anthropic_fake: FakeAnthropic
) -> None:
    assistant = {"role": "assistant", "content": fixture_json("anthropic", "message_tool_use.json")["content"]}
    results = [
        {"type": "tool_result", "tool_use_id": "toolu_01Hq7XwRk3NmVb9TcLp2YsDf", "content": '{"p95_ms": 1830}'},
        {"type": "tool_result", "tool_use_id": "toolu_01Mz4KeWn8QrGu2JxBv6HtLa", "content": "37 matches", "is_error": False},
    ]
    history = [*USER_INCIDENT, assistant, {"role": "user", "content": results}]
    anthropic_fake.reply_text("Roll back release 2025.10.27-1.", TokenCounts(prompt=700, completion=9))

    message = await anthropic_client.messages.create(model=ANTHROPIC_SDK_MODEL, max_tokens=64, messages=history, tools=ANTHROPIC_TOOLS)  # type: ignore[arg-type]
    assert _anthropic_blocks(message) == [("text", "Roll back release 2025.10.27-1.")]
    assert anthropic_fake.generation_requests[-1].body["messages"] == history

    tool_use_with_list = {"role": "assistant", "content": [{**assistant["content"][1], "input": []}]}
    refusals = [
        (
            [*USER_INCIDENT, assistant, {"role": "user", "content": results[:1]}],
            "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_01Mz4KeWn8QrGu2JxBv6HtLa. "
            "Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
        ),
        (
            [{"role": "user", "content": results[:1]}],
            "messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_01Hq7XwRk3NmVb9TcLp2YsDf. "
            "Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",
        ),
        ([*USER_INCIDENT, tool_use_with_list, {"role": "user", "content": results[:1]}], "messages.1.content.0.tool_use.input: Input should be a valid dictionary"),
    ]
    for messages, wording in refusals:
        with pytest.raises(anthropic.BadRequestError) as raised:
            await anthropic_client.messages.create(model=ANTHROPIC_SDK_MODEL, max_tokens=64, messages=messages)  # type: ignore[arg-type]
        body = raised.value.body
        assert isinstance(body, dict) and body["error"] == {"type": "invalid_request_error", "message": wording}


# --- Anthropic: structured output ----------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_anthropic_sdk_parses_a_structured_output_answer(
    anthropic_client: anthropic.AsyncAnthropic, anthropic_fake: FakeAnthropic, stream: bool
) -> None:
    document = fixture_json("openai", "chat_completion_json_schema.json")["choices"][0]["message"]["content"]
    anthropic_fake.reply_json(document, TokenCounts(prompt=400, completion=41))

    if stream:
        async with anthropic_client.messages.stream(
            model=ANTHROPIC_SDK_MODEL, max_tokens=512, messages=USER_INCIDENT, output_format=IncidentTriage  # type: ignore[arg-type]
        ) as events:
            deltas = [e for e in [event async for event in events] if e.type == "text"]
            message = await events.get_final_message()
        assert len(deltas) == 8
    else:
        message = await anthropic_client.messages.parse(
            model=ANTHROPIC_SDK_MODEL, max_tokens=512, messages=USER_INCIDENT, output_format=IncidentTriage  # type: ignore[arg-type]
        )

    assert message.parsed_output == EXPECTED_TRIAGE and message.stop_reason == "end_turn"
    output_config = anthropic_fake.generation_requests[-1].body["output_config"]
    assert output_config["format"]["type"] == "json_schema"
    assert output_config["format"]["schema"]["required"] == ["service", "severity", "summary", "actions"]
