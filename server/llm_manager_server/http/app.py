"""The OpenAI-compatible HTTP API (``LLM_HTTP_PORT``), served by aiohttp in the gRPC server's
process and event loop: ``POST /v1/chat/completions`` (plain and SSE), ``POST /v1/embeddings``,
``GET /v1/models``,
``GET /v1/models/{model}``, and ``GET /metrics`` (Prometheus).

It is a second transport over the same service, not a second service: a chat completion is
read into the same ``GenerationRequest`` the gRPC servicer builds (``http.chat``) and answered
by the same ``Generator`` (routing, fallbacks, cache, telemetry); the call is opened and
admitted by the same ``CallGate`` (request id, deadline, concurrency cap). The middleware does
for HTTP what ``interceptors.ApiInterceptor`` does for gRPC: the gate, a SERVER span, error
mapping (``http.errors``), ``x-request-id`` on every response and one access-log line.

With TLS configured it is HTTPS on the same certificates as the gRPC port (and mutual TLS with
a client CA), rotating with them: ``tls.CertificateReloader`` gives the context and its watch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import __version__
from ..cache.response_cache import large_embeddings
from ..calls import CallGate
from ..domain.call_context import deadline_var, request_id_var, time_limit_var
from ..domain.errors import ErrorKind, LLMError
from ..engine import Embedder, Generator
from ..domain.caller import caller_var
from ..interceptors import CALLER_ATTRIBUTE, REQUEST_ID_ATTRIBUTE
from ..routing.registry import ModelEntry, ModelRegistry, visible_models
from ..telemetry import PrometheusMetrics
from ..tls import CertificateReloader
from . import chat, embeddings
from .errors import HttpError, http_error_body, internal_error_body, llm_error_body

log = logging.getLogger("llm_manager_server.access")
errors_log = logging.getLogger("llm_manager_server.errors")

# The OpenAI SDKs send their own timeout (seconds) with every request: the caller's deadline.
CLIENT_TIMEOUT_HEADER = "x-stainless-timeout"
_SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", "x-accel-buffering": "no"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Where the middleware leaves the request's body (read before the call is admitted) and what a
# stream that failed after its 200 went out failed with.
_BODY = web.RequestKey("llm_manager.body", bytes)
_STREAM_ERROR = web.RequestKey("llm_manager.stream_error", str)


def _encode(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


def _json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return _bytes_response(status, _encode(body), headers)


def _bytes_response(status: int, data: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=data, content_type="application/json", headers=headers)


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` nests arrays and objects deeper than ``limit`` (iterative: a deep
    document cannot exhaust the stack)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _joined(request: web.Request, name: str) -> str | None:
    """A header's values joined with ", " (as HTTP folds repeated headers): two keys in one
    request are then one malformed key, refused, rather than one of them picked."""
    values = request.headers.getall(name, None)
    return None if not values else ", ".join(values)


def _client_timeout(request: web.Request) -> float | None:
    raw = request.headers.get(CLIENT_TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def _disconnected(request: web.Request) -> bool:
    """The caller's connection is gone or going: a ConnectionResetError is then its leaving,
    not a fault of ours."""
    return request.transport is None or request.transport.is_closing()


class HttpApi:
    """The aiohttp application and its runner; ``start`` binds, ``stop`` drains."""

    def __init__(
        self,
        generator: Generator,
        embedder: Embedder,
        registry: ModelRegistry,
        gate: CallGate,
        *,
        tracer_provider: trace.TracerProvider,
        meter_provider: MeterProvider | None = None,
        metrics: PrometheusMetrics | None = None,
        max_body_bytes: int,
        max_json_depth: int,
        access_log: bool = True,
    ) -> None:
        self._generator = generator
        self._embedder = embedder
        self._registry = registry
        self._gate = gate
        self._metrics = metrics
        self._max_body_bytes = max_body_bytes
        self._max_json_depth = max_json_depth
        self._access_log = access_log
        self._tracer = tracer_provider.get_tracer("llm_manager_server.http", __version__)
        meter = (meter_provider or NoOpMeterProvider()).get_meter("llm_manager_server.http", __version__)
        self._duration = meter.create_histogram(
            "http.server.request.duration", unit="s", description="Duration of HTTP server requests",
        )
        # One byte more than the limit, so aiohttp's own check leaves the answer to ``_body``.
        self.app = web.Application(middlewares=[self._middleware], client_max_size=max_body_bytes + 1)
        self.app.router.add_post("/v1/chat/completions", self._chat_completions)
        self.app.router.add_post("/v1/embeddings", self._embeddings)
        self.app.router.add_get("/v1/models", self._models)
        self.app.router.add_get("/v1/models/{model:.+}", self._model)
        self.app.router.add_get("/metrics", self._scrape)
        self._runner: web.AppRunner | None = None
        self._watch: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self, host: str, port: int, *, grace_s: float, tls: CertificateReloader | None = None) -> None:
        """Binds ``host:port``: HTTPS with ``tls``'s certificates, following their rotation."""
        # handler_cancellation: a caller that disconnects cancels its handler, and with it the
        # upstream work (as a cancelled gRPC call does).
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=grace_s, handler_cancellation=True)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_port=False, ssl_context=tls.https_context() if tls else None).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        if tls is not None:
            self._watch = asyncio.create_task(tls.watch(), name="https-certificate-watch")

    async def stop(self) -> None:
        """Stops listening, lets requests in flight finish within the grace period, closes."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- the call around every request ---------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = self._gate.open(request.headers.get("x-request-id"), _client_timeout(request))
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        status = 500
        error_type: str | None = None
        with self._tracer.start_as_current_span(
            f"{request.method} {route}",
            context=propagate.extract(request.headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "url.path": request.path, "http.route": route},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
            counted = False
            try:
                try:
                    if route.startswith("/v1/"):  # the API; /metrics, like gRPC health, stays open and uncounted
                        if self._gate.keys is not None:
                            caller = self._gate.authenticate(_joined(request, "authorization"), _joined(request, "x-api-key"))
                            if caller is not None:
                                span.set_attribute(CALLER_ATTRIBUTE, caller.name)
                        if request.can_read_body:
                            # Before admission: a caller trickling its body must not hold one
                            # of the slots every transport shares while it does.
                            request[_BODY] = await self._read_body(request)
                        self._gate.admit()
                        counted = True
                    response = await handler(request)
                except asyncio.CancelledError:
                    status = 499  # the caller went away (nginx's "client closed request"); its work is cancelled
                    raise
                except web.HTTPException as error:  # the router's 404 and 405
                    if error.status < 400:
                        raise
                    response = _json_response(error.status, http_error_body(HttpError(error.status, f"{error.reason}: {request.method} {request.path[:200]}", code=error.reason.lower().replace(" ", "_"))))
                except HttpError as error:
                    response = _json_response(error.status, http_error_body(error))
                    if error.status == 408:
                        response.force_close()  # the rest of the body is not waited for
                except LLMError as error:
                    code, body, headers = llm_error_body(error)
                    error_type = error.kind.value
                    response = _json_response(code, body, headers)
                except Exception as error:  # noqa: BLE001 - answered as a bare 500, logged once
                    if isinstance(error, ConnectionResetError) and _disconnected(request):
                        # The caller went away while its reply (an SSE stream) was being
                        # written: as CancelledError above. Nothing can be sent; aiohttp's
                        # write of this stand-in fails quietly and drops the connection.
                        status = 499
                        response = web.Response(status=499)
                        response.force_close()
                        return response
                    errors_log.error("unexpected error, request_id=%s", request_id, exc_info=error)
                    error_type = type(error).__name__
                    response = _json_response(500, internal_error_body())
                if not response.prepared:
                    response.headers["x-request-id"] = request_id
                status = response.status
                # A stream that failed after its 200 went out: the status stays, the error is told.
                error_type = request.get(_STREAM_ERROR, error_type)
                return response
            finally:
                if counted:
                    self._gate.release()
                span.set_attribute("http.response.status_code", status)
                attributes: dict[str, str | int] = {"http.request.method": request.method, "http.route": route, "http.response.status_code": status}
                if error_type is not None:
                    span.set_attribute("error.type", error_type)
                    attributes["error.type"] = error_type
                if status >= 500 or request.get(_STREAM_ERROR) is not None:
                    span.set_status(Status(StatusCode.ERROR))
                elapsed = time.perf_counter() - started
                self._duration.record(elapsed, attributes)
                if self._access_log:
                    caller = caller_var.get()
                    line = "http %s %s -> %d in %.1f ms"
                    args: list[object] = [request.method, route, status, elapsed * 1000]
                    if caller is not None:
                        line += " caller=%s"
                        args.append(caller.name)
                    if request.get(_STREAM_ERROR) is not None:
                        line += " error=%s"
                        args.append(request[_STREAM_ERROR])
                    log.info(line, *args)

    async def _read_body(self, request: web.Request) -> bytes:
        """The request's bytes, within the size limit and the call's deadline: a caller that
        stops sending is answered 408 when its time is up, not waited for."""
        too_large = HttpError(
            413,
            f"the request body exceeds {self._max_body_bytes} bytes (LLM_HTTP_MAX_BODY_BYTES)",
            code="request_too_large",
        )
        if request.content_length is not None and request.content_length > self._max_body_bytes:
            raise too_large
        try:
            async with asyncio.timeout_at(deadline_var.get()):
                data = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None
        except TimeoutError:
            raise HttpError(
                408,
                f"the request body did not arrive within {time_limit_var.get().description}",
                code="request_timeout",
                error_type="timeout_error",
            ) from None
        if len(data) > self._max_body_bytes:
            raise too_large
        return data

    def _body(self, request: web.Request) -> Any:
        """The request's JSON (its bytes read by the middleware), within the nesting limit."""
        data = request.get(_BODY, b"")  # none sent: not JSON, answered so below
        try:
            body = json.loads(data)
        except RecursionError:
            body = None
            deep = True
        except ValueError as error:
            raise HttpError(400, f"the request body is not valid JSON: {str(error)[:200]}", code="invalid_json") from None
        else:
            deep = json_depth_exceeds(body, self._max_json_depth)
        if deep:
            raise HttpError(400, f"the request body nests deeper than {self._max_json_depth} levels (LLM_HTTP_MAX_JSON_DEPTH)", code="json_too_deep")
        return body

    # --- routes ----------------------------------------------------------------------------

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = self._body(request)
        generation = chat.generation_request(body, task_header=request.headers.get(chat.TASK_HEADER))
        started = time.perf_counter()
        request_id = request_id_var.get()
        if body.get("stream") is not True:
            answer = await self._generator.generate(generation)
            return _json_response(200, chat.completion(answer, request_id=request_id, latency_ms=int((time.perf_counter() - started) * 1000)))
        return await self._stream(request, generation, chat.ChunkWriter(request_id, include_usage=chat.wants_usage_in_stream(body)), started)

    async def _stream(self, request: web.Request, generation: Any, chunks: chat.ChunkWriter, started: float) -> web.StreamResponse:
        """SSE: the response starts with the first piece, so a request that fails before any
        output gets its proper status; a failure after that ends the stream with an error
        event (``data: {"error": ...}``) and no ``[DONE]``, which the SDKs raise."""
        response: web.StreamResponse | None = None
        request_id = request_id_var.get()

        async def begin(model: str | None) -> web.StreamResponse:
            opened = web.StreamResponse(status=200, headers={**_SSE_HEADERS, "x-request-id": request_id})
            await opened.prepare(request)
            await opened.write(_sse(chunks.first(model)))
            return opened

        try:
            async with aclosing(self._generator.stream(generation)) as deltas:
                async for delta in deltas:
                    if delta.answer is not None:
                        response = response or await begin(delta.answer.model)
                        latency_ms = int((time.perf_counter() - started) * 1000)
                        for chunk in chunks.last(delta.answer, request_id=request_id, latency_ms=latency_ms):
                            await response.write(_sse(chunk))
                    elif delta.text or delta.tool_calls:
                        response = response or await begin(delta.model)
                        await response.write(_sse(chunks.piece(delta.text, delta.tool_calls)))
        except LLMError as error:
            if response is None:
                raise
            _, body, _ = llm_error_body(error)
            request[_STREAM_ERROR] = error.kind.value
            await response.write(_sse(body))
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as error:
            if response is None:
                raise
            errors_log.error("unexpected error mid-stream, request_id=%s", request_id, exc_info=error)
            request[_STREAM_ERROR] = type(error).__name__
            await response.write(_sse(internal_error_body()))
            return response
        if response is None:
            raise LLMError(ErrorKind.MODEL_UNAVAILABLE, "the stream ended without an answer")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        embedding, encoding = embeddings.request_from_json(self._body(request))
        started = time.perf_counter()
        result = await self._embedder.embed(embedding)
        latency_ms = int((time.perf_counter() - started) * 1000)
        request_id = request_id_var.get()

        def reply() -> bytes:
            return _encode(embeddings.embeddings_json(result, encoding, request_id=request_id, latency_ms=latency_ms))

        # 2048 x 1536 floats are ~4 s of json.dumps (measured): off the loop every call shares.
        return _bytes_response(200, await asyncio.to_thread(reply) if large_embeddings(result) else reply())

    async def _models(self, request: web.Request) -> web.StreamResponse:
        data = [{"id": chat.AUTO_MODEL, "object": "model", "created": 0, "owned_by": "llm-manager"}]
        data += [self._model_json(entry) for entry in visible_models(self._registry, caller_var.get())]
        return _json_response(200, {"object": "list", "data": data})

    async def _model(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["model"]
        if name == chat.AUTO_MODEL:
            return _json_response(200, {"id": chat.AUTO_MODEL, "object": "model", "created": 0, "owned_by": "llm-manager"})
        # A model the caller's key may not use is not there for it (as GET /v1/models and gRPC
        # ListModels do not list it): the same 404 as an unknown one, so a key cannot probe.
        entry = next((e for e in visible_models(self._registry, caller_var.get()) if e.name == name), None)
        if entry is None:
            raise HttpError(404, f"the model {name[:256]!r} is not configured here (GET /v1/models lists them)", code="model_not_found", param="model")
        return _json_response(200, self._model_json(entry))

    def _model_json(self, entry: ModelEntry) -> dict[str, Any]:
        name = entry.name
        return {
            "id": name,
            "object": "model",
            "created": 0,
            "owned_by": entry.provider_kind.value,
            chat.EXTENSION: {
                "context_window": entry.context_window,
                "capabilities": sorted(c.value for c in entry.capabilities),
                "health": entry.health,
                "deployments": [route.deployment.name for route in entry.routes],
                "price": {
                    "input_per_million_usd": entry.price.input_per_million,
                    "output_per_million_usd": entry.price.output_per_million,
                },
            },
        }

    async def _scrape(self, request: web.Request) -> web.StreamResponse:
        if self._metrics is None:
            raise HttpError(404, "metrics are not collected by this server", code="not_found")
        # Collecting runs every observable callback and formats every series: off the loop.
        text = await asyncio.to_thread(self._metrics.scrape)
        return web.Response(body=text, headers={"content-type": self._metrics.content_type})
