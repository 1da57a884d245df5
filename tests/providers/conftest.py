"""Each provider wired to its wire-faithful fake on loopback, as one parametrized fixture.

``under_test`` yields the OpenAI provider against the OpenAI fake, the Anthropic provider
against the Anthropic fake, and the local OpenAI-compatible provider against the OpenAI
fake without a key (as LM Studio or llama.cpp server), so one contract suite covers all.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from llm_manager_server.catalog import Price, facts_for
from llm_manager_server.config import Secret
from llm_manager_server.domain.errors import ErrorKind
from llm_manager_server.domain.types import Message, ModelCall, ProviderKind, Role, SamplingOptions, Usage
from llm_manager_server.providers.anthropic import AnthropicProvider
from llm_manager_server.providers.openai_compat import OpenAICompatibleProvider

from ..fakes import FakeAnthropic, FakeOpenAI, TokenCounts

# Shaped like real keys so the redaction's pattern matching is exercised too; never valid.
OPENAI_KEY = "sk-proj-TESTONLYq7Vx2mR9sK4pL8wN3bZ6yH1cD5fJ0gTa"
ANTHROPIC_KEY = "sk-ant-api03-TESTONLYq7Vx2mR9sK4pL8wN3bZ6yH1cD5fJ0gTaAA"

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
LOCAL_MODEL = "llama-3.2-3b-instruct"
LOCAL_CONTEXT_WINDOW = 4096

PROVIDER_NAMES = ("openai", "anthropic", "local")


@dataclass
class ProviderUnderTest:
    name: str
    provider: OpenAICompatibleProvider | AnthropicProvider
    fake: FakeOpenAI | FakeAnthropic
    model: str
    api_key: str | None
    # What a dropped or refused connection becomes: cloud APIs NETWORK_ERROR (worth a retry),
    # a local server MODEL_UNAVAILABLE (it is down).
    transport_error_kind: ErrorKind

    @property
    def kind(self) -> ProviderKind:
        return self.provider.kind

    @property
    def price(self) -> Price:
        return facts_for(self.model, local_context_window=LOCAL_CONTEXT_WINDOW).price

    def call(self, prompt: str = "Say hello.", *, system: str | None = None, timeout_s: float = 5.0, **sampling: object) -> ModelCall:
        messages = ((Message.of(Role.SYSTEM, system),) if system else ()) + (Message.of(Role.USER, prompt),)
        return ModelCall(self.model, messages, SamplingOptions(**sampling), timeout_s=timeout_s)  # type: ignore[arg-type,unused-ignore]

    def expected_usage(self, counts: TokenCounts) -> Usage:
        return Usage(
            prompt_tokens=counts.prompt,
            completion_tokens=counts.completion,
            total_tokens=counts.prompt + counts.completion,
            cached_prompt_tokens=counts.cached,
            cache_creation_tokens=counts.cache_write,
        )


async def make_under_test(name: str, *, echo_key_in_errors: bool = False) -> ProviderUnderTest:
    if name == "openai":
        openai_fake = await FakeOpenAI(api_key=OPENAI_KEY, echo_key_in_errors=echo_key_in_errors).start()
        provider: OpenAICompatibleProvider | AnthropicProvider = OpenAICompatibleProvider(
            kind=ProviderKind.OPENAI,
            base_url=f"{openai_fake.url}/v1",
            api_key=Secret(OPENAI_KEY),
            label="openai",
            connect_error_kind=ErrorKind.NETWORK_ERROR,
        )
        under_test = ProviderUnderTest(name, provider, openai_fake, OPENAI_MODEL, OPENAI_KEY, ErrorKind.NETWORK_ERROR)
    elif name == "anthropic":
        anthropic_fake = await FakeAnthropic(api_key=ANTHROPIC_KEY, echo_key_in_errors=echo_key_in_errors).start()
        provider = AnthropicProvider(api_key=Secret(ANTHROPIC_KEY), base_url=anthropic_fake.url, default_max_tokens=1024)
        under_test = ProviderUnderTest(name, provider, anthropic_fake, ANTHROPIC_MODEL, ANTHROPIC_KEY, ErrorKind.NETWORK_ERROR)
    elif name == "local":
        local_fake = await FakeOpenAI(api_key=None).start()
        # The bare host URL, as LM_STUDIO_ENDPOINT is usually given: /v1 is added.
        provider = OpenAICompatibleProvider(kind=ProviderKind.LOCAL, base_url=local_fake.url, label="local")
        under_test = ProviderUnderTest(name, provider, local_fake, LOCAL_MODEL, None, ErrorKind.MODEL_UNAVAILABLE)
    else:
        raise ValueError(name)
    await under_test.provider.start()
    return under_test


async def dispose(under_test: ProviderUnderTest) -> None:
    await under_test.provider.close()
    await under_test.fake.stop()


@pytest.fixture(params=PROVIDER_NAMES)
async def under_test(request: pytest.FixtureRequest) -> AsyncIterator[ProviderUnderTest]:
    subject = await make_under_test(request.param)
    yield subject
    await dispose(subject)


@pytest.fixture
def unused_loopback_url() -> str:
    """A loopback URL nothing listens on (the port was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
