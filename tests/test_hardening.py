"""What a hostile or careless caller could do, tried through the real gRPC server on loopback
(the scriptable fault server plays every upstream). Each test reproduces one defect of the
hardening issue and failed before its fix."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_manager.client import error_details
from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api
from llm_manager_server.config import ConfigError, load_settings
from llm_manager_server.domain.types import ProviderKind

from .conftest import BASE_ENV, StartApp, Stubs
from .support.fault_server import FaultServer
from .support.processes import REPO, free_port


@pytest.fixture
async def fake() -> AsyncIterator[FaultServer]:
    server = await FaultServer().start()
    yield server
    await server.stop()


def _pinned(model: str, **fields: object) -> api.GenerateRequest:
    return api.GenerateRequest(
        prompt="hi", preferences=common_pb2.GenerationPreferences(model=model), cache_control=common_pb2.CacheControl(no_cache=True), **fields  # type: ignore[arg-type]
    )


async def _failure(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


# --- 1. preferences.model cannot grow the server's state ----------------------------------


async def test_a_huge_model_name_is_invalid_argument_and_not_echoed(start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer) -> None:
    stubs = connect(await start_app(LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="alpha"))
    huge = "nonexistent-0-" + "N" * 1_000_000
    details = error_details(await _failure(stubs.llm.Generate(_pinned(huge), timeout=10)))
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert set(details.field_violations) == {"preferences.model"}
    assert "NNNN" not in details.message + repr(details.metadata) + repr(details.field_violations)
    forged = "gpt-fail-500-x\n2026-12-01 00:00:00,000 INFO llm_manager_server.access [admin] rpc DeleteConversation -> OK"
    details = error_details(await _failure(stubs.llm.Generate(_pinned(forged), timeout=10)))
    assert set(details.field_violations) == {"preferences.model"}
    assert fake.requests == [], "no invalid name reached an upstream"


async def test_pinned_names_are_served_but_never_listed_and_state_stays_bounded(
    start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer
) -> None:
    from llm_manager_server.routing.registry import MAX_ADHOC_MODELS

    app = await start_app(LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="alpha", LLM_HEALTH_INTERVAL_SECONDS="600")
    stubs = connect(app)
    names = [f"model-{uuid.uuid4()}" for _ in range(MAX_ADHOC_MODELS * 3)]
    for name in names:
        reply = await stubs.llm.Generate(_pinned(name), timeout=10)
        assert reply.model == name  # a model the endpoint serves is still usable by name
    listed = await stubs.llm.ListModels(api.ListModelsRequest(page_size=1000), timeout=10)
    assert [m.name for m in listed.models] == ["alpha"]
    assert app.registry is not None
    assert len(app.registry.adhoc) == MAX_ADHOC_MODELS and set(app.registry.adhoc) == set(names[-MAX_ADHOC_MODELS:])
    unknown = await _failure(health_pb2_grpc.HealthStub(stubs.channel).Check(health_pb2.HealthCheckRequest(service=f"model/{names[-1]}"), timeout=5))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND  # health publishes configured models only


# --- 3. credentials in endpoint URLs --------------------------------------------------------


@pytest.mark.parametrize("variable", ["LM_STUDIO_ENDPOINT", "OPENAI_BASE_URL", "CLAUDE_BASE_URL"])
def test_credentials_in_an_endpoint_url_are_a_one_line_configuration_error(variable: str) -> None:
    password = "hunter2-Sup3rS3cret"
    with pytest.raises(ConfigError) as raised:
        load_settings({variable: f"http://admin:{password}@127.0.0.1:9/v1", "OPENAI_API_KEY": "sk-x", "CLAUDE_API_KEY": "sk-y"})
    assert raised.value.variable == variable and password not in str(raised.value) and "\n" not in str(raised.value)


def test_start_up_with_credentials_in_a_url_exits_2_before_listening() -> None:
    port = free_port()
    password = "hunter2-Sup3rS3cret"
    env = {**os.environ, **BASE_ENV, "LLM_GRPC_PORT": str(port), "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": f"http://u:{password}@127.0.0.1:9/v1"}
    done = subprocess.run([sys.executable, "-m", "llm_manager_server"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "OPENAI_BASE_URL" in done.stderr and password not in done.stderr


def test_a_bad_port_in_an_endpoint_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"LM_STUDIO_ENDPOINT": "http://127.0.0.1:99999/v1"})
    assert raised.value.variable == "LM_STUDIO_ENDPOINT"


# --- 4. log injection ---------------------------------------------------------------------


def test_log_lines_escape_control_characters_and_redact_secrets() -> None:
    from llm_manager_server.config import Secret
    from llm_manager_server.logs import FORMAT, SafeFormatter

    Secret("LOGSECRET-77c1a9e2b4d6")
    record = logging.LogRecord("llm_manager_server.routing", logging.INFO, __file__, 1, "model %s failed: %s", ("x\nFORGED INFO line\r", "key LOGSECRET-77c1a9e2b4d6 \u2028 \x1b[31m"), None)
    record.request_id, record.trace = "-", ""
    line = SafeFormatter(FORMAT).format(record)
    assert "\n" not in line and "\r" not in line and "\u2028" not in line and "\x1b" not in line
    assert "x\\x0aFORGED" in line and "LOGSECRET" not in line


async def test_a_bad_request_id_is_replaced_and_a_good_one_kept(start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer) -> None:
    stubs = connect(await start_app(LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="alpha"))
    # (gRPC clients refuse to send control characters or non-ASCII in metadata themselves.)
    for bad in ("x" * 7000, "abc def", "-leading-dash", "a;b<script>", "x" * 129):
        reply = await stubs.llm.Generate(_pinned("alpha"), metadata=(("x-request-id", bad),), timeout=10)
        assert reply.metadata.request_id != bad and len(reply.metadata.request_id) == 32
    for good in ("req_01HZX3-abc.def", str(uuid.uuid4()), "a" * 128):
        reply = await stubs.llm.Generate(_pinned("alpha"), metadata=(("x-request-id", good),), timeout=10)
        assert reply.metadata.request_id == good


# --- 5. the server's time limit ends a fallback chain --------------------------------------


async def test_running_out_of_time_is_deadline_exceeded_naming_the_limit(start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer) -> None:
    fake.script("slow-a", "slow:60")
    fake.script("slow-b", "slow:60")
    stubs = connect(await start_app(
        LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="slow-a", LLM_GENERAL_MODEL_2="slow-b", LLM_TIMEOUT_MS="1500", LLM_HEALTH_INTERVAL_SECONDS="600"
    ))
    for _ in range(4):
        request = api.GenerateRequest(prompt="hi", cache_control=common_pb2.CacheControl(no_cache=True))
        details = error_details(await _failure(stubs.llm.Generate(request)))  # no client deadline
        assert (details.code, details.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "TIMEOUT"), details.message
        assert details.metadata["limit"] == "LLM_TIMEOUT_MS" and "LLM_TIMEOUT_MS" in details.message
        assert details.metadata["not_tried"] == "slow-b", "slow-b was never asked, so it is not reported as failed"
        assert not any("slow-b" in value for key, value in details.metadata.items() if key.startswith("attempt."))
    assert fake.calls("slow-b") == 0
    # The caller's own, tighter deadline is the limit that fires then.
    streamed = stubs.llm.StreamGenerate(api.StreamGenerateRequest(prompt="hi"), timeout=0.8)
    error = await _failure(_drain(streamed))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def _drain(call: grpc.aio.UnaryStreamCall) -> None:  # type: ignore[type-arg]
    async for _ in call:
        pass


# --- 6. rate limits across a chain ----------------------------------------------------------


async def test_every_model_rate_limited_is_resource_exhausted_with_the_shortest_wait(
    start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer
) -> None:
    fake.script("alpha", "status:429,retry-after=30")
    fake.script("beta", "status:429,retry-after=12")
    stubs = connect(await start_app(LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="alpha", LLM_GENERAL_MODEL_2="beta", LLM_HEALTH_INTERVAL_SECONDS="600"))
    for call in (stubs.llm.Generate(api.GenerateRequest(prompt="hi"), timeout=10), _drain(stubs.llm.StreamGenerate(api.StreamGenerateRequest(prompt="hi"), timeout=10))):
        details = error_details(await _failure(call))
        assert (details.code, details.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMIT_EXCEEDED"), details.message
        assert details.retry_delay_s == 12
        assert {"attempt.1", "attempt.2"} <= set(details.metadata)


# --- 8. caller headers never reach a provider ---------------------------------------------------


async def test_providers_get_our_traceparent_but_never_the_callers_baggage_or_tracestate(
    start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer
) -> None:
    stubs = connect(await start_app(LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="alpha"))
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    await stubs.llm.Generate(_pinned("alpha"), timeout=10, metadata=(
        ("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),
        ("tracestate", "vendor=secret-tenant-7"),
        ("baggage", "user.id=alice,session=s3cr3t"),
    ))
    headers = {k.lower(): v for k, v in fake.requests[-1].headers.items()}
    assert headers["traceparent"].startswith(f"00-{trace_id}-") and headers["traceparent"].endswith("-01")
    assert "baggage" not in headers and "tracestate" not in headers


# --- 9. smaller ones -------------------------------------------------------------------------------


async def test_max_tokens_is_bounded_by_the_model(start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer) -> None:
    stubs = connect(await start_app(LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="alpha"))
    huge = _pinned("alpha")
    huge.preferences.max_tokens = 2**31 - 1
    details = error_details(await _failure(stubs.llm.Generate(huge, timeout=10)))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT and "preferences.max_tokens" in details.field_violations
    too_big = _pinned("alpha")
    too_big.preferences.max_tokens = 100_000  # fits the global bound, not the model's 2048-token window
    details = error_details(await _failure(stubs.llm.Generate(too_big, timeout=10)))
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONTEXT_TOO_LARGE")
    assert details.metadata["context_window"] == "2048" and details.metadata["max_tokens"] == "100000"
    assert fake.requests == []


async def test_a_request_of_only_system_messages_is_rejected(start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer) -> None:
    stubs = connect(await start_app(LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="alpha"))
    only_system = api.GenerateRequest(messages=[common_pb2.ChatMessage(role=common_pb2.ROLE_SYSTEM, content="You are terse.")])
    details = error_details(await _failure(stubs.llm.Generate(only_system, timeout=10)))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT and "messages" in details.field_violations
    assert fake.requests == []


@pytest.mark.parametrize("method", ["Generate", "StreamGenerate", "ListModels"])
async def test_malformed_protobuf_is_invalid_argument(start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer, method: str) -> None:
    stubs = connect(await start_app(LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="alpha"))
    path = f"/llm_manager.v1.LLMManagerService/{method}"
    garbage = b"\x0a\xff\xff\xff\xff\x0f"  # field 1, length-delimited, with an impossible length
    if method == "StreamGenerate":
        call = _drain(stubs.channel.unary_stream(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)(garbage, timeout=10))
    else:
        call = stubs.channel.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)(garbage, timeout=10)
    details = error_details(await _failure(call))
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST"), details.message
    assert "request" in details.field_violations and f"{method}Request" in details.field_violations["request"]


async def test_health_detail_names_the_endpoint_not_a_fake_model(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    stubs = connect(await start_app(LM_STUDIO_ENDPOINT=dead, LLM_GENERAL_MODEL_1="alpha"))
    listed = await stubs.llm.ListModels(api.ListModelsRequest(), timeout=10)
    detail = listed.models[0].health_detail
    assert "health probe" not in detail and f"local endpoint {dead}" in detail and "unreachable" in detail


async def test_calls_beyond_the_concurrency_cap_are_resource_exhausted(start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer) -> None:
    fake.script("drip", "drip:0.05")
    stubs = connect(await start_app(LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="drip", LLM_MAX_CONCURRENT_CALLS="2"))
    no_cache = common_pb2.CacheControl(no_cache=True)
    running = [stubs.llm.StreamGenerate(api.StreamGenerateRequest(prompt=f"go {i}", cache_control=no_cache), timeout=30) for i in range(2)]
    for call in running:
        await call.read()  # both are being served (the drip takes 10 s)
    details = error_details(await _failure(stubs.llm.ListModels(api.ListModelsRequest(), timeout=10)))
    assert (details.code, details.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED")
    assert details.metadata["limit"] == "LLM_MAX_CONCURRENT_CALLS" and details.retry_delay_s is not None
    # Probes are not counted against the cap.
    checked = await health_pb2_grpc.HealthStub(stubs.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    for call in running:
        call.cancel()
    await asyncio.sleep(0.2)
    reply = await stubs.llm.ListModels(api.ListModelsRequest(), timeout=10)  # room again
    assert reply.models


def test_the_log_writer_keeps_one_record_on_one_line() -> None:
    from llm_manager_server.logs import configure_logging

    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    writer = configure_logging("INFO", stream)
    try:
        logging.getLogger("llm_manager_server.test").info("pinned %s", "m\n2026-12-01 00:00:00,000 INFO forged")
    finally:
        writer.stop()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "forged" in lines[0]


# --- Operability: the request id ties a call to the logs -------------------------------------


async def test_every_response_carries_the_request_id_in_headers_trailers_and_error_info(
    start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer
) -> None:
    fake.script("broken", "status:500")
    stubs = connect(await start_app(LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="alpha", LLM_MAX_RETRIES="0"))
    call = stubs.llm.Generate(_pinned("alpha"), metadata=(("x-request-id", "req-ok-1"),), timeout=10)
    reply = await call
    assert reply.metadata.request_id == "req-ok-1"
    assert ("x-request-id", "req-ok-1") in tuple(await call.initial_metadata())
    assert [v for k, v in await call.trailing_metadata() if k == "x-request-id"] == ["req-ok-1"]
    failing = stubs.llm.Generate(_pinned("broken"), metadata=(("x-request-id", "req-bad-1"),), timeout=10)
    error = await _failure(failing)
    assert ("x-request-id", "req-bad-1") in tuple(await failing.initial_metadata())
    assert [v for k, v in (error.trailing_metadata() or ()) if k == "x-request-id"] == ["req-bad-1"]
    assert error_details(error).metadata["request_id"] == "req-bad-1"
    # A generated id is sent the same way, and a stream carries it too.
    stream = stubs.llm.StreamGenerate(api.StreamGenerateRequest(prompt="hi"), timeout=10)
    messages = [m async for m in stream]
    generated = dict(await stream.initial_metadata())["x-request-id"]
    assert len(generated) == 32 and messages[-1].metadata.request_id == generated
    assert [v for k, v in await stream.trailing_metadata() if k == "x-request-id"] == [generated]


async def test_readiness_follows_the_models_and_liveness_the_process(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    stubs = connect(await start_app(LM_STUDIO_ENDPOINT=dead, LLM_GENERAL_MODEL_1="alpha"))
    health = health_pb2_grpc.HealthStub(stubs.channel)

    async def status(service: str) -> int:
        return int((await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)).status)

    assert await status("") == health_pb2.HealthCheckResponse.SERVING  # the process is up
    assert await status("llm_manager.v1.LLMManagerService") == health_pb2.HealthCheckResponse.NOT_SERVING  # no model can answer


async def test_local_models_have_a_default_output_bound(start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer) -> None:
    stubs = connect(await start_app(LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="alpha"))
    await stubs.llm.Generate(_pinned("alpha"), timeout=10)
    assert fake.requests[-1].body["max_tokens"] == 512  # LLM_LOCAL_MAX_TOKENS' default
    explicit = _pinned("alpha")
    explicit.preferences.max_tokens = 20
    await stubs.llm.Generate(explicit, timeout=10)
    assert fake.requests[-1].body["max_tokens"] == 20  # the caller's wins
    bounded = connect(await start_app(LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="alpha", LLM_LOCAL_MAX_TOKENS="64"))
    await bounded.llm.Generate(_pinned("alpha"), timeout=10)
    assert fake.requests[-1].body["max_tokens"] == 64


async def test_a_callers_deadline_is_logged_as_deadline_exceeded(
    start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script("slow", "slow:5")
    stubs = connect(await start_app(LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="slow"))
    caplog.set_level(logging.INFO, logger="llm_manager_server.access")
    error = await _failure(stubs.llm.Generate(_pinned("slow"), timeout=0.3))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(50):
        lines = [r.getMessage() for r in caplog.records if r.name == "llm_manager_server.access" and "Generate" in r.getMessage()]
        if lines:
            break
        await asyncio.sleep(0.05)
    assert lines and "-> DEADLINE_EXCEEDED" in lines[-1], lines


@pytest.mark.parametrize("key", ["sk-...", "sk-ant-...", "<your key>", "your-api-key", "changeme", "xxxx"])
def test_a_placeholder_api_key_is_a_configuration_error(key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"OPENAI_API_KEY": key})
    assert raised.value.variable == "OPENAI_API_KEY" and "placeholder" in str(raised.value)
    assert load_settings({"OPENAI_API_KEY": "sk-proj-real-looking-key-123"}).cloud(ProviderKind.OPENAI).api_key is not None


async def test_health_list_answers_and_a_watch_ends_when_the_drain_begins(start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer) -> None:
    app = await start_app(LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="alpha")
    stubs = connect(app)
    health = health_pb2_grpc.HealthStub(stubs.channel)
    listed = await health.List(health_pb2.HealthListRequest(), timeout=5)  # type: ignore[attr-defined]
    assert listed.statuses[""].status == health_pb2.HealthCheckResponse.SERVING
    assert "model/alpha" in listed.statuses and "llm_manager.v1.LLMManagerService" in listed.statuses
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    started = asyncio.get_running_loop().time()
    stopping = asyncio.ensure_future(app.stop(grace_s=10))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await watch.read() is grpc.aio.EOF  # the watch ends with the drain
    await stopping
    assert asyncio.get_running_loop().time() - started < 5, "an open watch no longer holds the shutdown for the grace period"


async def test_the_server_span_carries_the_request_id_and_log_lines_the_trace_id(fake: FaultServer) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from llm_manager_server.app import Application
    from llm_manager_server.logs import configure_logging

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    writer = configure_logging("INFO", stream)
    app = Application(load_settings({**BASE_ENV, "LM_STUDIO_ENDPOINT": fake.url, "LLM_GENERAL_MODEL_1": "alpha"}), tracer_provider=provider)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            from llm_manager.v1 import llm_manager_service_pb2_grpc

            await llm_manager_service_pb2_grpc.LLMManagerServiceStub(channel).Generate(
                _pinned("alpha"), metadata=(("x-request-id", "req-span-7"),), timeout=10
            )
    finally:
        await app.stop(grace_s=0)
        writer.stop()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    server = next(s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER)
    assert dict(server.attributes or {})["llm_manager.request_id"] == "req-span-7"
    access = [line for line in stream.getvalue().splitlines() if "llm_manager_server.access" in line and "req-span-7" in line]
    assert access and f"[req-span-7 trace={server.context.trace_id:032x}]" in access[0], access


async def test_a_client_streaming_method_is_refused_not_let_past_the_gate() -> None:
    """The API has no client-streaming RPC; one added later must not skip the call gate
    (authentication, deadline, concurrency cap) by being passed through unwrapped."""
    from grpc import aio

    from llm_manager_server.calls import CallGate
    from llm_manager_server.interceptors import ApiInterceptor

    reached: list[str] = []

    async def upload(requests: object, context: object) -> bytes:
        reached.append("servicer")
        return b""

    server = aio.server(interceptors=[ApiInterceptor(CallGate(5.0), access_log=False)])
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("llm_manager.v1.Future", {"Upload": grpc.stream_unary_rpc_method_handler(upload)}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.stream_unary("/llm_manager.v1.Future/Upload")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(iter([b"x"]), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert reached == []
    finally:
        await server.stop(0)
