"""Table tests for the pure OpenAI Chat Completions mappings (``providers/openai_wire.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import (
    Answer,
    FinishReason,
    Message,
    ModelCall,
    ResponseFormat,
    Role,
    SamplingOptions,
    Usage,
)
from llm_manager_server.providers import openai_wire
from llm_manager_server.providers.openai_compat import normalize_base_url, with_defaults

from ..fakes.http_fake import fixture_json, fixture_text

SYSTEM = Message.of(Role.SYSTEM, "Be brief.")
USER = Message.of(Role.USER, "Hi")
ASSISTANT = Message.of(Role.ASSISTANT, "Hello!")


def call(model: str = "gpt-4o-mini", messages: tuple[Message, ...] = (SYSTEM, USER), **sampling: Any) -> ModelCall:
    return ModelCall(model, messages, SamplingOptions(**sampling))


@pytest.mark.parametrize(
    ("model_call", "stream", "expected"),
    [
        pytest.param(
            call(messages=(SYSTEM, USER, ASSISTANT, USER)),
            False,
            {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "Hi"},
                ],
            },
            id="roles-in-order-no-sampling",
        ),
        pytest.param(
            call(max_tokens=100, temperature=0.3, top_p=0.9, stop=("END", "\n\n"), seed=7),
            False,
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                "max_tokens": 100,
                "temperature": 0.3,
                "top_p": 0.9,
                "stop": ["END", "\n\n"],
                "seed": 7,
            },
            id="all-sampling",
        ),
        pytest.param(
            call("o3-mini", max_tokens=100, temperature=0.3, stop=("END",)),
            False,
            {
                "model": "o3-mini",
                "messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                "max_completion_tokens": 100,
            },
            id="reasoning-model-max-completion-tokens-developer-role",
        ),
        pytest.param(
            call("gpt-5-mini", max_tokens=50, temperature=1.0),
            True,
            {
                "model": "gpt-5-mini",
                "messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                "max_completion_tokens": 50,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            id="gpt-5-streamed",
        ),
        pytest.param(
            call(messages=(USER,), response_format=ResponseFormat.JSON_OBJECT),
            False,
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "system", "content": openai_wire.JSON_INSTRUCTION}, {"role": "user", "content": "Hi"}],
                "response_format": {"type": "json_object"},
            },
            id="json-object-adds-the-word-json",
        ),
        pytest.param(
            call(messages=(Message.of(Role.USER, "Reply in JSON"),), response_format=ResponseFormat.JSON_OBJECT),
            True,
            {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "Reply in JSON"}],
                "response_format": {"type": "json_object"},
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            id="json-object-already-mentioned",
        ),
    ],
)
def test_chat_body(model_call: ModelCall, stream: bool, expected: dict[str, Any]) -> None:
    assert openai_wire.chat_body(model_call, stream=stream) == expected


@pytest.mark.parametrize(
    ("model", "reasoning"),
    [("o1", True), ("o1-mini", True), ("o3", True), ("o4-mini", True), ("gpt-5", True), ("gpt-5.4-nano", True),
     ("gpt-4o-mini", False), ("gpt-4.1", False), ("gpt-3.5-turbo", False), ("llama-3.2-3b", False)],
)
def test_is_reasoning_model(model: str, reasoning: bool) -> None:
    assert openai_wire.is_reasoning_model(model) is reasoning


@pytest.mark.parametrize(
    ("caller", "defaults", "expected"),
    [
        (SamplingOptions(), (4096, 0.7), (4096, 0.7)),
        (SamplingOptions(max_tokens=10, temperature=0.0), (4096, 0.7), (10, 0.0)),
        (SamplingOptions(max_tokens=10), (None, None), (10, None)),
    ],
)
def test_configured_defaults_fill_only_what_the_caller_left_out(
    caller: SamplingOptions, defaults: tuple[int | None, float | None], expected: tuple[int | None, float | None]
) -> None:
    merged = with_defaults(caller, max_tokens=defaults[0], temperature=defaults[1])
    assert (merged.max_tokens, merged.temperature) == expected


@pytest.mark.parametrize(
    ("url", "normalized"),
    [("http://127.0.0.1:1234", "http://127.0.0.1:1234/v1"), ("https://api.openai.com/v1/", "https://api.openai.com/v1"),
     ("https://proxy.example/openai/v1", "https://proxy.example/openai/v1")],
)
def test_normalize_base_url(url: str, normalized: str) -> None:
    assert normalize_base_url(url) == normalized


@pytest.mark.parametrize(
    ("raw", "usage"),
    [
        (None, None),
        ({"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29}, Usage(19, 10, 29)),
        (
            {"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306, "prompt_tokens_details": {"cached_tokens": 1920}},
            Usage(2006, 300, 2306, cached_prompt_tokens=1920),
        ),
        ({"prompt_tokens": 5, "completion_tokens": 2}, Usage(5, 2, 7)),  # some local servers omit total
        ({"prompt_tokens": 5, "completion_tokens": 2, "prompt_tokens_details": None}, Usage(5, 2, 7)),
    ],
)
def test_parse_usage(raw: object, usage: Usage | None) -> None:
    assert openai_wire.parse_usage(raw) == usage


@pytest.mark.parametrize(
    ("raw", "finish"),
    [("stop", FinishReason.STOP), ("length", FinishReason.LENGTH), ("content_filter", FinishReason.CONTENT_FILTER),
     ("tool_calls", FinishReason.TOOL_CALLS), ("function_call", FinishReason.TOOL_CALLS), ("something_new", FinishReason.OTHER),
     (None, FinishReason.UNSPECIFIED)],
)
def test_map_finish_reason(raw: object, finish: FinishReason) -> None:
    assert openai_wire.map_finish_reason(raw) is finish


def test_parse_recorded_completion() -> None:
    completion = openai_wire.parse_completion(fixture_json("openai", "chat_completion.json"), "gpt-4o-mini")

    assert completion.text == "Hello! How can I help you today?"
    assert completion.model == "gpt-4o-mini-2024-07-18"
    assert completion.usage == Usage(19, 9, 28)
    assert completion.finish_reason is FinishReason.STOP


def test_parse_refusal_as_content_filtered_text() -> None:
    body = fixture_json("openai", "chat_completion.json")
    body["choices"][0]["message"].update(content=None, refusal="I can't help with that.")

    completion = openai_wire.parse_completion(body, "gpt-4o-mini")

    assert (completion.text, completion.finish_reason) == ("I can't help with that.", FinishReason.CONTENT_FILTER)


def test_parse_recorded_stream_chunks() -> None:
    import json

    events = [block.removeprefix("data: ") for block in fixture_text("openai", "chat_completion_stream.sse").split("\n\n") if block]
    fold = openai_wire.ChunkFold("gpt-4o-mini")
    taken = [fold.take(json.loads(data)) for data in events if data != "[DONE]"]
    deltas = [d for d in taken if d is not None]

    assert "".join(d.text for d in deltas) == "Hello! How can I help you today?"
    assert all(d.text and d.model == "gpt-4o-mini-2024-07-18" and not d.tool_calls and d.answer is None for d in deltas)
    # The finish chunk comes before the usage chunk; the answer has both.
    assert fold.finish is FinishReason.STOP and fold.usage == Usage(19, 9, 28)
    assert fold.answer() == Answer("Hello! How can I help you today?", "gpt-4o-mini-2024-07-18", Usage(19, 9, 28), FinishReason.STOP)


# --- errors -------------------------------------------------------------------------------


def error_text(name: str) -> str:
    return fixture_text("openai", name)


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "expected"),
    [
        (401, error_text("error_invalid_api_key.json"), {}, ErrorKind.AUTHENTICATION_FAILED, {"upstream_auth": True}),
        (403, '{"error":{"message":"Country, region, or territory not supported","type":"request_forbidden","code":"unsupported_country_region_territory"}}', {}, ErrorKind.AUTHENTICATION_FAILED, {"upstream_auth": True}),
        (429, error_text("error_rate_limit.json"), {"retry-after-ms": "120"}, ErrorKind.RATE_LIMIT_EXCEEDED, {"retry_after_s": 0.12}),
        (429, error_text("error_rate_limit.json"), {"retry-after": "20"}, ErrorKind.RATE_LIMIT_EXCEEDED, {"retry_after_s": 20.0}),
        (429, error_text("error_rate_limit.json"), {"retry-after-ms": "250", "retry-after": "1"}, ErrorKind.RATE_LIMIT_EXCEEDED, {"retry_after_s": 0.25}),
        (429, error_text("error_rate_limit.json"), {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, ErrorKind.RATE_LIMIT_EXCEEDED, {"retry_after_s": None}),
        (400, error_text("error_context_length_exceeded.json"), {}, ErrorKind.CONTEXT_TOO_LARGE, {"metadata": {"prompt_tokens": "130532", "context_window": "128000"}}),
        (400, '{"error":{"message":"Invalid value for \'temperature\'","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}', {}, ErrorKind.INVALID_REQUEST, {"violation_field": "upstream.temperature"}),
        (404, '{"error":{"message":"The model `gpt-9` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}', {}, ErrorKind.CONFIGURATION_ERROR, {}),
        (408, "", {}, ErrorKind.TIMEOUT, {}),
        (500, error_text("error_server_error.json"), {"x-request-id": "req_abc"}, ErrorKind.MODEL_UNAVAILABLE, {"metadata": {"upstream_request_id": "req_abc", "upstream_status": "500"}}),
        (502, "<html>Bad gateway</html>", {}, ErrorKind.MODEL_UNAVAILABLE, {}),
        (503, '{"error":{"message":"The engine is currently overloaded, please try again later.","type":"server_error"}}', {}, ErrorKind.MODEL_UNAVAILABLE, {}),
        # llama.cpp server's context error carries the counts as fields.
        (400, '{"error":{"code":400,"message":"the request exceeds the available context size","type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":4096}}', {}, ErrorKind.CONTEXT_TOO_LARGE, {"metadata": {"prompt_tokens": "5000", "context_window": "4096"}}),
    ],
)
def test_http_error(status: int, body: str, headers: dict[str, str], kind: ErrorKind, expected: dict[str, Any]) -> None:
    error = openai_wire.http_error(status, body, headers, model="gpt-4o-mini", provider_label="openai")

    assert error.kind is kind
    assert error.model == "gpt-4o-mini"
    assert error.message.startswith(f"openai model 'gpt-4o-mini' returned HTTP {status}")
    assert error.upstream_auth is expected.get("upstream_auth", False)
    if "retry_after_s" in expected:
        assert error.retry_after_s == (pytest.approx(expected["retry_after_s"]) if expected["retry_after_s"] is not None else None)
    assert expected.get("metadata", {}).items() <= error.metadata.items()
    if "violation_field" in expected:
        assert [v.field for v in error.field_violations] == [expected["violation_field"]]


@pytest.mark.parametrize(
    ("message", "metadata"),
    [
        ("This model's maximum context length is 8192 tokens. However, your messages resulted in 8227 tokens. Please reduce the length of the messages.",
         {"context_window": "8192", "prompt_tokens": "8227"}),
        ("This model's maximum context length is 4097 tokens. However, you requested 4972 tokens (3222 in the messages, 1750 in the completion). Please reduce the length of the messages or completion.",
         {"context_window": "4097", "requested_tokens": "4972", "prompt_tokens": "3222", "max_tokens": "1750"}),
        ("Your input exceeds the context window of this model. Please adjust your input and try again.", {}),
    ],
)
def test_context_overflow_metadata(message: str, metadata: dict[str, str]) -> None:
    assert openai_wire.context_overflow_metadata(message) == metadata


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ({"message": "The server had an error while processing your request. Sorry about that!", "type": "server_error", "param": None, "code": None}, ErrorKind.MODEL_UNAVAILABLE),
        ({"message": "Rate limit reached", "type": "tokens", "code": "rate_limit_exceeded"}, ErrorKind.RATE_LIMIT_EXCEEDED),
        ({"message": "bad", "type": "invalid_request_error"}, ErrorKind.INVALID_REQUEST),
        ({"code": 500, "message": "llama.cpp engine crashed", "type": "server_error"}, ErrorKind.MODEL_UNAVAILABLE),
        ({}, ErrorKind.MODEL_UNAVAILABLE),
    ],
)
def test_stream_error(error: dict[str, Any], kind: ErrorKind) -> None:
    mapped = openai_wire.stream_error(error, model="gpt-4o-mini", provider_label="openai")

    assert mapped.kind is kind
    assert "mid-stream" in mapped.message
    assert "upstream_status" not in mapped.metadata  # the stream itself was HTTP 200


def test_error_chunk_raises() -> None:
    with pytest.raises(LLMError) as raised:
        openai_wire.ChunkFold("gpt-4o-mini").take({"error": {"message": "boom", "type": "server_error"}})
    assert raised.value.kind is ErrorKind.MODEL_UNAVAILABLE


def test_upstream_text_is_redacted_and_bounded() -> None:
    key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
    body = '{"error":{"message":"Incorrect API key provided: ' + key + ". " + "x" * 1000 + '","type":"invalid_request_error","code":"invalid_api_key"}}'

    error = openai_wire.http_error(401, body, {}, model="gpt-4o-mini", provider_label="openai", secrets=(key,))

    assert key not in error.message and "abcdefghij" not in error.message
    assert len(error.message) < 400
