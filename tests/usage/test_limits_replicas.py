"""Two server processes sharing one real Redis (``LLM_LIMITS_STORE``): a caller's limit holds
across both, whichever replica each call reaches; and the usage ledger they share through
PostgreSQL answers the same on both."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_manager.v1 import llm_manager_service_pb2_grpc, usage_service_pb2 as usage, usage_service_pb2_grpc
from llm_manager_server.usage import utc_day

from ..fakes import FakeOpenAI
from ..support.keys import write_keys_file
from ..support.processes import REPO, free_port
from .test_usage_e2e import COUNTS, OPENAI_KEY, auth, cloud_env, generate, quota_refusal, same_minute


class Replica:
    """``python -m llm_manager_server`` as a child process."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "LLM_GRPC_HOST": "127.0.0.1", "LLM_GRPC_PORT": str(self.port), "LLM_LOG_LEVEL": "WARNING"}
        self.process = subprocess.Popen([sys.executable, "-m", "llm_manager_server"], cwd=REPO, env=self.env)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")

    async def wait_ready(self, timeout_s: float = 60) -> None:
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"replica exited with {self.process.returncode}"
            try:
                if (await health.Check(health_pb2.HealthCheckRequest(), timeout=1)).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"replica on port {self.port} not ready within {timeout_s} s")

    async def stop(self) -> None:
        await self.channel.close()
        if self.process.poll() is None:
            self.process.terminate()  # graceful: the ledger writes what it holds
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = await FakeOpenAI(api_key=OPENAI_KEY).start()
    yield server
    await server.stop()


async def test_a_limit_holds_across_two_replicas_sharing_redis(fake: FakeOpenAI, redis_url: str, postgres_dsn: str, tmp_path: Path) -> None:
    keys = write_keys_file(tmp_path / "keys.yaml", {"dashboards": {"requests_per_minute": 5}})
    env = {**cloud_env(fake, tmp_path / "keys.yaml"), "LLM_LIMITS_STORE": redis_url, "LLM_CONVERSATION_STORE": postgres_dsn, "LLM_SHUTDOWN_GRACE_SECONDS": "2"}
    replicas = [Replica(env), Replica(env)]
    try:
        await asyncio.gather(*(r.wait_ready() for r in replicas))
        await same_minute()
        for _ in range(12):
            fake.reply_text("Paris.", COUNTS)
        stubs = [llm_manager_service_pb2_grpc.LLMManagerServiceStub(r.channel) for r in replicas]
        calls = [stubs[i % 2].Generate(generate(), metadata=auth(keys["dashboards"]), timeout=20) for i in range(12)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        answered = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError) and o.code() == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert (len(answered), len(refused)) == (5, 7), outcomes
        assert len(fake.generation_requests) == 5
        # Each replica refuses from now on, the one that answered fewer calls too.
        for stub in stubs:
            assert (await quota_refusal(stub.Generate(generate(), metadata=auth(keys["dashboards"]), timeout=10))).limit == "requests_per_minute"
        # The ledger, in the shared PostgreSQL, has every answered call once the replicas wrote it.
        await asyncio.sleep(1.5)
        for replica in replicas:
            rows = (await usage_service_pb2_grpc.UsageServiceStub(replica.channel).GetUsage(usage.GetUsageRequest(), metadata=auth(keys["dashboards"]), timeout=10)).rows
            assert [(r.date, r.requests, r.prompt_tokens) for r in rows] == [(utc_day(time.time()), 5, 5 * COUNTS.prompt)]
    finally:
        for replica in replicas:
            await replica.stop()
