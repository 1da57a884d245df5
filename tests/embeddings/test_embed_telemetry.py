"""An Embed call's spans: the server span, one ``embeddings <model>`` CLIENT span per model
call with the GenAI conventions' attributes, whose context the provider's request carries;
a cache hit makes no model span and marks the server span."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from llm_manager.v1 import llm_manager_service_pb2 as api, llm_manager_service_pb2_grpc
from llm_manager_server.app import Application
from llm_manager_server.config import load_settings

from ..conftest import BASE_ENV
from ..fakes import FakeOpenAI
from ..providers.conftest import OPENAI_KEY, unused_loopback_url  # noqa: F401  (a fixture)

MODEL = "text-embedding-3-small"


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI(api_key=OPENAI_KEY).start()
    yield fake
    await fake.stop()


async def test_an_embed_call_is_traced_as_genai_embeddings(openai_fake: FakeOpenAI, unused_loopback_url: str) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    metrics = InMemoryMetricReader()
    env = {**BASE_ENV, "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": f"{openai_fake.url}/v1", "LM_STUDIO_ENDPOINT": unused_loopback_url}
    app = Application(load_settings(env), tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[metrics]))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            stub = llm_manager_service_pb2_grpc.LLMManagerServiceStub(channel)
            request = api.EmbedRequest(inputs=["a private log line", "another"], model=MODEL)
            fresh = await stub.Embed(request, timeout=10)
            await stub.Embed(request, timeout=10)  # a cache hit
    finally:
        await app.stop(grace_s=0)

    finished = spans.get_finished_spans()
    server_spans = [s for s in finished if s.kind is SpanKind.SERVER]
    assert [s.name for s in server_spans] == ["/llm_manager.v1.LLMManagerService/Embed"] * 2
    [model_span] = [s for s in finished if s.kind is SpanKind.CLIENT]
    assert model_span.name == f"embeddings {MODEL}"
    assert model_span.parent is not None and model_span.parent.span_id == server_spans[0].context.span_id
    attributes = dict(model_span.attributes or {})
    assert attributes["gen_ai.operation.name"] == "embeddings" and attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == MODEL and attributes["gen_ai.response.model"] == MODEL
    assert attributes["gen_ai.embeddings.dimension.count"] == 1536
    assert attributes["gen_ai.usage.input_tokens"] == fresh.usage.prompt_tokens
    assert attributes["llm_manager.embeddings.inputs"] == 2 and attributes["llm_manager.deployment"] == "openai"
    assert dict(server_spans[1].attributes or {}).get("llm_manager.cache.hit") is True
    traceparent = openai_fake.embedding_requests[0].headers["traceparent"]
    assert traceparent.split("-")[2] == f"{model_span.context.span_id:016x}"
    assert "a private log line" not in repr([dict(s.attributes or {}) for s in finished])

    data = metrics.get_metrics_data()
    assert data is not None
    points = {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    [tokens] = [p for p in points["gen_ai.client.token.usage"] if p.attributes.get("gen_ai.operation.name") == "embeddings"]
    assert tokens.sum == fresh.usage.prompt_tokens and tokens.attributes["gen_ai.token.type"] == "input"
    [duration] = [p for p in points["gen_ai.client.operation.duration"] if p.attributes.get("gen_ai.operation.name") == "embeddings"]
    assert duration.count == 1
    [cost] = points["llm_manager.cost"]
    assert cost.value == pytest.approx(fresh.usage.cost_usd)
