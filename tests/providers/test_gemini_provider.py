"""The Gemini provider against the wire-faithful Gemini fake on loopback, in what is Gemini's
own: thinking tokens, function calls and thought signatures, structured output, the safety
filters, each way it refuses credentials, its finish-reason rules, the health probe's query.
What every provider must do (text, streams, usage, cost, rate limits, server errors, context
overflow, cut, failing and stalled streams, an unreachable server, the key never leaked) is
the shared contract suite's (test_provider_contract.py, test_provider_secrets.py,
test_key_echo.py), which runs Gemini too."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from llm_manager_server.catalog import facts_for
from llm_manager_server.config import Secret
from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import (
    Answer,
    FinishReason,
    Message,
    ModelCall,
    ProviderKind,
    ResponseFormat,
    Role,
    SamplingOptions,
    StreamDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    ToolResult,
    Usage,
)
from llm_manager_server.providers import gemini_wire
from llm_manager_server.providers.gemini import GeminiProvider

from ..fakes import Ending, FakeGemini, TokenCounts
from ..fakes.gemini_fake import body_reply, fixture_bytes, raw_reply, recorded_events, sse_reply
from .conftest import GEMINI_KEY, GEMINI_MODEL

MODEL = GEMINI_MODEL
NO_HANG_S = 5.0

QUERY_METRICS = {
    "type": "object",
    "properties": {"service": {"type": "string"}, "metric": {"type": "string"}, "window": {"type": "string"}},
    "required": ["service", "metric", "window"],
}
SEARCH_LOGS = {
    "type": "object",
    "properties": {"service": {"type": "string"}, "query": {"type": "string"}, "limit": {"type": "integer"}},
    "required": ["service", "query"],
}
INCIDENT = {
    "type": "object",
    "properties": {
        "service": {"type": "string"},
        "severity": {"enum": ["low", "medium", "high"]},
        "summary": {"type": "string"},
        "actions": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["service", "severity", "summary", "actions"],
}
TOOLS = (Tool("query_metrics", "Read a service metric over a window.", QUERY_METRICS), Tool("search_logs", "Search a service's logs.", SEARCH_LOGS))
METRICS_ARGS = {"service": "checkout", "metric": "latency_p95_ms", "window": "1h"}
LOGS_ARGS = {"service": "checkout", "query": 'level:error "payment declined"', "limit": 20}
FIXTURE_CALLS = (ToolCall("call_0", "query_metrics", METRICS_ARGS), ToolCall("call_1", "search_logs", LOGS_ARGS))


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    server = await FakeGemini(api_key=GEMINI_KEY).start()
    yield server
    await server.stop()


@pytest.fixture
async def provider(fake: FakeGemini) -> AsyncIterator[GeminiProvider]:
    subject = GeminiProvider(api_key=Secret(GEMINI_KEY), base_url=fake.url)
    await subject.start()
    yield subject
    await subject.close()


def call(prompt: str = "Say hello.", *, system: str | None = None, model: str = MODEL, timeout_s: float = 5.0, **fields: Any) -> ModelCall:
    tools = fields.pop("tools", ())
    tool_choice = fields.pop("tool_choice", None)
    messages = ((Message.of(Role.SYSTEM, system),) if system else ()) + (Message.of(Role.USER, prompt),)
    return ModelCall(model, messages, SamplingOptions(**fields), timeout_s=timeout_s, tools=tools, tool_choice=tool_choice)


async def collect(provider: GeminiProvider, model_call: ModelCall) -> list[StreamDelta]:
    async with asyncio.timeout(NO_HANG_S):
        return [delta async for delta in provider.stream(model_call)]


async def collect_until_error(provider: GeminiProvider, model_call: ModelCall) -> tuple[list[StreamDelta], LLMError]:
    received: list[StreamDelta] = []
    with pytest.raises(LLMError) as raised:
        async with asyncio.timeout(NO_HANG_S):
            async for delta in provider.stream(model_call):
                received.append(delta)
    return received, raised.value


def text_of(deltas: list[StreamDelta]) -> str:
    return "".join(delta.text for delta in deltas)


def answer_of(deltas: list[StreamDelta]) -> Answer:
    """The answer a complete stream ends with: on its last delta, and only there."""
    assert deltas and deltas[-1].answer is not None, "a complete stream ends with the answer"
    assert all(d.answer is None for d in deltas[:-1]), "the answer comes once, at the end"
    return deltas[-1].answer


def expected_usage(counts: TokenCounts) -> Usage:
    return Usage(counts.prompt, counts.completion, counts.prompt + counts.completion, cached_prompt_tokens=counts.cached)


# --- text -----------------------------------------------------------------------------------


def test_kind_and_repr(provider: GeminiProvider) -> None:
    assert provider.kind is ProviderKind.GEMINI
    assert GEMINI_KEY not in repr(provider) and GEMINI_KEY not in str(provider) and "GeminiProvider(" in repr(provider)


async def test_recorded_reply_and_stream_replayed_verbatim(provider: GeminiProvider) -> None:
    answer = await provider.generate(call())
    deltas = await collect(provider, call())

    assert answer.text == "Hello! How can I help you today?" and answer.finish_reason is FinishReason.STOP
    assert answer.usage == Usage(prompt_tokens=3, completion_tokens=33, total_tokens=36), "thoughts count as output"
    assert [d.text for d in deltas[:-1]] == ["Hello!", " How can I help", " you today?"]
    assert answer_of(deltas) == answer


async def test_generate_text_usage_with_thoughts_and_cache(provider: GeminiProvider, fake: FakeGemini) -> None:
    counts = TokenCounts(prompt=4096, completion=40, cached=3072)
    fake.reply_text("Paris is the capital of France.", counts, thoughts=35)

    answer = await provider.generate(call("What is the capital of France?"))

    assert answer.text == "Paris is the capital of France."
    assert answer.usage == expected_usage(counts)
    assert answer.finish_reason is FinishReason.STOP and answer.model.startswith("gemini-2.5")


@pytest.mark.parametrize("finish_alone", [False, True], ids=["finish-on-last-text", "partless-finish-chunk"])
async def test_stream_text_incrementally_with_cumulative_usage(provider: GeminiProvider, fake: FakeGemini, finish_alone: bool) -> None:
    counts = TokenCounts(prompt=30, completion=25, cached=10)
    fake.stream_text(["The", " quick", " brown", " fox"], counts, thoughts=12, finish_alone=finish_alone)

    deltas = await collect(provider, call())

    assert [d.text for d in deltas if d.text] == ["The", " quick", " brown", " fox"]
    answer = answer_of(deltas)
    assert answer.text == text_of(deltas) == "The quick brown fox"
    assert answer.usage == expected_usage(counts), "the last chunk's cumulative usage, not a sum"
    assert answer.finish_reason is FinishReason.STOP


async def test_max_tokens_spent_thinking_is_an_empty_length_answer(provider: GeminiProvider, fake: FakeGemini) -> None:
    fake.reply_text("", TokenCounts(prompt=12, completion=64), thoughts=64, finish_reason="MAX_TOKENS")

    answer = await provider.generate(call(max_tokens=64))

    assert (answer.text, answer.finish_reason, answer.usage.completion_tokens) == ("", FinishReason.LENGTH, 64)


async def test_cost_from_reported_usage(provider: GeminiProvider, fake: FakeGemini) -> None:
    fake.reply_text("priced", TokenCounts(prompt=1_000_000, completion=100_000, cached=400_000), thoughts=60_000)

    answer = await provider.generate(call())

    # gemini-2.5-flash: $0.30 input, $0.075 cached input, $2.50 output (thinking included) per million.
    assert facts_for(MODEL, local_context_window=4096).price.cost(answer.usage) == pytest.approx(0.6 * 0.30 + 0.4 * 0.075 + 0.1 * 2.50)


# --- the request on the wire ----------------------------------------------------------------


async def test_request_carries_key_header_path_system_and_generation_config(provider: GeminiProvider, fake: FakeGemini) -> None:
    await provider.generate(call("Name a colour.", system="Answer in one word.", max_tokens=16, temperature=0.2, top_p=0.5, stop=("\n",), seed=7))

    sent = fake.generation_requests[-1]
    assert (sent.path, sent.api_version, sent.model, sent.method_name) == (f"/v1beta/models/{MODEL}:generateContent", "v1beta", MODEL, "generateContent")
    assert sent.headers["x-goog-api-key"] == GEMINI_KEY
    assert "key" not in sent.query and "authorization" not in sent.headers, "the key only in its header, never in the URL"
    assert sent.body == {
        "contents": [{"role": "user", "parts": [{"text": "Name a colour."}]}],
        "systemInstruction": {"parts": [{"text": "Answer in one word."}]},
        "generationConfig": {"temperature": 0.2, "topP": 0.5, "maxOutputTokens": 16, "stopSequences": ["\n"], "seed": 7},
    }


async def test_default_max_tokens_and_a_versioned_base_url(fake: FakeGemini) -> None:
    subject = GeminiProvider(api_key=Secret(GEMINI_KEY), base_url=f"{fake.url}/v1beta/", default_max_tokens=512)
    await subject.start()
    try:
        await subject.generate(call())
        await subject.generate(call(max_tokens=8))
    finally:
        await subject.close()

    assert [r.body["generationConfig"]["maxOutputTokens"] for r in fake.generation_requests] == [512, 8]
    assert fake.generation_requests[0].path == f"/v1beta/models/{MODEL}:generateContent"


# --- tools ----------------------------------------------------------------------------------


async def test_recorded_parallel_function_calls_plain(provider: GeminiProvider, fake: FakeGemini) -> None:
    fake.reply_function_calls()

    answer = await provider.generate(call("Why is checkout slow?", tools=TOOLS, tool_choice=ToolChoice(ToolChoiceMode.REQUIRED)))

    assert answer.tool_calls == FIXTURE_CALLS
    assert answer.finish_reason is FinishReason.TOOL_CALLS and answer.text == ""
    assert answer.usage == Usage(prompt_tokens=2412, completion_tokens=119, total_tokens=2531, cached_prompt_tokens=2006)
    sent = fake.generation_requests[-1].body
    declarations = sent["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in declarations] == ["query_metrics", "search_logs"] and declarations[0]["parametersJsonSchema"] == QUERY_METRICS
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


@pytest.mark.parametrize("one_chunk", [False, True], ids=["one-call-per-chunk", "both-in-one-chunk"])
async def test_function_calls_stream_whole_each_once(provider: GeminiProvider, fake: FakeGemini, one_chunk: bool) -> None:
    fake.stream_function_calls([("query_metrics", METRICS_ARGS), ("search_logs", LOGS_ARGS)], text="Checking both.", one_chunk=one_chunk)

    deltas = await collect(provider, call("Why is checkout slow?", tools=TOOLS))

    with_calls = [d for d in deltas if d.tool_calls]
    assert [c for d in with_calls for c in d.tool_calls] == list(FIXTURE_CALLS)
    assert len(with_calls) == (1 if one_chunk else 2)
    first_call = deltas.index(with_calls[0])
    assert text_of(deltas[:first_call]) == "Checking both.", "text before the calls streams as it arrives"
    answer = answer_of(deltas)
    assert answer.tool_calls == FIXTURE_CALLS and answer.text == "Checking both." and answer.finish_reason is FinishReason.TOOL_CALLS


async def test_recorded_function_call_stream_matches_the_plain_answer(provider: GeminiProvider, fake: FakeGemini) -> None:
    fake.reply_function_calls()
    plain = await provider.generate(call(tools=TOOLS))
    fake.stream_function_calls()
    streamed = answer_of(await collect(provider, call(tools=TOOLS)))

    assert streamed.tool_calls == plain.tool_calls == FIXTURE_CALLS and streamed.usage == plain.usage


async def test_forced_tool_goes_upstream_as_any_with_allowed_names(provider: GeminiProvider, fake: FakeGemini) -> None:
    fake.reply_function_calls([("query_metrics", METRICS_ARGS)], signature=None)

    answer = await provider.generate(call(tools=TOOLS, tool_choice=ToolChoice(ToolChoiceMode.TOOL, "query_metrics")))

    assert answer.tool_calls == (FIXTURE_CALLS[0],)
    assert fake.generation_requests[-1].body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["query_metrics"]}}


def round_trip(model: str) -> ModelCall:
    messages = (
        Message.of(Role.USER, "Why is checkout slow?"),
        Message(Role.ASSISTANT, (TextPart("Checking."), *FIXTURE_CALLS)),
        Message(Role.TOOL, (ToolResult("call_0", '{"latency_p95_ms": 950}'),)),
        Message(Role.TOOL, (ToolResult("call_1", "3 errors: payment declined"),)),
    )
    return ModelCall(model, messages, SamplingOptions(), timeout_s=5.0, tools=TOOLS)


@pytest.mark.parametrize("model", [MODEL, "gemini-3-pro-preview"])
async def test_tool_round_trip_history_is_accepted(provider: GeminiProvider, fake: FakeGemini, model: str) -> None:
    # The fake refuses what the API refuses: responses not answering the call turn before,
    # a count mismatch, and (gemini-3*) a call of the current turn without a thought signature.
    fake.reply_text("p95 is 950 ms and payments are declined.", TokenCounts(prompt=80, completion=12))

    answer = await provider.generate(round_trip(model))
    deltas = await collect(provider, round_trip(model))

    assert answer.text and not answer.tool_calls
    assert answer_of(deltas).text == "Hello! How can I help you today?"
    contents = fake.generation_requests[-1].body["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "query_metrics", "response": {"result": {"latency_p95_ms": 950}}}},
        {"functionResponse": {"name": "search_logs", "response": {"result": "3 errors: payment declined"}}},
    ]
    signature = contents[1]["parts"][1].get("thoughtSignature")
    assert signature == (gemini_wire.SKIP_SIGNATURE if model.startswith("gemini-3") else None)


async def test_a_stream_cut_after_a_function_call_delivered_it_then_fails(provider: GeminiProvider, fake: FakeGemini) -> None:
    fake.stream_function_calls(ending=Ending.CUT)  # the recorded stream without its last chunk

    received, error = await collect_until_error(provider, call(tools=TOOLS))

    assert [c for d in received for c in d.tool_calls] == [FIXTURE_CALLS[0]]
    assert error.kind is ErrorKind.NETWORK_ERROR and error.retryable


# --- structured output ----------------------------------------------------------------------


def json_call(**fields: Any) -> ModelCall:
    return call("Summarise the incident.", response_format=ResponseFormat.JSON_SCHEMA, response_schema=INCIDENT, **fields)


async def test_json_schema_plain(provider: GeminiProvider, fake: FakeGemini) -> None:
    fake.reply_json()

    answer = await provider.generate(json_call())

    assert json.loads(answer.text)["severity"] == "high" and answer.finish_reason is FinishReason.STOP
    assert fake.generation_requests[-1].body["generationConfig"] == {"responseMimeType": "application/json", "responseJsonSchema": INCIDENT}


async def test_json_schema_stream(provider: GeminiProvider, fake: FakeGemini) -> None:
    fake.stream_json()

    deltas = await collect(provider, json_call())

    assert len([d for d in deltas if d.text]) == 5
    assert json.loads(text_of(deltas)) == json.loads(answer_of(deltas).text)
    assert json.loads(answer_of(deltas).text)["service"] == "checkout"


async def test_json_object_plain(provider: GeminiProvider, fake: FakeGemini) -> None:
    fake.reply_json('{"colours": ["red", "blue"]}')

    answer = await provider.generate(call("Two colours as JSON.", response_format=ResponseFormat.JSON_OBJECT))

    assert json.loads(answer.text) == {"colours": ["red", "blue"]}
    assert fake.generation_requests[-1].body["generationConfig"] == {"responseMimeType": "application/json"}


@pytest.mark.parametrize("streamed", [False, True], ids=["generate", "stream"])
async def test_json_schema_with_tools_through_the_response_function(provider: GeminiProvider, fake: FakeGemini, streamed: bool) -> None:
    incident = {"service": "checkout", "severity": "medium", "summary": "slow", "actions": ["roll back"]}
    fake.reply_function_calls([("structured_response", incident)], signature=None)

    model_call = json_call(tools=TOOLS)
    if streamed:
        deltas = await collect(provider, model_call)
        answer = answer_of(deltas)
        assert json.loads(text_of(deltas)) == incident and all(not d.tool_calls for d in deltas)
    else:
        answer = await provider.generate(model_call)

    assert json.loads(answer.text) == incident and answer.tool_calls == () and answer.finish_reason is FinishReason.STOP
    sent = fake.generation_requests[-1].body
    assert "generationConfig" not in sent, "no JSON mime type with function declarations"
    assert sent["tools"][0]["functionDeclarations"][-1]["name"] == "structured_response"
    assert sent["tools"][0]["functionDeclarations"][-1]["parametersJsonSchema"] == INCIDENT
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


# --- the filters ----------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["generate", "stream"])
async def test_blocked_prompt_and_safety_stop_are_content_filter_answers(provider: GeminiProvider, fake: FakeGemini, streamed: bool) -> None:
    fake.reply_blocked()
    fake.reply_safety_stop()

    answers = []
    for _ in range(2):
        answers.append(answer_of(await collect(provider, call())) if streamed else await provider.generate(call()))

    assert [(a.text, a.finish_reason) for a in answers] == [("", FinishReason.CONTENT_FILTER)] * 2
    assert answers[0].usage.prompt_tokens == 9 and answers[1].usage.completion_tokens == 402


# --- failures -------------------------------------------------------------------------------


async def run(provider: GeminiProvider, model_call: ModelCall, streamed: bool) -> LLMError:
    with pytest.raises(LLMError) as raised:
        if streamed:
            await collect(provider, model_call)
        else:
            await provider.generate(model_call)
    return raised.value


@pytest.mark.parametrize("streamed", [False, True], ids=["generate", "stream"])
@pytest.mark.parametrize("status", [400, 401, 403], ids=["400-wrong-key", "401-bearer", "403-no-key"])
async def test_rejected_credentials_are_authentication_failed_upstream(provider: GeminiProvider, fake: FakeGemini, status: int, streamed: bool) -> None:
    fake.fail_auth(status)

    error = await run(provider, call(), streamed)

    assert error.kind is ErrorKind.AUTHENTICATION_FAILED
    assert error.upstream_auth, "our key was rejected: FAILED_PRECONDITION, not UNAUTHENTICATED"
    assert error.model == MODEL and not error.retryable
    assert error.metadata["upstream_status"] == str(status)


async def test_a_wrong_key_is_refused_by_the_fake_as_by_the_api(fake: FakeGemini) -> None:
    subject = GeminiProvider(api_key=Secret("AIzaSyWRONGq7Vx2mR9sK4pL8wN3bZ6yH1cDxx"), base_url=fake.url)
    await subject.start()
    try:
        error = await run(subject, call(), False)
        health = await subject.health()
    finally:
        await subject.close()

    assert error.kind is ErrorKind.AUTHENTICATION_FAILED and error.metadata["upstream_reason"] == "API_KEY_INVALID"
    assert not health.healthy and "/v1beta/models" in health.detail and "HTTP 400" in health.detail and "API_KEY_INVALID" in health.detail


@pytest.mark.parametrize("streamed", [False, True], ids=["generate", "stream"])
async def test_unknown_model_is_a_configuration_error(provider: GeminiProvider, fake: FakeGemini, streamed: bool) -> None:
    fake.model_not_found()

    error = await run(provider, call(model="gemini-0.9-nonexistent"), streamed)

    assert error.kind is ErrorKind.CONFIGURATION_ERROR and not error.retryable
    assert "gemini-0.9-nonexistent" in error.message


async def test_stream_that_ends_without_its_finish_reason_is_cut(provider: GeminiProvider, fake: FakeGemini) -> None:
    fake.plan(sse_reply([b'data: {"candidates": [{"content": {"parts": [{"text": "Once"}],"role": "model"},"index": 0}]}\r\n\r\n']))

    received, error = await collect_until_error(provider, call())

    assert text_of(received) == "Once" and error.kind is ErrorKind.NETWORK_ERROR and "finish reason" in error.message


async def test_a_connection_lost_after_the_finish_chunk_still_answers(provider: GeminiProvider, fake: FakeGemini) -> None:
    fake.plan(sse_reply(recorded_events(fixture_bytes("generate_content_stream.sse")), ending=Ending.CUT))

    deltas = await collect(provider, call())

    assert answer_of(deltas).text == "Hello! How can I help you today?", "the finish reason had arrived: the answer is complete"


async def test_a_reply_that_is_not_json(provider: GeminiProvider, fake: FakeGemini) -> None:
    fake.plan(raw_reply(200, b"<html>oops</html>"))

    error = await run(provider, call(), False)

    assert error.kind is ErrorKind.MODEL_UNAVAILABLE


async def test_malformed_function_call_is_invalid_model_output(provider: GeminiProvider, fake: FakeGemini) -> None:
    body = {"candidates": [{"content": {"role": "model"}, "finishReason": "MALFORMED_FUNCTION_CALL", "index": 0}], "modelVersion": MODEL}
    fake.plan(body_reply(200, body))

    error = await run(provider, call(tools=TOOLS), False)

    assert error.kind is ErrorKind.INVALID_MODEL_OUTPUT and error.retryable


async def test_used_before_start_is_a_configuration_error() -> None:
    error = await run(GeminiProvider(api_key=Secret(GEMINI_KEY)), call(), False)

    assert error.kind is ErrorKind.CONFIGURATION_ERROR


# --- health ---------------------------------------------------------------------------------


async def test_health_probe_lists_one_model(provider: GeminiProvider, fake: FakeGemini) -> None:
    report = await provider.health()

    assert report.healthy, report.detail
    probe = fake.requests[-1]
    assert (probe.method, probe.path, dict(getattr(probe, "query", {}))) == ("GET", "/v1beta/models", {"pageSize": "1"})
    assert probe.headers["x-goog-api-key"] == GEMINI_KEY
    assert fake.generation_requests == [], "the probe spends no tokens"
