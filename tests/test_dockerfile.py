"""The Dockerfile, checked without a Docker engine: hadolint, its build steps in a clean venv,
and its CMD / HEALTHCHECK / STOPSIGNAL behaviour (scripts/check_dockerfile.sh)."""

from __future__ import annotations

from .support.tools import REPO, run


async def test_dockerfile_lints_builds_serves_and_stops() -> None:
    code, output = await run(str(REPO / "scripts" / "check_dockerfile.sh"), timeout_s=900)
    assert code == 0, output[-4000:]
    assert "Dockerfile checks passed" in output and "SERVING" in output
