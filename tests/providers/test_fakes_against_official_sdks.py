"""The fakes are faithful: the official ``openai`` and ``anthropic`` SDKs (test-only
dependencies) parse their replies, streams and errors into the same objects and exception
classes they produce for the real APIs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import httpx2
import openai
import pytest

from ..fakes import FakeAnthropic, FakeOpenAI, TokenCounts
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
        (lambda fake: fake.rate_limit(retry_after_header="retry-after-ms", retry_after_value="1500"), openai.RateLimitError, 429),
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
        (lambda fake: fake.rate_limit(retry_after_header="retry-after", retry_after_value="7"), anthropic.RateLimitError, 429),
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
