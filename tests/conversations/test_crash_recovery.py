"""kill -9 in the middle of a streamed reply: after a restart the conversation has every
acknowledged turn and the user's last message, and no half-written reply."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_manager.v1 import common_pb2, conversation_service_pb2 as conv, conversation_service_pb2_grpc

from ..support.processes import REPO, free_port

MODEL_HEALTH = "model/smollm2-135m-instruct"


class ServerProcess:
    """``python -m llm_manager_server`` as a child process with a SQLite store."""

    def __init__(self, database: Path) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "LLM_GRPC_HOST": "127.0.0.1",
            "LLM_GRPC_PORT": str(self.port),
            "LLM_CONVERSATION_STORE": f"sqlite:{database}",
            "LLM_DATA_DIR": str(database.parent),
            "LLM_LOCAL_THREADS": "1",
            "LLM_LOCAL_CONTEXT_LENGTH": "2048",
            "LLM_LOG_LEVEL": "WARNING",
        }
        self.process = subprocess.Popen([sys.executable, "-m", "llm_manager_server"], cwd=REPO, env=self.env)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def wait_ready(self, timeout_s: float = 60) -> None:
        """Until the in-process model answers health checks as SERVING."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with grpc.aio.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while loop.time() < deadline:
                assert self.process.poll() is None, f"server exited with {self.process.returncode}"
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=MODEL_HEALTH), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"the server on {self.address} was not ready within {timeout_s} s")

    def kill_9(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def greedy(max_tokens: int) -> common_pb2.GenerationPreferences:
    """Temperature 0: SmolLM2's replies are reproducible (with sampling it sometimes stops counting at once)."""
    return common_pb2.GenerationPreferences(max_tokens=max_tokens, temperature=0.0, seed=1)


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


async def test_kill_9_mid_reply_loses_nothing_acknowledged_and_leaves_no_half_turn(tmp_path: Path, servers: list[ServerProcess]) -> None:
    database = tmp_path / "conversations.db"
    first = ServerProcess(database)
    servers.append(first)
    await first.wait_ready()
    async with grpc.aio.insecure_channel(first.address) as channel:
        stub = conversation_service_pb2_grpc.ConversationServiceStub(channel)
        conversation = (await stub.CreateConversation(conv.CreateConversationRequest(conversation=conv.Conversation(system="Be brief.")))).conversation
        acknowledged = await stub.SendMessage(
            conv.SendMessageRequest(conversation_id=conversation.id, message="Say hi.", preferences=greedy(max_tokens=8)),
            timeout=60,
        )
        stream = stub.StreamSendMessage(
            conv.StreamSendMessageRequest(
                conversation_id=conversation.id,
                message="Count from 1 to 500, separated by commas.",
                preferences=greedy(max_tokens=400),
            ),
            timeout=60,
        )
        received = ""
        async for message in stream:
            received += message.text
            if len(received) > 10:
                break
        # Greedy decoding counts on for 400 tokens; a reply that ended already would not test a crash.
        assert len(received) > 10, f"the reply ended before the crash could interrupt it: {received!r}"
        first.kill_9()  # mid-reply: hundreds of tokens still to come
        stream.cancel()
    assert first.process.returncode == -signal.SIGKILL

    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    second = ServerProcess(database)
    servers.append(second)
    await second.wait_ready()
    async with grpc.aio.insecure_channel(second.address) as channel:
        stub = conversation_service_pb2_grpc.ConversationServiceStub(channel)
        stored = (await stub.GetConversation(conv.GetConversationRequest(id=conversation.id))).conversation
        assert [(m.role, m.content) for m in stored.messages] == [
            (common_pb2.ROLE_USER, "Say hi."),
            (common_pb2.ROLE_ASSISTANT, acknowledged.text),
            (common_pb2.ROLE_USER, "Count from 1 to 500, separated by commas."),
        ]
        # The crashed turn's lease died with it: the conversation goes on at once.
        reply = await stub.SendMessage(
            conv.SendMessageRequest(conversation_id=conversation.id, message="Say bye.", preferences=common_pb2.GenerationPreferences(max_tokens=8)),
            timeout=30,
        )
        stored = (await stub.GetConversation(conv.GetConversationRequest(id=conversation.id))).conversation
        assert [m.content for m in stored.messages[-2:]] == ["Say bye.", reply.text]
