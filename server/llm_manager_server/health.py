"""Model health: periodic probes feed the router and ``grpc.health.v1`` per model.

Health service names: ``""`` (the whole server), each API service's full name, and
``model/<name>`` for every configured model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, MutableMapping
from typing import Any

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from .routing.registry import HealthState, ModelRegistry

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def model_service_name(model: str) -> str:
    return f"model/{model}"


class HealthServicer(health_aio.HealthServicer):
    """``grpc.health.v1.Health`` as grpcio-health-checking serves it, plus ``List`` (in the
    protocol, advertised by reflection, not implemented by the library), and watches that end
    once the drain begins: a watcher gets NOT_SERVING and its stream closes, so an open
    ``Watch`` no longer holds the shutdown for the whole grace period."""

    # The library's state (it has these; its type stubs do not say so).
    _server_status: MutableMapping[str, int]
    _server_watchers: MutableMapping[str, asyncio.Condition]
    _watcher_count_by_service: MutableMapping[str, int]
    _gracefully_shutting_down: bool

    async def List(self, request: Any, context: Any) -> Any:  # noqa: N802 - the RPC's name
        # (The type stubs predate List: its messages are not in them.)
        statuses = {service: health_pb2.HealthCheckResponse(status=status) for service, status in self._server_status.items()}
        return health_pb2.HealthListResponse(statuses=statuses)  # type: ignore[attr-defined]

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:  # noqa: N802 - the RPC's name
        condition = self._server_watchers[request.service]
        self._watcher_count_by_service[request.service] += 1
        last_status = None
        try:
            async with condition:
                while True:
                    status = self._server_status.get(request.service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
                    if status != last_status:
                        await context.write(health_pb2.HealthCheckResponse(status=status))
                    last_status = status
                    if self._gracefully_shutting_down:
                        return  # NOT_SERVING was sent: the stream ends with the drain
                    await condition.wait()
        finally:
            self._watcher_count_by_service[request.service] -= 1
            if self._watcher_count_by_service[request.service] == 0:
                del self._server_watchers[request.service]
                del self._watcher_count_by_service[request.service]


class HealthMonitor:
    def __init__(
        self, registry: ModelRegistry, servicer: health_aio.HealthServicer, interval_s: float, *, readiness: tuple[str, ...] = ()
    ) -> None:
        self._registry = registry
        self._servicer = servicer
        self._interval_s = interval_s
        # Services that are SERVING only while some model can answer (readiness), unlike ""
        # (the process: liveness).
        self._readiness = readiness
        self._task: asyncio.Task[None] | None = None

    async def probe_once(self) -> None:
        """Probes every deployment once (concurrently) and publishes each model's state: a
        model is SERVING while any of its deployments is healthy."""
        deployments = list(self._registry.deployments.values())
        reports = await asyncio.gather(*(d.provider.health() for d in deployments))
        for deployment, report in zip(deployments, reports, strict=True):
            state = HealthState.HEALTHY if report.healthy else (HealthState.NOT_READY if not report.ready else HealthState.UNHEALTHY)
            if state != deployment.health:
                log.info("deployment %s is now %s%s", deployment.name, state, f" ({report.detail})" if report.detail else "")
            deployment.health, deployment.health_detail = state, report.detail
        for entry in self._registry.models.values():
            await self._servicer.set(model_service_name(entry.name), SERVING if entry.health == HealthState.HEALTHY else NOT_SERVING)
        ready = any(entry.health == HealthState.HEALTHY for entry in self._registry.models.values())
        for service in self._readiness:
            await self._servicer.set(service, SERVING if ready else NOT_SERVING)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.probe_once()
            except Exception:  # noqa: BLE001 - a failed probe round must not end the monitor
                log.exception("health probe round failed")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="health-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def set_all(self, services: Iterable[str], status: int) -> None:
        for service in services:
            await self._servicer.set(service, status)

