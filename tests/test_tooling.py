"""Repository checks that CI must fail on: stale stubs, proto lint, type errors."""

from __future__ import annotations

import sys

from .support.tools import REPO, run, tool


async def test_checked_in_stubs_match_the_protos() -> None:
    code, output = await run(str(REPO / "scripts" / "check_proto.sh"), timeout_s=300)
    assert code == 0, output
    assert "stubs are up to date" in output


async def test_protos_pass_buf_lint_and_format() -> None:
    buf = tool("buf")
    code, output = await run(buf, "lint")
    assert code == 0, output
    code, output = await run(buf, "format", "--diff", "--exit-code")
    assert code == 0, output


async def test_server_and_client_type_check_strict() -> None:
    code, output = await run(sys.executable, "-m", "mypy", timeout_s=600)
    assert code == 0, output
    assert "Success" in output
