"""The README's OpenAI-compatible HTTP API example runs, unchanged but for the base URL, with
the official SDK against a started server (the OpenAI fake answers with its recorded replies)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from ..support.tools import REPO, run
from .conftest import Served


async def test_the_readme_http_example_runs(served: Served) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## OpenAI-compatible HTTP API") :]
    program = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    with tempfile.TemporaryDirectory(prefix="readme-http-") as scratch:
        script = Path(scratch) / "example.py"
        script.write_text(program)
        env = {**os.environ, "OPENAI_BASE_URL": served.base_url, "OPENAI_API_KEY": "unused"}
        code, output = await run(str(REPO / ".venv" / "bin" / "python"), str(script), env=env, timeout_s=120)
    assert code == 0, output
    assert "CompletionUsage" in output, output
    assert len(served.fake.generation_requests) == 3
