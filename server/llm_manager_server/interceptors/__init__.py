"""Server interceptors: request context and logging, deadlines, error mapping."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc
from grpc import aio

from ..domain.errors import LLMError
from ..status import to_grpc_status

log = logging.getLogger("llm_manager_server.access")

API_METHOD_PREFIX = "/llm_manager.v1."

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# Absolute deadline (event-loop time) of the current call: the client's, capped by LLM_TIMEOUT_MS.
deadline_var: contextvars.ContextVar[float] = contextvars.ContextVar("deadline", default=float("inf"))

UnaryBehavior = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]
StreamBehavior = Callable[[Any, aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


def _wrap(
    handler: grpc.RpcMethodHandler[Any, Any],
    unary: Callable[[UnaryBehavior], UnaryBehavior],
    stream: Callable[[StreamBehavior], StreamBehavior],
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler with its unary-unary or unary-stream behaviour wrapped."""
    if handler.request_streaming:
        return handler  # no client-streaming RPCs in this API
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            stream(cast(StreamBehavior, handler.unary_stream)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        unary(cast(UnaryBehavior, handler.unary_unary)),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class _WrappingInterceptor(aio.ServerInterceptor):
    """Base: subclasses wrap the unary and the streaming behaviour of every method."""

    def unary(self, method: str, behavior: UnaryBehavior) -> UnaryBehavior:
        raise NotImplementedError

    def stream(self, method: str, behavior: StreamBehavior) -> StreamBehavior:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        # Only this service's own API: health and reflection stream with context.write()
        # (not generators) and need neither a deadline nor domain-error mapping.
        if handler is None or not method.startswith(API_METHOD_PREFIX):
            return handler
        return _wrap(handler, lambda b: self.unary(method, b), lambda b: self.stream(method, b))


class AccessLogInterceptor(_WrappingInterceptor):
    """Gives each call a request id (``x-request-id`` from the caller, or a new one) and logs
    one line per call: method, status code, duration."""

    def _begin(self, context: aio.ServicerContext[Any, Any]) -> str:
        incoming = dict(context.invocation_metadata() or ())
        request_id = str(incoming.get("x-request-id") or uuid.uuid4().hex)
        request_id_var.set(request_id)
        return request_id

    @staticmethod
    def _end(method: str, context: aio.ServicerContext[Any, Any], started: float, error: BaseException | None) -> None:
        code = context.code()
        if isinstance(error, asyncio.CancelledError):
            outcome = "CANCELLED"
        elif code is None or code == grpc.StatusCode.OK:
            outcome = "OK" if error is None else "INTERNAL"
        else:
            outcome = code.name if isinstance(code, grpc.StatusCode) else str(code)
        # The request id is on every line already (the log format's [request_id]).
        log.info("rpc %s -> %s in %.1f ms", method, outcome, (time.perf_counter() - started) * 1000)

    def unary(self, method: str, behavior: UnaryBehavior) -> UnaryBehavior:
        async def logged(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            self._begin(context)
            error: BaseException | None = None
            try:
                return await behavior(request, context)
            except BaseException as raised:
                error = raised
                raise
            finally:
                self._end(method, context, started, error)

        return logged

    def stream(self, method: str, behavior: StreamBehavior) -> StreamBehavior:
        async def logged(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            started = time.perf_counter()
            self._begin(context)
            error: BaseException | None = None
            try:
                async for item in behavior(request, context):
                    yield item
            except BaseException as raised:
                error = raised
                raise
            finally:
                self._end(method, context, started, error)

        return logged


class DeadlineInterceptor(_WrappingInterceptor):
    """Publishes the call's deadline: the client's, capped by the server's ``LLM_TIMEOUT_MS``.
    All work for the call (every retry and fallback) must finish by then."""

    def __init__(self, default_timeout_s: float) -> None:
        self._default_timeout_s = default_timeout_s

    def _set(self, context: aio.ServicerContext[Any, Any]) -> None:
        remaining = context.time_remaining()
        budget = self._default_timeout_s if remaining is None else min(remaining, self._default_timeout_s)
        deadline_var.set(asyncio.get_running_loop().time() + budget)

    def unary(self, method: str, behavior: UnaryBehavior) -> UnaryBehavior:
        async def bounded(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            self._set(context)
            return await behavior(request, context)

        return bounded

    def stream(self, method: str, behavior: StreamBehavior) -> StreamBehavior:
        async def bounded(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            self._set(context)
            async for item in behavior(request, context):
                yield item

        return bounded


class ErrorMappingInterceptor(_WrappingInterceptor):
    """Turns ``LLMError`` into its rich gRPC status; anything unexpected becomes a bare
    INTERNAL (logged with its traceback, never sent to the caller)."""

    @staticmethod
    async def _abort(context: aio.ServicerContext[Any, Any], error: Exception) -> None:
        if isinstance(error, LLMError):
            status = to_grpc_status(error)
            await context.abort(status.code, status.details, status.trailing_metadata)
        log.exception("unexpected error, request_id=%s", request_id_var.get(), exc_info=error)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id_var.get()})")

    def unary(self, method: str, behavior: UnaryBehavior) -> UnaryBehavior:
        async def mapped(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await behavior(request, context)
            except aio.AbortError:
                raise
            except Exception as error:  # noqa: BLE001 - mapped to a status here, once
                await self._abort(context, error)

        return mapped

    def stream(self, method: str, behavior: StreamBehavior) -> StreamBehavior:
        async def mapped(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            try:
                async for item in behavior(request, context):
                    yield item
            except aio.AbortError:
                raise
            except Exception as error:  # noqa: BLE001 - mapped to a status here, once
                await self._abort(context, error)

        return mapped
