"""The HTTP API's wire: SSE framing as curl sees it, body limits and bad JSON, the error table
for every error kind, x-request-id on every response, the access log, the server span, the
Prometheus scrape, and a graceful drain on stop."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess

import aiohttp
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from llm_manager_server.app import Application
from llm_manager_server.config import load_settings
from llm_manager_server.domain.errors import ErrorKind, FieldViolation, LLMError
from llm_manager_server.http.errors import STATUSES, http_status, llm_error_body

from ..fakes import TokenCounts
from .conftest import HTTP_ENV, OPENAI_MODEL, Served, start_served

CHAT = {"model": OPENAI_MODEL, "messages": [{"role": "user", "content": "hi"}]}


def _curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", "-N", "--max-time", "20", *args], capture_output=True, check=True)


async def test_curl_sees_sse_framing(served: Served) -> None:
    served.fake.stream_text(["Hel", "lo"], TokenCounts(prompt=3, completion=2))
    body = json.dumps({**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    done = await asyncio.to_thread(
        _curl, "-D", "-", "-H", "content-type: application/json", "-H", "x-request-id: curl-1", "-d", body, f"{served.base_url}/chat/completions"
    )
    head, _, stream = done.stdout.partition(b"\r\n\r\n")
    headers = head.decode().lower()
    assert "content-type: text/event-stream" in headers and "x-request-id: curl-1" in headers
    events = stream.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    payloads = [json.loads(e.removeprefix(b"data: ")) for e in events[:-2]]
    assert all(e.startswith(b"data: {") for e in events[:-2])
    assert "".join(p["choices"][0]["delta"].get("content", "") for p in payloads if p["choices"]) == "Hello"
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["total_tokens"] == 5
    assert {p["object"] for p in payloads} == {"chat.completion.chunk"}


async def test_curl_sees_an_error_event_when_a_stream_fails_mid_way(served: Served) -> None:
    served.fake.error_mid_stream(["Once"])
    done = await asyncio.to_thread(
        _curl, "-H", "content-type: application/json", "-d", json.dumps({**CHAT, "stream": True}), f"{served.base_url}/chat/completions"
    )
    events = [e for e in done.stdout.split(b"\n\n") if e]
    assert b"[DONE]" not in done.stdout
    last = json.loads(events[-1].removeprefix(b"data: "))
    assert set(last["error"]) >= {"message", "type", "code", "param"}


async def test_body_limits_and_bad_json(served: Served, data_dir: str) -> None:
    app = await start_served(served.fake, data_dir, LLM_HTTP_MAX_BODY_BYTES="65536", LLM_HTTP_MAX_JSON_DEPTH="16")
    url = f"http://{app.http_address}/v1/chat/completions"
    try:
        async with aiohttp.ClientSession() as session:
            big = {**CHAT, "messages": [{"role": "user", "content": "x" * 70_000}]}
            async with session.post(url, json=big) as response:
                assert response.status == 413
                error = (await response.json())["error"]
                assert error["code"] == "request_too_large" and "LLM_HTTP_MAX_BODY_BYTES" in error["message"]
                assert response.headers["x-request-id"] == error["request_id"]
            async with session.post(url, data=b'{"model": "auto", "messages": [', headers={"content-type": "application/json"}) as response:
                assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_json"
            deep: object = "leaf"
            for _ in range(20):
                deep = [deep]
            async with session.post(url, json={**CHAT, "metadata": deep}) as response:
                error = (await response.json())["error"]
                assert response.status == 400 and error["code"] == "json_too_deep" and "16" in error["message"]
            # Far deeper than the parser's own recursion limit: still a clear 400.
            async with session.post(url, data=b"[" * 30_000 + b"]" * 30_000) as response:
                assert response.status == 400 and (await response.json())["error"]["code"] == "json_too_deep"
            async with session.post(url, json=["not", "an", "object"]) as response:
                assert response.status == 400 and (await response.json())["error"]["param"] == "body"
    finally:
        await app.stop(grace_s=0)


async def test_unknown_routes_and_methods_answer_json_with_a_request_id(served: Served) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{served.base_url}/nothing-here", headers={"x-request-id": "bad id with spaces"}) as response:
            assert response.status == 404 and (await response.json())["error"]["type"] == "invalid_request_error"
            assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])  # a malformed id is replaced
        async with session.get(f"{served.base_url}/chat/completions") as response:
            assert response.status == 405 and "error" in await response.json()


def test_every_error_kind_has_a_status() -> None:
    assert set(STATUSES) == set(ErrorKind)
    expected = {
        ErrorKind.INVALID_REQUEST: 400, ErrorKind.CONTEXT_TOO_LARGE: 400, ErrorKind.AUTHENTICATION_FAILED: 401, ErrorKind.PERMISSION_DENIED: 403,
        ErrorKind.CONVERSATION_NOT_FOUND: 404, ErrorKind.RATE_LIMIT_EXCEEDED: 429, ErrorKind.TIMEOUT: 504,
        ErrorKind.ALL_MODELS_UNAVAILABLE: 503, ErrorKind.QUOTA_EXCEEDED: 429,
    }
    for kind, status in expected.items():
        assert http_status(LLMError(kind, "x")).status == status
    assert http_status(LLMError(ErrorKind.AUTHENTICATION_FAILED, "x", upstream_auth=True)).status == 500
    status, body, headers = llm_error_body(
        LLMError(ErrorKind.RATE_LIMIT_EXCEEDED, "slow down, sk-proj-abcdefghijklmnop", retry_after_s=2.2, field_violations=(FieldViolation("model", "m"),))
    )
    assert status == 429 and headers == {"retry-after": "3"}
    assert body["error"]["param"] == "model" and "sk-proj" not in json.dumps(body)


async def test_access_log_span_and_metrics(served: Served, data_dir: str, caplog: pytest.LogCaptureFixture) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    app = Application.from_settings(load_settings({**HTTP_ENV, "OPENAI_BASE_URL": f"{served.fake.url}/v1", "LLM_DATA_DIR": data_dir}))
    app.tracer_provider = tracer_provider
    await app.start()
    try:
        served.fake.reply_text("hello", TokenCounts(prompt=3, completion=1))
        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
        caplog.set_level(logging.INFO, logger="llm_manager_server.access")
        async with aiohttp.ClientSession() as session:
            headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", "x-request-id": "req-traced"}
            async with session.post(f"http://{app.http_address}/v1/chat/completions", json=CHAT, headers=headers) as response:
                assert response.status == 200
            async with session.get(f"http://{app.http_address}/metrics") as response:
                assert response.status == 200 and response.headers["content-type"].startswith("text/plain")
                scrape = await response.text()
        lines = [r.getMessage() for r in caplog.records if r.name == "llm_manager_server.access"]
        assert any(re.fullmatch(r"http POST /v1/chat/completions -> 200 in \d+\.\d ms", line) for line in lines)
        server_spans = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
        span = next(s for s in server_spans if s.name == "POST /v1/chat/completions")
        assert f"{span.context.trace_id:032x}" == trace_id  # the caller's trace continues
        assert dict(span.attributes or {})["llm_manager.request_id"] == "req-traced"
        assert dict(span.attributes or {})["http.response.status_code"] == 200
        model_span = next(s for s in spans.get_finished_spans() if s.name.startswith("chat "))
        assert model_span.parent is not None and model_span.parent.span_id == span.context.span_id
        # The request counter (the duration histogram's count) and the GenAI metrics.
        assert re.search(r'http_server_request_duration_seconds_count\{[^}]*http_route="/v1/chat/completions"[^}]*\} 1\.0', scrape)
        assert "gen_ai_client_operation_duration_seconds_count" in scrape
        assert "gen_ai_client_token_usage" in scrape
    finally:
        await app.stop(grace_s=0)


async def test_stop_lets_a_stream_in_flight_finish(served: Served, data_dir: str) -> None:
    app = await start_served(served.fake, data_dir, LLM_SHUTDOWN_GRACE_SECONDS="5")
    served.fake.stream_text([f"{i} " for i in range(30)], TokenCounts(prompt=3, completion=30))
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://{app.http_address}/v1/chat/completions", json={**CHAT, "stream": True}) as response:
            first = await response.content.readline()
            assert first.startswith(b"data: ")
            stopping = asyncio.create_task(app.stop())
            rest = await response.content.read()
        await stopping
    assert rest.endswith(b"data: [DONE]\n\n") and b"29 " in rest
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session:
            await session.get(f"http://{app.settings.host}:{response.url.port}/v1/models")


async def test_one_concurrency_cap_for_both_transports(served: Served, data_dir: str) -> None:
    """A gRPC call in flight holds the only slot (LLM_MAX_CONCURRENT_CALLS=1): an HTTP call is
    refused at once, 429 with retry-after, by the same gate."""
    import grpc

    from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api, llm_manager_service_pb2_grpc

    app = await start_served(served.fake, data_dir, LLM_MAX_CONCURRENT_CALLS="1")
    served.fake.stall_stream(["held"])
    channel = grpc.aio.insecure_channel(app.address)
    try:
        stub = llm_manager_service_pb2_grpc.LLMManagerServiceStub(channel)
        held = stub.StreamGenerate(api.StreamGenerateRequest(prompt="hold", preferences=common_pb2.GenerationPreferences(model=OPENAI_MODEL)), timeout=20)
        first = await held.read()
        assert first.text == "held"
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://{app.http_address}/v1/chat/completions", json=CHAT) as response:
                error = (await response.json())["error"]
                assert response.status == 429 and response.headers["retry-after"] == "1"
                assert error["code"] == "resource_exhausted" and "LLM_MAX_CONCURRENT_CALLS" in error["message"]
        held.cancel()
    finally:
        await channel.close()
        await app.stop(grace_s=0)


async def test_a_caller_that_disconnects_cancels_its_call(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llm_manager_server.access")
    served.fake.stall_stream(["never ", "ends"])
    gate = served.app.gate
    assert gate is not None
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{served.base_url}/chat/completions", json={**CHAT, "stream": True})
        assert (await response.content.readline()).startswith(b"data: ")
        assert gate.in_flight == 1
        response.close()  # drops the connection mid-stream
    for _ in range(100):
        if gate.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert gate.in_flight == 0
    await asyncio.sleep(0.1)  # the log line is written as the handler unwinds
    assert any(r.getMessage().startswith("http POST /v1/chat/completions -> 499") for r in caplog.records), [r.getMessage() for r in caplog.records]


async def test_the_sdks_timeout_header_is_the_callers_deadline(served: Served) -> None:
    served.fake.stall_stream(["slow"])
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{served.base_url}/chat/completions", json=CHAT, headers={"x-stainless-timeout": "0.4"}) as response:
            error = (await response.json())["error"]
    assert response.status == 504 and error["code"] == "timeout"
    assert "caller's deadline" in error["message"] and error["metadata"]["limit"] == "client_deadline"
