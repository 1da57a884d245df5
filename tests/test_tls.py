"""TLS and mutual TLS on the gRPC port: the real server on loopback with certificates made here,
reached by the Python stubs and client, grpcurl, the Go example peer and the container probe;
certificate rotation under an open stream; and the start-up checks of the TLS variables."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_manager.client import LLMManagerClient
from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api
from llm_manager.v1 import llm_manager_service_pb2_grpc
from llm_manager_server.app import Application
from llm_manager_server.config import ConfigError, load_settings
from llm_manager_server.tls import CertificateReloader

from .conftest import BASE_ENV, StartApp
from .fakes import FakeOpenAI
from .fakes.http_fake import PlannedReply, TokenCounts
from .support.certificates import Authority, Issued, Pki, other_key, replace_file
from .support.tools import REPO, run, tool

OPENAI_KEY = "sk-test-tls-0123456789abcdef"
CALL_TIMEOUT_S = 10


def _unused_loopback_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def server_env(pki: Pki, *, mutual: bool = False) -> dict[str, str]:
    # A local endpoint nothing listens on: no in-process model is loaded.
    return {"LM_STUDIO_ENDPOINT": _unused_loopback_url(), **pki.tls_env(mutual=mutual)}


def secure_channel(app: Application, roots: bytes, client: Issued | None = None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(roots, client.key if client else None, client.cert if client else None)
    return grpc.aio.secure_channel(app.address, credentials)


async def health(channel: grpc.aio.Channel) -> str:
    """The server's overall health status, asked over ``channel`` (its handshake included)."""
    async with channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)  # type: ignore[attr-defined]
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await health(channel)
    return failure.value.code()


async def test_tls_serves_the_python_client_and_stubs_and_refuses_plaintext(start_app: StartApp, pki: Pki) -> None:
    app = await start_app(**server_env(pki))
    assert app.certificates is not None and not app.certificates.mutual

    async with LLMManagerClient(app.address, root_certificates=pki.ca.cert) as client:
        models = await client.list_models(timeout=CALL_TIMEOUT_S)
    assert models, "ListModels answered over TLS"
    assert await health(secure_channel(app, pki.ca.cert)) == "SERVING"

    # A plaintext client, or one that does not trust the server's CA, gets no service.
    assert await refused(grpc.aio.insecure_channel(app.address)) == grpc.StatusCode.UNAVAILABLE
    assert await refused(secure_channel(app, pki.stranger_ca.cert)) == grpc.StatusCode.UNAVAILABLE
    async with LLMManagerClient(app.address) as plaintext:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await plaintext.list_models(timeout=CALL_TIMEOUT_S)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE

    # tls=True trusts the default roots, which grpc reads from GRPC_DEFAULT_SSL_ROOTS_FILE_PATH
    # when set (a process-wide setting, hence a process of its own).
    program = (
        "import asyncio\n"
        "from llm_manager.client import LLMManagerClient\n"
        "async def main():\n"
        f"    async with LLMManagerClient({app.address!r}, tls=True) as client:\n"
        "        print(len(await client.list_models(timeout=10)))\n"
        "asyncio.run(main())\n"
    )
    for roots, expected in ((pki.ca.cert_file, 0), (pki.stranger_ca.cert_file, 1)):
        env = {**os.environ, "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(roots)}
        code, output = await run(sys.executable, "-c", program, env=env, timeout_s=60)
        assert code == expected, output


async def test_mutual_tls_admits_only_certificates_from_the_client_ca(start_app: StartApp, pki: Pki) -> None:
    app = await start_app(**server_env(pki, mutual=True))
    assert app.certificates is not None and app.certificates.mutual

    assert await refused(secure_channel(app, pki.ca.cert)) == grpc.StatusCode.UNAVAILABLE  # no client certificate
    assert await refused(secure_channel(app, pki.ca.cert, pki.stranger_client)) == grpc.StatusCode.UNAVAILABLE
    assert await refused(grpc.aio.insecure_channel(app.address)) == grpc.StatusCode.UNAVAILABLE
    assert await health(secure_channel(app, pki.ca.cert, pki.client)) == "SERVING"

    client = LLMManagerClient(
        app.address, root_certificates=pki.ca.cert, certificate_chain=pki.client.cert, private_key=pki.client.key
    )
    async with client:
        assert await client.list_models(timeout=CALL_TIMEOUT_S)
    with pytest.raises(ValueError, match="both certificate_chain and private_key"):
        LLMManagerClient(app.address, root_certificates=pki.ca.cert, certificate_chain=pki.client.cert)


async def test_grpcurl_over_tls_and_mutual_tls(start_app: StartApp, pki: Pki) -> None:
    grpcurl = tool("grpcurl")
    app = await start_app(**server_env(pki, mutual=True))
    ca, cert, key = str(pki.ca.cert_file), str(pki.client.cert_file), str(pki.client.key_file)

    code, output = await run(grpcurl, "-cacert", ca, "-cert", cert, "-key", key, app.address, "list")
    assert code == 0, output
    assert "llm_manager.v1.LLMManagerService" in output.split() and "grpc.health.v1.Health" in output.split()
    code, output = await run(grpcurl, "-cacert", ca, "-cert", cert, "-key", key, app.address, "grpc.health.v1.Health/Check")
    assert code == 0 and '"status": "SERVING"' in output, output
    code, output = await run(
        grpcurl, "-cacert", ca, "-cert", cert, "-key", key, "-d", "{}", app.address, "llm_manager.v1.LLMManagerService/ListModels"
    )
    assert code == 0 and '"models"' in output, output

    code, output = await run(grpcurl, "-cacert", ca, app.address, "list")  # no client certificate
    assert code != 0 and "Failed to dial" in output, output
    code, output = await run(grpcurl, "-plaintext", app.address, "list")
    assert code != 0 and "Failed to dial" in output, output
    stranger = (str(pki.stranger_client.cert_file), str(pki.stranger_client.key_file))
    code, output = await run(grpcurl, "-cacert", ca, "-cert", stranger[0], "-key", stranger[1], app.address, "list")
    assert code != 0, output


async def _probe(env: dict[str, str]) -> tuple[int, str]:
    probe_env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_TLS_")} | env
    return await run(sys.executable, "-m", "llm_manager_server.healthcheck", env=probe_env, timeout_s=60)


async def test_container_probe_follows_the_server_onto_tls(start_app: StartApp, pki: Pki, tmp_path: Path) -> None:
    # The Dockerfile's HEALTHCHECK runs this probe with the server's own environment.
    app = await start_app(**server_env(pki, mutual=True))
    probe_env = {**server_env(pki, mutual=True), "LLM_GRPC_PORT": str(app.port)}

    # Defaults: trusts the server's certificate and the client CA, presents the server's own
    # certificate (valid for client authentication here).
    code, output = await _probe(probe_env)
    assert code == 0 and output.strip() == "SERVING", output
    # Its own client certificate and CA.
    own = {"LLM_TLS_HEALTHCHECK_CERT_FILE": str(pki.client.cert_file), "LLM_TLS_HEALTHCHECK_KEY_FILE": str(pki.client.key_file)}
    code, output = await _probe({**probe_env, **own, "LLM_TLS_HEALTHCHECK_CA_FILE": str(pki.ca.cert_file)})
    assert code == 0 and output.strip() == "SERVING", output

    # A certificate from another CA is refused; a wrong name or an unreadable file says why.
    stranger = {"LLM_TLS_HEALTHCHECK_CERT_FILE": str(pki.stranger_client.cert_file), "LLM_TLS_HEALTHCHECK_KEY_FILE": str(pki.stranger_client.key_file)}
    code, output = await _probe({**probe_env, **stranger})
    assert code == 1 and output.startswith("unhealthy: UNAVAILABLE"), output
    code, output = await _probe({**probe_env, "LLM_TLS_HEALTHCHECK_SERVER_NAME": "llm-manager.example"})
    assert code == 1 and output.startswith("unhealthy: UNAVAILABLE"), output
    missing = str(tmp_path / "missing.pem")
    code, output = await _probe({**probe_env, "LLM_TLS_HEALTHCHECK_CA_FILE": missing})
    assert code == 1 and output.strip() == f"unhealthy: LLM_TLS_HEALTHCHECK_CA_FILE: cannot read {missing!r}: No such file or directory", output

    # Plaintext still probes a plaintext server.
    plain = await start_app(LM_STUDIO_ENDPOINT=_unused_loopback_url())
    code, output = await _probe({"LLM_GRPC_PORT": str(plain.port)})
    assert code == 0 and output.strip() == "SERVING", output


async def test_go_example_peer_over_mutual_tls(start_app: StartApp, pki: Pki, tmp_path: Path) -> None:
    openai = await FakeOpenAI(api_key=OPENAI_KEY).start()
    try:
        env = {**server_env(pki, mutual=True), "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": f"{openai.url}/v1", "LLM_CACHE_ENABLED": "false"}
        app = await start_app(**env)
        go = tool("go")
        go_env = {**os.environ, "GOFLAGS": "-mod=readonly"}
        peer = str(tmp_path / "example-peer")
        code, output = await run(go, "build", "-o", peer, "./cmd/example-peer", cwd=REPO / "clients" / "go", env=go_env, timeout_s=300)
        assert code == 0, output

        flags = ("-cacert", str(pki.ca.cert_file), "-cert", str(pki.client.cert_file), "-key", str(pki.client.key_file))
        code, output = await run(peer, "-addr", app.address, *flags, "-trace=false", "-prompt", "Say hello", env=go_env, timeout_s=120)
        assert code == 0, output
        assert "stream:" in output, output
        assert len(openai.generation_requests) == 2, "Generate and StreamGenerate reached the model"

        # -tls alone trusts the system's CAs: on Linux, Go reads them from SSL_CERT_FILE when set.
        client_flags = ("-cert", str(pki.client.cert_file), "-key", str(pki.client.key_file))
        system_roots = {**go_env, "SSL_CERT_FILE": str(pki.ca.cert_file)}
        code, output = await run(peer, "-addr", app.address, "-tls", *client_flags, "-trace=false", env=system_roots, timeout_s=120)
        assert code == 0 and "stream:" in output, output
        code, output = await run(peer, "-addr", app.address, "-tls", *client_flags, "-trace=false", env=go_env, timeout_s=60)
        assert code == 1 and "Unavailable" in output, output  # the private CA is not among the system's

        code, output = await run(peer, "-addr", app.address, "-cacert", str(pki.ca.cert_file), "-trace=false", env=go_env, timeout_s=60)
        assert code == 1 and "Unavailable" in output, output  # no client certificate
        code, output = await run(peer, "-addr", app.address, "-trace=false", env=go_env, timeout_s=60)
        assert code == 1 and "Unavailable" in output, output  # plaintext
        code, output = await run(peer, "-cert", str(pki.client.cert_file), env=go_env, timeout_s=60)
        assert code == 2 and "-cert and -key go together" in output, output
    finally:
        await openai.stop()


class HeldStreamOpenAI(FakeOpenAI):
    """Holds each stream after its first text chunk until ``release`` is set, so a call stays
    open for as long as the test needs."""

    def __init__(self) -> None:
        super().__init__(api_key=OPENAI_KEY)
        self.release = asyncio.Event()
        self.holding = asyncio.Event()

    async def send(self, request: web.Request, reply: PlannedReply) -> web.StreamResponse:
        if not reply.is_event_stream:
            return await super().send(request, reply)
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        await response.prepare(request)
        for index, chunk in enumerate(reply.chunks):
            if index == 2:  # after the role chunk and the first piece of text
                self.holding.set()
                await self.release.wait()
            await response.write(chunk)
        await response.write_eof()
        return response


@pytest.fixture
async def held_openai() -> AsyncIterator[HeldStreamOpenAI]:
    fake = await HeldStreamOpenAI().start()
    yield fake
    fake.release.set()
    await fake.stop()


async def served_certificate(app: Application) -> bytes:
    """The certificate a new connection is shown (PEM), read by a plain TLS handshake."""
    pem = await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", app.port), timeout=CALL_TIMEOUT_S)
    return pem.encode()


def same_certificate(first: bytes, second: bytes) -> bool:
    return ssl.PEM_cert_to_DER_cert(first.decode()) == ssl.PEM_cert_to_DER_cert(second.decode())


async def test_rotation_keeps_open_streams_and_new_connections_get_the_new_certificate(
    start_app: StartApp, pki: Pki, held_openai: HeldStreamOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="llm_manager_server.tls")
    env = {**server_env(pki), "OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": f"{held_openai.url}/v1", "LLM_CACHE_ENABLED": "false"}
    app = await start_app(**env)
    held_openai.stream_text(["Hello", " from", " before", " the", " rotation"], TokenCounts(prompt=9, completion=5))

    old_channel = secure_channel(app, pki.ca.cert)
    request = api.StreamGenerateRequest(prompt="hi", preferences=common_pb2.GenerationPreferences(model="gpt-4o-mini"))
    stream = llm_manager_service_pb2_grpc.LLMManagerServiceStub(old_channel).StreamGenerate(request, timeout=30)
    first = await stream.read()
    assert first.text == "Hello"
    await asyncio.wait_for(held_openai.holding.wait(), CALL_TIMEOUT_S)
    assert same_certificate(await served_certificate(app), pki.server.cert)

    # Rotate to a certificate from another CA while the stream is open.
    rotated = Authority(pki.ca.directory, "rotated")
    new = rotated.issue("server-next")
    replace_file(pki.server.cert_file, new.cert)
    replace_file(pki.server.key_file, new.key)

    assert same_certificate(await served_certificate(app), new.cert)
    assert await health(secure_channel(app, rotated.cert)) == "SERVING"
    assert await refused(secure_channel(app, pki.ca.cert)) == grpc.StatusCode.UNAVAILABLE  # the old CA no longer fits
    assert [r.getMessage() for r in caplog.records if r.name == "llm_manager_server.tls" and r.levelno == logging.INFO] == [
        f"TLS: serving the certificate now in {pki.server.cert_file} to new connections"
    ]

    # The stream opened before the rotation runs to its end on its old connection.
    held_openai.release.set()
    rest = []
    while (message := await stream.read()) is not grpc.aio.EOF:
        rest.append(message)
    assert "".join(m.text for m in (first, *rest)) == "Hello from before the rotation"
    assert rest[-1].finish_reason == common_pb2.FINISH_REASON_STOP and rest[-1].usage.completion_tokens == 5
    await old_channel.close()

    # A key that does not match its certificate is not served: the current set stays, one line says so.
    caplog.clear()
    bad = rotated.issue("server-bad")
    replace_file(pki.server.cert_file, bad.cert)
    replace_file(pki.server.key_file, other_key())
    for _ in range(3):
        assert same_certificate(await served_certificate(app), new.cert)
    warnings = [r.getMessage() for r in caplog.records if r.name == "llm_manager_server.tls" and r.levelno == logging.WARNING]
    assert warnings == [
        "TLS: keeping the current certificate; the changed files do not load: "
        f"LLM_TLS_KEY_FILE: {str(pki.server.key_file)!r} is not the private key of the certificate in LLM_TLS_CERT_FILE"
    ]
    replace_file(pki.server.key_file, bad.key)  # the matching key arrives
    assert same_certificate(await served_certificate(app), bad.cert)


async def test_mutual_tls_reloads_the_client_ca(start_app: StartApp, pki: Pki) -> None:
    app = await start_app(**server_env(pki, mutual=True))
    assert await refused(secure_channel(app, pki.ca.cert, pki.stranger_client)) == grpc.StatusCode.UNAVAILABLE
    replace_file(pki.ca.cert_file, pki.stranger_ca.cert)  # the clients' CA changes
    assert await health(secure_channel(app, pki.ca.cert, pki.stranger_client)) == "SERVING"
    assert await refused(secure_channel(app, pki.ca.cert, pki.client)) == grpc.StatusCode.UNAVAILABLE


# --- start-up checks --------------------------------------------------------------------------


def _tls_env(**tls: str) -> dict[str, str]:
    return {**BASE_ENV, **tls}


def test_tls_is_off_unless_configured() -> None:
    assert not load_settings(BASE_ENV).tls.enabled


def test_bad_tls_settings_stop_start_up_naming_the_variable(pki: Pki, tmp_path: Path) -> None:
    cert, key, ca = str(pki.server.cert_file), str(pki.server.key_file), str(pki.ca.cert_file)
    not_pem = tmp_path / "not-pem.txt"
    not_pem.write_text("certificate goes here\n")
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    mismatched = tmp_path / "mismatched.key"
    mismatched.write_bytes(other_key())
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_text("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n")
    missing = str(tmp_path / "missing.pem")
    cases = [
        ({"LLM_TLS_CERT_FILE": cert}, "LLM_TLS_KEY_FILE: must be set with LLM_TLS_CERT_FILE (the certificate and its private key)"),
        ({"LLM_TLS_KEY_FILE": key}, "LLM_TLS_CERT_FILE: must be set with LLM_TLS_KEY_FILE (the certificate and its private key)"),
        ({"LLM_TLS_CLIENT_CA_FILE": ca}, "LLM_TLS_CLIENT_CA_FILE: needs LLM_TLS_CERT_FILE and LLM_TLS_KEY_FILE (mutual TLS is TLS with client certificates)"),
        ({"LLM_TLS_CERT_FILE": missing, "LLM_TLS_KEY_FILE": key}, f"LLM_TLS_CERT_FILE: cannot read {missing!r}: No such file or directory"),
        ({"LLM_TLS_CERT_FILE": cert, "LLM_TLS_KEY_FILE": missing}, f"LLM_TLS_KEY_FILE: cannot read {missing!r}: No such file or directory"),
        ({"LLM_TLS_CERT_FILE": cert, "LLM_TLS_KEY_FILE": key, "LLM_TLS_CLIENT_CA_FILE": missing}, f"LLM_TLS_CLIENT_CA_FILE: cannot read {missing!r}: No such file or directory"),
        ({"LLM_TLS_CERT_FILE": str(not_pem), "LLM_TLS_KEY_FILE": key}, f"LLM_TLS_CERT_FILE: {str(not_pem)!r} is not a PEM certificate (no '-----BEGIN CERTIFICATE-----')"),
        ({"LLM_TLS_CERT_FILE": str(broken), "LLM_TLS_KEY_FILE": key}, f"LLM_TLS_CERT_FILE: {str(broken)!r} holds a PEM block that is not a valid certificate"),
        ({"LLM_TLS_CERT_FILE": key, "LLM_TLS_KEY_FILE": key}, f"LLM_TLS_CERT_FILE: {key!r} is not a PEM certificate (no '-----BEGIN CERTIFICATE-----')"),
        ({"LLM_TLS_CERT_FILE": cert, "LLM_TLS_KEY_FILE": cert}, f"LLM_TLS_KEY_FILE: {cert!r} is not a PEM private key (no '-----BEGIN ... PRIVATE KEY-----')"),
        ({"LLM_TLS_CERT_FILE": cert, "LLM_TLS_KEY_FILE": str(mismatched)}, f"LLM_TLS_KEY_FILE: {str(mismatched)!r} is not the private key of the certificate in LLM_TLS_CERT_FILE"),
        ({"LLM_TLS_CERT_FILE": cert, "LLM_TLS_KEY_FILE": str(encrypted)}, "LLM_TLS_KEY_FILE: the private key is encrypted: give it unencrypted (grpc takes no passphrase)"),
        ({"LLM_TLS_CERT_FILE": cert, "LLM_TLS_KEY_FILE": key, "LLM_TLS_CLIENT_CA_FILE": str(not_pem)}, f"LLM_TLS_CLIENT_CA_FILE: {str(not_pem)!r} is not a PEM certificate (no '-----BEGIN CERTIFICATE-----')"),
    ]
    for tls, message in cases:
        with pytest.raises(ConfigError) as error:
            load_settings(_tls_env(**tls))
        assert str(error.value) == message, tls
    settings = load_settings(_tls_env(LLM_TLS_CERT_FILE=cert, LLM_TLS_KEY_FILE=key, LLM_TLS_CLIENT_CA_FILE=ca))
    assert (settings.tls.cert_file, settings.tls.key_file, settings.tls.client_ca_file) == (cert, key, ca)


async def test_the_server_exits_2_before_listening_on_a_bad_certificate(pki: Pki, tmp_path: Path) -> None:
    mismatched = tmp_path / "mismatched.key"
    mismatched.write_bytes(other_key())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LLM_")},
        **BASE_ENV,
        "LLM_GRPC_PORT": str(port),
        "LLM_DATA_DIR": str(tmp_path),
        "LM_STUDIO_ENDPOINT": _unused_loopback_url(),
        "LLM_TLS_CERT_FILE": str(pki.server.cert_file),
        "LLM_TLS_KEY_FILE": str(mismatched),
    }
    code, output = await run(sys.executable, "-m", "llm_manager_server", env=env, timeout_s=60)
    assert code == 2, output
    assert output.strip().splitlines() == [
        f"llm-manager: configuration error: LLM_TLS_KEY_FILE: {str(mismatched)!r} is not the private key of the certificate in LLM_TLS_CERT_FILE"
    ]


async def test_the_readme_tls_commands_work_as_written(start_app: StartApp, tmp_path: Path) -> None:
    """The "TLS and mutual TLS" section's commands, run as written: its openssl lines make the
    certificates, then grpcurl, grpc-health-probe, the Python example and the Go peer reach a
    mutual-TLS server, and its HTTPS part's curl lines and SDK example reach the same server's
    HTTP API (only the ports differ)."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### TLS and mutual TLS") :]
    section = section[: re.search(r"\n##+ ", section).start()]  # type: ignore[union-attr]  # to the next section or subsection
    make_certificates, calls, go_run = re.findall(r"```sh\n(.*?)```", section, re.S)
    program = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    https = readme[readme.index("#### HTTPS on the HTTP API port") :]
    https = https[: re.search(r"\n##+ ", https).start()]  # type: ignore[union-attr]
    (https_calls,) = re.findall(r"```sh\n(.*?)```", https, re.S)
    (https_program,) = re.findall(r"```python\n(.*?)```", https, re.S)
    assert "make run" in make_certificates
    make_certificates = make_certificates.replace(
        "LLM_TLS_CERT_FILE=server.pem LLM_TLS_KEY_FILE=server.key LLM_TLS_CLIENT_CA_FILE=ca.pem make run", ""
    )
    tools_path = f"{Path(tool('grpcurl')).parent}:{Path(tool('grpc-health-probe')).parent}:{Path(tool('go')).parent}:{os.environ['PATH']}"
    shell_env = {**os.environ, "PATH": tools_path, "GOFLAGS": "-mod=readonly"}
    code, output = await run(tool("bash"), "-euo", "pipefail", "-c", make_certificates, cwd=tmp_path, env=shell_env)
    assert code == 0, output

    local = await FakeOpenAI().start()  # without a key: an OpenAI-compatible local server
    try:
        app = await start_app(
            LM_STUDIO_ENDPOINT=f"{local.url}/v1",
            LLM_TLS_CERT_FILE=str(tmp_path / "server.pem"),
            LLM_TLS_KEY_FILE=str(tmp_path / "server.key"),
            LLM_TLS_CLIENT_CA_FILE=str(tmp_path / "ca.pem"),
            LLM_HTTP_PORT="0",
        )
        address = f"localhost:{app.port}"
        for command in calls.strip().splitlines():
            code, output = await run(tool("bash"), "-euo", "pipefail", "-c", command.replace("localhost:50051", address), cwd=tmp_path, env=shell_env)
            assert code == 0, f"{command}\n{output}"
            assert "SERVING" in output or "LLMManagerService" in output or '"text"' in output, f"{command}\n{output}"

        (tmp_path / "example.py").write_text(program.replace("localhost:50051", address))
        code, output = await run(str(REPO / ".venv" / "bin" / "python"), "example.py", cwd=tmp_path, timeout_s=60)
        assert code == 0 and output.strip(), output

        command = go_run.strip().replace("localhost:50051", address).replace("../../", f"{tmp_path}/").replace("cd clients/go", f"cd {REPO / 'clients' / 'go'}")
        code, output = await run(tool("bash"), "-euo", "pipefail", "-c", command, env=shell_env, timeout_s=300)
        assert code == 0 and "stream:" in output, output

        assert app.http is not None
        https_address = f"localhost:{app.http.port}"
        lines = https_calls.replace("\\\n", "").strip().splitlines()
        assert lines[0].endswith("make run") and len(lines) == 3, lines
        for command, expected in zip(lines[1:], ('"auto"', '"choices"'), strict=True):
            code, output = await run(tool("bash"), "-euo", "pipefail", "-c", command.replace("localhost:8443", https_address), cwd=tmp_path, env=shell_env)
            assert code == 0 and expected in output, f"{command}\n{output}"
        (tmp_path / "https_example.py").write_text(https_program.replace("localhost:8443", https_address))
        code, output = await run(str(REPO / ".venv" / "bin" / "python"), "https_example.py", cwd=tmp_path, timeout_s=60)
        assert code == 0 and "'auto'" in output, output
    finally:
        await local.stop()


def test_a_refresh_by_another_transport_does_not_hide_the_change_from_grpc(pki: Pki) -> None:
    """One reload state serves every transport: whichever refreshes first, grpc's fetcher still
    hands grpc the new set (once), because it compares generations, not file stamps."""
    reloader = CertificateReloader(load_settings(_tls_env(**server_env(pki))).tls)
    assert reloader.generation == 0 and reloader.fetch() is None
    rotated = pki.ca.issue("server-next")
    replace_file(pki.server.cert_file, rotated.cert)
    replace_file(pki.server.key_file, rotated.key)

    reloader.refresh()  # as the HTTPS side does, before any grpc handshake
    assert reloader.generation == 1 and reloader.current.chain == rotated.cert
    reloader.refresh()  # nothing changed since: no new generation
    assert reloader.generation == 1
    assert reloader.fetch() is not None, "grpc gets the set another transport loaded"
    assert reloader.fetch() is None, "and only once"
