"""Shared fixtures: a real llama.cpp server, and the real gRPC server in-process.

Nothing here skips: a missing model, binary or service fails the test run.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import pytest

from llm_manager.v1 import conversation_service_pb2_grpc, llm_manager_service_pb2_grpc
from llm_manager_server.app import Application
from llm_manager_server.config import load_settings

from .support.certificates import Pki
from .support.processes import LlamaServer

# Small and deterministic enough for CI on 2 cores: one llama.cpp thread per engine, so the
# HTTP server and an in-process engine never oversubscribe the cores.
BASE_ENV = {
    "LLM_GRPC_HOST": "127.0.0.1",
    "LLM_GRPC_PORT": "0",
    "LLM_LOCAL_THREADS": "1",
    "LLM_LOCAL_CONTEXT_LENGTH": "2048",
    "LLM_CONVERSATION_STORE": "memory",
    "LLM_HEALTH_INTERVAL_SECONDS": "0.5",
    "LLM_SHUTDOWN_GRACE_SECONDS": "2",
}

StartApp = Callable[..., Awaitable[Application]]


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LlamaServer]:
    """One real llama.cpp server (SmolLM2) shared by the session."""
    server = LlamaServer(threads=1, parallel=2).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def embedding_llama_server() -> Iterator[LlamaServer]:
    """A real llama.cpp server started with embeddings on (``--embeddings --pooling mean``),
    as an operator runs one for Embed; it serves chat completions too."""
    server = LlamaServer(threads=1, parallel=1, embedding=True).start()
    yield server
    server.stop()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A CA with a server and a client certificate, and a stranger CA with a client one."""
    return Pki.issue(tmp_path)


@pytest.fixture
async def start_app() -> AsyncIterator[StartApp]:
    """Starts the real gRPC server on a free loopback port with ``BASE_ENV`` plus overrides."""
    started: list[Application] = []
    data_dir = tempfile.TemporaryDirectory(prefix="llm-manager-test-")

    async def start(**overrides: str) -> Application:
        env = {**BASE_ENV, "LLM_DATA_DIR": data_dir.name, **overrides}
        app = Application(load_settings(env))
        await app.start()
        started.append(app)
        return app

    yield start
    for app in started:
        await app.stop(grace_s=0)
    data_dir.cleanup()


class Stubs:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.llm = llm_manager_service_pb2_grpc.LLMManagerServiceStub(channel)
        self.conversations = conversation_service_pb2_grpc.ConversationServiceStub(channel)


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[Application], Stubs]]:
    """Opens a channel to an app through the generated stubs; closes it afterwards."""
    channels: list[grpc.aio.Channel] = []

    def open_stubs(app: Application) -> Stubs:
        channel = grpc.aio.insecure_channel(app.address)
        channels.append(channel)
        return Stubs(channel)

    yield open_stubs
    for channel in channels:
        await channel.close()
