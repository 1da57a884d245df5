"""HTTPS and mutual TLS on the HTTP API port: the server started with the TLS variables serves
its OpenAI-compatible API over HTTPS with the gRPC port's certificate, reached by the official
``openai`` SDK (its httpx client trusting the test CA) and curl; plaintext and untrusted clients
get nothing; a rotated certificate and client CA reach new HTTPS connections, and gRPC's."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import openai
import pytest

from llm_manager_server.app import Application
from llm_manager_server.tls import HTTPS_CHECK_INTERVAL_S

from ..fakes import FakeOpenAI, TokenCounts
from ..support.certificates import Authority, Issued, Pki, replace_file
from ..support.tools import run, tool
from .conftest import start_served

CALL_TIMEOUT_S = 10
# A rotation shows within one check interval; the margin is for a loaded machine.
ROTATION_WITHIN_S = 3 * HTTPS_CHECK_INTERVAL_S + 5

StartHttps = Callable[..., Awaitable[Application]]


@pytest.fixture
async def start_https(openai_fake: FakeOpenAI, data_dir: str, pki: Pki) -> AsyncIterator[StartHttps]:
    """Starts the server with its HTTP port on and the TLS variables set (``mutual``: with the
    client CA)."""
    started: list[Application] = []

    async def start(*, mutual: bool = False) -> Application:
        app = await start_served(openai_fake, data_dir, **pki.tls_env(mutual=mutual))
        started.append(app)
        return app

    yield start
    for app in started:
        await app.stop(grace_s=0)


def https_url(app: Application, host: str = "127.0.0.1") -> str:
    assert app.http is not None
    return f"https://{host}:{app.http.port}/v1"


def sdk(app: Application, trust: Path, client: Issued | None = None, *, base_url: str | None = None) -> openai.AsyncOpenAI:
    """The official async client as a user configures it for a private CA: its own httpx client
    whose ``verify`` context trusts ``trust`` (and presents ``client``, for mutual TLS)."""
    context = ssl.create_default_context(cafile=str(trust))
    if client is not None:
        context.load_cert_chain(client.cert_file, client.key_file)
    return openai.AsyncOpenAI(
        api_key="unused-without-keys",
        base_url=base_url or https_url(app),
        max_retries=0,
        timeout=CALL_TIMEOUT_S,
        http_client=openai.DefaultAsyncHttpxClient(verify=context),
    )


async def models(client: openai.AsyncOpenAI) -> list[str]:
    async with client:
        return [model.id async for model in client.models.list()]


async def refused(client: openai.AsyncOpenAI) -> BaseException:
    """The connection error the SDK raises (its cause: what the TLS layer said)."""
    with pytest.raises(openai.APIConnectionError) as failure:
        await models(client)
    return failure.value.__cause__ or failure.value


async def served_certificate(port: int) -> bytes:
    """The certificate a new connection to ``port`` is shown (PEM), by a plain TLS handshake."""
    pem = await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", port), timeout=CALL_TIMEOUT_S)
    return ssl.PEM_cert_to_DER_cert(pem)


def der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode())


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> float:
    """Seconds until ``check`` holds; fails after ``ROTATION_WITHIN_S``."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > ROTATION_WITHIN_S:
            raise AssertionError(f"{what}: not within {ROTATION_WITHIN_S} s")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def curl(*args: str) -> tuple[int, str]:
    return await run(tool("curl"), "-sS", "--max-time", str(CALL_TIMEOUT_S), *args, timeout_s=60)


async def test_https_serves_the_openai_sdk_and_curl_and_refuses_plaintext(
    start_https: StartHttps, openai_fake: FakeOpenAI, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="llm_manager_server")
    app = await start_https()
    assert [r.getMessage() for r in caplog.records if "HTTP API on" in r.getMessage()] == [
        f"OpenAI-compatible HTTP API on https://{app.http_address}/v1 (TLS)"
    ]

    openai_fake.reply_text("Bonjour", TokenCounts(prompt=9, completion=2))
    openai_fake.stream_text(["Bon", "jour"], TokenCounts(prompt=9, completion=2))
    async with sdk(app, pki.ca.cert_file) as client:
        completion = await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=20)
        assert completion.choices[0].message.content == "Bonjour"
        stream = await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi again"}], max_tokens=20, stream=True)
        assert "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]) == "Bonjour"
        assert "auto" in [model.id async for model in client.models.list()]
    assert len(openai_fake.generation_requests) == 2

    # An SDK that does not trust the server's CA, or speaks plaintext to the TLS port, gets nothing.
    assert "CERTIFICATE_VERIFY_FAILED" in str(await refused(sdk(app, pki.stranger_ca.cert_file)))
    assert app.http is not None
    await refused(sdk(app, pki.ca.cert_file, base_url=f"http://127.0.0.1:{app.http.port}/v1"))

    # The SDK's default client, unconfigured, trusts the CA in SSL_CERT_FILE (a process of its own).
    program = "from openai import OpenAI\nprint([model.id for model in OpenAI(max_retries=0).models.list()])\n"
    env = {**os.environ, "OPENAI_BASE_URL": https_url(app, "localhost"), "OPENAI_API_KEY": "unused"}
    for roots, expected in ((pki.ca.cert_file, 0), (pki.stranger_ca.cert_file, 1)):
        code, output = await run(sys.executable, "-c", program, env={**env, "SSL_CERT_FILE": str(roots)}, timeout_s=60)
        assert code == expected and ("'auto'" in output) == (expected == 0), output

    # curl by name (SNI "localhost", which the certificate names) and by address (no SNI).
    for host in ("localhost", "127.0.0.1"):
        code, output = await curl("--cacert", str(pki.ca.cert_file), f"{https_url(app, host)}/models")
        assert code == 0 and '"auto"' in output, output
    code, output = await curl("--cacert", str(pki.ca.cert_file), f"https://localhost:{app.http.port}/metrics")
    assert code == 0 and "# TYPE" in output, output  # /metrics is behind TLS too
    code, output = await curl(f"{https_url(app, 'localhost')}/models")  # the system's CAs: not ours
    assert code == 60 and "certificate" in output, output
    code, output = await curl(f"http://127.0.0.1:{app.http.port}/v1/models")  # plaintext: the handshake fails, no answer
    assert code != 0 and '"object"' not in output, output
    assert len(openai_fake.generation_requests) == 2


async def test_mutual_tls_on_https_admits_only_certificates_from_the_client_ca(
    start_https: StartHttps, openai_fake: FakeOpenAI, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="llm_manager_server")
    app = await start_https(mutual=True)
    assert [r.getMessage() for r in caplog.records if "HTTP API on" in r.getMessage()] == [
        f"OpenAI-compatible HTTP API on https://{app.http_address}/v1 (mutual TLS: client certificates required)"
    ]

    openai_fake.reply_text("Bonjour", TokenCounts(prompt=9, completion=2))
    async with sdk(app, pki.ca.cert_file, pki.client) as client:
        completion = await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=20)
    assert completion.choices[0].message.content == "Bonjour"
    await refused(sdk(app, pki.ca.cert_file))  # no client certificate
    await refused(sdk(app, pki.ca.cert_file, pki.stranger_client))  # one from another CA
    assert len(openai_fake.generation_requests) == 1

    ca, url = str(pki.ca.cert_file), f"{https_url(app, 'localhost')}/models"
    code, output = await curl("--cacert", ca, "--cert", str(pki.client.cert_file), "--key", str(pki.client.key_file), url)
    assert code == 0 and '"auto"' in output, output
    code, output = await curl("--cacert", ca, url)
    assert code != 0 and '"auto"' not in output, output
    code, output = await curl("--cacert", ca, "--cert", str(pki.stranger_client.cert_file), "--key", str(pki.stranger_client.key_file), url)
    assert code != 0 and '"auto"' not in output, output
    assert app.http is not None
    code, output = await curl(f"http://127.0.0.1:{app.http.port}/v1/models")
    assert code != 0 and '"auto"' not in output, output


async def test_rotation_reaches_new_https_connections_and_grpc(
    start_https: StartHttps, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="llm_manager_server.tls")
    app = await start_https()
    assert app.http is not None
    http_port = app.http.port
    assert await served_certificate(http_port) == der(pki.server.cert)

    # A client connected before the rotation, trusting only the old CA.
    before = sdk(app, pki.ca.cert_file)
    assert "auto" in [model.id async for model in before.models.list()]

    rotated = Authority(pki.ca.directory, "rotated")
    new = rotated.issue("server-next")
    replace_file(pki.server.cert_file, new.cert)
    replace_file(pki.server.key_file, new.key)

    async def https_serves_the_new_one() -> bool:
        return await served_certificate(http_port) == der(new.cert)

    # No gRPC handshake happens meanwhile: the HTTPS side's own check loads the new set.
    await eventually(https_serves_the_new_one, "the rotated certificate on HTTPS")
    assert "auto" in await models(sdk(app, rotated.cert_file))
    assert "CERTIFICATE_VERIFY_FAILED" in str(await refused(sdk(app, pki.ca.cert_file)))  # a new connection, the old CA
    # The HTTPS side's refresh did not hide the change from gRPC: its next handshake has it too.
    assert await served_certificate(app.port) == der(new.cert)
    assert [r.getMessage() for r in caplog.records if r.name == "llm_manager_server.tls" and r.levelno == logging.INFO] == [
        f"TLS: serving the certificate now in {pki.server.cert_file} to new connections"
    ]

    # The connection opened before the rotation keeps its certificate and goes on serving.
    async with before:
        assert "auto" in [model.id async for model in before.models.list()]


async def test_https_follows_a_rotated_client_ca(start_https: StartHttps, pki: Pki) -> None:
    app = await start_https(mutual=True)
    server_ca = pki.ca.directory / "server-ca.pem"  # the CA of the server's certificate, which stays
    server_ca.write_bytes(pki.ca.cert)
    await refused(sdk(app, server_ca, pki.stranger_client))
    replace_file(pki.ca.cert_file, pki.stranger_ca.cert)  # LLM_TLS_CLIENT_CA_FILE now names the other CA

    async def stranger_admitted() -> bool:
        try:
            return "auto" in await models(sdk(app, server_ca, pki.stranger_client))
        except openai.APIConnectionError:
            return False

    await eventually(stranger_admitted, "a client of the rotated client CA")
    # The old client CA is dropped, not kept beside the new one (a fresh context per set).
    await refused(sdk(app, server_ca, pki.client))
