"""Each provider wired to its wire-faithful fake on loopback, as one parametrized fixture.

``under_test`` yields the OpenAI provider against the OpenAI fake, the Anthropic provider
against the Anthropic fake, the Gemini provider against the Gemini fake, and the local
OpenAI-compatible provider against the OpenAI fake without a key (as LM Studio or llama.cpp
server), so one contract suite covers all. Cloud providers are built by their own
``ProviderSpec.build``, as the service builds a deployment. Where the APIs legitimately differ
(the request on the wire, where the wait of a 429 travels, the health probe's path), the
:class:`ProviderUnderTest` says what to expect, as data; the tests themselves name no provider.

Adding a provider: its fake (in ``tests/fakes``, with the same scenario methods) and one
:data:`WIRING` entry.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from llm_manager_server.catalog import Price, facts_for
from llm_manager_server.domain.errors import ErrorKind
from llm_manager_server.domain.types import Message, ModelCall, ProviderKind, Role, SamplingOptions, Usage
from llm_manager_server.providers import anthropic, gemini
from llm_manager_server.providers.base import Provider
from llm_manager_server.providers.openai_compat import OPENAI, OpenAICompatibleProvider
from llm_manager_server.providers.spec import CloudSettings, ProviderSpec
from llm_manager_server.secret import Secret

from ..fakes import CapturedRequest, FakeAnthropic, FakeGemini, FakeOpenAI, RetryHint, TokenCounts

# Shaped like real keys so the redaction's pattern matching is exercised too; never valid.
OPENAI_KEY = "sk-proj-TESTONLYq7Vx2mR9sK4pL8wN3bZ6yH1cD5fJ0gTa"
ANTHROPIC_KEY = "sk-ant-api03-TESTONLYq7Vx2mR9sK4pL8wN3bZ6yH1cD5fJ0gTaAA"
GEMINI_KEY = "AIzaSyTESTONLYq7Vx2mR9sK4pL8wN3bZ6yH1cD"

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
GEMINI_MODEL = "gemini-2.5-flash"
LOCAL_MODEL = "llama-3.2-3b-instruct"
LOCAL_CONTEXT_WINDOW = 4096

CLOUD_PROVIDER_NAMES = ("openai", "anthropic", "gemini")
PROVIDER_NAMES = (*CLOUD_PROVIDER_NAMES, "local")
TEST_KEYS = {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY, "gemini": GEMINI_KEY}

Fake = FakeOpenAI | FakeAnthropic | FakeGemini


@dataclass(frozen=True)
class Asked:
    """What a call asks for, from which each API's expected request is derived."""

    prompt: str
    system: str
    max_tokens: int
    temperature: float
    stop: tuple[str, ...]


@dataclass(frozen=True)
class WireRequest:
    """What a generation request must carry: its path, these top-level body fields with these
    values (others may be there too), these headers and query parameters (None: absent)."""

    path: str
    body: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str | None] = field(default_factory=dict)
    query: Mapping[str, str | None] = field(default_factory=dict)

    def mismatches(self, sent: CapturedRequest) -> dict[str, tuple[object, object]]:
        """Each expected part that differs in ``sent``: where -> (expected, sent)."""
        body = sent.body if isinstance(sent.body, dict) else {}
        # Only Gemini's fake records the query: its API is the one that puts anything there.
        query: Mapping[str, str] = getattr(sent, "query", {})
        found: dict[str, tuple[object, object]] = {"path": (self.path, sent.path)}
        found |= {f"body.{name}": (value, body.get(name)) for name, value in self.body.items()}
        found |= {f"header {name}": (value, sent.headers.get(name)) for name, value in self.headers.items()}
        found |= {f"query {name}": (value, query.get(name)) for name, value in self.query.items()}
        return {where: pair for where, pair in found.items() if pair[0] != pair[1]}


@dataclass
class ProviderUnderTest:
    name: str
    provider: Provider
    fake: Fake
    model: str
    api_key: str | None
    # What a dropped or refused connection becomes: cloud APIs NETWORK_ERROR (worth a retry),
    # a local server MODEL_UNAVAILABLE (it is down).
    transport_error_kind: ErrorKind
    # Another deployment of the same kind at a server root URL (e.g. one nothing listens on).
    build: Callable[[str], Provider]
    # The generation request each API expects for a call, and what a streamed one adds.
    expected_request: Callable[[Asked], WireRequest]
    stream_request: WireRequest
    # The path the health probe asks (it spends no tokens).
    health_path: str
    # Dollars per million (input, cached input, output) from the provider's public price page,
    # written out here so a wrong catalog entry fails the cost test.
    list_price: tuple[float, float, float]

    @property
    def kind(self) -> ProviderKind:
        return self.provider.kind

    @property
    def price(self) -> Price:
        return facts_for(self.model, local_context_window=LOCAL_CONTEXT_WINDOW).price

    @property
    def context_window(self) -> int:
        return facts_for(self.model, local_context_window=LOCAL_CONTEXT_WINDOW).context_window

    @property
    def retry_hints(self) -> tuple[RetryHint, ...]:
        """Where this API says how long a rate-limited caller should wait."""
        return self.fake.RETRY_HINTS

    def call(self, prompt: str = "Say hello.", *, system: str | None = None, timeout_s: float = 5.0, **sampling: object) -> ModelCall:
        messages = ((Message.of(Role.SYSTEM, system),) if system else ()) + (Message.of(Role.USER, prompt),)
        return ModelCall(self.model, messages, SamplingOptions(**sampling), timeout_s=timeout_s)  # type: ignore[arg-type,unused-ignore]

    def call_for(self, asked: Asked) -> ModelCall:
        return self.call(asked.prompt, system=asked.system, max_tokens=asked.max_tokens, temperature=asked.temperature, stop=asked.stop)

    def expected_usage(self, counts: TokenCounts) -> Usage:
        return Usage(
            prompt_tokens=counts.prompt,
            completion_tokens=counts.completion,
            total_tokens=counts.prompt + counts.completion,
            cached_prompt_tokens=counts.cached,
            cache_creation_tokens=counts.cache_write,
        )


def _deployment(spec: ProviderSpec, name: str, key: str, suffix: str = "") -> Callable[[str], Provider]:
    """A deployment of ``spec`` as the service builds one, at ``root + suffix`` with ``key``."""
    build = spec.build
    assert build is not None, f"{name} is a cloud provider"
    return lambda root: build(CloudSettings(api_key=Secret(key), base_url=f"{root}{suffix}"), name)


def _local(root: str) -> Provider:
    """A local server as the routing registry builds it, from the bare host URL (as
    LM_STUDIO_ENDPOINT is usually given: /v1 is added)."""
    return OpenAICompatibleProvider(kind=ProviderKind.LOCAL, base_url=root, label="local")


def _chat_completions_request(model: str, key: str | None) -> Callable[[Asked], WireRequest]:
    def expected(asked: Asked) -> WireRequest:
        messages = [{"role": "system", "content": asked.system}, {"role": "user", "content": asked.prompt}]
        body = {"model": model, "messages": messages, "max_tokens": asked.max_tokens, "temperature": asked.temperature, "stop": list(asked.stop)}
        return WireRequest("/v1/chat/completions", body, {"authorization": f"Bearer {key}" if key else None})

    return expected


# A streamed Chat Completions request asks for the usage chunk too.
CHAT_COMPLETIONS_STREAM = WireRequest("/v1/chat/completions", {"stream": True, "stream_options": {"include_usage": True}})


def _messages_request(model: str, key: str | None) -> Callable[[Asked], WireRequest]:
    def expected(asked: Asked) -> WireRequest:
        body = {
            "model": model,
            "system": asked.system,
            "messages": [{"role": "user", "content": [{"type": "text", "text": asked.prompt}]}],
            "max_tokens": asked.max_tokens,
            "temperature": asked.temperature,
            "stop_sequences": list(asked.stop),
        }
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01", "authorization": None}
        return WireRequest("/v1/messages", body, headers)

    return expected


def _generate_content_request(model: str, key: str | None) -> Callable[[Asked], WireRequest]:
    def expected(asked: Asked) -> WireRequest:
        body = {
            "contents": [{"role": "user", "parts": [{"text": asked.prompt}]}],
            "systemInstruction": {"parts": [{"text": asked.system}]},
            "generationConfig": {"temperature": asked.temperature, "maxOutputTokens": asked.max_tokens, "stopSequences": list(asked.stop)},
        }
        # The model is in the path; the key only in its header, never in the URL.
        headers = {"x-goog-api-key": key, "authorization": None}
        return WireRequest(f"/v1beta/models/{model}:generateContent", body, headers, {"key": None})

    return expected


@dataclass(frozen=True)
class Wiring:
    """How one provider is wired to its fake, and what its API expects (see ProviderUnderTest)."""

    model: str
    # The fake, from the key it accepts (None: none, a local server) and whether it echoes keys.
    fake: Callable[[str | None, bool], Fake]
    # Deployments presenting a key, at a server root URL.
    deployment: Callable[[str], Callable[[str], Provider]]
    transport_error_kind: ErrorKind
    expected_request: Callable[[str, str | None], Callable[[Asked], WireRequest]]
    stream_request: WireRequest
    health_path: str
    list_price: tuple[float, float, float]
    cloud: bool = True


WIRING: dict[str, Wiring] = {
    "openai": Wiring(
        OPENAI_MODEL,
        lambda key, echo: FakeOpenAI(api_key=key, echo_key_in_errors=echo),
        lambda key: _deployment(OPENAI, "openai", key, "/v1"),
        ErrorKind.NETWORK_ERROR,
        _chat_completions_request,
        CHAT_COMPLETIONS_STREAM,
        "/v1/models",
        # gpt-4o-mini: $0.15 input, $0.075 cached input, $0.60 output per million.
        (0.15, 0.075, 0.60),
    ),
    "anthropic": Wiring(
        ANTHROPIC_MODEL,
        lambda key, echo: FakeAnthropic(api_key=key or "", echo_key_in_errors=echo),
        lambda key: _deployment(anthropic.SPEC, "anthropic", key),
        ErrorKind.NETWORK_ERROR,
        _messages_request,
        WireRequest("/v1/messages", {"stream": True}),
        "/v1/models",
        # claude-sonnet-4-5: $3 input, $0.30 cache read, $15 output per million.
        (3.00, 0.30, 15.00),
    ),
    "gemini": Wiring(
        GEMINI_MODEL,
        lambda key, echo: FakeGemini(api_key=key or "", echo_key_in_errors=echo),
        lambda key: _deployment(gemini.SPEC, "gemini", key),
        ErrorKind.NETWORK_ERROR,
        _generate_content_request,
        WireRequest(f"/v1beta/models/{GEMINI_MODEL}:streamGenerateContent", query={"alt": "sse"}),
        "/v1beta/models",
        # gemini-2.5-flash: $0.30 input, $0.075 cached input, $2.50 output (thinking included) per million.
        (0.30, 0.075, 2.50),
    ),
    # A local server has no key; a refused connection means it is down.
    "local": Wiring(
        LOCAL_MODEL,
        lambda key, echo: FakeOpenAI(api_key=None),
        lambda key: _local,
        ErrorKind.MODEL_UNAVAILABLE,
        _chat_completions_request,
        CHAT_COMPLETIONS_STREAM,
        "/v1/models",
        (0.0, 0.0, 0.0),
        cloud=False,
    ),
}


async def make_under_test(
    name: str, *, api_key: str | None = None, presented_key: str | None = None, echo_key_in_errors: bool = False
) -> ProviderUnderTest:
    """``name``'s provider against its fake, started. The fake accepts ``api_key`` (default:
    the provider's test key); the provider presents ``presented_key`` (default: the same)."""
    wiring = WIRING[name]
    key = (api_key or TEST_KEYS[name]) if wiring.cloud else None
    sent_key = presented_key or key
    fake = await wiring.fake(key, echo_key_in_errors).start()
    build = wiring.deployment(sent_key or "")
    under_test = ProviderUnderTest(
        name,
        build(fake.url),
        fake,
        wiring.model,
        sent_key,
        wiring.transport_error_kind,
        build=build,
        expected_request=wiring.expected_request(wiring.model, sent_key),
        stream_request=wiring.stream_request,
        health_path=wiring.health_path,
        list_price=wiring.list_price,
    )
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
