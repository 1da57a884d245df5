"""The operator's tools nobody here wrote, run for real: grpc-health-probe for liveness and
readiness, and ``buf curl`` listing and calling methods through reflection."""

from __future__ import annotations

import json

from .conftest import StartApp
from .support.processes import free_port
from .support.tools import run, tool

READINESS = "llm_manager.v1.LLMManagerService"


async def test_grpc_health_probe_tells_liveness_from_readiness(start_app: StartApp) -> None:
    probe = tool("grpc-health-probe")
    nothing_answers = await start_app(LM_STUDIO_ENDPOINT=f"http://127.0.0.1:{free_port()}/v1", LLM_GENERAL_MODEL_1="alpha")
    code, output = await run(probe, f"-addr={nothing_answers.address}")
    assert code == 0 and "SERVING" in output, output  # the process is alive
    code, output = await run(probe, f"-addr={nothing_answers.address}", f"-service={READINESS}")
    assert code != 0 and "NOT_SERVING" in output, output  # but not ready: no model can answer
    ready = await start_app()  # the embedded SmolLM2
    code, output = await run(probe, f"-addr={ready.address}", f"-service={READINESS}")
    assert code == 0 and "SERVING" in output, output


async def test_buf_curl_lists_and_calls_methods_through_reflection(start_app: StartApp) -> None:
    app = await start_app()
    buf = tool("buf")
    url = f"http://{app.address}"
    code, output = await run(buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-methods", url)
    assert code == 0, output
    methods = set(output.split())
    assert {"llm_manager.v1.LLMManagerService/Generate", "llm_manager.v1.ConversationService/SendMessage", "grpc.health.v1.Health/List"} <= methods
    code, output = await run(
        buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "-d", '{"prompt": "hi", "preferences": {"max_tokens": 4}}',
        f"{url}/llm_manager.v1.LLMManagerService/Generate",
    )
    assert code == 0, output
    assert json.loads(output)["text"]
