"""An upstream that echoes our API key in every field of its errors: not one character of the
key reaches the caller's status (message, ErrorInfo, BadRequest), the error's text, or a log
line. Covers each place the hardening issue found: OpenAI's ``error.param`` and ``code``, the
``x-request-id`` / ``request-id`` headers, Anthropic's ``request_id`` and error ``type`` (plain
and mid-stream), and a non-JSON body whose key straddles the 300-character cut."""

from __future__ import annotations

import asyncio
import logging

import pytest

from llm_manager_server.config import Secret
from llm_manager_server.domain.errors import LLMError
from llm_manager_server.domain.types import Message, ModelCall, Role, SamplingOptions
from llm_manager_server.domain.types import ProviderKind
from llm_manager_server.providers.anthropic import AnthropicProvider
from llm_manager_server.providers.openai_compat import OpenAICompatibleProvider
from llm_manager_server.status import to_status_proto

from ..fakes import FakeAnthropic, FakeOpenAI
from ..fakes.http_fake import PlannedReply, event_stream_reply, json_reply

# Shaped like no known key format: only redaction of the configured secret can catch it.
KEY = "ECHOKEY-9f3b1d7a5c2e4f6081a3b5c7d9e1f2a4"
# Any 10 consecutive characters of the key count as a leak (a cut key leaks its first part).
PIECES = {KEY[i : i + 10] for i in range(len(KEY) - 9)}


def _plain(status: int, text: str) -> PlannedReply:
    return PlannedReply(status, {"content-type": "text/plain"}, (text.encode(),))


def _straddling_body() -> str:
    """A non-JSON error body with the key starting at character 285: cut to 300 first, the
    cut would keep 15 characters of the key that no longer match it whole."""
    return "x" * 285 + KEY + " trailing text"


def openai_replies() -> list[tuple[str, PlannedReply, bool]]:
    return [
        (
            "400 with the key as error.param and code, and as x-request-id",
            json_reply(400, {"error": {"message": "bad parameter", "type": "invalid_request_error", "param": KEY, "code": KEY}}, {"x-request-id": KEY}),
            False,
        ),
        ("500 non-JSON body with the key across the cut", _plain(500, _straddling_body()), False),
        (
            "mid-stream error whose type and code are the key",
            event_stream_reply((b'data: {"error":{"message":"boom","type":"' + KEY.encode() + b'","code":"' + KEY.encode() + b'"}}\n\n',)),
            True,
        ),
    ]


def anthropic_replies() -> list[tuple[str, PlannedReply, bool]]:
    return [
        (
            "400 with the key as error type, request_id and request-id header",
            json_reply(400, {"type": "error", "error": {"type": KEY, "message": "bad"}, "request_id": KEY}, {"request-id": KEY}),
            False,
        ),
        ("529 with the key only in the request-id header", json_reply(529, {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}, {"request-id": KEY}), False),
        ("500 non-JSON body with the key across the cut", _plain(500, _straddling_body()), False),
        (
            "mid-stream error event whose type is the key",
            event_stream_reply((b'event: error\ndata: {"type":"error","error":{"type":"' + KEY.encode() + b'","message":"boom"}}\n\n',)),
            True,
        ),
    ]


def _leaked_pieces(text: str) -> list[str]:
    return sorted(piece for piece in PIECES if piece in text)


@pytest.mark.parametrize("provider_name", ["openai", "anthropic"])
async def test_no_part_of_an_echoed_key_reaches_a_status_or_log(provider_name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake: FakeOpenAI | FakeAnthropic
    provider: OpenAICompatibleProvider | AnthropicProvider
    if provider_name == "openai":
        fake = await FakeOpenAI(api_key=KEY).start()
        provider = OpenAICompatibleProvider(kind=ProviderKind.OPENAI, base_url=f"{fake.url}/v1", api_key=Secret(KEY), label="openai")
        model, cases = "gpt-4o-mini", openai_replies()
    else:
        fake = await FakeAnthropic(api_key=KEY).start()
        provider = AnthropicProvider(api_key=Secret(KEY), base_url=fake.url)
        model, cases = "claude-sonnet-4-5", anthropic_replies()
    await provider.start()
    call = ModelCall(model, (Message.of(Role.USER, "hi"),), SamplingOptions(), timeout_s=5.0)
    leaks: dict[str, list[str]] = {}
    try:
        for label, reply, streamed in cases:
            fake.plan(reply)
            with pytest.raises(LLMError) as raised:
                async with asyncio.timeout(5):
                    if streamed:
                        [delta async for delta in provider.stream(call)]
                    else:
                        await provider.generate(call)
            error = raised.value
            status = to_status_proto(error)
            for surface, text in {
                "status": status.SerializeToString().decode("latin-1"),
                "message": error.message,
                "metadata": repr(error.metadata),
                "violations": repr(error.field_violations),
            }.items():
                if found := _leaked_pieces(text):
                    leaks[f"{label}: {surface}"] = found
            assert "[redacted]" in status.SerializeToString().decode("latin-1"), f"{label}: the key was there to be redacted"
    finally:
        await provider.close()
        await fake.stop()
    assert leaks == {}
    logged = [r.getMessage() for r in caplog.records if _leaked_pieces(r.getMessage())]
    assert logged == []
