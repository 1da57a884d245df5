"""Helpers to run real servers as child processes on free loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_http_ok(url: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


class LlamaServer:
    """A real llama.cpp server (SmolLM2) in a child process."""

    def __init__(self, *, threads: int = 1, parallel: int = 2, embedding: bool = False) -> None:
        self.port = free_port()
        self._args = [sys.executable, "-m", "tests.support.llama_server", "--port", str(self.port),
                      "--threads", str(threads), "--parallel", str(parallel)] + (["--embedding"] if embedding else [])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LlamaServer:
        self.process = subprocess.Popen(self._args, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        wait_http_ok(f"{self.url}/health", 60, self.process)
        return self

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-whatever, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def slots_busy(self) -> int:
        """How many of the server's slots are generating right now."""
        import json

        with urllib.request.urlopen(f"{self.url}/slots", timeout=2) as response:
            slots = json.load(response)
        return sum(1 for slot in slots if slot.get("is_processing"))
