"""API keys (LLM_API_KEYS_FILE) through the real gRPC server: who may call, with which headers,
and what a refused call looks like. The fault server plays the upstream."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llm_manager.client import error_details
from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api
from llm_manager_server.app import Application
from llm_manager_server.config import ConfigError, load_settings
from llm_manager_server.domain.caller import Caller

from .conftest import BASE_ENV, StartApp, Stubs
from .support.fault_server import FaultServer
from .support.keys import write_keys_file
from .support.processes import REPO
from .support.tools import run, tool

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
async def fake() -> AsyncIterator[FaultServer]:
    server = await FaultServer().start()
    yield server
    await server.stop()


def _request() -> api.GenerateRequest:
    return api.GenerateRequest(prompt="hi", preferences=common_pb2.GenerationPreferences(model="alpha"), cache_control=common_pb2.CacheControl(no_cache=True))


async def _keyed_app(start_app: StartApp, fake: FaultServer, tmp_path: Path, **extra: str) -> tuple[Application, dict[str, str]]:
    keys = write_keys_file(tmp_path / "keys.yaml", {"alice": {}, "bob": {"requests_per_minute": 60}})
    app = await start_app(LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="alpha", LLM_API_KEYS_FILE=str(tmp_path / "keys.yaml"), **extra)
    return app, keys


async def _refusal(stubs: Stubs, metadata: Metadata) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.llm.Generate(_request(), metadata=metadata, timeout=10)
    return raised.value


# --- the keys file ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_keys_file_loads_its_callers_with_their_limits_and_models(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"keys{suffix}"
    keys = write_keys_file(path, {
        "billing": {"requests_per_minute": 120, "tokens_per_minute": 50_000, "budget_usd_per_day": 2.5, "models": ["gpt-4o-mini", "alpha"]},
        "search": {},
    })
    ring = load_settings({"LLM_API_KEYS_FILE": str(path)}).api_keys
    assert ring is not None and len(ring) == 2
    assert ring.caller_for(keys["billing"]) == Caller("billing", frozenset({"gpt-4o-mini", "alpha"}), 120, 50_000, 2.5)
    assert ring.caller_for(keys["search"]) == Caller("search")
    assert ring.caller_for(keys["search"] + "x") is None and ring.caller_for("") is None
    assert "billing" in repr(ring) and hashlib.sha256(keys["billing"].encode()).hexdigest() not in repr(ring)
    assert load_settings({}).api_keys is None  # off by default


def test_a_caller_may_have_two_keys_with_the_same_limits(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    old, new = "llmm_old-key-of-billing-0123456789", "llmm_new-key-of-billing-0123456789"
    entries = [{"caller": "billing", "key_sha256": hashlib.sha256(k.encode()).hexdigest(), "models": ["alpha"]} for k in (old, new)]
    path.write_text(yaml.safe_dump({"keys": entries}))
    ring = load_settings({"LLM_API_KEYS_FILE": str(path)}).api_keys
    assert ring is not None and ring.caller_for(old) == ring.caller_for(new) == Caller("billing", frozenset({"alpha"}))


PLAINTEXT = "llmm_this-is-a-plaintext-key-0123456789"
DIGEST = hashlib.sha256(PLAINTEXT.encode()).hexdigest()


@pytest.mark.parametrize(
    ("content", "named", "problem"),
    [
        ({"keys": [{"caller": "a", "key": PLAINTEXT}]}, "keys[0].key", "plaintext key"),
        ({"keys": [{"caller": "a", "key_sha256": PLAINTEXT}]}, "keys[0].key_sha256", "64 hex digits"),
        ({"keys": [{"caller": "a", "key_sha256": DIGEST[:-1] + "g"}]}, "keys[0].key_sha256", "64 hex digits"),
        ({"keys": [{"caller": "a", "key_sha256": DIGEST}, {"caller": "b", "key_sha256": DIGEST.upper()}]}, "keys[1].key_sha256", "same key"),
        ({"keys": [{"caller": "a", "key_sha256": DIGEST}, {"caller": "a", "key_sha256": "0" * 64, "models": ["x"]}]}, "keys[1]", "other limits"),
        ({"keys": [{"caller": "a", "key_sha256": DIGEST, "rpm": 5}]}, "keys[0]", "unknown field(s) rpm"),
        ({"keys": [{"caller": "a b", "key_sha256": DIGEST}]}, "keys[0].caller", "letters, digits"),
        ({"keys": [{"caller": "a", "key_sha256": DIGEST, "models": []}]}, "keys[0].models", "at least one model"),
        ({"keys": [{"caller": "a", "key_sha256": DIGEST, "requests_per_minute": 0}]}, "keys[0].requests_per_minute", "positive integer"),
        ({"keys": [{"caller": "a", "key_sha256": DIGEST, "budget_usd_per_day": "lots"}]}, "keys[0].budget_usd_per_day", "number of dollars"),
        ({"keys": []}, "keys", "at least one key"),
        ({"callers": []}, "LLM_API_KEYS_FILE", "'keys' list"),
    ],
)
def test_a_bad_keys_file_is_one_line_naming_the_entry_and_never_the_key(tmp_path: Path, content: object, named: str, problem: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(ConfigError) as raised:
        load_settings({"LLM_API_KEYS_FILE": str(path)})
    message = str(raised.value)
    assert raised.value.variable.startswith("LLM_API_KEYS_FILE") and named in raised.value.variable and problem in message, message
    assert "\n" not in message and PLAINTEXT not in message and DIGEST not in message.lower()


def test_an_unparsable_keys_file_names_the_line_not_its_content(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(f"keys:\n  - caller: a\n    key_sha256: [{PLAINTEXT}\n")
    with pytest.raises(ConfigError) as raised:
        load_settings({"LLM_API_KEYS_FILE": str(path)})
    assert "cannot parse" in str(raised.value) and "line" in str(raised.value) and PLAINTEXT not in str(raised.value)
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings({"LLM_API_KEYS_FILE": str(tmp_path / "missing.yaml")})


def test_start_up_with_a_plaintext_key_exits_2_before_listening(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": [{"caller": "a", "key_sha256": PLAINTEXT}]}))
    env = {**os.environ, "LLM_API_KEYS_FILE": str(path), "LLM_GRPC_PORT": "0"}
    done = subprocess.run([sys.executable, "-m", "llm_manager_server"], env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "LLM_API_KEYS_FILE keys[0].key_sha256" in lines[0] and PLAINTEXT not in done.stderr, done.stderr


# --- the CLI ------------------------------------------------------------------------------


def test_the_cli_prints_a_new_key_once_and_an_entry_the_server_accepts(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llm_manager_server.keys", "new", "--caller", "billing", "--models", "gpt-4o-mini, alpha", "--requests-per-minute", "60", "--budget-usd-per-day", "1.5"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    key, entry_text = done.stdout.split("\n", 1)
    assert key.startswith("llmm_") and len(key) >= 40 and key not in entry_text and key not in done.stderr
    (entry,) = yaml.safe_load(entry_text)
    assert entry == {"caller": "billing", "key_sha256": hashlib.sha256(key.encode()).hexdigest(), "requests_per_minute": 60, "budget_usd_per_day": 1.5, "models": ["gpt-4o-mini", "alpha"]}
    # Appended under "keys:", the entry is one the server loads.
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n" + entry_text)
    ring = load_settings({"LLM_API_KEYS_FILE": str(path)}).api_keys
    assert ring is not None and ring.caller_for(key) == Caller("billing", frozenset({"gpt-4o-mini", "alpha"}), 60, None, 1.5)
    # Two runs, two keys.
    again = subprocess.run([sys.executable, "-m", "llm_manager_server.keys", "new", "--caller", "billing"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert again.returncode == 0 and again.stdout.split("\n", 1)[0] != key
    bad = subprocess.run([sys.executable, "-m", "llm_manager_server.keys", "new", "--caller", "no spaces"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert bad.returncode == 2 and "--caller" in bad.stderr


# --- authentication through gRPC ----------------------------------------------------------


async def test_a_key_in_either_header_is_the_same_caller(start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer, tmp_path: Path) -> None:
    app, keys = await _keyed_app(start_app, fake, tmp_path)
    stubs = connect(app)
    for metadata in (
        (("authorization", f"Bearer {keys['alice']}"),),
        (("authorization", f"bearer {keys['alice']}"),),  # the scheme is case-insensitive
        (("x-api-key", keys["alice"]),),
        (("authorization", f"Bearer {keys['alice']}"), ("x-api-key", keys["alice"])),
    ):
        reply = await stubs.llm.Generate(_request(), metadata=metadata, timeout=10)
        assert reply.text.strip() == fake.text, metadata
    listed = await stubs.llm.ListModels(api.ListModelsRequest(), metadata=(("x-api-key", keys["bob"]),), timeout=10)
    assert listed.models


async def test_missing_wrong_or_malformed_keys_are_unauthenticated(start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer, tmp_path: Path) -> None:
    app, keys = await _keyed_app(start_app, fake, tmp_path)
    stubs = connect(app)
    alice, bob = keys["alice"], keys["bob"]
    refused: list[Metadata] = [
        (),
        (("authorization", f"Bearer {alice}x"),),
        (("x-api-key", alice[:-1]),),
        (("authorization", alice),),  # no scheme
        (("authorization", "Bearer "),),
        (("authorization", f"Basic {alice}"),),
        (("authorization", "Basic YWxpY2U6c2VjcmV0"),),
        (("authorization", f"Bearer {alice}"), ("x-api-key", bob)),  # two keys, two scopes: neither
        (("authorization", f"Bearer {alice}"), ("authorization", f"Bearer {bob}")),
        (("x-api-key", alice), ("x-api-key", alice)),
        (("x-api-key", "' OR '1'='1' --"),),
        (("x-api-key", "x'; DROP TABLE keys; --"),),
        (("authorization", "Bearer " + "A" * 100_000),),  # a 100 KB header
        (("x-api-key", "k" * 257),),
    ]
    for metadata in refused:
        error = await _refusal(stubs, metadata)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (metadata[:1], error.code(), error.details())
        info = error_details(error)
        assert info.reason == "AUTHENTICATION_FAILED" and info.domain == "llm-manager"
        for value in (alice, bob):
            assert value not in (error.details() or "") and value not in str(error.trailing_metadata())
    assert fake.requests == []  # nothing refused reached the upstream
    # Streams and the other service are behind the same gate.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in stubs.llm.StreamGenerate(api.StreamGenerateRequest(prompt="hi"), timeout=10):
            pass
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.conversations.CreateConversation(__import__("llm_manager.v1.conversation_service_pb2", fromlist=["x"]).CreateConversationRequest(), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_and_reflection_stay_open(start_app: StartApp, connect: Callable[..., Stubs], fake: FaultServer, tmp_path: Path) -> None:
    app, _ = await _keyed_app(start_app, fake, tmp_path)
    health = health_pb2_grpc.HealthStub(connect(app).channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    code, output = await run(tool("grpcurl"), "-plaintext", app.address, "list")
    assert code == 0 and "llm_manager.v1.LLMManagerService" in output, output


async def test_grpcurl_with_a_key_in_either_header(start_app: StartApp, fake: FaultServer, tmp_path: Path) -> None:
    app, keys = await _keyed_app(start_app, fake, tmp_path)
    grpcurl = tool("grpcurl")
    body = json.dumps({"prompt": "hi", "preferences": {"model": "alpha"}})
    for header in (f"authorization: Bearer {keys['alice']}", f"x-api-key: {keys['bob']}"):
        code, output = await run(grpcurl, "-plaintext", "-H", header, "-d", body, app.address, "llm_manager.v1.LLMManagerService/Generate")
        assert code == 0 and json.loads(output)["text"].strip() == fake.text, output
    code, output = await run(grpcurl, "-plaintext", "-d", body, app.address, "llm_manager.v1.LLMManagerService/Generate")
    assert code != 0 and "Unauthenticated" in output and "AUTHENTICATION_FAILED" in output, output
    code, output = await run(grpcurl, "-plaintext", "-H", "authorization: Bearer ' OR 1=1 --", "-d", body, app.address, "llm_manager.v1.LLMManagerService/Generate")
    assert code != 0 and "Unauthenticated" in output, output


async def test_the_caller_is_on_the_span_and_the_access_log_and_no_key_anywhere(
    fake: FaultServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys = write_keys_file(tmp_path / "keys.json", {"alice": {}})
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    env = {**BASE_ENV, "LM_STUDIO_ENDPOINT": fake.url, "LLM_GENERAL_MODEL_1": "alpha", "LLM_API_KEYS_FILE": str(tmp_path / "keys.json"), "LLM_DATA_DIR": str(tmp_path)}
    metrics = InMemoryMetricReader()
    app = Application(load_settings(env), tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[metrics]))
    caplog.set_level(logging.DEBUG)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            stubs = Stubs(channel)
            await stubs.llm.Generate(_request(), metadata=(("authorization", f"Bearer {keys['alice']}"),), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError):
                await stubs.llm.Generate(_request(), metadata=(("x-api-key", keys["alice"] + "0"),), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError):
                await stubs.llm.Generate(_request(), metadata=(("authorization", f"Bearer {keys['alice']}"), ("x-api-key", "llmm_other")), timeout=10)
        for _ in range(50):
            access = [r.getMessage() for r in caplog.records if r.name == "llm_manager_server.access"]
            if len(access) >= 3:
                break
            await asyncio.sleep(0.05)
        exported = metrics.get_metrics_data()
        assert exported is not None
        metric_text = exported.to_json()
    finally:
        await app.stop(grace_s=0)
    assert any(line.endswith("-> OK in " + line.split(" in ", 1)[1].split(" ", 1)[0] + " ms caller=alice") for line in access), access
    assert sum("-> UNAUTHENTICATED" in line for line in access) == 2 and not any("caller=" in line for line in access if "UNAUTH" in line), access
    server_spans = [s for s in spans.get_finished_spans() if s.name.endswith("/Generate")]
    assert len(server_spans) == 3
    assert [s.attributes.get("llm_manager.caller") for s in server_spans] == ["alice", None, None]  # type: ignore[union-attr]
    everything = "\n".join(caplog.text.splitlines()) + "\n".join(
        json.dumps({"attributes": dict(s.attributes or {}), "events": [dict(e.attributes or {}) for e in s.events], "status": s.status.description}) for s in spans.get_finished_spans()
    )
    everything += metric_text
    assert "gen_ai" in metric_text or "llm" in metric_text  # the metrics were exported
    assert keys["alice"] not in everything and keys["alice"][5:20] not in everything
    assert hashlib.sha256(keys["alice"].encode()).hexdigest() not in everything


def test_anything_shaped_like_one_of_our_keys_is_redacted() -> None:
    from llm_manager_server.keys import new_key
    from llm_manager_server.redaction import redact

    key = new_key()
    assert redact(f"upstream said: bad token {key}, retry") == "upstream said: bad token [redacted], retry"


def test_sharing_the_cache_across_callers_is_an_explicit_boolean() -> None:
    assert load_settings({}).cache.shared_across_callers is False
    assert load_settings({"LLM_CACHE_SHARED_ACROSS_CALLERS": "true"}).cache.shared_across_callers is True
    with pytest.raises(ConfigError) as raised:
        load_settings({"LLM_CACHE_SHARED_ACROSS_CALLERS": "maybe"})
    assert raised.value.variable == "LLM_CACHE_SHARED_ACROSS_CALLERS"


async def test_the_readme_api_key_commands_work_as_written(start_app: StartApp, fake: FaultServer, tmp_path: Path) -> None:
    """The "API keys and authorization" section's commands, run as written (only the port and
    the path of the venv's python differ): the CLI makes a keys file the server starts with, and
    grpcurl, the Python example and the Go peer call it with the key."""
    import re

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### API keys and authorization") :]
    section = section[: re.search(r"\n##+ ", section).start()]  # type: ignore[union-attr]
    make_key, calls, go_run = re.findall(r"```sh\n(.*?)```", section, re.S)
    (program,) = re.findall(r"```python\n(.*?)```", section, re.S)
    assert "LLM_API_KEYS_FILE=keys.yaml make run" in make_key
    script = make_key.replace("LLM_API_KEYS_FILE=keys.yaml make run", 'printf "%s" "$KEY" > key.txt').replace(".venv/bin/python", sys.executable)
    code, output = await run(tool("bash"), "-euo", "pipefail", "-c", script, cwd=tmp_path)
    assert code == 0, output
    key = (tmp_path / "key.txt").read_text()
    assert key.startswith("llmm_") and not (tmp_path / "new-key.txt").exists()

    app = await start_app(LM_STUDIO_ENDPOINT=fake.url, LLM_GENERAL_MODEL_1="smollm2-135m-instruct", LLM_API_KEYS_FILE=str(tmp_path / "keys.yaml"))
    env = {**os.environ, "KEY": key, "LLM_API_KEY": key, "GOFLAGS": "-mod=readonly",
           "PATH": f"{Path(tool('grpcurl')).parent}:{Path(tool('go')).parent}:{os.environ['PATH']}"}
    outputs = []
    for command in calls.strip().splitlines():
        code, output = await run(tool("bash"), "-euo", "pipefail", "-c", command.replace("127.0.0.1:50051", app.address), env=env)
        assert code == 0, (command, output)
        outputs.append(output)
    assert json.loads(outputs[0])["model"] == "smollm2-135m-instruct"
    assert [m["name"] for m in json.loads(outputs[1])["models"]] == ["smollm2-135m-instruct"]
    (tmp_path / "example.py").write_text(program.replace("127.0.0.1:50051", app.address))
    code, output = await run(sys.executable, str(tmp_path / "example.py"), env=env)
    assert code == 0 and output.strip() == fake.text, output
    code, output = await run(tool("bash"), "-euo", "pipefail", "-c", go_run.strip().replace("127.0.0.1:50051", app.address), cwd=REPO, env=env, timeout_s=300)
    assert code == 0 and "stream:" in output and "smollm2-135m-instruct" in output, output


@pytest.mark.parametrize(
    ("authorization", "api_key"),
    [(None, None), ("Basic dXNlcjpwYXNz", None), ("Bearer llmm_aaaaaaaaaaaa", "llmm_bbbbbbbbbbbb"), ("Bearer a b", None)],
    ids=["missing", "other-scheme", "two-keys", "malformed"],
)
def test_refusals_read_the_same_after_redaction(authorization: str | None, api_key: str | None) -> None:
    """Every status message goes through the redaction of "Bearer <token>" and "x-api-key:
    <token>": a refusal worded with a word after either would reach the caller as
    "[redacted]" nonsense, so each says what to send without tripping it."""
    from llm_manager_server.calls import presented_key
    from llm_manager_server.domain.errors import LLMError
    from llm_manager_server.redaction import redact

    with pytest.raises(LLMError) as refused:
        presented_key(authorization, api_key)
    assert redact(refused.value.message) == refused.value.message
    assert "[redacted]" not in refused.value.message
