"""Finds command-line tools the tests drive; a missing tool fails the test, never skips it."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOL_DIRS = (REPO / ".tools" / "bin", REPO / ".tools" / "node_modules" / ".bin", Path("/usr/local/go/bin"))


def tool(name: str) -> str:
    for directory in TOOL_DIRS:
        if (directory / name).exists():
            return str(directory / name)
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is not installed: run `make tools` (make test does it)")
    return found


async def run(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None, timeout_s: float = 300) -> tuple[int, str]:
    """Runs a command without blocking the event loop (the server under test shares it)."""
    process = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{args[0]} did not finish within {timeout_s} s") from None
    return process.returncode or 0, output.decode(errors="replace")
