"""The Go peer: `go test` in clients/go (generated Go stubs, tool round trips and structured output)
and the example peer's three modes, against the real server."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jsonschema

from .conftest import StartApp
from .support.tools import REPO, run, tool
# The example peer's query_metrics parameters and -structured default (cmd/example-peer/tools.go).
from .support.schemas import QUERY_METRICS, SERVICE_CONFIG


async def test_go_stubs_and_example_peer_against_the_server(start_app: StartApp, tmp_path: Path) -> None:
    app = await start_app()
    go = tool("go")
    env = {**os.environ, "LLM_MANAGER_ADDR": app.address, "GOFLAGS": "-mod=readonly"}
    code, output = await run(go, "test", "-count=1", "-v", "./...", cwd=REPO / "clients" / "go", env=env, timeout_s=600)
    assert code == 0, output
    assert "--- PASS" in output and "--- FAIL" not in output
    for name in ("TestGenerateToolRoundTrip", "TestGenerateStructuredOutput", "TestToolRoundTripPrintsTheCallItsResultAndTheAnswer", "TestEmbed"):
        assert f"--- PASS: {name} " in output, f"{name} did not run"

    peer = str(tmp_path / "example-peer")
    code, output = await run(go, "build", "-o", peer, "./cmd/example-peer", cwd=REPO / "clients" / "go", env=env, timeout_s=300)
    assert code == 0, output

    code, output = await run(peer, "-addr", app.address, "-prompt", "Say hello", env=env, timeout_s=120)
    assert code == 0, output
    assert "stream:" in output

    code, output = await run(peer, "-addr", app.address, "-tools", env=env, timeout_s=120)
    assert code == 0, output
    assert re.search(r"^trace_id: [0-9a-f]{32}$", output, re.M) and "finish_reason=FINISH_REASON_TOOL_CALLS" in output, output
    calls = re.findall(r"^  tool_call: id=(\S+) name=(\S+) arguments=(\{.*\})$", output, re.M)
    results = re.findall(r"^  tool_result: id=(\S+) (\{.*\})$", output, re.M)
    assert calls and [c[0] for c in calls] == [r[0] for r in results], output
    for (_, name, arguments), (_, result) in zip(calls, results, strict=True):
        assert name == "query_metrics"
        jsonschema.validate(json.loads(arguments), QUERY_METRICS)
        assert json.loads(result)["minutes"] == json.loads(arguments)["minutes"]
    answer = re.search(r"^answer:\n  text: (.+)$", output, re.M)
    assert answer and answer.group(1).strip(), output

    code, output = await run(peer, "-addr", app.address, "-structured", "-trace=false", env=env, timeout_s=120)
    assert code == 0, output
    document = re.search(r"^structured_output: (\{.*\})$", output, re.M)
    assert document, output
    jsonschema.validate(json.loads(document.group(1)), SERVICE_CONFIG)

    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 30}, "replicas": {"type": "integer"}}, "required": ["name", "replicas"]}
    code, output = await run(
        peer, "-addr", app.address, "-structured", "-trace=false", "-prompt", "Payments API: 4 replicas.", "-schema", json.dumps(schema),
        env=env, timeout_s=120,
    )
    assert code == 0, output
    document = re.search(r"^structured_output: (\{.*\})$", output, re.M)
    assert document, output
    jsonschema.validate(json.loads(document.group(1)), schema)

    code, output = await run(peer, "-tools", "-structured", env=env, timeout_s=60)
    assert code == 2 and "exclusive" in output, output
