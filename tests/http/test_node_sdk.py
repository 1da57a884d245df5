"""The official OpenAI Node SDK (``make node-sdk``: ``openai`` from npm in .tools/openai-node)
against the HTTP API: one plain and one streamed completion, and its BadRequestError."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

from ..fakes import TokenCounts
from ..support.processes import REPO
from .conftest import OPENAI_MODEL, Served

NODE_MODULES = REPO / ".tools" / "openai-node" / "node_modules"
SCRIPT = Path(__file__).parent / "node" / "chat.cjs"


async def test_node_sdk_plain_and_streamed(served: Served) -> None:
    assert (NODE_MODULES / "openai" / "package.json").is_file(), "run `make node-sdk` (make test does)"
    served.fake.reply_text("from node", TokenCounts(prompt=4, completion=2))
    served.fake.stream_text(["stre", "amed"], TokenCounts(prompt=4, completion=2))
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES), "OPENAI_BASE_URL": served.base_url, "MODEL": OPENAI_MODEL}
    done = await asyncio.to_thread(subprocess.run, ["node", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["plain"] == "from node" and result["plainUsage"]["total_tokens"] == 6
    assert result["streamed"] == "streamed" and result["usage"]["completion_tokens"] == 2
    assert result["status"] == 400
