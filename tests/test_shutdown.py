"""SIGTERM drains: health turns NOT_SERVING at once, in-flight streams finish, exit code 0."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api, llm_manager_service_pb2_grpc

from .support.processes import REPO, free_port


async def _start_server(port: int, tmp_dir: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "LLM_GRPC_PORT": str(port),
        "LLM_LOCAL_THREADS": "1",
        "LLM_LOCAL_CONTEXT_LENGTH": "2048",
        "LLM_CONVERSATION_STORE": "memory",
        "LLM_DATA_DIR": tmp_dir,
        "LLM_SHUTDOWN_GRACE_SECONDS": "20",
    }
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "llm_manager_server", cwd=REPO, env=env)
    deadline = time.monotonic() + 60
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            assert process.returncode is None, "server exited during start-up"
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(service="model/smollm2-135m-instruct"), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return process
            except grpc.aio.AioRpcError:
                pass
            assert time.monotonic() < deadline, "server did not become healthy in 60 s"
            await asyncio.sleep(0.1)


async def test_sigterm_drains_open_streams_and_exits_zero(tmp_path: object) -> None:
    port = free_port()
    process = await _start_server(port, str(tmp_path))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = llm_manager_service_pb2_grpc.LLMManagerServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

            streams = [
                stub.StreamGenerate(
                    api.StreamGenerateRequest(
                        prompt="Count from 1 to 100.",
                        preferences=common_pb2.GenerationPreferences(max_tokens=120, temperature=0.0),  # greedy: counts on
                        cache_control=common_pb2.CacheControl(no_cache=True),  # two real generations
                    ),
                    timeout=60,
                )
                for _ in range(2)
            ]
            for stream in streams:  # both are generating
                assert (await stream.read()).text

            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            status = await asyncio.wait_for(watch.read(), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert time.monotonic() - signalled < 2, "health must turn NOT_SERVING at once"

            # The open streams run to their normal end with usage.
            for stream in streams:
                messages = []
                while (message := await stream.read()) is not grpc.aio.EOF:
                    messages.append(message)
                assert len(messages) > 3 and messages[-1].usage.completion_tokens > 3
                assert messages[-1].finish_reason in (common_pb2.FINISH_REASON_LENGTH, common_pb2.FINISH_REASON_STOP)

            # New calls are refused while draining or after exit.
            try:
                await stub.Generate(api.GenerateRequest(prompt="late"), timeout=3)
                raise AssertionError("a call after SIGTERM was accepted")
            except grpc.aio.AioRpcError as error:
                assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
