"""API keys never leak: not in an LLMError's message, metadata or details, not in the gRPC
status built from it, not in a log record, not in ``repr``, even when the upstream echoes
the key back in its error text (the fakes are told to, which real APIs do only masked)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from llm_manager_server.domain.errors import LLMError
from llm_manager_server.status import to_status_proto

from .conftest import CLOUD_PROVIDER_NAMES, dispose, make_under_test

# Shaped like no known key format, so only the provider's own secret-based redaction (not
# the pattern matching) can catch it.
WRONG_KEY = "TESTKEY-unpatterned-4f9a2c7e1b8d"


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


@pytest.mark.parametrize("provider_name", CLOUD_PROVIDER_NAMES)
async def test_key_appears_in_no_error_status_log_or_repr(provider_name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # The provider presents WRONG_KEY; the fake expects its own key and echoes the wrong one.
    under_test = await make_under_test(provider_name, presented_key=WRONG_KEY, echo_key_in_errors=True)
    provider, fake, call = under_test.provider, under_test.fake, under_test.call("hi")
    errors: list[LLMError] = []
    try:
        # The fake echoes the rejected key in its refusal, plain and streamed.
        for streamed in (False, True):
            with pytest.raises(LLMError) as raised:
                if streamed:
                    async with asyncio.timeout(5):
                        [delta async for delta in provider.stream(call)]
                else:
                    await provider.generate(call)
            errors.append(raised.value)
        health = await provider.health()
        # Errors whose text carries the key, as a 500 and as an error inside a stream.
        fake.api_key = WRONG_KEY
        fake.server_error(500, message=f"upstream saw key {WRONG_KEY}")
        fake.error_mid_stream(["Once"], message=f"stream saw key {WRONG_KEY}")
        with pytest.raises(LLMError) as raised:
            await provider.generate(call)
        errors.append(raised.value)
        with pytest.raises(LLMError) as raised:
            async with asyncio.timeout(5):
                [delta async for delta in provider.stream(call)]
        errors.append(raised.value)
    finally:
        await dispose(under_test)

    assert [e.kind.value for e in errors] == ["AUTHENTICATION_FAILED"] * 2 + ["MODEL_UNAVAILABLE"] * 2
    assert any("[redacted]" in e.message for e in errors), "the echoed key was there to be redacted"
    assert {repr(e): leaks(e) for e in errors if leaks(e)} == {}
    assert WRONG_KEY not in repr(provider) and WRONG_KEY not in str(provider)
    assert not health.healthy and WRONG_KEY not in health.detail
    logged = [record for record in caplog.records if WRONG_KEY in record.getMessage() or WRONG_KEY in repr(record.args)]
    assert logged == []
