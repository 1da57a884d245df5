"""One contract, every provider: OpenAI, Anthropic, Gemini and a local OpenAI-compatible
server, each against its wire-faithful fake on loopback (see ``conftest.py``). No test names
a provider: where the APIs differ, the :class:`ProviderUnderTest` carries what to expect."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import Answer, FinishReason, ModelCall, StreamDelta

from ..fakes import TokenCounts
from .conftest import Asked, ProviderUnderTest

# A stream that fails must fail quickly: never a hang.
NO_HANG_S = 5.0


async def collect(under_test: ProviderUnderTest, call: ModelCall) -> list[StreamDelta]:
    async with asyncio.timeout(NO_HANG_S):
        return [delta async for delta in under_test.provider.stream(call)]


async def collect_until_error(under_test: ProviderUnderTest, call: ModelCall) -> tuple[list[StreamDelta], LLMError]:
    received: list[StreamDelta] = []
    with pytest.raises(LLMError) as raised:
        async with asyncio.timeout(NO_HANG_S):
            async for delta in under_test.provider.stream(call):
                received.append(delta)
    return received, raised.value


def text_of(deltas: list[StreamDelta]) -> str:
    return "".join(delta.text for delta in deltas)


def answer_of(deltas: list[StreamDelta]) -> Answer:
    """The answer a complete stream ends with: on its last delta, and only there."""
    assert deltas and deltas[-1].answer is not None, "a complete stream ends with the answer"
    assert all(d.answer is None for d in deltas[:-1]), "the answer comes once, at the end"
    assert deltas[-1].answer.text == text_of(deltas), "the answer holds the whole text"
    return deltas[-1].answer


# --- success paths ------------------------------------------------------------------------


async def test_generate_returns_text_usage_and_finish(under_test: ProviderUnderTest) -> None:
    counts = TokenCounts(prompt=42, completion=7)
    under_test.fake.reply_text("Paris is the capital of France.", counts)

    completion = await under_test.provider.generate(under_test.call("What is the capital of France?"))

    assert completion.text == "Paris is the capital of France."
    assert completion.usage == under_test.expected_usage(counts)
    assert completion.finish_reason is FinishReason.STOP
    assert completion.model.startswith(under_test.model)


async def test_recorded_reply_replayed_verbatim_parses(under_test: ProviderUnderTest) -> None:
    completion = await under_test.provider.generate(under_test.call())

    assert completion.text == "Hello! How can I help you today?"
    assert completion.finish_reason is FinishReason.STOP
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


async def test_recorded_stream_replayed_verbatim_parses(under_test: ProviderUnderTest) -> None:
    deltas = await collect(under_test, under_test.call())

    assert text_of(deltas) == "Hello! How can I help you today?"
    answer = answer_of(deltas)
    assert answer.finish_reason is FinishReason.STOP
    assert answer.usage.completion_tokens > 0


async def test_stream_yields_text_incrementally_then_usage_and_finish(under_test: ProviderUnderTest) -> None:
    counts = TokenCounts(prompt=30, completion=5)
    under_test.fake.stream_text(["The", " quick", " brown", " fox"], counts)

    deltas = await collect(under_test, under_test.call())

    assert [d.text for d in deltas if d.text] == ["The", " quick", " brown", " fox"]
    final = answer_of(deltas)  # usage and finish come once, at the end
    assert final.usage == under_test.expected_usage(counts)
    assert final.finish_reason is FinishReason.STOP


async def test_cached_prompt_tokens_reported_plain_and_streamed(under_test: ProviderUnderTest) -> None:
    counts = TokenCounts(prompt=2_048, completion=64, cached=1_536)
    under_test.fake.reply_text("cached", counts)
    under_test.fake.stream_text(["cached"], counts)

    completion = await under_test.provider.generate(under_test.call())
    deltas = await collect(under_test, under_test.call())

    assert completion.usage.cached_prompt_tokens == 1_536
    assert answer_of(deltas).usage == completion.usage == under_test.expected_usage(counts)


async def test_multibyte_utf8_split_across_reads(under_test: ProviderUnderTest) -> None:
    pieces = ["héllo wörld ", "🚀 日本語 ", "Ωmega — ✓"]
    under_test.fake.stream_text(pieces, TokenCounts(prompt=5, completion=9), split_utf8=True)

    deltas = await collect(under_test, under_test.call())

    assert text_of(deltas) == "".join(pieces)
    assert "\ufffd" not in text_of(deltas)


async def test_cost_from_reported_usage(under_test: ProviderUnderTest) -> None:
    counts = TokenCounts(prompt=1_000_000, completion=100_000, cached=400_000)
    under_test.fake.reply_text("priced", counts)

    completion = await under_test.provider.generate(under_test.call())
    cost = under_test.price.cost(completion.usage)

    input_rate, cached_rate, output_rate = under_test.list_price
    assert cost == pytest.approx(0.6 * input_rate + 0.4 * cached_rate + 0.1 * output_rate)


# --- the request on the wire --------------------------------------------------------------


async def test_one_pooled_connection_serves_consecutive_calls(under_test: ProviderUnderTest) -> None:
    await under_test.provider.generate(under_test.call())
    await collect(under_test, under_test.call())
    await under_test.provider.generate(under_test.call())

    peers = {request.peer for request in under_test.fake.generation_requests}
    assert len(peers) == 1, "one ClientSession per provider, its connection kept alive"


async def test_request_carries_model_messages_and_sampling(under_test: ProviderUnderTest) -> None:
    asked = Asked(prompt="Name a colour.", system="Answer in one word.", max_tokens=16, temperature=0.2, stop=("\n",))

    await under_test.provider.generate(under_test.call_for(asked))

    assert under_test.expected_request(asked).mismatches(under_test.fake.generation_requests[-1]) == {}


async def test_trace_context_travels_with_the_request(under_test: ProviderUnderTest) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    call = replace(under_test.call(), trace_headers={"traceparent": traceparent})

    await under_test.provider.generate(call)
    await collect(under_test, call)

    assert [r.headers.get("traceparent") for r in under_test.fake.generation_requests] == [traceparent, traceparent]


async def test_stream_request_asks_for_streaming_and_usage(under_test: ProviderUnderTest) -> None:
    await collect(under_test, under_test.call())

    assert under_test.stream_request.mismatches(under_test.fake.generation_requests[-1]) == {}


# --- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["generate", "stream"])
async def test_rejected_key_is_authentication_failed_upstream(under_test: ProviderUnderTest, streamed: bool) -> None:
    under_test.fake.fail_auth()

    with pytest.raises(LLMError) as raised:
        if streamed:
            await collect(under_test, under_test.call())
        else:
            await under_test.provider.generate(under_test.call())

    error = raised.value
    assert error.kind is ErrorKind.AUTHENTICATION_FAILED
    assert error.upstream_auth, "our key was rejected: FAILED_PRECONDITION, not UNAUTHENTICATED"
    assert error.model == under_test.model
    assert not error.retryable


async def test_rate_limit_carries_retry_after(under_test: ProviderUnderTest) -> None:
    # Every way this API says how long to wait (a header, or Google's RetryInfo in the body),
    # each with a whole and, where the form allows one, a fractional delay.
    waits = [(hint, seconds) for hint in under_test.retry_hints for seconds in ((1.5, 7.0) if hint.fractional else (7.0,))]
    assert waits, "every API says how long to wait"

    for hint, seconds in waits:
        under_test.fake.rate_limit(seconds, hint)
        with pytest.raises(LLMError) as raised:
            await under_test.provider.generate(under_test.call())

        assert raised.value.kind is ErrorKind.RATE_LIMIT_EXCEEDED, hint
        assert raised.value.retry_after_s == pytest.approx(seconds), hint
        assert raised.value.retryable, hint


@pytest.mark.parametrize("status", [500, 503, 529])
async def test_server_errors_are_model_unavailable(under_test: ProviderUnderTest, status: int) -> None:
    under_test.fake.server_error(status)
    under_test.fake.server_error(status)

    with pytest.raises(LLMError) as plain:
        await under_test.provider.generate(under_test.call())
    with pytest.raises(LLMError) as streamed:
        await collect(under_test, under_test.call())

    for error in (plain.value, streamed.value):
        assert error.kind is ErrorKind.MODEL_UNAVAILABLE
        assert error.retryable
        assert error.metadata["upstream_status"] == str(status)


async def test_context_too_large_reports_token_counts(under_test: ProviderUnderTest) -> None:
    window = under_test.context_window
    under_test.fake.context_too_large(input_tokens=window + 8_310, limit=window)

    with pytest.raises(LLMError) as raised:
        await under_test.provider.generate(under_test.call("x " * 10))

    error = raised.value
    assert error.kind is ErrorKind.CONTEXT_TOO_LARGE
    assert {"prompt_tokens": str(window + 8_310), "context_window": str(window)}.items() <= error.metadata.items()
    assert not error.retryable


async def test_cut_stream_raises_never_ends_silently(under_test: ProviderUnderTest) -> None:
    under_test.fake.cut_stream(["Once", " upon"])

    received, error = await collect_until_error(under_test, under_test.call())

    assert text_of(received) == "Once upon"
    assert error.kind is under_test.transport_error_kind
    assert error.model == under_test.model


async def test_error_event_mid_stream_raises(under_test: ProviderUnderTest) -> None:
    under_test.fake.error_mid_stream(["Once", " upon"])

    received, error = await collect_until_error(under_test, under_test.call())

    assert text_of(received) == "Once upon"
    assert error.kind is ErrorKind.MODEL_UNAVAILABLE
    assert "mid-stream" in error.message
    assert error.retryable


async def test_stalled_stream_times_out_within_the_call_timeout(under_test: ProviderUnderTest) -> None:
    under_test.fake.stall_stream(["Once"])

    received, error = await collect_until_error(under_test, under_test.call(timeout_s=0.5))

    assert text_of(received) == "Once"
    assert error.kind is ErrorKind.TIMEOUT


@pytest.mark.parametrize("streamed", [False, True], ids=["generate", "stream"])
async def test_unreachable_server(under_test: ProviderUnderTest, unused_loopback_url: str, streamed: bool) -> None:
    unreachable = under_test.build(unused_loopback_url)
    assert unreachable.kind is under_test.kind
    await unreachable.start()
    try:
        with pytest.raises(LLMError) as raised:
            if streamed:
                async with asyncio.timeout(NO_HANG_S):
                    [delta async for delta in unreachable.stream(under_test.call())]
            else:
                await unreachable.generate(under_test.call())
        assert raised.value.kind is under_test.transport_error_kind
        assert raised.value.retryable, "another deployment or provider may answer"
        health = await unreachable.health()
        assert health.healthy is False
        assert unused_loopback_url in health.detail, "the report names what it could not reach"
    finally:
        await unreachable.close()


async def test_health_probe(under_test: ProviderUnderTest) -> None:
    report = await under_test.provider.health()

    assert report.healthy, report.detail
    assert [request.path for request in under_test.fake.requests] == [under_test.health_path]
    assert under_test.fake.generation_requests == [], "the probe spends no tokens"

