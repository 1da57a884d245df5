"""Container health probe: ``python -m llm_manager_server.healthcheck [service]``.

Exits 0 when the local server's ``grpc.health.v1`` reports SERVING for ``service`` (the
whole server by default), 1 otherwise. No extra binary needed in the image.

It reads the server's own variables, so the image's HEALTHCHECK follows the server onto TLS:
with ``LLM_TLS_CERT_FILE`` set it connects over TLS, trusting ``LLM_TLS_HEALTHCHECK_CA_FILE``
(default: the server's certificate file and ``LLM_TLS_CLIENT_CA_FILE``, which covers a
self-signed certificate and one from the clients' CA) and expecting the server certificate to
name ``LLM_TLS_HEALTHCHECK_SERVER_NAME`` (default ``localhost``). With mutual TLS it presents
``LLM_TLS_HEALTHCHECK_CERT_FILE`` / ``LLM_TLS_HEALTHCHECK_KEY_FILE`` (default: the server's own
certificate and key, which serve when that certificate is also valid for client authentication).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


class ProbeSetupError(Exception):
    """A probe setting that cannot work; ``str()`` is one line naming the variable."""


def _file(env: Mapping[str, str], variable: str) -> bytes | None:
    path = env.get(variable, "").strip()
    if not path:
        return None
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise ProbeSetupError(f"{variable}: cannot read {path!r}: {error.strerror}") from None


def channel_for(address: str, env: Mapping[str, str]) -> grpc.Channel:
    """A plaintext channel, or a TLS one when the server's variables turn TLS on."""
    server_chain = _file(env, "LLM_TLS_CERT_FILE")
    if server_chain is None:
        return grpc.insecure_channel(address)
    client_ca = _file(env, "LLM_TLS_CLIENT_CA_FILE")
    roots = _file(env, "LLM_TLS_HEALTHCHECK_CA_FILE") or server_chain + b"\n" + (client_ca or b"")
    chain = key = None
    if client_ca is not None:
        chain = _file(env, "LLM_TLS_HEALTHCHECK_CERT_FILE") or server_chain
        key = _file(env, "LLM_TLS_HEALTHCHECK_KEY_FILE") or _file(env, "LLM_TLS_KEY_FILE")
    credentials = grpc.ssl_channel_credentials(roots, key, chain)
    name = env.get("LLM_TLS_HEALTHCHECK_SERVER_NAME", "").strip() or "localhost"
    return grpc.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", name)])


def main() -> int:
    service = sys.argv[1] if len(sys.argv) > 1 else ""
    address = f"127.0.0.1:{os.environ.get('LLM_GRPC_PORT', '50051')}"
    try:
        channel = channel_for(address, os.environ)
    except ProbeSetupError as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    try:
        with channel:
            stub: Any = health_pb2_grpc.HealthStub(channel)  # the type stubs omit the methods
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=3)
    except grpc.RpcError as error:
        # The details say why a TLS handshake failed (an untrusted or misnamed certificate).
        print(f"unhealthy: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
