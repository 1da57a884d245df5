"""The server with its HTTP API on, answering through the OpenAI fake (a cloud model, pinned
by name or routed to with ``model: "auto"``), and the official SDK clients pointed at it."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import openai
import pytest

from llm_manager_server.app import Application
from llm_manager_server.config import load_settings

from ..conftest import BASE_ENV
from ..fakes import FakeOpenAI
from ..providers.conftest import OPENAI_KEY, OPENAI_MODEL

# The in-process model is not loaded: the local endpoint is a closed port, so routed calls go
# to the cloud fake (the general chain's next provider).
HTTP_ENV = {
    **BASE_ENV,
    "LLM_HTTP_PORT": "0",
    "OPENAI_API_KEY": OPENAI_KEY,
    "LM_STUDIO_ENDPOINT": "http://127.0.0.1:9/v1",
    "LLM_HEALTH_INTERVAL_SECONDS": "600",
    "LLM_MAX_RETRIES": "0",
}


@dataclass
class Served:
    app: Application
    fake: FakeOpenAI

    @property
    def base_url(self) -> str:
        return f"http://{self.app.http_address}/v1"

    @property
    def root(self) -> str:
        return f"http://{self.app.http_address}"


async def start_served(fake: FakeOpenAI, data_dir: str, **overrides: str) -> Application:
    env = {**HTTP_ENV, "OPENAI_BASE_URL": f"{fake.url}/v1", "LLM_DATA_DIR": data_dir, **overrides}
    app = Application.from_settings(load_settings(env))
    await app.start()
    return app


@pytest.fixture
def data_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="llm-manager-http-") as path:
        yield path


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    """The cloud upstream the server's calls reach."""
    fake = await FakeOpenAI(api_key=OPENAI_KEY).start()
    yield fake
    await fake.stop()


@pytest.fixture
async def served(openai_fake: FakeOpenAI, data_dir: str) -> AsyncIterator[Served]:
    app = await start_served(openai_fake, data_dir)
    try:
        yield Served(app, openai_fake)
    finally:
        await app.stop(grace_s=0)


@pytest.fixture
async def client(served: Served) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official async client, as a user would make it (no retries: each test sees one answer)."""
    async with openai.AsyncOpenAI(api_key="unused-without-keys", base_url=served.base_url, max_retries=0) as sdk:
        yield sdk


__all__ = ["HTTP_ENV", "OPENAI_MODEL", "Served", "start_served"]
