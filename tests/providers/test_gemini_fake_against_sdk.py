"""The Gemini fake is faithful: Google's official ``google-genai`` SDK (a test-only dependency)
parses its replies, streams and errors into the same objects and exception classes it produces
for the real Generative Language API, and sends it requests the fake accepts."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

import aiohttp
import pydantic
import pytest
from google import genai
from google.genai import errors, types

from ..fakes import Ending, FakeGemini, FunctionCallSpec, GeminiRequest, TokenCounts
from ..fakes.gemini_fake import event_payloads, fixture_body, fixture_bytes, recorded_signature

# The SDK's own aiohttp session subclass warns on import and use; not this project's concern.
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")

# Shaped like a real key (AIza + 35 characters) so redaction patterns are exercised; never valid.
GEMINI_KEY = "AIzaSyTESTONLYq7Vx2mR9sK4pL8wN3bZ6yH1cD"
MODEL = "gemini-2.5-flash"
RECORDED_TEXT = "Hello! How can I help you today?"
METRICS_INPUT = {"service": "checkout", "metric": "latency_p95_ms", "window": "1h"}
LOGS_INPUT = {"service": "checkout", "query": 'level:error "payment declined"', "limit": 20}
INCIDENT = "Checkout is slow since 10:05. What is going on?"


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
TOOLS: list[types.Tool | Any] = [
    types.Tool(
        function_declarations=[
            types.FunctionDeclaration(
                name="query_metrics",
                description="Read a service metric over a window.",
                parameters_json_schema={
                    "type": "object",
                    "properties": {"service": {"type": "string"}, "metric": {"type": "string"}, "window": {"type": "string"}},
                    "required": ["service", "metric", "window"],
                },
            ),
            types.FunctionDeclaration(
                name="search_logs",
                description="Search a service's logs.",
                parameters=types.Schema(
                    type=types.Type.OBJECT,
                    properties={"service": types.Schema(type=types.Type.STRING), "query": types.Schema(type=types.Type.STRING), "limit": types.Schema(type=types.Type.INTEGER)},
                    required=["service", "query", "limit"],
                ),
            ),
        ]
    )
]


@pytest.fixture
async def gemini_fake() -> AsyncIterator[FakeGemini]:
    fake = await FakeGemini(api_key=GEMINI_KEY).start()
    yield fake
    await fake.stop()


def _client(fake: FakeGemini, key: str = GEMINI_KEY, api_version: str = "v1beta") -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=fake.url, api_version=api_version))


@pytest.fixture
async def client(gemini_fake: FakeGemini) -> AsyncIterator[genai.client.AsyncClient]:
    sdk = _client(gemini_fake)
    yield sdk.aio
    await sdk.aio.aclose()


async def _post(fake: FakeGemini, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{fake.url}{path}", json=body, headers={"x-goog-api-key": GEMINI_KEY, **(headers or {})}) as response:
            return response.status, response.headers["content-type"], await response.read()


def _calls(response: types.GenerateContentResponse) -> list[tuple[str | None, dict[str, Any] | None]]:
    return [(call.name, call.args) for call in response.function_calls or []]


# --- text ---------------------------------------------------------------------------------------


async def test_sdk_parses_the_recorded_answer_and_its_usage(client: genai.client.AsyncClient, gemini_fake: FakeGemini) -> None:
    response = await client.models.generate_content(model=MODEL, contents="Hello!")

    assert response.text == RECORDED_TEXT
    candidate = (response.candidates or [])[0]
    assert candidate.finish_reason == types.FinishReason.STOP and candidate.index == 0
    assert candidate.content is not None and candidate.content.role == "model"
    usage = response.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.thoughts_token_count, usage.total_token_count) == (3, 9, 24, 36)
    assert usage.cached_content_token_count is None
    assert (response.model_version, response.response_id) == ("gemini-2.5-flash", "Q2f9aKuJEdSfz7IP4dLRsAk")
    sent = gemini_fake.generation_requests[-1]
    assert (sent.method, sent.path, sent.model, sent.method_name, sent.api_version) == ("POST", f"/v1beta/models/{MODEL}:generateContent", MODEL, "generateContent", "v1beta")
    assert sent.headers["x-goog-api-key"] == GEMINI_KEY and sent.headers["content-type"] == "application/json"
    assert sent.headers["x-goog-api-client"].startswith("google-genai-sdk/") and "authorization" not in sent.headers
    assert sent.body == {"contents": [{"parts": [{"text": "Hello!"}], "role": "user"}]}


async def test_recorded_bodies_are_replayed_byte_for_byte(gemini_fake: FakeGemini) -> None:
    plain = await _post(gemini_fake, f"/v1beta/models/{MODEL}:generateContent", {"contents": [{"parts": [{"text": "Hello!"}]}]})
    stream = await _post(gemini_fake, f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse", {"contents": [{"parts": [{"text": "Hello!"}]}]})

    assert plain == (200, "application/json; charset=UTF-8", fixture_bytes("generate_content.json"))
    assert stream == (200, "text/event-stream", fixture_bytes("generate_content_stream.sse"))
    assert stream[2].count(b"\r\n\r\n") == 4 and b"\n\n" not in stream[2].replace(b"\r\n\r\n", b"")


async def test_sdk_sends_config_fields_in_the_documented_shape(client: genai.client.AsyncClient, gemini_fake: FakeGemini) -> None:
    gemini_fake.reply_text("Bonjour", TokenCounts(prompt=4096, completion=40, cached=3072), thoughts=35)
    config = types.GenerateContentConfig(
        system_instruction="Answer in French.", temperature=0.2, top_p=0.9, max_output_tokens=64, stop_sequences=["END"], seed=7
    )

    response = await client.models.generate_content(model="gemini-2.5-pro", contents="Hello!", config=config)

    assert response.text == "Bonjour"
    usage = response.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.cached_content_token_count, usage.candidates_token_count, usage.thoughts_token_count, usage.total_token_count) == (
        4096, 3072, 5, 35, 4136
    )
    assert [(d.modality, d.token_count) for d in usage.cache_tokens_details or []] == [(types.MediaModality.TEXT, 3072)]
    sent = gemini_fake.generation_requests[-1]
    assert sent.model == "gemini-2.5-pro"
    assert sent.body["systemInstruction"] == {"parts": [{"text": "Answer in French."}], "role": "user"}
    assert sent.body["generationConfig"] == {"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 64, "stopSequences": ["END"], "seed": 7}


async def test_sdk_reads_max_tokens_spent_thinking_as_no_text(client: genai.client.AsyncClient, gemini_fake: FakeGemini) -> None:
    gemini_fake.reply_text("", TokenCounts(prompt=12, completion=64), thoughts=64, finish_reason="MAX_TOKENS")

    response = await client.models.generate_content(model=MODEL, contents="Prove Fermat.", config={"max_output_tokens": 64})

    candidate = (response.candidates or [])[0]
    assert response.text is None and candidate.finish_reason == types.FinishReason.MAX_TOKENS
    assert candidate.content is not None and candidate.content.parts is None
    usage = response.usage_metadata
    assert usage is not None and (usage.candidates_token_count, usage.thoughts_token_count, usage.total_token_count) == (0, 64, 76)


@pytest.mark.parametrize("scenario", ["recorded", "scenario", "finish-alone"])
async def test_sdk_joins_stream_chunks(client: genai.client.AsyncClient, gemini_fake: FakeGemini, scenario: str) -> None:
    expected, counts = RECORDED_TEXT, (3, 9, 24, 36)
    if scenario != "recorded":
        counts_in = TokenCounts(prompt=10, completion=30, cached=4)
        gemini_fake.stream_text(["Grüße ", "aus ", "Köln 🚀"], counts_in, thoughts=18, split_utf8=True, finish_alone=scenario == "finish-alone")
        expected, counts = "Grüße aus Köln 🚀", (10, 12, 18, 40)

    chunks = [chunk async for chunk in await client.models.generate_content_stream(model=MODEL, contents="Hello!")]

    assert "".join(chunk.text or "" for chunk in chunks) == expected
    finishes = [(chunk.candidates or [])[0].finish_reason for chunk in chunks]
    assert finishes[-1] == types.FinishReason.STOP and set(finishes[:-1]) == {None}
    assert len(chunks) == (4 if scenario in ("recorded", "finish-alone") else 3)
    running = [chunk.usage_metadata.candidates_token_count or 0 for chunk in chunks if chunk.usage_metadata]
    assert running == sorted(running) and len(running) == len(chunks), "every chunk carries the cumulative usage"
    last = chunks[-1].usage_metadata
    assert last is not None and (last.prompt_token_count, last.candidates_token_count, last.thoughts_token_count, last.total_token_count) == counts
    assert len({chunk.response_id for chunk in chunks}) == 1
    sent = gemini_fake.generation_requests[-1]
    assert (sent.path, sent.query, sent.method_name) == (f"/v1beta/models/{MODEL}:streamGenerateContent", {"alt": "sse"}, "streamGenerateContent")


async def test_reply_text_streams_when_the_request_streams(client: genai.client.AsyncClient, gemini_fake: FakeGemini) -> None:
    gemini_fake.reply_text("One answer", TokenCounts(prompt=5, completion=2))

    chunks = [chunk async for chunk in await client.models.generate_content_stream(model=MODEL, contents="Hello!")]

    assert [chunk.text for chunk in chunks] == ["One answer"] and (chunks[0].candidates or [])[0].finish_reason == types.FinishReason.STOP


async def test_stream_without_alt_sse_is_one_json_array(gemini_fake: FakeGemini) -> None:
    status, content_type, raw = await _post(gemini_fake, f"/v1beta/models/{MODEL}:streamGenerateContent", {"contents": [{"parts": [{"text": "Hi"}]}]})

    assert (status, content_type) == (200, "application/json; charset=UTF-8")
    assert json.loads(raw) == event_payloads(fixture_bytes("generate_content_stream.sse"))


async def test_sdk_reads_blocked_prompts_and_safety_stops(client: genai.client.AsyncClient, gemini_fake: FakeGemini) -> None:
    gemini_fake.reply_blocked()
    gemini_fake.reply_safety_stop()

    blocked = await client.models.generate_content(model=MODEL, contents="…")
    stopped = await client.models.generate_content(model=MODEL, contents="…")

    assert blocked.candidates is None and blocked.text is None
    assert blocked.prompt_feedback is not None and blocked.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT
    candidate = (stopped.candidates or [])[0]
    assert stopped.text is None and candidate.finish_reason == types.FinishReason.SAFETY
    assert [(r.category, r.blocked) for r in candidate.safety_ratings or [] if r.blocked] == [(types.HarmCategory.HARM_CATEGORY_DANGEROUS_CONTENT, True)]


async def test_the_sdks_default_api_version_v1_is_served_too(gemini_fake: FakeGemini) -> None:
    sdk = genai.Client(api_key=GEMINI_KEY, http_options={"base_url": gemini_fake.url})
    try:
        response = await sdk.aio.models.generate_content(model=MODEL, contents="Hello!")
    finally:
        await sdk.aio.aclose()

    assert response.text == RECORDED_TEXT
    assert gemini_fake.generation_requests[-1].path == f"/v1/models/{MODEL}:generateContent"


async def test_sdk_lists_and_gets_models(client: genai.client.AsyncClient, gemini_fake: FakeGemini) -> None:
    names = [model.name async for model in await client.models.list()]
    paged = [model.name async for model in await client.models.list(config={"page_size": 3})]
    flash = await client.models.get(model=MODEL)

    expected = ["models/gemini-2.5-flash", "models/gemini-2.5-pro", "models/gemini-2.5-flash-lite", "models/gemini-embedding-001"]
    assert names == expected and paged == expected
    listed = [r for r in gemini_fake.requests if isinstance(r, GeminiRequest) and r.path == "/v1beta/models"]
    assert [r.query.get("pageSize") for r in listed] == [None, "3", "3"] and "pageToken" in listed[2].query
    assert (flash.name, flash.input_token_limit, flash.output_token_limit, flash.thinking) == ("models/gemini-2.5-flash", 1048576, 65536, True)
    with pytest.raises(errors.ClientError) as raised:
        await client.models.get(model="gemini-0.9-nonexistent")
    assert (raised.value.code, raised.value.status) == (404, "NOT_FOUND")
    assert gemini_fake.generation_requests == [], "listing and getting models are not generation requests"


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "exception", "code", "status", "wording"),
    [
        (lambda fake: fake.fail_auth(), errors.ClientError, 400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
        (lambda fake: fake.fail_auth(401), errors.ClientError, 401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
        (lambda fake: fake.fail_auth(403), errors.ClientError, 403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers"),
        (lambda fake: fake.rate_limit(3), errors.ClientError, 429, "RESOURCE_EXHAUSTED", "You exceeded your current quota"),
        (
            lambda fake: fake.context_too_large(1_200_293, 1_048_576),
            errors.ClientError,
            400,
            "INVALID_ARGUMENT",
            "The input token count (1200293) exceeds the maximum number of tokens allowed (1048576).",
        ),
        (lambda fake: fake.server_error(500), errors.ServerError, 500, "INTERNAL", "An internal error has occurred."),
        (lambda fake: fake.server_error(503), errors.ServerError, 503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
        (lambda fake: fake.model_not_found(), errors.ClientError, 404, "NOT_FOUND", "models/gemini-0.9-nonexistent is not found for API version v1beta"),
    ],
    ids=["400-key", "401", "403", "429", "context", "500", "503", "404"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_sdk_raises_its_error_classes(
    client: genai.client.AsyncClient, gemini_fake: FakeGemini, plan: Any, exception: type[errors.APIError], code: int, status: str, wording: str, stream: bool
) -> None:
    plan(gemini_fake)
    model = "gemini-0.9-nonexistent" if code == 404 else MODEL

    with pytest.raises(exception) as raised:
        if stream:
            async for _ in await client.models.generate_content_stream(model=model, contents="Hello!"):
                pass
        else:
            await client.models.generate_content(model=model, contents="Hello!")

    assert (raised.value.code, raised.value.status) == (code, status)
    assert raised.value.message is not None and raised.value.message.startswith(wording)
    details = raised.value.details["error"].get("details")
    if code == 429:
        retry = [d for d in details if d["@type"] == "type.googleapis.com/google.rpc.RetryInfo"]
        assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}]
        assert [d["@type"].rsplit(".", 1)[1] for d in details] == ["QuotaFailure", "Help", "RetryInfo"]
    if status == "INVALID_ARGUMENT" and code == 400 and "API key" in wording:
        assert details[0]["reason"] == "API_KEY_INVALID"
    if "input token count" in wording:
        assert details is None, "the real context-too-large reply carries no details"


async def test_fake_checks_the_key_as_the_api_does(gemini_fake: FakeGemini) -> None:
    wrong = _client(gemini_fake, key="AIzaSyWRONGq7Vx2mR9sK4pL8wN3bZ6yH1cD00")
    try:
        with pytest.raises(errors.ClientError) as raised:
            await wrong.aio.models.generate_content(model=MODEL, contents="Hello!")
    finally:
        await wrong.aio.aclose()
    assert (raised.value.code, raised.value.status) == (400, "INVALID_ARGUMENT")

    body = {"contents": [{"parts": [{"text": "Hi"}]}]}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gemini_fake.url}/v1beta/models/{MODEL}:generateContent", json=body) as missing:
            assert (missing.status, (await missing.json())["error"]["status"]) == (403, "PERMISSION_DENIED")
        async with session.post(f"{gemini_fake.url}/v1beta/models/{MODEL}:generateContent", json=body, headers={"Authorization": f"Bearer {GEMINI_KEY}"}) as bearer:
            assert (bearer.status, (await bearer.json())["error"]["details"][0]["reason"]) == (401, "ACCESS_TOKEN_TYPE_UNSUPPORTED")
        async with session.post(f"{gemini_fake.url}/v1beta/models/{MODEL}:generateContent?key={GEMINI_KEY}", json=body) as in_query:
            assert in_query.status == 200, "the documented ?key= parameter works too"


async def test_sdk_raises_on_an_error_mid_stream(client: genai.client.AsyncClient, gemini_fake: FakeGemini) -> None:
    gemini_fake.error_mid_stream(["Once", " upon"])

    received: list[str] = []
    with pytest.raises(errors.ServerError) as raised:
        async for chunk in await client.models.generate_content_stream(model=MODEL, contents="Tell a story."):
            received.append(chunk.text or "")

    assert "".join(received) == "Once upon"
    assert (raised.value.code, raised.value.status) == (500, "INTERNAL")


@pytest.mark.parametrize("ending", ["cut", "stall"])
async def test_sdk_fails_on_a_cut_or_stalled_stream(gemini_fake: FakeGemini, ending: str) -> None:
    sdk = genai.Client(api_key=GEMINI_KEY, http_options=types.HttpOptions(base_url=gemini_fake.url, api_version="v1beta", timeout=1500))
    if ending == "cut":
        gemini_fake.cut_stream(["Once"])
    else:
        gemini_fake.stall_stream(["Once"])

    received: list[str] = []
    try:
        with pytest.raises((aiohttp.ClientError, TimeoutError)):
            async for chunk in await sdk.aio.models.generate_content_stream(model=MODEL, contents="Tell a story."):
                received.append(chunk.text or "")
    finally:
        await sdk.aio.aclose()
    assert received == ["Once"], "the first chunk arrived, then no finish"


# --- function calling -------------------------------------------------------------------------


async def test_sdk_parses_the_recorded_parallel_function_calls(client: genai.client.AsyncClient, gemini_fake: FakeGemini) -> None:
    gemini_fake.reply_function_calls()
    config = types.GenerateContentConfig(
        tools=TOOLS, tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.AUTO))
    )

    response = await client.models.generate_content(model=MODEL, contents=INCIDENT, config=config)

    assert _calls(response) == [("query_metrics", METRICS_INPUT), ("search_logs", LOGS_INPUT)]
    assert all(call.id is None for call in response.function_calls or []), "the Gemini API gives calls no id"
    candidate = (response.candidates or [])[0]
    assert candidate.finish_reason == types.FinishReason.STOP
    # The fake sends finishMessage as the API does; this SDK maps it for Vertex AI only.
    assert fixture_body("generate_content_function_calls.json")["candidates"][0]["finishMessage"] == "Model generated function call(s)."
    assert candidate.finish_message is None
    parts = (candidate.content.parts if candidate.content else None) or []
    assert parts[0].thought_signature == base64.b64decode(recorded_signature()) and parts[1].thought_signature is None
    usage = response.usage_metadata
    assert usage is not None
    assert (usage.prompt_token_count, usage.cached_content_token_count, usage.candidates_token_count, usage.thoughts_token_count, usage.total_token_count) == (
        2412, 2006, 58, 61, 2531
    )
    sent = gemini_fake.generation_requests[-1].body
    declarations = sent["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in declarations] == ["query_metrics", "search_logs"]
    assert declarations[0]["parameters_json_schema"]["required"] == ["service", "metric", "window"], "the SDK sends this one name in snake_case"
    assert declarations[1]["parameters"] == {
        "properties": {"service": {"type": "STRING"}, "query": {"type": "STRING"}, "limit": {"type": "INTEGER"}},
        "required": ["service", "query", "limit"],
        "type": "OBJECT",
    }
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}


async def test_recorded_function_call_stream_matches_the_plain_answer(client: genai.client.AsyncClient, gemini_fake: FakeGemini) -> None:
    gemini_fake.stream_function_calls()

    chunks = [chunk async for chunk in await client.models.generate_content_stream(model=MODEL, contents=INCIDENT, config=types.GenerateContentConfig(tools=TOOLS))]

    plain = types.GenerateContentResponse.model_validate(fixture_body("generate_content_function_calls.json"))
    assert [call for chunk in chunks for call in _calls(chunk)] == _calls(plain), "one whole call per chunk, arguments never fragmented"
    assert [len(_calls(chunk)) for chunk in chunks] == [1, 1]
    assert (chunks[-1].candidates or [])[0].finish_reason == types.FinishReason.STOP
    last = chunks[-1].usage_metadata
    assert last is not None and last.total_token_count == 2531 and last.cached_content_token_count == 2006


@pytest.mark.parametrize("one_chunk", [False, True], ids=["chunk-per-call", "one-chunk"])
async def test_sdk_reads_scripted_function_calls_in_both_shapes(client: genai.client.AsyncClient, gemini_fake: FakeGemini, one_chunk: bool) -> None:
    calls: list[FunctionCallSpec] = [
        ("search_logs", {"service": "café-api", "query": 'msg:"délai dépassé" 🚨', "limit": 5}),
        ("query_metrics", {"service": "café-api", "metric": "errors_total", "window": "15m"}),
    ]
    counts = TokenCounts(prompt=900, completion=70, cached=600)
    gemini_fake.reply_function_calls(calls, counts, text="Checking.", thoughts=20, one_chunk=one_chunk)
    gemini_fake.reply_function_calls(calls, counts, text="Checking.", thoughts=20, signature=None)
    gemini_fake.stream_function_calls(calls, counts, thoughts=20, one_chunk=one_chunk, split_utf8=True)

    streamed = [chunk async for chunk in await client.models.generate_content_stream(model=MODEL, contents=INCIDENT)]
    plain = await client.models.generate_content(model=MODEL, contents=INCIDENT)
    forced = [chunk async for chunk in await client.models.generate_content_stream(model=MODEL, contents=INCIDENT)]

    for chunks in (streamed, forced):
        assert [call for chunk in chunks for call in _calls(chunk)] == calls
        usage = chunks[-1].usage_metadata
        assert usage is not None and (usage.prompt_token_count, usage.cached_content_token_count, usage.candidates_token_count, usage.thoughts_token_count) == (900, 600, 50, 20)
    assert "".join(chunk.text or "" for chunk in streamed if not chunk.function_calls) == "Checking."
    assert _calls(plain) == calls and plain.text == "Checking."
    assert all(part.thought_signature is None for part in (plain.candidates or [])[0].content.parts or [])  # type: ignore[union-attr]
    assert len([chunk for chunk in forced if chunk.function_calls]) == (1 if one_chunk else 2)


async def test_fake_records_function_responses_and_refuses_what_the_api_refuses(client: genai.client.AsyncClient, gemini_fake: FakeGemini) -> None:
    recorded = fixture_body("generate_content_function_calls.json")["candidates"][0]["content"]
    model_turn = types.Content.model_validate(recorded)
    answers = [
        types.Part.from_function_response(name="query_metrics", response={"p95_ms": 1830}),
        types.Part.from_function_response(name="search_logs", response={"output": "37 matches"}),
    ]
    user = types.Content(role="user", parts=[types.Part.from_text(text=INCIDENT)])
    gemini_fake.reply_text("Roll back release 2025.10.27-1.", TokenCounts(prompt=2600, completion=9))

    history = [user, model_turn, types.Content(role="user", parts=answers)]
    response = await client.models.generate_content(model=MODEL, contents=history, config=types.GenerateContentConfig(tools=TOOLS))

    assert response.text == "Roll back release 2025.10.27-1."
    sent = gemini_fake.generation_requests[-1].body["contents"]
    first = sent[1]["parts"][0]
    assert first["functionCall"] == {"args": METRICS_INPUT, "name": "query_metrics"}
    # The SDK sends the signature back in URL-safe base64 (protobuf's JSON mapping accepts both).
    assert base64.urlsafe_b64decode(first["thoughtSignature"]) == base64.b64decode(recorded_signature())
    assert sent[2] == {
        "parts": [
            {"functionResponse": {"name": "query_metrics", "response": {"p95_ms": 1830}}},
            {"functionResponse": {"name": "search_logs", "response": {"output": "37 matches"}}},
        ],
        "role": "user",
    }

    refusals = [
        ([user, model_turn, types.Content(role="user", parts=answers[:1])], "the number of function response parts is equal to the number of function call parts"),
        ([user, types.Content(role="user", parts=answers[:1])], "function response turn comes immediately after a function call turn"),
        ([user, types.Content(role="model", parts=[types.Part.from_text(text="Let me check.")]), model_turn], "function call turn comes immediately after a user turn"),
        ([types.Content(role="assistant", parts=[types.Part.from_text(text="Hi")])], "Please use a valid role: user, model."),
    ]
    gemini_fake.reply_text("kept for the next valid request", TokenCounts(prompt=1, completion=1))
    for contents, wording in refusals:
        with pytest.raises(errors.ClientError) as raised:
            await client.models.generate_content(model=MODEL, contents=contents)
        assert (raised.value.code, raised.value.status) == (400, "INVALID_ARGUMENT") and wording in (raised.value.message or "")
    kept = await client.models.generate_content(model=MODEL, contents="Hello!")
    assert kept.text == "kept for the next valid request", "a refused request leaves the plan in place"


async def test_gemini_3_requires_the_thought_signature_back(client: genai.client.AsyncClient, gemini_fake: FakeGemini) -> None:
    recorded = fixture_body("generate_content_function_calls.json")["candidates"][0]["content"]
    unsigned = {"role": "model", "parts": [{"functionCall": part["functionCall"]} for part in recorded["parts"]]}
    answers = {"role": "user", "parts": [{"functionResponse": {"name": "query_metrics", "response": {}}}, {"functionResponse": {"name": "search_logs", "response": {}}}]}
    history = [{"role": "user", "parts": [{"text": INCIDENT}]}]

    with pytest.raises(errors.ClientError) as raised:
        await client.models.generate_content(model="gemini-3-pro-preview", contents=[*history, unsigned, answers])
    signed = await client.models.generate_content(model="gemini-3-pro-preview", contents=[*history, recorded, answers])
    older = await client.models.generate_content(model=MODEL, contents=[*history, unsigned, answers])

    assert raised.value.message == (
        "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing "
        "thought_signature may lead to degraded model performance. Additional data, function call `default_api:query_metrics` , position 2. "
        "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
    )
    assert signed.text == older.text == RECORDED_TEXT


async def test_fake_refuses_unknown_fields_and_modes_with_the_apis_wording(gemini_fake: FakeGemini) -> None:
    path = f"/v1beta/models/{MODEL}:generateContent"
    user = [{"role": "user", "parts": [{"text": "Hi"}]}]
    cases = [
        (
            {"contents": user, "generationConfig": {"max_tokens": 5}},
            'Invalid JSON payload received. Unknown name "max_tokens" at \'generation_config\': Cannot find field.',
            "generation_config",
        ),
        ({"messages": user}, 'Invalid JSON payload received. Unknown name "messages": Cannot find field.', None),
        (
            {"contents": [{"role": "user", "parts": [{"content": "Hi"}]}]},
            'Invalid JSON payload received. Unknown name "content" at \'contents[0].parts[0]\': Cannot find field.',
            "contents[0].parts[0]",
        ),
        (
            {"contents": user, "toolConfig": {"functionCallingConfig": {"mode": "auto"}}},
            "Invalid value at 'tool_config.function_calling_config.mode' (type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), \"auto\"",
            "tool_config.function_calling_config.mode",
        ),
        ({"generationConfig": {"temperature": 0}}, "* GenerateContentRequest.contents: contents is not specified\n", None),
    ]
    for body, message, field in cases:
        status, _, raw = await _post(gemini_fake, path, body)
        error = json.loads(raw)["error"]
        assert (status, error["code"], error["status"], error["message"]) == (400, 400, "INVALID_ARGUMENT", message)
        if field:
            assert error["details"][0]["fieldViolations"] == [{"field": field, "description": message}]

    snake = {"contents": user, "generation_config": {"max_output_tokens": 5, "response_mime_type": "text/plain"}, "system_instruction": {"parts": [{"text": "Be brief."}]}}
    assert (await _post(gemini_fake, path, snake))[0] == 200, "the API accepts proto (snake_case) names too"


# --- structured output -----------------------------------------------------------------------------


async def test_sdk_parses_the_recorded_json_answer_into_the_schema_model(client: genai.client.AsyncClient, gemini_fake: FakeGemini) -> None:
    gemini_fake.reply_json()
    config = types.GenerateContentConfig(response_mime_type="application/json", response_schema=IncidentTriage)

    response = await client.models.generate_content(model=MODEL, contents=INCIDENT, config=config)

    assert response.parsed == EXPECTED_TRIAGE
    assert json.loads(response.text or "") == EXPECTED_TRIAGE.model_dump()
    generation = gemini_fake.generation_requests[-1].body["generationConfig"]
    assert generation["responseMimeType"] == "application/json"
    assert generation["responseSchema"]["required"] == ["service", "severity", "summary", "actions"]
    severity = generation["responseSchema"]["properties"]["severity"]
    assert (severity["type"], severity["enum"]) == ("STRING", ["low", "medium", "high"]), "the SDK converts a pydantic model to an OpenAPI-subset Schema"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_sdk_reads_a_json_answer_given_a_json_schema(client: genai.client.AsyncClient, gemini_fake: FakeGemini, stream: bool) -> None:
    document = {"service": "café-api", "severity": "low", "summary": "Délai résorbé 🚀", "actions": []}
    gemini_fake.reply_json(json.dumps(document, ensure_ascii=False), TokenCounts(prompt=90, completion=20), fragments=7)
    schema = IncidentTriage.model_json_schema()
    config = types.GenerateContentConfig(response_mime_type="application/json", response_json_schema=schema)

    if stream:
        chunks = [chunk async for chunk in await client.models.generate_content_stream(model=MODEL, contents=INCIDENT, config=config)]
        text = "".join(chunk.text or "" for chunk in chunks)
        assert len(chunks) == 7
    else:
        response = await client.models.generate_content(model=MODEL, contents=INCIDENT, config=config)
        text = response.text or ""
        assert response.parsed == document, "with a JSON schema dict the SDK parses into a dict"

    assert json.loads(text) == document
    generation = gemini_fake.generation_requests[-1].body["generationConfig"]
    assert generation == {"responseMimeType": "application/json", "responseJsonSchema": schema}


async def test_recorded_json_stream_joins_into_the_plain_document(client: genai.client.AsyncClient, gemini_fake: FakeGemini) -> None:
    gemini_fake.stream_json()

    chunks = [chunk async for chunk in await client.models.generate_content_stream(model=MODEL, contents=INCIDENT, config={"response_mime_type": "application/json"})]

    plain = fixture_body("generate_content_json_schema.json")["candidates"][0]["content"]["parts"][0]["text"]
    assert "".join(chunk.text or "" for chunk in chunks) == plain and len(chunks) == 5
    assert IncidentTriage.model_validate_json(plain) == EXPECTED_TRIAGE
    assert (chunks[-1].candidates or [])[0].finish_reason == types.FinishReason.STOP


@pytest.mark.parametrize("scripted", [False, True], ids=["recorded", "scripted"])
async def test_function_call_stream_cut_before_the_last_call(client: genai.client.AsyncClient, gemini_fake: FakeGemini, scripted: bool) -> None:
    if scripted:
        gemini_fake.stream_function_calls([("query_metrics", METRICS_INPUT), ("search_logs", LOGS_INPUT)], TokenCounts(prompt=50, completion=20), ending=Ending.CUT)
    else:
        gemini_fake.stream_function_calls(ending=Ending.CUT)

    received: list[tuple[str | None, dict[str, Any] | None]] = []
    with pytest.raises(aiohttp.ClientError):
        async for chunk in await client.models.generate_content_stream(model=MODEL, contents=INCIDENT):
            received += _calls(chunk)

    assert received == [("query_metrics", METRICS_INPUT)], "the first call arrived whole, then the connection dropped"
