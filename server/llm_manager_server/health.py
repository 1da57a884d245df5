"""Model health: periodic probes feed the router and ``grpc.health.v1`` per model.

Health service names: ``""`` (the whole server), each API service's full name, and
``model/<name>`` for every configured model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from .routing.registry import HealthState, ModelRegistry

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def model_service_name(model: str) -> str:
    return f"model/{model}"


class HealthMonitor:
    def __init__(self, registry: ModelRegistry, servicer: health_aio.HealthServicer, interval_s: float) -> None:
        self._registry = registry
        self._servicer = servicer
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def probe_once(self) -> None:
        """Probes every provider once (concurrently) and publishes each model's state."""
        kinds = list(self._registry.providers)
        reports = await asyncio.gather(*(self._registry.providers[k].health() for k in kinds))
        by_kind = dict(zip(kinds, reports, strict=True))
        for entry in self._registry.models.values():
            report = by_kind[entry.provider_kind]
            state = HealthState.HEALTHY if report.healthy else (HealthState.NOT_READY if not report.ready else HealthState.UNHEALTHY)
            if state != entry.health:
                log.info("model %s is now %s%s", entry.name, state, f" ({report.detail})" if report.detail else "")
            entry.health, entry.health_detail = state, report.detail
            await self._servicer.set(model_service_name(entry.name), SERVING if report.healthy else NOT_SERVING)

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

