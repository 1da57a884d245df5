"""Table tests for the pure Anthropic Messages API mappings (``providers/anthropic_wire.py``)."""

from __future__ import annotations

import json
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
    StreamDelta,
    Usage,
)
from llm_manager_server.providers import anthropic_wire
from llm_manager_server.providers.anthropic import normalize_base_url

from ..fakes.http_fake import fixture_json, fixture_text

MODEL = "claude-sonnet-4-5"


def call(*messages: Message, **sampling: Any) -> ModelCall:
    return ModelCall(MODEL, messages, SamplingOptions(**sampling))


def text(value: str) -> dict[str, str]:
    return {"type": "text", "text": value}


@pytest.mark.parametrize(
    ("model_call", "stream", "expected"),
    [
        pytest.param(
            call(Message.of(Role.USER, "Hi")),
            False,
            {"model": MODEL, "max_tokens": 1024, "messages": [{"role": "user", "content": [text("Hi")]}]},
            id="default-max-tokens-required",
        ),
        pytest.param(
            call(Message.of(Role.SYSTEM, "Be brief."), Message.of(Role.USER, "Hi"), Message.of(Role.ASSISTANT, "Hello!"), Message.of(Role.USER, "Bye")),
            True,
            {
                "model": MODEL,
                "max_tokens": 1024,
                "system": "Be brief.",
                "messages": [
                    {"role": "user", "content": [text("Hi")]},
                    {"role": "assistant", "content": [text("Hello!")]},
                    {"role": "user", "content": [text("Bye")]},
                ],
                "stream": True,
            },
            id="system-top-level-turns-as-blocks",
        ),
        pytest.param(
            call(Message.of(Role.SYSTEM, "One."), Message.of(Role.USER, "a"), Message.of(Role.SYSTEM, "Two."), Message.of(Role.USER, "b")),
            False,
            {"model": MODEL, "max_tokens": 1024, "system": "One.\n\nTwo.", "messages": [{"role": "user", "content": [text("a"), text("b")]}]},
            id="systems-joined-same-role-turns-merged",
        ),
        pytest.param(
            call(Message.of(Role.USER, "Hi"), max_tokens=64, temperature=1.7, top_p=0.9, stop=("END",), seed=3),
            False,
            {
                "model": MODEL,
                "max_tokens": 64,
                "temperature": 1.0,
                "top_p": 0.9,
                "stop_sequences": ["END"],
                "messages": [{"role": "user", "content": [text("Hi")]}],
            },
            id="sampling-temperature-clamped-seed-unsupported",
        ),
        pytest.param(
            call(Message.of(Role.USER, "List two colours"), response_format=ResponseFormat.JSON_OBJECT),
            False,
            {
                "model": MODEL,
                "max_tokens": 1024,
                "system": anthropic_wire.JSON_INSTRUCTION,
                "messages": [{"role": "user", "content": [text("List two colours")]}],
            },
            id="json-object-as-instruction",
        ),
    ],
)
def test_messages_body(model_call: ModelCall, stream: bool, expected: dict[str, Any]) -> None:
    assert anthropic_wire.messages_body(model_call, default_max_tokens=1024, stream=stream) == expected


@pytest.mark.parametrize(
    ("raw", "usage"),
    [
        (None, None),
        ({"input_tokens": 2095, "output_tokens": 503}, Usage(2095, 503, 2598)),
        (
            {"input_tokens": 12, "cache_read_input_tokens": 1800, "cache_creation_input_tokens": 200, "output_tokens": 40},
            Usage(prompt_tokens=2012, completion_tokens=40, total_tokens=2052, cached_prompt_tokens=1800, cache_creation_tokens=200),
        ),
        ({"input_tokens": 12, "cache_read_input_tokens": None, "output_tokens": 1}, Usage(12, 1, 13)),
    ],
)
def test_parse_usage(raw: object, usage: Usage | None) -> None:
    assert anthropic_wire.parse_usage(raw) == usage


@pytest.mark.parametrize(
    ("raw", "finish"),
    [("end_turn", FinishReason.STOP), ("stop_sequence", FinishReason.STOP), ("max_tokens", FinishReason.LENGTH),
     ("refusal", FinishReason.CONTENT_FILTER), ("tool_use", FinishReason.TOOL_CALLS), ("brand_new", FinishReason.OTHER), (None, FinishReason.UNSPECIFIED)],
)
def test_map_stop_reason(raw: object, finish: FinishReason) -> None:
    assert anthropic_wire.map_stop_reason(raw) is finish


def test_parse_recorded_message() -> None:
    completion = anthropic_wire.parse_message(fixture_json("anthropic", "message.json"), MODEL)

    assert completion.text == "Hello! How can I help you today?"
    assert completion.model == "claude-sonnet-4-5-20250929"
    assert completion.usage == Usage(12, 12, 24)
    assert completion.finish_reason is FinishReason.STOP


def test_parse_message_joins_text_blocks_and_skips_others() -> None:
    body = fixture_json("anthropic", "message.json")
    body["content"] = [{"type": "thinking", "thinking": "hmm", "signature": "x"}, text("A"), {"type": "tool_use", "id": "t", "name": "f", "input": {}}, text("B")]

    assert anthropic_wire.parse_message(body, MODEL).text == "AB"


def recorded_events() -> list[tuple[str, str]]:
    events = []
    for block in fixture_text("anthropic", "message_stream.sse").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields:
            events.append((fields["event"], fields["data"]))
    return events


def test_recorded_stream_sequence() -> None:
    state = anthropic_wire.StreamState(requested_model=MODEL)
    deltas = [d for name, data in recorded_events() if (d := anthropic_wire.parse_stream_data(name, data, state)) is not None]

    assert [d.text for d in deltas[:-1]] == ["Hello! How", " can I help you", " today?"]
    assert deltas[-1] == StreamDelta(
        model="claude-sonnet-4-5-20250929",
        answer=Answer("Hello! How can I help you today?", "claude-sonnet-4-5-20250929", Usage(12, 12, 24), FinishReason.STOP),
    )
    assert state.finished


@pytest.mark.parametrize(
    ("start_usage", "delta_usage", "expected"),
    [
        pytest.param({"input_tokens": 25, "output_tokens": 1}, {"output_tokens": 15}, Usage(25, 15, 40), id="output-cumulative"),
        pytest.param(
            {"input_tokens": 5, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 0, "output_tokens": 1},
            {"output_tokens": 9},
            Usage(1005, 9, 1014, cached_prompt_tokens=1000),
            id="cache-read-from-message-start",
        ),
        pytest.param(
            {"input_tokens": 0, "output_tokens": 0},
            {"input_tokens": 9, "cache_read_input_tokens": None, "output_tokens": 4},
            Usage(9, 4, 13),
            id="gateway-reports-input-in-message-delta",
        ),
    ],
)
def test_stream_usage_merges_message_start_and_message_delta(
    start_usage: dict[str, Any], delta_usage: dict[str, Any], expected: Usage
) -> None:
    state = anthropic_wire.StreamState(requested_model=MODEL)
    anthropic_wire.parse_stream_event("message_start", {"type": "message_start", "message": {"model": MODEL, "usage": start_usage}}, state)
    anthropic_wire.parse_stream_event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": delta_usage}, state)
    final = anthropic_wire.parse_stream_event("message_stop", {"type": "message_stop"}, state)

    assert final == StreamDelta(model=MODEL, answer=Answer("", MODEL, expected, FinishReason.LENGTH))


@pytest.mark.parametrize(
    ("event", "payload", "expected"),
    [
        ("ping", {"type": "ping"}, None),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}, None),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": text("")}, None),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": text("Hi")}, StreamDelta(text="Hi")),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "é"}}, StreamDelta(text="é")),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "…"}}, None),
        ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{"}}, None),
        ("some_future_event", {"type": "some_future_event"}, None),
        # Without an SSE event name the payload's type decides.
        ("message", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}, StreamDelta(text="x")),
    ],
)
def test_stream_events(event: str, payload: dict[str, Any], expected: StreamDelta | None) -> None:
    assert anthropic_wire.parse_stream_event(event, payload, anthropic_wire.StreamState(requested_model=MODEL)) == expected


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [("overloaded_error", ErrorKind.MODEL_UNAVAILABLE), ("not_found_error", ErrorKind.CONFIGURATION_ERROR), ("api_error", ErrorKind.MODEL_UNAVAILABLE),
     ("rate_limit_error", ErrorKind.RATE_LIMIT_EXCEEDED), ("invalid_request_error", ErrorKind.INVALID_REQUEST),
     ("authentication_error", ErrorKind.AUTHENTICATION_FAILED), ("unheard_of_error", ErrorKind.MODEL_UNAVAILABLE)],
)
def test_error_event_mid_stream_raises(error_type: str, kind: ErrorKind) -> None:
    data = json.dumps({"type": "error", "error": {"type": error_type, "message": "Overloaded"}})

    with pytest.raises(LLMError) as raised:
        anthropic_wire.parse_stream_data("error", data, anthropic_wire.StreamState(requested_model=MODEL))

    assert raised.value.kind is kind
    assert raised.value.model == MODEL
    assert "mid-stream" in raised.value.message


def test_error_event_with_non_json_data_still_raises() -> None:
    with pytest.raises(LLMError) as raised:
        anthropic_wire.parse_stream_data("error", "upstream exploded", anthropic_wire.StreamState(requested_model=MODEL))
    assert raised.value.kind is ErrorKind.MODEL_UNAVAILABLE


def error_text(name: str) -> str:
    return fixture_text("anthropic", name)


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "expected"),
    [
        (401, error_text("error_authentication.json"), {}, ErrorKind.AUTHENTICATION_FAILED, {"upstream_auth": True, "metadata": {"upstream_request_id": "req_011CUaX3b7mWq9HkTz2LpRfN"}}),
        (402, '{"type":"error","error":{"type":"billing_error","message":"Your credit balance is too low"}}', {}, ErrorKind.AUTHENTICATION_FAILED, {"upstream_auth": True}),
        (403, '{"type":"error","error":{"type":"permission_error","message":"no access"}}', {}, ErrorKind.AUTHENTICATION_FAILED, {"upstream_auth": True}),
        (429, error_text("error_rate_limit.json"), {"retry-after": "13"}, ErrorKind.RATE_LIMIT_EXCEEDED, {"retry_after_s": 13.0}),
        (429, error_text("error_rate_limit.json"), {}, ErrorKind.RATE_LIMIT_EXCEEDED, {"retry_after_s": None}),
        (529, error_text("error_overloaded.json"), {}, ErrorKind.MODEL_UNAVAILABLE, {"metadata": {"upstream_error_type": "overloaded_error", "upstream_status": "529"}}),
        (500, error_text("error_api_error.json"), {}, ErrorKind.MODEL_UNAVAILABLE, {}),
        (504, '{"type":"error","error":{"type":"timeout_error","message":"Request timed out"}}', {}, ErrorKind.MODEL_UNAVAILABLE, {}),
        (404, '{"type":"error","error":{"type":"not_found_error","message":"model: claude-9"}}', {}, ErrorKind.CONFIGURATION_ERROR, {}),
        (400, error_text("error_prompt_too_long.json"), {}, ErrorKind.CONTEXT_TOO_LARGE, {"metadata": {"prompt_tokens": "208310", "context_window": "200000"}}),
        (400, '{"type":"error","error":{"type":"invalid_request_error","message":"input length and `max_tokens` exceed context limit: 197626 + 8192 > 200000, decrease input length or `max_tokens` and try again"}}', {}, ErrorKind.CONTEXT_TOO_LARGE, {"metadata": {"prompt_tokens": "197626", "max_tokens": "8192", "context_window": "200000"}}),
        (400, '{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}', {}, ErrorKind.INVALID_REQUEST, {"violation": True}),
        (413, '{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}', {}, ErrorKind.INVALID_REQUEST, {}),
        (502, "<html>bad gateway</html>", {"request-id": "req_from_header"}, ErrorKind.MODEL_UNAVAILABLE, {"metadata": {"upstream_request_id": "req_from_header"}}),
    ],
)
def test_http_error(status: int, body: str, headers: dict[str, str], kind: ErrorKind, expected: dict[str, Any]) -> None:
    error = anthropic_wire.http_error(status, body, headers, model=MODEL)

    assert error.kind is kind
    assert error.model == MODEL
    assert error.message.startswith(f"anthropic model {MODEL!r} returned HTTP {status}")
    assert error.upstream_auth is expected.get("upstream_auth", False)
    if "retry_after_s" in expected:
        assert error.retry_after_s == expected["retry_after_s"]
    assert expected.get("metadata", {}).items() <= error.metadata.items()
    if expected.get("violation"):
        assert error.field_violations and "max_tokens" in error.field_violations[0].description


@pytest.mark.parametrize(
    ("url", "normalized"),
    [("https://api.anthropic.com", "https://api.anthropic.com"), ("https://api.anthropic.com/v1/", "https://api.anthropic.com"),
     ("http://127.0.0.1:8080/proxy/anthropic", "http://127.0.0.1:8080/proxy/anthropic")],
)
def test_normalize_base_url(url: str, normalized: str) -> None:
    assert normalize_base_url(url) == normalized
