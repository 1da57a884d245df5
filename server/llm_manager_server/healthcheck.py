"""Container health probe: ``python -m llm_manager_server.healthcheck [service]``.

Exits 0 when the local server's ``grpc.health.v1`` reports SERVING for ``service`` (the
whole server by default), 1 otherwise. No extra binary needed in the image.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    service = sys.argv[1] if len(sys.argv) > 1 else ""
    address = f"127.0.0.1:{os.environ.get('LLM_GRPC_PORT', '50051')}"
    try:
        with grpc.insecure_channel(address) as channel:
            stub: Any = health_pb2_grpc.HealthStub(channel)  # the type stubs omit the methods
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=3)
    except grpc.RpcError as error:
        print(f"unhealthy: {error.code().name}", file=sys.stderr)
        return 1
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
