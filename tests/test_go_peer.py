"""The Go peer: `go test` in clients/go (generated Go stubs) and the example peer, against the
real server."""

from __future__ import annotations

import os

from .conftest import StartApp
from .support.tools import REPO, run, tool


async def test_go_stubs_and_example_peer_against_the_server(start_app: StartApp) -> None:
    app = await start_app()
    go = tool("go")
    env = {**os.environ, "LLM_MANAGER_ADDR": app.address, "GOFLAGS": "-mod=readonly"}
    code, output = await run(go, "test", "-count=1", "-v", "./...", cwd=REPO / "clients" / "go", env=env, timeout_s=600)
    assert code == 0, output
    assert "--- PASS" in output and "--- FAIL" not in output

    code, output = await run(
        go, "run", "./cmd/example-peer", "-addr", app.address, "-prompt", "Say hello",
        cwd=REPO / "clients" / "go", env=env, timeout_s=300,
    )
    assert code == 0, output
    assert "stream:" in output
