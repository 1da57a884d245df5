"""Per-caller limits on the HTTP API: the same limits as gRPC; over one is 429 with
``retry-after`` (the SDK's ``RateLimitError``), code ``quota_exceeded``, and the call never
reaches the upstream; the usage ledger books the HTTP calls of the caller."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from ..fakes import FakeOpenAI, TokenCounts
from ..providers.conftest import OPENAI_KEY
from ..support.keys import write_keys_file
from ..usage.test_usage_e2e import same_minute
from .conftest import OPENAI_MODEL, start_served


async def test_a_caller_over_its_requests_per_minute_gets_429_with_retry_after(tmp_path: Path) -> None:
    keys = write_keys_file(tmp_path / "keys.yaml", {"alice": {"requests_per_minute": 1}})
    fake = await FakeOpenAI(api_key=OPENAI_KEY).start()
    app = await start_served(fake, str(tmp_path), LLM_API_KEYS_FILE=str(tmp_path / "keys.yaml"))
    try:
        await same_minute()
        fake.reply_text("hello alice", TokenCounts(prompt=3, completion=2))
        async with openai.AsyncOpenAI(api_key=keys["alice"], base_url=f"http://{app.http_address}/v1", max_retries=0) as alice:
            await alice.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": "hi"}])
            with pytest.raises(openai.RateLimitError) as raised:
                await alice.chat.completions.create(model=OPENAI_MODEL, messages=[{"role": "user", "content": "hi"}])
        assert raised.value.status_code == 429 and raised.value.code == "quota_exceeded"
        assert 1 <= int(raised.value.response.headers["retry-after"]) <= 60
        assert len(fake.generation_requests) == 1
        assert app.usage_ledger is not None
        rows = await app.usage_ledger.read("alice", first_day=None, last_day=None, model=None)
        assert [(r.requests, r.prompt_tokens, r.completion_tokens) for r in rows] == [(1, 3, 2)]
    finally:
        await app.stop(grace_s=0)
        await fake.stop()
