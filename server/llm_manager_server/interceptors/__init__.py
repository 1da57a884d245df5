"""The API interceptor: request id, deadline, authentication, error mapping and the access log,
in one layer.

For each method of this service's own API (``/llm_manager.v1.*``) the interceptor builds one
wrapper around the servicer's behaviour, the first time the method is called, and reuses it
for every later call: per call there is one extra coroutine (or async generator) frame, not
one per concern. Health and reflection pass through untouched: they stream with
``context.write()`` and need neither a deadline nor domain-error mapping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import grpc
from grpc import aio
from opentelemetry import trace

from ..calls import CallGate
from ..domain.call_context import request_id_var
from ..domain.caller import caller_var
from ..domain.errors import FieldViolation, LLMError, invalid_request
from ..status import to_grpc_status

log = logging.getLogger("llm_manager_server.access")
errors_log = logging.getLogger("llm_manager_server.errors")

API_METHOD_PREFIX = "/llm_manager.v1."
REQUEST_ID_ATTRIBUTE = "llm_manager.request_id"
# The caller's name (never its key) on the server span, with API keys on.
CALLER_ATTRIBUTE = "llm_manager.caller"

UnaryBehavior = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]
StreamBehavior = Callable[[Any, aio.ServicerContext[Any, Any]], AsyncIterator[Any]]
if TYPE_CHECKING:  # generic only in the type stubs
    Handler = grpc.RpcMethodHandler[Any, Any]


def is_api_method(handler_call_details: grpc.HandlerCallDetails) -> bool:
    """True for this service's own RPCs (also the OpenTelemetry interceptor's filter)."""
    return handler_call_details.method.startswith(API_METHOD_PREFIX)


class _Undecodable:
    """A request whose bytes are not a valid message of the method's request type."""

    __slots__ = ("type_name", "problem")

    def __init__(self, type_name: str, problem: str) -> None:
        self.type_name = type_name
        self.problem = problem


def _tolerant(deserializer: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any] | None:
    """The handler's deserializer, answering an undecodable request with ``_Undecodable``
    instead of raising (grpc would report that as UNKNOWN "Unexpected <class DecodeError>");
    the behaviour wrapper then answers INVALID_ARGUMENT."""
    if deserializer is None:
        return None
    type_name = method.rsplit("/", 1)[-1] + "Request"

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as error:  # noqa: BLE001 - DecodeError, or any parse failure
            return _Undecodable(type_name, type(error).__name__)

    return deserialize


def _undecodable_error(request: _Undecodable) -> LLMError:
    return invalid_request(FieldViolation("request", f"is not a valid {request.type_name} message ({request.problem})"))


def _outcome(context: aio.ServicerContext[Any, Any], error: BaseException | None) -> str:
    if isinstance(error, asyncio.CancelledError):
        # grpc cancels the handler when the caller's deadline passes: say which it was.
        remaining = context.time_remaining()
        return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
    code = context.code()
    if code is None or code == grpc.StatusCode.OK:
        return "OK" if error is None else "INTERNAL"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


class ApiInterceptor(aio.ServerInterceptor):
    """Around every call of the API, in this order:

    1. the call gate opens the call (``calls.CallGate.open``): the request id, the caller's
       ``x-request-id`` if well-formed, else a new one, in ``request_id_var`` (every log line
       of the call carries it), sent back in the initial metadata and the trailers; the
       deadline, the caller's capped by ``LLM_TIMEOUT_MS``, in ``deadline_var`` (all work for
       the call, every retry and fallback, must finish by then);
    2. with API keys on, the gate names the caller from the ``authorization: Bearer`` or
       ``x-api-key`` metadata (``CallGate.authenticate``) or refuses the call, UNAUTHENTICATED,
       before anything about the request is looked at; the caller's name goes on the span;
    3. an undecodable request is INVALID_ARGUMENT; then the gate admits the call or refuses
       it (``CallGate.admit``: beyond ``LLM_MAX_CONCURRENT_CALLS``, RESOURCE_EXHAUSTED);
    4. error mapping: an ``LLMError`` becomes its rich gRPC status; anything unexpected a
       bare INTERNAL naming the request id (the traceback is logged, never sent);
    5. one access-log line: method, status code, duration, and the caller with keys on
       (``llm_manager_server.access`` at INFO; silence it with ``LLM_ACCESS_LOG=false``).
    """

    def __init__(self, gate: CallGate, *, access_log: bool = True) -> None:
        self.gate = gate
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
            # No client-streaming RPC in this API. One added later is refused until it is
            # wrapped here too: it must not skip the gate (authentication, deadline, the cap).
            return self._refused_stream(method, handler)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, cast(StreamBehavior, handler.unary_stream)),
                request_deserializer=_tolerant(handler.request_deserializer, method),
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            self._unary(method, cast(UnaryBehavior, handler.unary_unary)),
            request_deserializer=_tolerant(handler.request_deserializer, method),
            response_serializer=handler.response_serializer,
        )

    @staticmethod
    def _refused_stream(method: str, handler: Handler) -> Handler:
        async def refuse(requests: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method}: client-streaming calls are not served by this server's API interceptor")

        make = grpc.stream_stream_rpc_method_handler if handler.response_streaming else grpc.stream_unary_rpc_method_handler
        return make(refuse, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)

    async def _begin(self, request: Any, context: aio.ServicerContext[Any, Any]) -> None:
        """Opens the call and sends ``x-request-id`` in the initial metadata (and sets it for
        the trailers); then authenticates and admits it, or raises the LLMError that refuses it."""
        supplied: str | None = None
        authenticating = self.gate.keys is not None
        authorization: str | None = None
        api_key: str | None = None
        for key, value in context.invocation_metadata() or ():
            if key == "x-request-id":
                if supplied is None:
                    supplied = value if isinstance(value, str) else ""
                if not authenticating:
                    break
            elif authenticating and isinstance(value, str):
                # A repeated header is its values joined with ", " (as in HTTP): never a
                # valid key, so two keys in one call are refused rather than one picked.
                if key == "authorization":
                    authorization = value if authorization is None else f"{authorization}, {value}"
                elif key == "x-api-key":
                    api_key = value if api_key is None else f"{api_key}, {value}"
        request_id = self.gate.open(supplied or None, context.time_remaining())
        span = trace.get_current_span()
        span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)  # the server span's (a no-op when not recording)
        # Every response, failed or not, carries the request id in both header blocks.
        echo = (("x-request-id", request_id),)
        await context.send_initial_metadata(echo)
        context.set_trailing_metadata(echo)
        if authenticating:
            caller = self.gate.authenticate(authorization, api_key)
            if caller is not None:
                span.set_attribute(CALLER_ATTRIBUTE, caller.name)
        if isinstance(request, _Undecodable):
            raise _undecodable_error(request)
        self.gate.admit()

    def _end(self, method: str, context: aio.ServicerContext[Any, Any], started: float, error: BaseException | None) -> None:
        if self._access_log:
            # The request id is on every line already (the log format's [request_id]).
            caller = caller_var.get()
            if caller is None:
                log.info("rpc %s -> %s in %.1f ms", method, _outcome(context, error), (time.perf_counter() - started) * 1000)
            else:
                log.info("rpc %s -> %s in %.1f ms caller=%s", method, _outcome(context, error), (time.perf_counter() - started) * 1000, caller.name)

    @staticmethod
    async def _abort(context: aio.ServicerContext[Any, Any], error: Exception) -> None:
        """Raises ``AbortError`` with the error's status."""
        if isinstance(error, LLMError):
            status = to_grpc_status(error)
            await context.abort(status.code, status.details, (*status.trailing_metadata, ("x-request-id", request_id_var.get())))
        errors_log.error("unexpected error, request_id=%s", request_id_var.get(), exc_info=error)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id_var.get()})", (("x-request-id", request_id_var.get()),))

    def _unary(self, method: str, behavior: UnaryBehavior) -> UnaryBehavior:
        async def around(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            error: BaseException | None = None
            counted = False
            try:
                try:
                    await self._begin(request, context)
                    counted = True
                    return await behavior(request, context)
                except aio.AbortError:
                    raise
                except Exception as raised:  # noqa: BLE001 - mapped to a status here, once
                    await self._abort(context, raised)
            except BaseException as raised:
                error = raised
                raise
            finally:
                if counted:
                    self.gate.release()
                self._end(method, context, started, error)

        return around

    def _stream(self, method: str, behavior: StreamBehavior) -> StreamBehavior:
        async def around(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            started = time.perf_counter()
            error: BaseException | None = None
            counted = False
            try:
                try:
                    await self._begin(request, context)
                    counted = True
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
                if counted:
                    self.gate.release()
                self._end(method, context, started, error)

        return around
