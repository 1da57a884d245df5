"""GenAI span attributes for tools and structured output: the tools offered, the calls made,
the output type and the `tool_calls` finish reason; definitions (schemas) only when content
recording is on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.protobuf import struct_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api, llm_manager_service_pb2_grpc
from llm_manager_server.app import Application
from llm_manager_server.config import load_settings

from ..conftest import BASE_ENV
from ..fakes import FakeOpenAI
from ..providers.conftest import OPENAI_KEY

PARAMS = {"type": "object", "properties": {"service": {"type": "string"}}}


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(value)
    return result


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI(api_key=OPENAI_KEY).start()
    yield fake
    await fake.stop()


@pytest.mark.parametrize("record_content", [False, True])
async def test_model_spans_describe_tools_calls_and_output_type(openai_fake: FakeOpenAI, record_content: bool) -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    env = {
        **BASE_ENV, "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": f"{openai_fake.url}/v1", "LM_STUDIO_ENDPOINT": "http://127.0.0.1:9/v1",
        "LLM_HEALTH_INTERVAL_SECONDS": "600", "LLM_TELEMETRY_RECORD_CONTENT": str(record_content).lower(),
    }
    app = Application(load_settings(env), tracer_provider=provider)
    await app.start()
    import grpc

    channel = grpc.aio.insecure_channel(app.address)
    try:
        stub = llm_manager_service_pb2_grpc.LLMManagerServiceStub(channel)
        openai_fake.reply_tool_calls([("call_1", "query_metrics", {"service": "checkout"})])
        tools = [common_pb2.Tool(name="query_metrics", description="Query.", parameters=struct(PARAMS))]
        await stub.Generate(api.GenerateRequest(prompt="hi", tools=tools, preferences=common_pb2.GenerationPreferences(model="gpt-4o-mini")), timeout=10)
        openai_fake.reply_json('{"service": "checkout"}')
        schema_preferences = common_pb2.GenerationPreferences(
            model="gpt-4o-mini", response_format=common_pb2.RESPONSE_FORMAT_JSON_SCHEMA, response_schema=struct(PARAMS)
        )
        await stub.Generate(api.GenerateRequest(prompt="hi", preferences=schema_preferences), timeout=10)
    finally:
        await channel.close()
        await app.stop(grace_s=0)
    model_spans = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT and s.name.startswith("chat ")]
    tool_span, json_span = model_spans
    attributes = dict(tool_span.attributes or {})
    assert attributes["gen_ai.output.type"] == "text"
    assert list(attributes["llm_manager.request.tool_names"]) == ["query_metrics"]  # type: ignore[arg-type]
    assert list(attributes["llm_manager.response.tool_calls"]) == ["query_metrics"]  # type: ignore[arg-type]
    assert list(attributes["gen_ai.response.finish_reasons"]) == ["tool_calls"]  # type: ignore[arg-type]
    if record_content:
        definitions = json.loads(str(attributes["gen_ai.tool.definitions"]))
        assert definitions == [{"type": "function", "name": "query_metrics", "description": "Query.", "parameters": PARAMS}]
        output = json.loads(str(attributes["gen_ai.output.messages"]))
        assert output[0]["tool_calls"] == [{"id": "call_1", "name": "query_metrics", "arguments": {"service": "checkout"}}]
    else:
        assert "gen_ai.tool.definitions" not in attributes and "gen_ai.output.messages" not in attributes
    assert dict(json_span.attributes or {})["gen_ai.output.type"] == "json"
