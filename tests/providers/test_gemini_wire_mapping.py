"""Table tests for the pure Gemini API mappings (``providers/gemini_wire.py``): request bodies,
replies, stream folding and error mapping, against the recorded-shaped fixtures."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import (
    FinishReason,
    Message,
    ModelCall,
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
from llm_manager_server.providers.gemini import normalize_base_url

from ..fakes.gemini_fake import event_payloads, fixture_body, fixture_bytes

MODEL = "gemini-2.5-flash"
SIGNED_MODEL = "gemini-3-pro-preview"

QUERY_METRICS = {
    "type": "object",
    "properties": {"service": {"type": "string"}, "metric": {"type": "string"}, "window": {"type": "string"}},
    "required": ["service", "metric", "window"],
}
SEARCH_LOGS = {"type": "object", "properties": {"service": {"type": "string"}, "query": {"type": "string"}}, "required": ["service", "query"]}
INCIDENT = {"type": "object", "properties": {"service": {"type": "string"}, "severity": {"enum": ["low", "high"]}}, "required": ["service", "severity"]}
TOOLS = (Tool("query_metrics", "Read a service metric.", QUERY_METRICS), Tool("search_logs", "", SEARCH_LOGS))
METRICS_ARGS = {"service": "checkout", "metric": "latency_p95_ms", "window": "1h"}
LOGS_ARGS = {"service": "checkout", "query": 'level:error "payment declined"', "limit": 20}

QUERY_DECLARATION = {"name": "query_metrics", "description": "Read a service metric.", "parametersJsonSchema": QUERY_METRICS}
SEARCH_DECLARATION = {"name": "search_logs", "parametersJsonSchema": SEARCH_LOGS}
RESPONSE_DECLARATION = {"name": "structured_response", "description": gemini_wire.RESPONSE_TOOL_DESCRIPTION, "parametersJsonSchema": INCIDENT}


def call(*messages: Message, model: str = MODEL, tools: tuple[Tool, ...] = (), tool_choice: ToolChoice | None = None, **sampling: Any) -> ModelCall:
    return ModelCall(model, messages, SamplingOptions(**sampling), tools=tools, tool_choice=tool_choice)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


HI = Message.of(Role.USER, "Hi")


# --- request bodies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_call", "default_max_tokens", "expected"),
    [
        pytest.param(call(HI), None, {"contents": [user("Hi")]}, id="plain-no-config"),
        pytest.param(call(HI), 2048, {"contents": [user("Hi")], "generationConfig": {"maxOutputTokens": 2048}}, id="provider-default-max-tokens"),
        pytest.param(
            call(HI, max_tokens=64, temperature=1.7, top_p=0.9, stop=("END", "\n\n"), seed=3),
            2048,
            {
                "contents": [user("Hi")],
                "generationConfig": {"temperature": 1.7, "topP": 0.9, "maxOutputTokens": 64, "stopSequences": ["END", "\n\n"], "seed": 3},
            },
            id="sampling-call-max-tokens-wins",
        ),
        pytest.param(
            call(Message.of(Role.SYSTEM, "Be brief."), HI, Message.of(Role.ASSISTANT, "Hello!"), Message.of(Role.SYSTEM, "In French."), Message.of(Role.USER, "Bye")),
            None,
            {
                "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "In French."}]},
                "contents": [user("Hi"), {"role": "model", "parts": [{"text": "Hello!"}]}, user("Bye")],
            },
            id="system-instruction-and-roles",
        ),
        pytest.param(
            call(Message.of(Role.USER, "a"), Message.of(Role.SYSTEM, ""), Message.of(Role.USER, "b"), Message.of(Role.ASSISTANT, "")),
            None,
            {"contents": [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}]},
            id="same-role-merged-empty-dropped",
        ),
        pytest.param(
            call(HI, response_format=ResponseFormat.JSON_OBJECT),
            None,
            {"contents": [user("Hi")], "generationConfig": {"responseMimeType": "application/json"}},
            id="json-object",
        ),
        pytest.param(
            call(HI, response_format=ResponseFormat.JSON_SCHEMA, response_schema=INCIDENT),
            None,
            {"contents": [user("Hi")], "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": INCIDENT}},
            id="json-schema",
        ),
        pytest.param(
            call(HI, response_format=ResponseFormat.JSON_SCHEMA),
            None,
            {"contents": [user("Hi")], "generationConfig": {"responseMimeType": "application/json"}},
            id="json-schema-without-schema-is-json",
        ),
        pytest.param(
            call(HI, tools=TOOLS),
            None,
            {"contents": [user("Hi")], "tools": [{"functionDeclarations": [QUERY_DECLARATION, SEARCH_DECLARATION]}]},
            id="tools-default-choice",
        ),
        pytest.param(
            call(HI, tool_choice=ToolChoice(ToolChoiceMode.REQUIRED)),
            None,
            {"contents": [user("Hi")]},
            id="tool-choice-without-tools-ignored",
        ),
        pytest.param(
            call(HI, tools=TOOLS, response_format=ResponseFormat.JSON_OBJECT),
            None,
            {
                "contents": [user("Hi")],
                "systemInstruction": {"parts": [{"text": gemini_wire.JSON_INSTRUCTION}]},
                "tools": [{"functionDeclarations": [QUERY_DECLARATION, SEARCH_DECLARATION]}],
            },
            id="tools-and-json-object-by-instruction",
        ),
    ],
)
def test_generate_content_body(model_call: ModelCall, default_max_tokens: int | None, expected: dict[str, Any]) -> None:
    assert gemini_wire.generate_content_body(model_call, default_max_tokens=default_max_tokens) == expected


ANY = {"mode": "ANY"}


@pytest.mark.parametrize(
    ("tool_choice", "schema", "declarations", "calling"),
    [
        pytest.param(None, None, [QUERY_DECLARATION, SEARCH_DECLARATION], None, id="none-given"),
        pytest.param(ToolChoice(ToolChoiceMode.AUTO), None, [QUERY_DECLARATION, SEARCH_DECLARATION], {"mode": "AUTO"}, id="auto"),
        pytest.param(ToolChoice(ToolChoiceMode.NONE), None, [QUERY_DECLARATION, SEARCH_DECLARATION], {"mode": "NONE"}, id="none"),
        pytest.param(ToolChoice(ToolChoiceMode.REQUIRED), None, [QUERY_DECLARATION, SEARCH_DECLARATION], ANY, id="required-is-any"),
        pytest.param(
            ToolChoice(ToolChoiceMode.TOOL, "search_logs"), None, [QUERY_DECLARATION, SEARCH_DECLARATION],
            {"mode": "ANY", "allowedFunctionNames": ["search_logs"]}, id="forced-tool",
        ),
        pytest.param(None, INCIDENT, [QUERY_DECLARATION, SEARCH_DECLARATION, RESPONSE_DECLARATION], ANY, id="schema-response-function"),
        pytest.param(ToolChoice(ToolChoiceMode.AUTO), INCIDENT, [QUERY_DECLARATION, SEARCH_DECLARATION, RESPONSE_DECLARATION], ANY, id="schema-auto"),
        pytest.param(
            ToolChoice(ToolChoiceMode.NONE), INCIDENT, [QUERY_DECLARATION, SEARCH_DECLARATION, RESPONSE_DECLARATION],
            {"mode": "ANY", "allowedFunctionNames": ["structured_response"]}, id="schema-tools-off-only-the-response",
        ),
        pytest.param(ToolChoice(ToolChoiceMode.REQUIRED), INCIDENT, [QUERY_DECLARATION, SEARCH_DECLARATION], ANY, id="schema-required-a-tool-call"),
        pytest.param(
            ToolChoice(ToolChoiceMode.TOOL, "query_metrics"), INCIDENT, [QUERY_DECLARATION, SEARCH_DECLARATION],
            {"mode": "ANY", "allowedFunctionNames": ["query_metrics"]}, id="schema-forced-tool",
        ),
    ],
)
def test_tools_and_tool_config(tool_choice: ToolChoice | None, schema: dict[str, Any] | None, declarations: list[dict[str, Any]], calling: dict[str, Any] | None) -> None:
    sampling: dict[str, Any] = {"response_format": ResponseFormat.JSON_SCHEMA, "response_schema": schema} if schema else {}
    body = gemini_wire.generate_content_body(call(HI, tools=TOOLS, tool_choice=tool_choice, **sampling))

    assert body["tools"] == [{"functionDeclarations": declarations}]
    assert body.get("toolConfig") == (None if calling is None else {"functionCallingConfig": calling})
    assert "generationConfig" not in body, "no JSON mime type with function declarations (Gemini 2.x refuses it)"


def history(model: str = MODEL) -> ModelCall:
    return call(
        Message.of(Role.USER, "Why is checkout slow?"),
        Message(Role.ASSISTANT, (TextPart("Checking."), ToolCall("call_0", "query_metrics", METRICS_ARGS), ToolCall("call_1", "search_logs", LOGS_ARGS))),
        Message(Role.TOOL, (ToolResult("call_0", '{"latency_p95_ms": 950}'),)),
        Message(Role.TOOL, (ToolResult("call_1", "no errors found"),)),
        Message.of(Role.ASSISTANT, "Latency is high."),
        Message.of(Role.USER, "And now?"),
        Message(Role.ASSISTANT, (ToolCall("call_0", "search_logs", LOGS_ARGS),)),  # ids restart each answer
        Message(Role.TOOL, (ToolResult("call_0", "[1, 2]"),)),
        model=model,
        tools=TOOLS,
    )


def test_history_with_function_calls_and_responses() -> None:
    contents = gemini_wire.generate_content_body(history())["contents"]

    assert contents == [
        user("Why is checkout slow?"),
        {
            "role": "model",
            "parts": [
                {"text": "Checking."},
                {"functionCall": {"name": "query_metrics", "args": METRICS_ARGS}},
                {"functionCall": {"name": "search_logs", "args": LOGS_ARGS}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "query_metrics", "response": {"result": {"latency_p95_ms": 950}}}},
                {"functionResponse": {"name": "search_logs", "response": {"result": "no errors found"}}},
            ],
        },
        {"role": "model", "parts": [{"text": "Latency is high."}]},
        user("And now?"),
        {"role": "model", "parts": [{"functionCall": {"name": "search_logs", "args": LOGS_ARGS}}]},
        # call_0 now names the latest call with that id.
        {"role": "user", "parts": [{"functionResponse": {"name": "search_logs", "response": {"result": [1, 2]}}}]},
    ]


def test_gemini_3_function_calls_carry_the_sentinel_signature_on_the_first_call_of_each_turn() -> None:
    contents = gemini_wire.generate_content_body(history(SIGNED_MODEL))["contents"]

    signatures = [[part.get("thoughtSignature") for part in content["parts"]] for content in contents if content["role"] == "model"]
    assert signatures == [[None, gemini_wire.SKIP_SIGNATURE, None], [None], [gemini_wire.SKIP_SIGNATURE]]


def test_a_result_for_an_unknown_call_is_named_by_its_id() -> None:
    contents = gemini_wire.contents(call(Message(Role.TOOL, (ToolResult("lookup", "ok"),))))

    assert contents == [{"role": "user", "parts": [{"functionResponse": {"name": "lookup", "response": {"result": "ok"}}}]}]


@pytest.mark.parametrize(
    ("content", "value"),
    [
        ('{"a": 1}', {"a": 1}),
        (" [1, 2] ", [1, 2]),
        ('"quoted"', "quoted"),
        ("42", 42),
        ("-1.5", -1.5),
        ("true", True),
        ("null", None),
        ("plain text", "plain text"),
        ("", ""),
        ('{"a": ', '{"a": '),
        ("NaN", "NaN"),
        ("1e999", "1e999"),
        ('{"x": Infinity}', '{"x": Infinity}'),
    ],
)
def test_tool_response_value(content: str, value: Any) -> None:
    assert gemini_wire.tool_response_value(content) == value


@pytest.mark.parametrize(
    ("model", "needed"),
    [
        ("gemini-2.5-flash", False),
        ("gemini-2.0-flash", False),
        ("gemini-1.5-pro", False),
        ("models/gemini-2.5-pro", False),
        ("gemini-3-pro-preview", True),
        ("gemini-3.1-flash", True),
        ("gemini-10-ultra", True),
        ("gemini-flash-latest", True),
    ],
)
def test_needs_thought_signatures(model: str, needed: bool) -> None:
    assert gemini_wire.needs_thought_signatures(model) is needed


@pytest.mark.parametrize(
    ("base", "model", "stream", "url"),
    [
        ("https://g.example", "gemini-2.5-flash", False, "https://g.example/v1beta/models/gemini-2.5-flash:generateContent"),
        ("https://g.example", "models/gemini-2.5-pro", True, "https://g.example/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"),
    ],
)
def test_generate_url(base: str, model: str, stream: bool, url: str) -> None:
    assert gemini_wire.generate_url(base, model, stream=stream) == url


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("https://generativelanguage.googleapis.com", "https://generativelanguage.googleapis.com"),
        ("https://generativelanguage.googleapis.com/", "https://generativelanguage.googleapis.com"),
        ("https://generativelanguage.googleapis.com/v1beta", "https://generativelanguage.googleapis.com"),
        ("https://generativelanguage.googleapis.com/v1/", "https://generativelanguage.googleapis.com"),
        ("http://127.0.0.1:8080/proxy/gemini", "http://127.0.0.1:8080/proxy/gemini"),
    ],
)
def test_normalize_base_url(given: str, normalized: str) -> None:
    assert normalize_base_url(given) == normalized


# --- replies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "finish"),
    [
        ("STOP", FinishReason.STOP),
        ("MAX_TOKENS", FinishReason.LENGTH),
        ("SAFETY", FinishReason.CONTENT_FILTER),
        ("RECITATION", FinishReason.CONTENT_FILTER),
        ("BLOCKLIST", FinishReason.CONTENT_FILTER),
        ("PROHIBITED_CONTENT", FinishReason.CONTENT_FILTER),
        ("SPII", FinishReason.CONTENT_FILTER),
        ("LANGUAGE", FinishReason.OTHER),
        ("OTHER", FinishReason.OTHER),
        ("TOO_MANY_TOOL_CALLS", FinishReason.OTHER),
        ("BRAND_NEW_REASON", FinishReason.OTHER),
        ("FINISH_REASON_UNSPECIFIED", FinishReason.UNSPECIFIED),
        (None, FinishReason.UNSPECIFIED),
    ],
)
def test_map_finish_reason(raw: object, finish: FinishReason) -> None:
    assert gemini_wire.map_finish_reason(raw) is finish


@pytest.mark.parametrize(
    ("raw", "usage"),
    [
        (None, None),
        ({"promptTokenCount": 3, "candidatesTokenCount": 9, "totalTokenCount": 12}, Usage(3, 9, 12)),
        # Thoughts are output; the cache is part of the prompt count.
        (
            {"promptTokenCount": 2412, "candidatesTokenCount": 58, "totalTokenCount": 2531, "cachedContentTokenCount": 2006, "thoughtsTokenCount": 61},
            Usage(prompt_tokens=2412, completion_tokens=119, total_tokens=2531, cached_prompt_tokens=2006),
        ),
        ({"promptTokenCount": 17, "totalTokenCount": 419, "thoughtsTokenCount": 402}, Usage(17, 402, 419)),
        ({"promptTokenCount": 5, "candidatesTokenCount": 2}, Usage(5, 2, 7)),
        ({"promptTokenCount": -1, "candidatesTokenCount": "x"}, Usage(0, 0, 0)),
    ],
)
def test_parse_usage(raw: object, usage: Usage | None) -> None:
    assert gemini_wire.parse_usage(raw) == usage


def test_parse_recorded_text_reply() -> None:
    answer = gemini_wire.parse_response(fixture_body("generate_content.json"), MODEL)

    assert answer.text == "Hello! How can I help you today?"
    assert answer.model == "gemini-2.5-flash"
    assert answer.usage == Usage(prompt_tokens=3, completion_tokens=33, total_tokens=36)
    assert answer.finish_reason is FinishReason.STOP and answer.tool_calls == ()


def test_parse_recorded_parallel_function_calls() -> None:
    answer = gemini_wire.parse_response(fixture_body("generate_content_function_calls.json"), MODEL)

    assert answer.tool_calls == (ToolCall("call_0", "query_metrics", METRICS_ARGS), ToolCall("call_1", "search_logs", LOGS_ARGS))
    assert answer.text == "" and answer.finish_reason is FinishReason.TOOL_CALLS, "Gemini says STOP after calls"
    assert answer.usage == Usage(prompt_tokens=2412, completion_tokens=119, total_tokens=2531, cached_prompt_tokens=2006)


def test_parse_recorded_json_schema_reply() -> None:
    answer = gemini_wire.parse_response(fixture_body("generate_content_json_schema.json"), MODEL)

    assert json.loads(answer.text)["severity"] == "high"
    assert answer.finish_reason is FinishReason.STOP
    assert answer.usage.completion_tokens == 71 + 188


def test_blocked_prompt_is_a_content_filter_answer() -> None:
    answer = gemini_wire.parse_response(fixture_body("generate_content_prompt_blocked.json"), MODEL)

    assert (answer.text, answer.finish_reason, answer.tool_calls) == ("", FinishReason.CONTENT_FILTER, ())
    assert answer.usage == Usage(9, 0, 9)


def test_safety_stop_without_parts() -> None:
    answer = gemini_wire.parse_response(fixture_body("generate_content_finish_safety.json"), MODEL)

    assert (answer.text, answer.finish_reason) == ("", FinishReason.CONTENT_FILTER)
    assert answer.usage == Usage(17, 402, 419)


def candidate_body(parts: list[dict[str, Any]] | None, finish: str | None = "STOP") -> dict[str, Any]:
    content: dict[str, Any] = {"role": "model"} if parts is None else {"role": "model", "parts": parts}
    candidate: dict[str, Any] = {"content": content, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2, "totalTokenCount": 6}, "modelVersion": "gemini-2.5-pro"}


@pytest.mark.parametrize(
    ("parts", "finish", "text", "calls", "finish_reason"),
    [
        pytest.param([{"text": "A"}, {"text": "B", "thoughtSignature": "c2ln"}], "STOP", "AB", (), FinishReason.STOP, id="texts-joined-signature-ignored"),
        pytest.param([{"text": "plan...", "thought": True}, {"text": "Answer"}], "STOP", "Answer", (), FinishReason.STOP, id="thought-summary-skipped"),
        pytest.param(None, "MAX_TOKENS", "", (), FinishReason.LENGTH, id="max-tokens-while-thinking"),
        pytest.param([{"text": "Half"}], "MAX_TOKENS", "Half", (), FinishReason.LENGTH, id="max-tokens"),
        pytest.param(
            [{"text": "Let me look."}, {"functionCall": {"name": "query_metrics", "args": METRICS_ARGS}}],
            "STOP", "Let me look.", (ToolCall("call_0", "query_metrics", METRICS_ARGS),), FinishReason.TOOL_CALLS, id="text-then-call",
        ),
        pytest.param([{"functionCall": {"name": "now"}}], "STOP", "", (ToolCall("call_0", "now", {}),), FinishReason.TOOL_CALLS, id="call-without-args"),
        pytest.param(
            [{"functionCall": {"name": "structured_response", "args": {"service": "checkout", "severity": "high"}}}],
            "STOP", '{"service": "checkout", "severity": "high"}', (), FinishReason.STOP, id="response-function-is-the-answer",
        ),
        pytest.param(
            [{"functionCall": {"name": "structured_response", "args": {"severity": "low"}}}, {"functionCall": {"name": "search_logs", "args": LOGS_ARGS}}],
            "STOP", '{"severity": "low"}', (ToolCall("call_1", "search_logs", LOGS_ARGS),), FinishReason.TOOL_CALLS, id="response-function-and-a-call",
        ),
        pytest.param([{"text": "x"}], None, "x", (), FinishReason.UNSPECIFIED, id="no-finish-reason"),
    ],
)
def test_parse_response_parts(parts: list[dict[str, Any]] | None, finish: str | None, text: str, calls: tuple[ToolCall, ...], finish_reason: FinishReason) -> None:
    answer = gemini_wire.parse_response(candidate_body(parts, finish), MODEL)

    assert (answer.text, answer.tool_calls, answer.finish_reason) == (text, calls, finish_reason)
    assert answer.model == "gemini-2.5-pro" and answer.usage == Usage(4, 2, 6)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        pytest.param(candidate_body([{"functionCall": {"name": "f", "args": "not an object"}}]), ErrorKind.INVALID_MODEL_OUTPUT, id="args-not-an-object"),
        pytest.param(candidate_body([{"functionCall": {"args": {}}}]), ErrorKind.INVALID_MODEL_OUTPUT, id="call-without-name"),
        pytest.param(candidate_body(None, "MALFORMED_FUNCTION_CALL"), ErrorKind.INVALID_MODEL_OUTPUT, id="malformed-function-call"),
        pytest.param({"usageMetadata": {"promptTokenCount": 3}}, ErrorKind.MODEL_UNAVAILABLE, id="no-candidates"),
        pytest.param(fixture_body("error_internal.json"), ErrorKind.MODEL_UNAVAILABLE, id="error-object-in-a-200"),
    ],
)
def test_parse_response_failures(body: dict[str, Any], kind: ErrorKind) -> None:
    with pytest.raises(LLMError) as raised:
        gemini_wire.parse_response(body, MODEL)
    assert raised.value.kind is kind and raised.value.model == MODEL


# --- stream folding -------------------------------------------------------------------------


def fold(name: str | None = None, *, payloads: list[Any] | None = None) -> tuple[list[StreamDelta], gemini_wire.StreamState]:
    state = gemini_wire.StreamState(requested_model=MODEL)
    deltas = []
    chunks = payloads if payloads is not None else event_payloads(fixture_bytes(name or ""))
    for chunk in chunks:
        delta = gemini_wire.parse_stream_data(json.dumps(chunk), state)
        if delta is not None:
            deltas.append(delta)
    return deltas, state


def test_recorded_text_stream_with_the_partless_finish_chunk() -> None:
    deltas, state = fold("generate_content_stream.sse")

    assert [d.text for d in deltas] == ["Hello!", " How can I help", " you today?"], "the part-less finish chunk adds nothing"
    assert state.finished
    answer = state.answer()
    assert answer.text == "Hello! How can I help you today?" and answer.finish_reason is FinishReason.STOP
    assert answer.usage == Usage(prompt_tokens=3, completion_tokens=33, total_tokens=36), "the last cumulative usage, not a sum"


def test_recorded_function_call_stream_one_whole_call_per_chunk() -> None:
    deltas, state = fold("generate_content_function_calls_stream.sse")

    assert [d.tool_calls for d in deltas] == [(ToolCall("call_0", "query_metrics", METRICS_ARGS),), (ToolCall("call_1", "search_logs", LOGS_ARGS),)]
    answer = state.answer()
    assert answer.tool_calls == (ToolCall("call_0", "query_metrics", METRICS_ARGS), ToolCall("call_1", "search_logs", LOGS_ARGS))
    assert answer.finish_reason is FinishReason.TOOL_CALLS
    assert answer.usage == Usage(prompt_tokens=2412, completion_tokens=119, total_tokens=2531, cached_prompt_tokens=2006)


def test_parallel_calls_in_one_chunk() -> None:
    recorded = fixture_body("generate_content_function_calls.json")  # both calls in one candidate, as gemini-2.5-flash streams them

    deltas, state = fold(payloads=[recorded])

    assert [len(d.tool_calls) for d in deltas] == [2] and [c.id for c in state.answer().tool_calls] == ["call_0", "call_1"]


def test_recorded_json_schema_stream_cut_inside_keys() -> None:
    deltas, state = fold("generate_content_json_schema_stream.sse")

    assert len(deltas) == 5
    assert json.loads("".join(d.text for d in deltas)) == json.loads(state.answer().text)
    assert state.answer().usage.completion_tokens == 71 + 188


def test_structured_response_function_streams_as_text() -> None:
    chunk = candidate_body([{"functionCall": {"name": "structured_response", "args": {"severity": "low"}}}])

    deltas, state = fold(payloads=[chunk])

    assert [(d.text, d.tool_calls) for d in deltas] == [('{"severity": "low"}', ())]
    assert (state.answer().text, state.answer().finish_reason) == ('{"severity": "low"}', FinishReason.STOP)


def test_a_stream_without_its_finish_chunk_is_not_finished() -> None:
    payloads = event_payloads(fixture_bytes("generate_content_stream.sse"))[:-1]

    deltas, state = fold(payloads=payloads)

    assert "".join(d.text for d in deltas) == "Hello! How can I help you today?" and not state.finished


def test_blocked_prompt_in_a_stream() -> None:
    deltas, state = fold(payloads=[fixture_body("generate_content_prompt_blocked.json")])

    assert deltas == [] and state.finished and state.answer().finish_reason is FinishReason.CONTENT_FILTER


def test_error_mid_stream_raises() -> None:
    payloads = event_payloads(fixture_bytes("generate_content_stream.sse"))[:2] + event_payloads(fixture_bytes("stream_error_internal.sse"))

    with pytest.raises(LLMError) as raised:
        fold(payloads=payloads)

    error = raised.value
    assert error.kind is ErrorKind.MODEL_UNAVAILABLE and error.retryable
    assert "mid-stream" in error.message and "internal error" in error.message
    assert error.metadata == {"upstream_error_type": "INTERNAL"}, "no HTTP status: the stream's was 200"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ({"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}, ErrorKind.RATE_LIMIT_EXCEEDED),
        ({"message": "overloaded", "status": "UNAVAILABLE"}, ErrorKind.MODEL_UNAVAILABLE),
        ({"message": "bad", "status": "INVALID_ARGUMENT"}, ErrorKind.INVALID_REQUEST),
        ({"message": "who knows"}, ErrorKind.MODEL_UNAVAILABLE),
    ],
)
def test_stream_error_by_code_or_status(error: dict[str, Any], kind: ErrorKind) -> None:
    assert gemini_wire.stream_error(error, model=MODEL).kind is kind


def test_malformed_stream_event() -> None:
    with pytest.raises(LLMError) as raised:
        gemini_wire.parse_stream_data('{"candidates": [', gemini_wire.StreamState(requested_model=MODEL))
    assert raised.value.kind is ErrorKind.MODEL_UNAVAILABLE


# --- errors ---------------------------------------------------------------------------------


def http_error(status: int, fixture: str | dict[str, Any], headers: dict[str, str] | None = None, secrets: tuple[str, ...] = ()) -> LLMError:
    body = fixture if isinstance(fixture, dict) else fixture_body(fixture)
    return gemini_wire.http_error(status, json.dumps(body), headers or {}, model=MODEL, secrets=secrets)


@pytest.mark.parametrize(
    ("status", "fixture", "kind", "upstream_auth", "retryable", "metadata"),
    [
        pytest.param(400, "error_api_key_invalid.json", ErrorKind.AUTHENTICATION_FAILED, True, False,
                     {"upstream_status": "400", "upstream_error_type": "INVALID_ARGUMENT", "upstream_reason": "API_KEY_INVALID"}, id="400-wrong-key"),
        pytest.param(401, "error_unauthenticated.json", ErrorKind.AUTHENTICATION_FAILED, True, False,
                     {"upstream_status": "401", "upstream_error_type": "UNAUTHENTICATED", "upstream_reason": "ACCESS_TOKEN_TYPE_UNSUPPORTED"}, id="401"),
        pytest.param(403, "error_unregistered_caller.json", ErrorKind.AUTHENTICATION_FAILED, True, False,
                     {"upstream_status": "403", "upstream_error_type": "PERMISSION_DENIED"}, id="403-no-key"),
        pytest.param(429, "error_rate_limit.json", ErrorKind.RATE_LIMIT_EXCEEDED, False, True,
                     {"upstream_status": "429", "upstream_error_type": "RESOURCE_EXHAUSTED"}, id="429"),
        pytest.param(400, "error_context_too_large.json", ErrorKind.CONTEXT_TOO_LARGE, False, False,
                     {"upstream_status": "400", "upstream_error_type": "INVALID_ARGUMENT", "prompt_tokens": "1200293", "context_window": "1048576"},
                     id="400-context"),
        pytest.param(404, "error_model_not_found.json", ErrorKind.CONFIGURATION_ERROR, False, False,
                     {"upstream_status": "404", "upstream_error_type": "NOT_FOUND"}, id="404"),
        pytest.param(500, "error_internal.json", ErrorKind.MODEL_UNAVAILABLE, False, True, {"upstream_status": "500", "upstream_error_type": "INTERNAL"}, id="500"),
        pytest.param(503, "error_unavailable.json", ErrorKind.MODEL_UNAVAILABLE, False, True,
                     {"upstream_status": "503", "upstream_error_type": "UNAVAILABLE"}, id="503"),
    ],
)
def test_error_fixtures(status: int, fixture: str, kind: ErrorKind, upstream_auth: bool, retryable: bool, metadata: dict[str, str]) -> None:
    error = http_error(status, fixture)

    assert error.kind is kind
    assert error.upstream_auth is upstream_auth
    assert error.retryable is retryable
    assert error.metadata == metadata
    assert error.model == MODEL
    assert error.message.startswith(f"gemini model {MODEL!r} returned HTTP {status}: ")
    assert fixture_body(fixture)["error"]["message"][:60] in error.message


@pytest.mark.parametrize(
    ("delay", "headers", "seconds"),
    [
        ("7s", {}, 7.0),
        ("1.500s", {}, 1.5),
        ({"seconds": 2, "nanos": 500000000}, {}, 2.5),
        ("soon", {}, None),
        ("99999s", {}, None),
        (None, {}, None),
        (None, {"retry-after": "3"}, 3.0),
        ("7s", {"retry-after": "3"}, 7.0),
    ],
)
def test_rate_limit_retry_delay_from_retry_info(delay: object, headers: dict[str, str], seconds: float | None) -> None:
    body = fixture_body("error_rate_limit.json")
    for detail in body["error"]["details"]:
        if detail["@type"].endswith("RetryInfo"):
            if delay is None:
                body["error"]["details"].remove(detail)
            else:
                detail["retryDelay"] = delay
            break

    error = http_error(429, body, headers)

    assert error.kind is ErrorKind.RATE_LIMIT_EXCEEDED
    assert error.retry_after_s == (None if seconds is None else pytest.approx(seconds))


@pytest.mark.parametrize(
    ("message", "metadata"),
    [
        ("The input token count (1200293) exceeds the maximum number of tokens allowed (1048576).", {"prompt_tokens": "1200293", "context_window": "1048576"}),
        ("The input token count exceeds the maximum number of tokens allowed 1048576.", {}),
        ("Unknown name 'max_tokens'", None),
    ],
)
def test_context_overflow_metadata(message: str, metadata: dict[str, str] | None) -> None:
    assert gemini_wire.context_overflow_metadata(message) == metadata


def test_bad_request_names_the_upstream_field() -> None:
    body = {
        "error": {
            "code": 400,
            "message": 'Invalid JSON payload received. Unknown name "max_tokens" at \'generation_config\': Cannot find field.',
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "generation_config", "description": "Unknown name"}]}],
        }
    }

    error = http_error(400, body)

    assert error.kind is ErrorKind.INVALID_REQUEST and not error.retryable
    assert [(v.field, v.description) for v in error.field_violations] == [("upstream.generation_config", "Unknown name")]


def test_failed_precondition_is_our_configuration() -> None:
    body = {"error": {"code": 400, "message": "User location is not supported for the API use.", "status": "FAILED_PRECONDITION"}}

    assert http_error(400, body).kind is ErrorKind.CONFIGURATION_ERROR


def test_non_json_error_body() -> None:
    error = gemini_wire.http_error(502, "<html>Bad Gateway</html>", {}, model=MODEL)

    assert error.kind is ErrorKind.MODEL_UNAVAILABLE and "Bad Gateway" in error.message and error.metadata == {"upstream_status": "502"}


def test_upstream_strings_are_redacted_before_they_are_cut() -> None:
    key = "AIzaSyTESTONLY-wire-0123456789abcdefghij"
    body = {
        "error": {
            "code": 400,
            "message": "x" * 290 + key,
            "status": key,
            "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": key},
                {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": key, "description": key}]},
            ],
        }
    }

    error = http_error(400, body, secrets=(key,))

    shown = repr((error.message, error.metadata, error.field_violations))
    assert key[:10] not in shown and "[redacted]" in shown
