"""Private Redis and PostgreSQL servers for the storage tests, on free loopback ports.

Each is started once per test session from Debian's binaries (``redis-server``;
``postgresql``'s ``initdb``/``postgres``, in a throwaway cluster) and stopped at the end.
A missing binary fails the tests that need it, with the command that installs it: CI must
never pass by skipping the Redis and PostgreSQL suites.

PostgreSQL refuses to run as root, so as root the cluster is created and run as the
``postgres`` user (the Debian package creates it) through ``subprocess``'s ``user=``, which
keeps the server a direct child: signals reach it without a wrapper in between.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .processes import free_port

INSTALL_HINT = "install Debian's redis-server and postgresql (`make system-deps`)"
START_TIMEOUT_S = 30.0


def _missing(what: str) -> AssertionError:
    return AssertionError(f"{what} is not installed: {INSTALL_HINT}")


def _wait(ready: Any, process: subprocess.Popen[bytes], what: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}: {log_path.read_text(errors='replace')[-2000:]}")
        if ready():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not become ready within {START_TIMEOUT_S} s")


def _stop(process: subprocess.Popen[bytes] | None, stop_signal: int) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(stop_signal)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(15)


class RedisServer:
    """``redis-server`` without persistence, bound to 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="llm-manager-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise _missing("redis-server")
        log_path = self.directory / "redis.log"
        args = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.directory), "--logfile", str(log_path), "--daemonize", "no",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _wait(self.ping, self.process, "redis-server", log_path)
        return self

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as connection:
            connection.sendall(b"FLUSHALL\r\n")
            connection.recv(16)

    def stop(self) -> None:
        _stop(self.process, signal.SIGTERM)
        shutil.rmtree(self.directory, ignore_errors=True)


def postgres_bindir() -> Path:
    """Debian installs versioned binaries under /usr/lib/postgresql/<major>/bin."""
    override = os.environ.get("LLM_TEST_PG_BINDIR")
    if override:
        return Path(override)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    if found is None:
        raise _missing("PostgreSQL (initdb)")
    return Path(found).parent


class PostgresServer:
    """A throwaway PostgreSQL cluster: trust auth, loopback only, fsync off (test speed)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="llm-manager-pg-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            self._as_user = {"user": "postgres", "group": "postgres", "extra_groups": []}
            shutil.chown(self.directory, user="postgres", group="postgres")

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        bindir = postgres_bindir()
        data = self.directory / "data"
        initdb = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
            cwd=self.directory, capture_output=True, **self._as_user,
        )
        if initdb.returncode != 0:
            raise AssertionError(f"initdb failed: {initdb.stderr.decode(errors='replace')[-2000:]}")
        log_path = self.directory / "postgres.log"
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data), "-p", str(self.port), "-h", "127.0.0.1",
                 "-k", str(self.directory), "-F", "-c", "max_connections=200"],
                cwd=self.directory, stdout=log, stderr=subprocess.STDOUT, **self._as_user,
            )

        def ready() -> bool:
            probe = subprocess.run(
                [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
                capture_output=True,
            )
            return probe.returncode == 0

        _wait(ready, self.process, "postgres", log_path)
        return self

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Runs one statement with psql; returns its unaligned output."""
        result = subprocess.run(
            [str(postgres_bindir() / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database, "-c", statement],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise AssertionError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def stop(self) -> None:
        _stop(self.process, signal.SIGINT)  # SIGINT: "fast" shutdown, disconnects clients
        shutil.rmtree(self.directory, ignore_errors=True)


# --- fixtures ------------------------------------------------------------------------------
# Several conftests import these fixtures, which makes each a separate session fixture; the
# servers are shared through a reference count so each starts once per session.

_shared: dict[str, tuple[Any, int]] = {}


def _acquire(name: str, start: Any) -> Any:
    server, users = _shared.get(name, (None, 0))
    if server is None:
        server = start()
    _shared[name] = (server, users + 1)
    return server


def _release(name: str) -> None:
    server, users = _shared[name]
    if users == 1:
        del _shared[name]
        server.stop()
    else:
        _shared[name] = (server, users - 1)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server: RedisServer = _acquire("redis", lambda: RedisServer().start())
    yield server
    _release("redis")


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server: PostgresServer = _acquire("postgres", lambda: PostgresServer().start())
    yield server
    _release("postgres")


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database in the session's cluster for this test, dropped afterwards.
    (Synchronous, through psql, so async fixtures can request it too.)"""
    name = f"test_{uuid.uuid4().hex[:16]}"
    postgres_server.sql(f'CREATE DATABASE "{name}"')
    yield postgres_server.dsn(name)
    postgres_server.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
