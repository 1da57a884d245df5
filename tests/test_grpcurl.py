"""Operators' view: grpcurl with no proto files at hand (server reflection) and health."""

from __future__ import annotations

import json

from .conftest import StartApp
from .support.tools import run, tool


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
