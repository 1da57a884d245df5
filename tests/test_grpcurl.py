"""Operators' view: grpcurl with no proto files at hand (server reflection) and health."""

from __future__ import annotations

import json

from .conftest import StartApp
from .support.tools import run, tool
from .support.schemas import QUERY_METRICS, SERVICE_CONFIG


async def test_grpcurl_lists_describes_and_calls_via_reflection(start_app: StartApp) -> None:
    app = await start_app()  # the embedded default: SmolLM2 in-process
    grpcurl = tool("grpcurl")

    code, output = await run(grpcurl, "-plaintext", app.address, "list")
    assert code == 0, output
    assert set(output.split()) >= {
        "llm_manager.v1.LLMManagerService",
        "llm_manager.v1.ConversationService",
        "grpc.health.v1.Health",
    }

    code, output = await run(grpcurl, "-plaintext", app.address, "describe", "llm_manager.v1.GenerateRequest")
    assert code == 0 and "task_type" in output and "preferences" in output, output
    # The protos' comments come along (descriptors with source info).
    assert "// The user's prompt as plain text." in output, output
    code, output = await run(grpcurl, "-plaintext", app.address, "describe", "llm_manager.v1.LLMManagerService.Generate")
    assert code == 0 and "// Generates a complete answer" in output, output
    # Both reflection services resolve (v1 is what newer tools ask for first).
    for service in ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"):
        code, output = await run(grpcurl, "-plaintext", app.address, "describe", service)
        assert code == 0 and "rpc ServerReflectionInfo" in output, output

    # A method is a symbol too (ghz resolves its --call this way): Python's descriptor pool
    # alone answers "Symbol not found" for it.
    code, output = await run(grpcurl, "-plaintext", app.address, "describe", "llm_manager.v1.LLMManagerService.StreamGenerate")
    assert code == 0 and "is a method" in output and "returns ( stream .llm_manager.v1.StreamGenerateResponse )" in output, output
    code, output = await run(grpcurl, "-plaintext", app.address, "describe", "llm_manager.v1.LLMManagerService.NoSuchMethod")
    assert code != 0 and "Symbol not found" in output, output

    code, output = await run(
        grpcurl, "-plaintext", "-d", '{"prompt":"hi","preferences":{"max_tokens":8}}',
        app.address, "llm_manager.v1.LLMManagerService/Generate",
    )
    assert code == 0, output
    reply = json.loads(output)
    assert reply["text"] and reply["model"] == "smollm2-135m-instruct"
    assert int(reply["usage"]["completion_tokens"]) > 0

    code, output = await run(
        grpcurl, "-plaintext", "-d", '{"prompt":"Count to ten","preferences":{"max_tokens":12}}',
        app.address, "llm_manager.v1.LLMManagerService/StreamGenerate",
    )
    assert code == 0, output
    messages = [json.loads(part) for part in output.replace("}\n{", "}\x00{").split("\x00")]
    assert len([m for m in messages if m.get("text")]) >= 2
    assert messages[-1]["finish_reason"] != "FINISH_REASON_UNSPECIFIED" and "usage" in messages[-1]

    code, output = await run(grpcurl, "-plaintext", "-d", '{"service":"model/smollm2-135m-instruct"}', app.address, "grpc.health.v1.Health/Check")
    assert code == 0 and json.loads(output)["status"] == "SERVING", output


async def test_grpcurl_shows_rich_error_details(start_app: StartApp) -> None:
    app = await start_app()
    code, output = await run(
        tool("grpcurl"), "-plaintext", "-d", '{"prompt":"","preferences":{"max_tokens":-1}}',
        app.address, "llm_manager.v1.LLMManagerService/Generate",
    )
    assert code != 0
    assert "Code: InvalidArgument" in output
    assert '"reason": "INVALID_REQUEST"' in output and '"domain": "llm-manager"' in output
    assert '"field": "preferences.max_tokens"' in output


async def test_reflection_v1_is_served_for_newer_tools(start_app: StartApp) -> None:
    # grpcio-reflection serves v1alpha only; newer clients ask for v1 first.
    import grpc
    from grpc_reflection.v1alpha import reflection_pb2

    app = await start_app()
    async with grpc.aio.insecure_channel(app.address) as channel:
        call = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        reply = await call.read()
        await call.done_writing()
    names = {service.name for service in reply.list_services_response.service}
    assert {"llm_manager.v1.LLMManagerService", "grpc.reflection.v1.ServerReflection"} <= names
    code, output = await run(tool("grpcurl"), "-plaintext", app.address, "list")
    assert code == 0 and "grpc.reflection.v1.ServerReflection" in output, output


async def test_grpcurl_tool_round_trip_and_structured_output(start_app: StartApp) -> None:
    """The JSON an operator types (protojson names: camelCase, enums by name) for tools, a
    tool result and a response schema, through the real grpcurl and reflection."""
    import jsonschema

    app = await start_app()
    grpcurl = tool("grpcurl")
    generate = "llm_manager.v1.LLMManagerService/Generate"
    question = "What is the p99 latency of checkout over the last 15 minutes?"
    metrics_tool = {"name": "query_metrics", "description": "Query a telemetry metric over the last N minutes.", "parameters": QUERY_METRICS}
    request = {
        "prompt": question,
        "tools": [metrics_tool],
        "toolChoice": {"mode": "TOOL_CHOICE_MODE_REQUIRED"},
        "preferences": {"maxTokens": 400, "temperature": 0},
    }
    code, output = await run(grpcurl, "-plaintext", "-d", json.dumps(request), app.address, generate)
    assert code == 0, output
    reply = json.loads(output)
    assert reply["finish_reason"] == "FINISH_REASON_TOOL_CALLS" and reply["tool_calls"], reply
    for call in reply["tool_calls"]:
        assert call["id"] and call["name"] == "query_metrics"
        jsonschema.validate(call["arguments"], QUERY_METRICS)
    call = reply["tool_calls"][0]

    follow_up = {
        "messages": [
            {"role": "ROLE_USER", "content": question},
            {"role": "ROLE_ASSISTANT", "toolCalls": [call]},
            {"role": "ROLE_TOOL", "toolCallId": call["id"], "content": '{"p99_ms": 412}'},
        ],
        "tools": [metrics_tool],
        "toolChoice": {"mode": "TOOL_CHOICE_MODE_NONE"},
        "preferences": {"maxTokens": 40, "temperature": 0},
    }
    code, output = await run(grpcurl, "-plaintext", "-d", json.dumps(follow_up), app.address, generate)
    assert code == 0, output
    final = json.loads(output)
    assert final["text"].strip() and "tool_calls" not in final, final

    structured = {
        "prompt": "The checkout service: a frontend with 3 replicas.",
        "preferences": {"maxTokens": 96, "temperature": 0, "responseFormat": "RESPONSE_FORMAT_JSON_SCHEMA", "responseSchema": SERVICE_CONFIG},
    }
    code, output = await run(grpcurl, "-plaintext", "-d", json.dumps(structured), app.address, generate)
    assert code == 0, output
    reply = json.loads(output)
    jsonschema.validate(reply["structured_output"], SERVICE_CONFIG)
    assert json.loads(reply["text"]) == reply["structured_output"]

    code, output = await run(grpcurl, "-plaintext", "-d", json.dumps({**request, "cacheControl": {"noCache": True}}), app.address,
                             "llm_manager.v1.LLMManagerService/StreamGenerate")
    assert code == 0, output
    messages = [json.loads(part) for part in output.replace("}\n{", "}\x00{").split("\x00")]
    calls = [c for m in messages for c in m.get("tool_calls", [])]
    assert calls and messages[-1]["finish_reason"] == "FINISH_REASON_TOOL_CALLS", messages
    for call in calls:
        jsonschema.validate(call["arguments"], QUERY_METRICS)


async def test_grpcurl_embeds_and_shows_bad_inputs(start_app: StartApp) -> None:
    app = await start_app()  # SmolLM2 in-process: its mean-pooled hidden states
    grpcurl = tool("grpcurl")
    code, output = await run(
        grpcurl, "-plaintext", "-d", '{"inputs":["checkout p99 latency spiked","disk full on node-7"]}',
        app.address, "llm_manager.v1.LLMManagerService/Embed",
    )
    assert code == 0, output
    reply = json.loads(output)
    assert [len(e["values"]) for e in reply["embeddings"]] == [576, 576]
    assert reply["model"] == "smollm2-135m-instruct" and int(reply["usage"]["prompt_tokens"]) > 0
    assert reply["metadata"]["provider"] == "PROVIDER_LOCAL"

    code, output = await run(
        grpcurl, "-plaintext", "-d", '{"inputs":["fine",""],"model":"gpt-4o-mini"}', app.address, "llm_manager.v1.LLMManagerService/Embed"
    )
    assert code != 0 and "InvalidArgument" in output and '"field": "inputs[1]"' in output, output
    code, output = await run(grpcurl, "-plaintext", app.address, "describe", "llm_manager.v1.EmbedRequest")
    assert code == 0 and "// The texts to embed" in output, output
