"""API keys never leak: not in an LLMError's message, metadata or details, not in the gRPC
status built from it, not in a log record, not in ``repr``, even when the upstream echoes
the key back in its error text (the fakes are told to, which real APIs do only masked)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from llm_manager_server.config import Secret
from llm_manager_server.domain.errors import LLMError
from llm_manager_server.domain.types import Message, ModelCall, ProviderKind, Role, SamplingOptions
from llm_manager_server.providers.anthropic import AnthropicProvider
from llm_manager_server.providers.openai_compat import OpenAICompatibleProvider
from llm_manager_server.status import to_status_proto

from ..fakes import FakeAnthropic, FakeOpenAI
from ..fakes.http_fake import PlannedReply, event_stream_reply, json_reply
from .conftest import ANTHROPIC_KEY, OPENAI_KEY

# Shaped like no known key format, so only the provider's own secret-based redaction (not
# the pattern matching) can catch it.
WRONG_KEY = "TESTKEY-unpatterned-4f9a2c7e1b8d"


def echoing_error_replies(provider_name: str) -> list[PlannedReply]:
    """A 500 and a mid-stream error whose messages contain the key the caller presented."""
    body: dict[str, object]
    if provider_name == "openai":
        body = {"error": {"message": f"upstream saw key {WRONG_KEY}", "type": "server_error", "param": None, "code": None}}
        event = b'data: {"error":{"message":"stream saw key ' + WRONG_KEY.encode() + b'","type":"server_error"}}\n\n'
    else:
        body = {"type": "error", "error": {"type": "api_error", "message": f"upstream saw key {WRONG_KEY}"}}
        event = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"stream saw key ' + WRONG_KEY.encode() + b'"}}\n\n'
    return [json_reply(500, body), event_stream_reply((event,))]


def leaks(error: LLMError) -> list[str]:
    surfaces = {
        "message": error.message,
        "str": str(error),
        "repr": repr(error),
        "metadata": repr(error.metadata),
        "violations": repr(error.field_violations),
        "grpc status": to_status_proto(error).SerializeToString().decode("latin-1"),
    }
    return [name for name, text in surfaces.items() if WRONG_KEY in text]


@pytest.mark.parametrize("provider_name", ["openai", "anthropic"])
async def test_key_appears_in_no_error_status_log_or_repr(provider_name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake: FakeOpenAI | FakeAnthropic
    provider: OpenAICompatibleProvider | AnthropicProvider
    if provider_name == "openai":
        fake = await FakeOpenAI(api_key=OPENAI_KEY, echo_key_in_errors=True).start()
        provider = OpenAICompatibleProvider(
            kind=ProviderKind.OPENAI, base_url=f"{fake.url}/v1", api_key=Secret(WRONG_KEY), label="openai"
        )
        model = "gpt-4o-mini"
    else:
        fake = await FakeAnthropic(api_key=ANTHROPIC_KEY, echo_key_in_errors=True).start()
        provider = AnthropicProvider(api_key=Secret(WRONG_KEY), base_url=fake.url)
        model = "claude-sonnet-4-5"
    await provider.start()
    call = ModelCall(model, (Message.of(Role.USER, "hi"),), SamplingOptions(), timeout_s=5.0)
    errors: list[LLMError] = []
    try:
        # The fake echoes the rejected key in its 401, plain and streamed.
        for streamed in (False, True):
            with pytest.raises(LLMError) as raised:
                if streamed:
                    async with asyncio.timeout(5):
                        [delta async for delta in provider.stream(call)]
                else:
                    await provider.generate(call)
            errors.append(raised.value)
        # Errors whose text carries the key, as a 500 and as an event inside a stream.
        fake.api_key = WRONG_KEY
        fake.plan(*echoing_error_replies(provider_name))
        with pytest.raises(LLMError) as raised:
            await provider.generate(call)
        errors.append(raised.value)
        with pytest.raises(LLMError) as raised:
            async with asyncio.timeout(5):
                [delta async for delta in provider.stream(call)]
        errors.append(raised.value)
        health = await provider.health()
    finally:
        await provider.close()
        await fake.stop()

    assert [e.kind.value for e in errors[:2]] == ["AUTHENTICATION_FAILED"] * 2
    assert any("[redacted]" in e.message for e in errors), "the echoed key was there to be redacted"
    assert {repr(e): leaks(e) for e in errors if leaks(e)} == {}
    assert WRONG_KEY not in repr(provider) and WRONG_KEY not in str(provider)
    assert WRONG_KEY not in health.detail
    logged = [record for record in caplog.records if WRONG_KEY in record.getMessage() or WRONG_KEY in repr(record.args)]
    assert logged == []
