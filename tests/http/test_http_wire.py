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
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

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
            async with session.post(url) as response:  # no body at all
                assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_json"
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


async def _http_reply(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    """(status line, headers, body) of one HTTP/1.1 response read off a raw socket."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines if line)}
    return status_line.encode(), headers, await reader.readexactly(int(headers["content-length"]))


async def test_a_body_that_stalls_holds_no_slot_and_is_answered_408(served: Served, data_dir: str) -> None:
    """A caller that sends its headers and then stops sending its body is not admitted while it
    does: the one slot (LLM_MAX_CONCURRENT_CALLS=1) stays free for other calls on both
    transports, and the stalled call is answered 408 when its deadline passes."""
    import grpc

    from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api, llm_manager_service_pb2_grpc

    app = await start_served(served.fake, data_dir, LLM_MAX_CONCURRENT_CALLS="1")
    assert app.gate is not None
    host, port = app.http_address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    channel = grpc.aio.insecure_channel(app.address)
    try:
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: llm-manager\r\ncontent-type: application/json\r\n"
            b"content-length: 1000\r\nx-stainless-timeout: 3\r\nx-request-id: req-stalled\r\n\r\n{\"model\": "
        )
        await writer.drain()
        started = asyncio.get_running_loop().time()
        await asyncio.sleep(0.3)  # the server has the headers and waits for the rest of the body
        assert app.gate.in_flight == 0
        served.fake.reply_text("over http", TokenCounts(prompt=3, completion=2))
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://{app.http_address}/v1/chat/completions", json=CHAT) as response:
                assert response.status == 200, await response.text()
        served.fake.reply_text("over grpc", TokenCounts(prompt=3, completion=2))
        stub = llm_manager_service_pb2_grpc.LLMManagerServiceStub(channel)
        reply = await stub.Generate(api.GenerateRequest(prompt="not the http call's prompt", preferences=common_pb2.GenerationPreferences(model=OPENAI_MODEL)), timeout=10)
        assert reply.text == "over grpc"
        status_line, headers, body = await asyncio.wait_for(_http_reply(reader), timeout=10)
        waited = asyncio.get_running_loop().time() - started
    finally:
        writer.close()
        await channel.close()
        await app.stop(grace_s=0)
    assert status_line.startswith(b"HTTP/1.1 408 "), status_line
    assert headers["x-request-id"] == "req-stalled" and headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout" and error["type"] == "timeout_error"
    assert "the caller's deadline (3 s)" in error["message"]
    assert 2.5 < waited < 8


async def test_a_stream_that_fails_mid_way_is_an_error_on_its_span_metric_and_log_line(served: Served, data_dir: str, caplog: pytest.LogCaptureFixture) -> None:
    """The 200 went out before the failure; the span (ERROR, error.type), the duration metric's
    error.type and the access-log line still say the call failed, and with what."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    app = Application.from_settings(load_settings({**HTTP_ENV, "OPENAI_BASE_URL": f"{served.fake.url}/v1", "LLM_DATA_DIR": data_dir}))
    app.tracer_provider = tracer_provider
    await app.start()
    try:
        caplog.set_level(logging.INFO, logger="llm_manager_server.access")
        served.fake.error_mid_stream(["Once"])
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://{app.http_address}/v1/chat/completions", json={**CHAT, "stream": True}) as response:
                assert response.status == 200
                events = [e for e in (await response.read()).split(b"\n\n") if e]
            kind = json.loads(events[-1].removeprefix(b"data: "))["error"]["code"].upper()
            async with session.get(f"http://{app.http_address}/metrics") as response:
                scrape = await response.text()
    finally:
        await app.stop(grace_s=0)
    span = next(s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER and s.name == "POST /v1/chat/completions")
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == kind and dict(span.attributes or {})["http.response.status_code"] == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "llm_manager_server.access"]
    assert any(re.fullmatch(rf"http POST /v1/chat/completions -> 200 in \d+\.\d ms error={kind}", line) for line in lines), lines
    assert re.search(rf'http_server_request_duration_seconds_count\{{[^}}]*error_type="{kind}"[^}}]*http_route="/v1/chat/completions"[^}}]*\}} 1\.0', scrape), scrape


async def test_a_connection_reset_while_writing_is_a_499_not_an_unexpected_error(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    """The caller's connection is gone when the handler writes (a reset between two SSE
    events): the call is logged 499, as a cancelled one, with no "unexpected error"."""
    api = served.app.http
    assert api is not None
    host, port = served.app.http_address.rsplit(":", 1)
    transport, _ = await asyncio.get_running_loop().create_connection(asyncio.Protocol, host, int(port))
    transport.close()  # a real transport, closing: what aiohttp's write sees after a reset
    request = make_mocked_request("GET", "/v1/models", app=api.app, transport=transport)
    request._match_info = await api.app.router.resolve(request)  # the route, as aiohttp resolves it

    async def writes_to_a_gone_caller(_: web.Request) -> web.StreamResponse:
        raise ConnectionResetError("Cannot write to closing transport")

    caplog.set_level(logging.INFO)
    response = await api._middleware(request, writes_to_a_gone_caller)
    assert response.status == 499
    messages = [(r.name, r.getMessage()) for r in caplog.records]
    assert not [m for name, m in messages if name == "llm_manager_server.errors"], messages
    assert any(name == "llm_manager_server.access" and m.startswith("http GET /v1/models -> 499") for name, m in messages), messages
