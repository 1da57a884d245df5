"""An upstream that echoes our API key in every field of its errors: not one character of the
key reaches the caller's status (message, ErrorInfo, BadRequest), the error's text, or a log
line. Covers each place the hardening issue found: OpenAI's ``error.param`` and ``code``, the
``x-request-id`` / ``request-id`` headers, Anthropic's ``request_id`` and error ``type`` (plain
and mid-stream), Gemini's ``status``, ``ErrorInfo`` reason and metadata and ``BadRequest``
violations (plain and mid-stream), and a non-JSON body whose key straddles the 300-character
cut. The replies are each API's own error shapes, so the cases are per provider."""

from __future__ import annotations

import asyncio
import logging

import pytest

from llm_manager_server.domain.errors import LLMError
from llm_manager_server.status import to_status_proto

from ..fakes import gemini_fake
from ..fakes.http_fake import PlannedReply, event_stream_reply, json_reply
from .conftest import CLOUD_PROVIDER_NAMES, dispose, make_under_test

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


def gemini_replies() -> list[tuple[str, PlannedReply, bool]]:
    everywhere = {
        "error": {
            "code": 400,
            "message": f"upstream saw key {KEY}",
            "status": KEY,
            "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": KEY, "domain": "googleapis.com", "metadata": {"key": KEY}},
                {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": KEY, "description": f"bad {KEY}"}]},
            ],
        }
    }
    stream_error = {"error": {"code": 500, "message": f"stream saw key {KEY}", "status": KEY}}
    return [
        ("400 with the key in message, status, reason, metadata and violation", gemini_fake.body_reply(400, everywhere), False),
        ("the same 400 to a stream request", gemini_fake.body_reply(400, everywhere), True),
        ("429 with the key as the message", gemini_fake.body_reply(429, {"error": {"code": 429, "message": KEY, "status": "RESOURCE_EXHAUSTED"}}), False),
        ("500 non-JSON body with the key across the cut", gemini_fake.raw_reply(500, _straddling_body().encode()), False),
        ("mid-stream error whose message and status carry the key", gemini_fake.sse_reply([gemini_fake.event(stream_error)]), True),
    ]


CASES = {"openai": openai_replies, "anthropic": anthropic_replies, "gemini": gemini_replies}


def _leaked_pieces(text: str) -> list[str]:
    return sorted(piece for piece in PIECES if piece in text)


@pytest.mark.parametrize("provider_name", CLOUD_PROVIDER_NAMES)
async def test_no_part_of_an_echoed_key_reaches_a_status_or_log(provider_name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    under_test = await make_under_test(provider_name, api_key=KEY)
    provider, fake, call = under_test.provider, under_test.fake, under_test.call("hi")
    leaks: dict[str, list[str]] = {}
    try:
        for label, reply, streamed in CASES[provider_name]():
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
                "str": str(error),
                "repr": repr(error),
                "metadata": repr(error.metadata),
                "violations": repr(error.field_violations),
            }.items():
                if found := _leaked_pieces(text):
                    leaks[f"{label}: {surface}"] = found
            assert "[redacted]" in status.SerializeToString().decode("latin-1"), f"{label}: the key was there to be redacted"
    finally:
        await dispose(under_test)
    assert leaks == {}
    logged = [r.getMessage() for r in caplog.records if _leaked_pieces(r.getMessage()) or _leaked_pieces(repr(r.args))]
    assert logged == []
