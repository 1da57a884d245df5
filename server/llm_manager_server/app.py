"""Builds and serves the gRPC server: API services, health, reflection, interceptors."""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
import signal
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection, reflection_pb2
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.trace import TracerProvider

from llm_manager.v1 import (
    conversation_service_pb2,
    conversation_service_pb2_grpc,
    llm_manager_service_pb2,
    llm_manager_service_pb2_grpc,
    usage_service_pb2,
    usage_service_pb2_grpc,
)

from .cache import ResponseCache, build_response_cache
from .cache.redis_store import redacted_url
from .calls import CallGate
from .config import ConfigError, Settings, load_settings
from .conversations import ConversationStore, conversation_store_for
from .http import HttpApi
from .health import NOT_SERVING, SERVING, HealthMonitor, HealthServicer
from .interceptors import ApiInterceptor, is_api_method
from .logs import configure_logging
from .routing.registry import ModelRegistry
from .routing.router import Router
from .servicers.conversations import ConversationServicer
from .engine import Embedder, Generator
from .servicers.llm_manager import LLMManagerServicer
from .servicers.usage import UsageServicer
from .usage import Limiter, UsageLedger, UsageMeter, build_limiter
from .telemetry import PrometheusMetrics, Telemetry, build_meter_provider, build_tracer_provider
from .tls import CertificateProblem, CertificateReloader

log = logging.getLogger("llm_manager_server")

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
MAX_METADATA_BYTES = 128 * 1024
API_SERVICES = (
    llm_manager_service_pb2.DESCRIPTOR.services_by_name["LLMManagerService"].full_name,
    conversation_service_pb2.DESCRIPTOR.services_by_name["ConversationService"].full_name,
    usage_service_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name,
)


def _add_reflection_v1(pool: descriptor_pool.DescriptorPool) -> None:
    """Defines ``grpc.reflection.v1`` in ``pool``: grpcio-reflection ships only v1alpha, whose
    messages are the same on the wire, so tools that resolve the v1 service's symbols
    (``grpcurl describe grpc.reflection.v1.ServerReflection``, ``buf curl``) find it too."""
    try:
        pool.FindFileByName("grpc/reflection/v1/reflection.proto")
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = "grpc.reflection.v1"
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(old):  # (assigning "" would mark it as set)
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.AddSerializedFile(proto.SerializeToString())


def _without_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _without_json_names(message.nested_type)


def _documented_files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """Our protos' descriptors with their comments (``make proto`` builds them with source info).
    protoc also writes each field's ``json_name``, which Python's own descriptors leave out; it is
    cleared, so tools keep printing the proto field names they always printed here."""
    data = resources.files("llm_manager.v1").joinpath("llm_manager.binpb").read_bytes()
    files = {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(data).file}
    for file in files.values():
        _without_json_names(file.message_type)
    return files


class _DocumentedFile:
    """A file descriptor as reflection serves it: with its comments, where we have them."""

    def __init__(self, descriptor: FileDescriptor, pool: ReflectionPool) -> None:
        self._descriptor = descriptor
        self._pool = pool
        self.name = descriptor.name

    @property
    def dependencies(self) -> list[_DocumentedFile]:
        return [self._pool.wrap(d) for d in self._descriptor.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:  # noqa: N802 - the descriptor's API
        documented = self._pool.documented.get(self.name)
        if documented is not None:
            proto.CopyFrom(documented)
        else:
            self._descriptor.CopyToProto(proto)

    def __getattr__(self, name: str) -> object:
        return getattr(self._descriptor, name)


class ReflectionPool:
    """The descriptor pool reflection serves.

    It answers for method names too: the reflection spec lets a client ask for the file of any
    symbol, methods included (``llm_manager.v1.LLMManagerService.Generate``): ghz does, and so
    does ``grpcurl describe <method>``. Python's pool finds services, messages, enums and fields
    but not methods (bojand/ghz#419). And it serves our files with their comments: Python's
    descriptors drop source info, so ``grpcurl describe`` would show bare fields."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool
        self.documented = _documented_files()

    def wrap(self, descriptor: FileDescriptor) -> _DocumentedFile:
        return _DocumentedFile(descriptor, self)

    def FindFileContainingSymbol(self, symbol: str) -> _DocumentedFile:  # noqa: N802 - the pool's API
        try:
            return self.wrap(self._pool.FindFileContainingSymbol(symbol))
        except KeyError:
            return self.wrap(self._pool.FindMethodByName(symbol).containing_service.file)  # KeyError again if unknown

    def FindFileByName(self, name: str) -> _DocumentedFile:  # noqa: N802 - the pool's API
        return self.wrap(self._pool.FindFileByName(name))

    def __getattr__(self, name: str) -> object:
        return getattr(self._pool, name)


@dataclass
class Application:
    """The running service; ``start`` binds the port, ``stop`` drains and closes."""

    settings: Settings
    tracer_provider: TracerProvider = field(default_factory=TracerProvider)
    meter_provider: MeterProvider = field(default_factory=NoOpMeterProvider)
    server: aio.Server | None = None
    port: int = 0
    registry: ModelRegistry | None = None
    health: health_aio.HealthServicer | None = None
    monitor: HealthMonitor | None = None
    # Read by telemetry: ``response_cache.stats`` holds the hit/miss/error counters.
    response_cache: ResponseCache | None = None
    conversation_store: ConversationStore | None = None
    gate: CallGate | None = None
    limiter: Limiter | None = None
    usage_ledger: UsageLedger | None = None
    # The TLS credentials when LLM_TLS_CERT_FILE is set (None: plaintext).
    certificates: CertificateReloader | None = None
    # The OpenAI-compatible HTTP API (LLM_HTTP_PORT) and the metrics its /metrics serves.
    prometheus: PrometheusMetrics | None = None
    http: HttpApi | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Application:
        """The service as ``serve`` runs it: providers from the ``OTEL_*`` variables, plus the
        Prometheus reader when the HTTP port (whose /metrics it feeds) is on."""
        prometheus = PrometheusMetrics() if settings.http_port is not None else None
        return cls(settings, tracer_provider=build_tracer_provider(), meter_provider=build_meter_provider(prometheus=prometheus), prometheus=prometheus)

    @property
    def http_address(self) -> str:
        return f"{self.settings.host}:{self.http.port}" if self.http is not None else ""

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    async def _open_conversation_store(self) -> ConversationStore:
        """Opens the store and runs its migrations; a failure stops start-up with one line."""
        url = self.settings.conversation_store_url
        store = conversation_store_for(url)
        try:
            await store.open()
        except Exception as error:  # noqa: BLE001 - any failure to open is a configuration error
            await store.close()
            detail = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ConfigError("LLM_CONVERSATION_STORE", f"cannot open {redacted_url(url)}: {detail}") from None
        return store

    async def start(self) -> None:
        self.conversation_store = await self._open_conversation_store()
        try:
            await self._start_serving(self.conversation_store)
        except BaseException:
            if self.usage_ledger is not None:
                await self.usage_ledger.close()
            # The SQLite store's worker thread is not a daemon: left open, it would keep a
            # process whose start-up failed from exiting.
            await self.conversation_store.close()
            raise

    async def _start_serving(self, conversation_store: ConversationStore) -> None:
        settings = self.settings
        self.registry = ModelRegistry.from_settings(settings)
        telemetry = Telemetry(self.tracer_provider, self.meter_provider, record_content=settings.telemetry_record_content)
        router = Router(self.registry, settings.routing, telemetry=telemetry)
        self.response_cache = build_response_cache(settings.cache, default_strategy=settings.routing.strategy)
        if self.response_cache is not None:
            telemetry.observe_cache(self.response_cache.stats.snapshot)
        # Callers' limits (counted only for callers whose key has some) and the usage ledger,
        # booked in the conversation database.
        self.limiter = build_limiter(settings.limits_store_url, self.meter_provider.get_meter("llm_manager.limits"))
        self.usage_ledger = UsageLedger(conversation_store)
        self.usage_ledger.start()
        meter = UsageMeter(self.limiter, self.usage_ledger)
        generator = Generator(router, self.response_cache, meter)
        # Embeds texts for every transport (gRPC Embed, HTTP /v1/embeddings).
        self.embedder = Embedder(router, self.response_cache, meter)
        # Admits every API call, whatever transport carries it (and authenticates it, with keys on).
        self.gate = CallGate(settings.routing.timeout_ms / 1000, max_concurrent_calls=settings.max_concurrent_calls, keys=settings.api_keys)
        self.health = HealthServicer()
        self.monitor = HealthMonitor(self.registry, self.health, settings.routing.health_interval_s, readiness=(API_SERVICES[0],))
        server = aio.server(
            interceptors=[
                # Traces this service's API. Health and reflection stay untraced: the aio
                # instrumentation breaks handlers that stream with context.write(), such as
                # Health.Watch (opentelemetry-python-contrib #3066). The filter is a plain prefix
                # test: the library's filters.service_prefix runs ABC isinstance checks and
                # path normalisation on every call.
                aio_server_interceptor(tracer_provider=self.tracer_provider, filter_=is_api_method),  # type: ignore[no-untyped-call]
                ApiInterceptor(self.gate, access_log=settings.access_log),
            ],
            options=[
                ("grpc.so_reuseport", 0),
                # Request headers up to 128 KiB reach the call gate (grpc's own hard limit is
                # 16 KiB), so an oversized authorization header is UNAUTHENTICATED like any
                # other bad key, not a transport RESOURCE_EXHAUSTED; beyond it grpc refuses.
                ("grpc.max_metadata_size", MAX_METADATA_BYTES),
                ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            ],
        )
        llm_manager_service_pb2_grpc.add_LLMManagerServiceServicer_to_server(
            LLMManagerServicer(generator, self.registry, self.embedder), server
        )
        conversation_service_pb2_grpc.add_ConversationServiceServicer_to_server(
            ConversationServicer(conversation_store, generator), server
        )
        usage_service_pb2_grpc.add_UsageServiceServicer_to_server(UsageServicer(self.usage_ledger), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflected = (*API_SERVICES, "grpc.health.v1.Health", reflection.SERVICE_NAME, REFLECTION_V1)
        _add_reflection_v1(descriptor_pool.Default())
        pool = ReflectionPool(descriptor_pool.Default())
        reflection.enable_server_reflection(reflected, server, pool=pool)  # type: ignore[arg-type]
        # grpcio-reflection serves only v1alpha; newer tools ask for v1 first, whose messages
        # are the same on the wire. Serve the same servicer under the v1 name too.
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    REFLECTION_V1,
                    {
                        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                            reflection.aio.ReflectionServicer(reflected, pool=pool).ServerReflectionInfo,
                            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
                        )
                    },
                ),
            )
        )
        self.port = self._bind(server)
        if settings.http_port is not None:
            http = HttpApi(
                generator, self.embedder, self.registry, self.gate,
                tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, metrics=self.prometheus,
                max_body_bytes=settings.http_max_body_bytes, max_json_depth=settings.http_max_json_depth, access_log=settings.access_log,
            )
            try:
                await http.start(settings.host, settings.http_port, grace_s=settings.grace_period_s, tls=self.certificates)
            except OSError as error:
                raise ConfigError("LLM_HTTP_PORT", f"cannot listen on {settings.host}:{settings.http_port}: {error.strerror or error}") from None
            self.http = http
        # Models not yet probed or loaded are NOT_SERVING until the first probe says otherwise.
        await self.monitor.set_all([f"model/{name}" for name in self.registry.models], NOT_SERVING)
        await self.monitor.set_all(("", *API_SERVICES), SERVING)
        await server.start()
        self.server = server
        log.info("listening on %s%s with models %s", self.address, self._transport, ", ".join(self.registry.models) or "(none)")
        if self.http is not None:
            scheme = "http" if self.certificates is None else "https"
            log.info("OpenAI-compatible HTTP API on %s://%s/v1%s", scheme, self.http_address, self._transport)
        if settings.api_keys is not None:
            log.info("API keys on (LLM_API_KEYS_FILE): %d keys of callers %s", len(settings.api_keys), ", ".join(sorted(settings.api_keys.callers)))
        # Load in-process models and open connection pools after the port is up, so health
        # probes see NOT_SERVING for a loading model rather than a refused connection.
        await asyncio.gather(*(d.provider.start() for d in self.registry.deployments.values()))
        discovered = await self.registry.discover_models()
        if discovered:
            await self.monitor.set_all([f"model/{name}" for name in discovered], NOT_SERVING)
        await self.monitor.probe_once()
        self.monitor.start()

    def _bind(self, server: aio.Server) -> int:
        """Binds the one port every service shares (API, health, reflection): TLS when
        configured, so the health endpoints are behind it too."""
        settings = self.settings
        address = f"{settings.host}:{settings.port}"
        if settings.tls.enabled:
            try:
                # Re-read: the files may have changed since the settings were checked.
                self.certificates = CertificateReloader(settings.tls)
            except CertificateProblem as problem:
                raise ConfigError(problem.variable, problem.problem) from None
        try:
            if self.certificates is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, self.certificates.credentials())
        except RuntimeError:  # grpc raises when the address is taken or invalid
            port = 0
        if port == 0:
            raise ConfigError("LLM_GRPC_PORT", f"cannot listen on {address} (in use, or not an address here)")
        return port

    @property
    def _transport(self) -> str:
        if self.certificates is None:
            return " (plaintext)"
        return " (mutual TLS: client certificates required)" if self.certificates.mutual else " (TLS)"

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful shutdown: health NOT_SERVING at once, refuse new calls, let in-flight
        calls finish within the grace period, then close providers."""
        if self.server is None:
            return
        grace = self.settings.grace_period_s if grace_s is None else grace_s
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        if self.monitor is not None:
            await self.monitor.stop()
        # Both transports drain at once (HTTP within the grace period set when it started).
        await asyncio.gather(self.server.stop(grace), self._stop_http())
        if self.registry is not None:
            await asyncio.gather(*(d.provider.close() for d in self.registry.deployments.values()), return_exceptions=True)
        if self.response_cache is not None:
            await self.response_cache.close()
        if self.limiter is not None:
            await self.limiter.close()
        if self.usage_ledger is not None:
            await self.usage_ledger.close()  # writes what is pending, before the store closes
        if self.conversation_store is not None:
            await self.conversation_store.close()
        # Flushing exports over the network: off the event loop.
        await asyncio.to_thread(self.tracer_provider.shutdown)
        if isinstance(self.meter_provider, SdkMeterProvider):
            await asyncio.to_thread(self.meter_provider.shutdown)
        self.server = None
        log.info("stopped")

    async def _stop_http(self) -> None:
        if self.http is not None:
            await self.http.stop()
            self.http = None

    async def wait(self) -> None:
        if self.server is not None:
            await self.server.wait_for_termination()


async def serve(settings: Settings) -> None:
    """Runs until SIGTERM or SIGINT, then drains gracefully."""
    app = Application.from_settings(settings)
    await app.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("shutting down (grace %.1f s)", settings.grace_period_s)
    await app.stop()


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"llm-manager: configuration error: {error}", file=sys.stderr)
        return 2
    writer = configure_logging(settings.log_level)
    try:
        if settings.event_loop == "uvloop":
            try:
                import uvloop
            except ImportError:
                raise ConfigError("LLM_EVENT_LOOP", "uvloop is not installed here; set LLM_EVENT_LOOP=asyncio") from None
            uvloop.run(serve(settings))
        else:
            asyncio.run(serve(settings))
    except ConfigError as error:
        print(f"llm-manager: configuration error: {error}", file=sys.stderr)
        return 2
    finally:
        writer.stop()  # writes what is queued
    return 0


__all__ = ["Application", "main", "serve"]
