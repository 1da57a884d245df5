"""Telemetry: callers' traces continue through the server and on to the provider; GenAI
spans and metrics; content kept out unless enabled; export to a real OTLP receiver from a
Python peer and from the Go example peer."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api, llm_manager_service_pb2_grpc
from llm_manager_server.app import Application
from llm_manager_server.config import load_settings
from llm_manager_server.telemetry import build_tracer_provider

from ..conftest import BASE_ENV
from ..support.fault_server import FaultServer
from ..support.otlp_receiver import CLIENT_KIND, SERVER_KIND, OTLPReceiver
from ..support.tools import REPO, run, tool

SECRET_PROMPT = "my-very-private-prompt-text"


@pytest.fixture
async def fake() -> AsyncIterator[FaultServer]:
    server = await FaultServer().start()
    yield server
    await server.stop()


async def _app(env: dict[str, str], **providers: Any) -> Application:
    app = Application(load_settings({**BASE_ENV, **env}), **providers)
    await app.start()
    return app


def _peer_channel(address: str) -> tuple[grpc.aio.Channel, TracerProvider, InMemorySpanExporter]:
    """A Python peer with its own tracer: the gRPC client instrumentation sends traceparent."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    channel = grpc.aio.insecure_channel(address, interceptors=aio_client_interceptors(tracer_provider=provider))
    return channel, provider, exporter


async def test_trace_continues_from_caller_to_server_to_provider(fake: FaultServer) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    metrics = InMemoryMetricReader()
    app = await _app(
        {"LM_STUDIO_ENDPOINT": fake.url, "LLM_GENERAL_MODEL_1": "alpha"},
        tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[metrics]),
    )
    channel, peer_provider, peer_spans = _peer_channel(app.address)
    try:
        stub = llm_manager_service_pb2_grpc.LLMManagerServiceStub(channel)
        with peer_provider.get_tracer("peer").start_as_current_span("peer-operation") as parent:
            trace_id = parent.get_span_context().trace_id
            await stub.Generate(api.GenerateRequest(prompt=SECRET_PROMPT, preferences=common_pb2.GenerationPreferences(max_tokens=20, temperature=0.5)))
            chunks = [m async for m in stub.StreamGenerate(api.StreamGenerateRequest(prompt="stream please"))]
            await stub.Generate(api.GenerateRequest(prompt=SECRET_PROMPT, preferences=common_pb2.GenerationPreferences(max_tokens=20, temperature=0.5)))
        assert len(chunks) > 2
    finally:
        await channel.close()
        await app.stop(grace_s=0)

    finished = spans.get_finished_spans()
    assert {s.context.trace_id for s in finished} == {trace_id}, "every server span continues the caller's trace"
    server_spans = [s for s in finished if s.kind is SpanKind.SERVER]
    assert {s.name for s in server_spans} == {"/llm_manager.v1.LLMManagerService/Generate", "/llm_manager.v1.LLMManagerService/StreamGenerate"}
    model_spans = [s for s in finished if s.name == "chat alpha"]
    assert len(model_spans) == 2, "one model call span per real model call (the third call was a cache hit)"
    plain, streamed = model_spans
    assert plain.kind is SpanKind.CLIENT and plain.parent is not None
    assert plain.parent.span_id in {s.context.span_id for s in server_spans}
    attributes = dict(plain.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "local"
    assert attributes["gen_ai.request.model"] == "alpha" and attributes["gen_ai.response.model"] == "alpha"
    assert attributes["gen_ai.request.max_tokens"] == 20 and attributes["gen_ai.request.temperature"] == 0.5
    assert attributes["gen_ai.usage.input_tokens"] == 9 and attributes["gen_ai.usage.output_tokens"] == len(fake.text.split())
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["llm_manager.attempt"] == 1 and attributes["llm_manager.fallback"] is False
    assert attributes["llm_manager.routing.candidates"] == ("alpha",)
    assert dict(streamed.attributes or {})["llm_manager.streaming"] is True
    cache_hit_server_span = server_spans[-1]
    assert dict(cache_hit_server_span.attributes or {}).get("llm_manager.cache.hit") is True
    # The provider's HTTP request carried the model span's context.
    traceparent = fake.requests[0].headers["traceparent"]
    assert traceparent.split("-")[1] == f"{trace_id:032x}"
    assert traceparent.split("-")[2] == f"{plain.context.span_id:016x}"
    # No prompt text anywhere unless enabled.
    assert SECRET_PROMPT not in repr([dict(s.attributes or {}) for s in finished])

    names = {
        metric.name: metric
        for resource in metrics.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert {"gen_ai.client.operation.duration", "gen_ai.client.token.usage", "gen_ai.client.operation.time_to_first_chunk", "llm_manager.cache.lookups"} <= set(names)
    token_types = {dict(p.attributes)["gen_ai.token.type"] for p in names["gen_ai.client.token.usage"].data.data_points}
    assert token_types == {"input", "output"}
    lookups = {dict(p.attributes)["result"]: p.value for p in names["llm_manager.cache.lookups"].data.data_points}
    assert lookups["hit"] == 1 and lookups["miss"] >= 2


async def test_content_is_recorded_only_when_enabled(fake: FaultServer) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    app = await _app(
        {"LM_STUDIO_ENDPOINT": fake.url, "LLM_GENERAL_MODEL_1": "alpha", "LLM_TELEMETRY_RECORD_CONTENT": "true"}, tracer_provider=tracer_provider
    )
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            await llm_manager_service_pb2_grpc.LLMManagerServiceStub(channel).Generate(api.GenerateRequest(prompt=SECRET_PROMPT))
    finally:
        await app.stop(grace_s=0)
    model_span = next(s for s in spans.get_finished_spans() if s.name == "chat alpha")
    attributes = dict(model_span.attributes or {})
    assert SECRET_PROMPT in str(attributes["gen_ai.input.messages"])
    assert fake.text in str(attributes["gen_ai.output.messages"])


@pytest.fixture
async def receiver() -> AsyncIterator[OTLPReceiver]:
    otlp = await OTLPReceiver().start()
    yield otlp
    await otlp.stop()


async def test_python_and_go_peers_traces_reach_a_real_otlp_receiver(receiver: OTLPReceiver, fake: FaultServer) -> None:
    otel_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_SERVICE_NAME": "llm-manager-under-test"}
    saved = {key: os.environ.get(key) for key in otel_env}
    os.environ.update(otel_env)  # the OTLP exporter reads the standard variables
    try:
        app = await _app({"LM_STUDIO_ENDPOINT": fake.url, "LLM_GENERAL_MODEL_1": "alpha"}, tracer_provider=build_tracer_provider(otel_env))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        # The Python peer.
        channel, peer_provider, _ = _peer_channel(app.address)
        async with channel:
            with peer_provider.get_tracer("peer").start_as_current_span("python-peer") as parent:
                python_trace = f"{parent.get_span_context().trace_id:032x}"
                await llm_manager_service_pb2_grpc.LLMManagerServiceStub(channel).Generate(api.GenerateRequest(prompt="hello from python"))
        # The Go example peer (it prints its trace id and exports its own spans too).
        code, output = await run(
            tool("go"), "run", "./cmd/example-peer", "-addr", app.address, "-prompt", "hello from go",
            cwd=REPO / "clients" / "go", env={**os.environ, **otel_env, "OTEL_SERVICE_NAME": "example-peer"}, timeout_s=300,
        )
        assert code == 0, output
        match = re.search(r"^trace_id: ([0-9a-f]{32})$", output, re.MULTILINE)
        assert match, output
        go_trace = match.group(1)
    finally:
        await app.stop(grace_s=0)  # flushes the server's batch exporter

    for trace_id, caller in ((python_trace, "python"), (go_trace, "go")):
        spans = receiver.by_trace(trace_id)
        server_spans = [s for s in spans if s.service == "llm-manager-under-test"]
        assert any(s.kind == SERVER_KIND and s.name.endswith("/Generate") for s in server_spans), caller
        model = [s for s in server_spans if s.kind == CLIENT_KIND and s.name == "chat alpha"]
        assert model and model[0].attributes["gen_ai.operation.name"] == "chat", caller
        assert model[0].attributes["gen_ai.usage.output_tokens"] > 0
    assert any(s.service == "example-peer" for s in receiver.by_trace(go_trace)), "the Go peer's own spans arrived too"
