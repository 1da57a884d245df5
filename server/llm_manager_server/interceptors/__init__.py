"""The API interceptor: request id, deadline, error mapping and the access log, in one layer.

For each method of this service's own API (``/llm_manager.v1.*``) the interceptor builds one
wrapper around the servicer's behaviour, the first time the method is called, and reuses it
for every later call: per call there is one extra coroutine (or async generator) frame, not
one per concern. Health and reflection pass through untouched: they stream with
``context.write()`` and need neither a deadline nor domain-error mapping.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import grpc
from grpc import aio

from ..domain.errors import LLMError
from ..status import to_grpc_status

log = logging.getLogger("llm_manager_server.access")
errors_log = logging.getLogger("llm_manager_server.errors")

API_METHOD_PREFIX = "/llm_manager.v1."

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# Absolute deadline (event-loop time) of the current call: the client's, capped by LLM_TIMEOUT_MS.
deadline_var: contextvars.ContextVar[float] = contextvars.ContextVar("deadline", default=float("inf"))

UnaryBehavior = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]
StreamBehavior = Callable[[Any, aio.ServicerContext[Any, Any]], AsyncIterator[Any]]
if TYPE_CHECKING:  # generic only in the type stubs
    Handler = grpc.RpcMethodHandler[Any, Any]

# Request ids only need to be unique, not unpredictable: no os.urandom system call per call.
_ids = random.Random()


def is_api_method(handler_call_details: grpc.HandlerCallDetails) -> bool:
    """True for this service's own RPCs (also the OpenTelemetry interceptor's filter)."""
    return handler_call_details.method.startswith(API_METHOD_PREFIX)


def _outcome(context: aio.ServicerContext[Any, Any], error: BaseException | None) -> str:
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    code = context.code()
    if code is None or code == grpc.StatusCode.OK:
        return "OK" if error is None else "INTERNAL"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


class ApiInterceptor(aio.ServerInterceptor):
    """Around every call of the API, in this order:

    1. the request id: the caller's ``x-request-id`` or a new one, in ``request_id_var``
       (every log line of the call carries it);
    2. the deadline: the caller's, capped by ``LLM_TIMEOUT_MS``, in ``deadline_var``; all
       work for the call (every retry and fallback) must finish by then;
    3. error mapping: an ``LLMError`` becomes its rich gRPC status; anything unexpected a
       bare INTERNAL naming the request id (the traceback is logged, never sent);
    4. one access-log line: method, status code, duration (``llm_manager_server.access``
       at INFO; silence it with ``LLM_ACCESS_LOG=false``).
    """

    def __init__(self, default_timeout_s: float, *, access_log: bool = True) -> None:
        self._default_timeout_s = default_timeout_s
        self._access_log = access_log
        # method -> (the handler it wraps, the wrapped handler): built once per method.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or not is_api_method(handler_call_details):
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = (handler, self._wrap(method, handler))
            self._wrapped[method] = cached
        return cached[1]

    def _wrap(self, method: str, handler: Handler) -> Handler:
        if handler.request_streaming:
            return handler  # no client-streaming RPCs in this API
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, cast(StreamBehavior, handler.unary_stream)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            self._unary(method, cast(UnaryBehavior, handler.unary_unary)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _begin(self, context: aio.ServicerContext[Any, Any]) -> None:
        request_id = ""
        for key, value in context.invocation_metadata() or ():
            if key == "x-request-id":
                request_id = str(value)
                break
        request_id_var.set(request_id or f"{_ids.getrandbits(128):032x}")
        remaining = context.time_remaining()
        budget = self._default_timeout_s if remaining is None else min(remaining, self._default_timeout_s)
        deadline_var.set(asyncio.get_running_loop().time() + budget)

    def _end(self, method: str, context: aio.ServicerContext[Any, Any], started: float, error: BaseException | None) -> None:
        if self._access_log:
            # The request id is on every line already (the log format's [request_id]).
            log.info("rpc %s -> %s in %.1f ms", method, _outcome(context, error), (time.perf_counter() - started) * 1000)

    @staticmethod
    async def _abort(context: aio.ServicerContext[Any, Any], error: Exception) -> None:
        """Raises ``AbortError`` with the error's status."""
        if isinstance(error, LLMError):
            status = to_grpc_status(error)
            await context.abort(status.code, status.details, status.trailing_metadata)
        errors_log.error("unexpected error, request_id=%s", request_id_var.get(), exc_info=error)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id_var.get()})")

    def _unary(self, method: str, behavior: UnaryBehavior) -> UnaryBehavior:
        async def around(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            self._begin(context)
            error: BaseException | None = None
            try:
                try:
                    return await behavior(request, context)
                except aio.AbortError:
                    raise
                except Exception as raised:  # noqa: BLE001 - mapped to a status here, once
                    await self._abort(context, raised)
            except BaseException as raised:
                error = raised
                raise
            finally:
                self._end(method, context, started, error)

        return around

    def _stream(self, method: str, behavior: StreamBehavior) -> StreamBehavior:
        async def around(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            started = time.perf_counter()
            self._begin(context)
            error: BaseException | None = None
            try:
                try:
                    async for item in behavior(request, context):
                        yield item
                except aio.AbortError:
                    raise
                except Exception as raised:  # noqa: BLE001 - mapped to a status here, once
                    await self._abort(context, raised)
            except BaseException as raised:
                error = raised
                raise
            finally:
                self._end(method, context, started, error)

        return around
