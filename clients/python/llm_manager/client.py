"""A small async client for llm-manager.

    async with LLMManagerClient("127.0.0.1:50051") as client:   # api_key="llmm_..." with keys on
        reply = await client.generate("Summarise this trace", task_type=TaskType.TASK_TYPE_ANALYSIS)
        async for text in client.stream_text("Write a haiku"):
            print(text, end="", flush=True)

Over TLS (mutual TLS: with the client's certificate and key), all PEM bytes:

    LLMManagerClient("llm-manager.internal:50051", root_certificates=Path("ca.pem").read_bytes(),
                     certificate_chain=Path("client.pem").read_bytes(), private_key=Path("client.key").read_bytes())

Tools and structured output (JSON Schemas are plain dicts):

        metrics = tool("query_metrics", "Query a metric over the last N minutes.", {
            "type": "object", "properties": {"metric": {"type": "string"}, "minutes": {"type": "integer"}},
            "required": ["metric", "minutes"]})
        reply = await client.generate(question, tools=[metrics], tool_choice="required")
        for call in tool_calls(reply):                   # [{"id", "name", "arguments": dict}]
            result = run_my_tool(call["name"], call["arguments"])
        final = await client.generate(messages=[
            (Role.ROLE_USER, question),
            assistant_tool_calls_message(reply.tool_calls),
            tool_result_message(call["id"], result),     # str, or any JSON value (dumped)
        ], tools=[metrics], tool_choice="none")
        reply = await client.generate(text, response_schema={"type": "object", ...})
        document = structured_output(reply)              # a dict valid against the schema

Errors arrive as ``grpc.aio.AioRpcError``; :func:`error_details` unpacks the service's
``google.rpc`` details (``ErrorInfo`` reason, ``RetryInfo``, ``BadRequest``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol, TypeAlias, TypedDict, Unpack

import grpc
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from llm_manager.v1 import (
    common_pb2,
    conversation_service_pb2,
    conversation_service_pb2_grpc,
    llm_manager_service_pb2,
    llm_manager_service_pb2_grpc,
)

TaskType = common_pb2.TaskType
RoutingStrategy = common_pb2.RoutingStrategy
Role = common_pb2.Role
FinishReason = common_pb2.FinishReason
ToolChoiceMode = common_pb2.ToolChoiceMode

__all__ = [
    "ErrorDetails",
    "FinishReason",
    "GenerateOptions",
    "LLMManagerClient",
    "MessageLike",
    "Role",
    "RoutingStrategy",
    "TaskType",
    "ToolCallDict",
    "ToolChoiceLike",
    "ToolChoiceMode",
    "assistant_tool_calls_message",
    "error_details",
    "require_tool",
    "struct_from_dict",
    "struct_to_dict",
    "structured_output",
    "tool",
    "tool_calls",
    "tool_choice",
    "tool_result_message",
]

# A chat message: a ``(role, content)`` pair, or a ``ChatMessage`` (needed for an assistant turn
# with tool calls and for a ROLE_TOOL result: see assistant_tool_calls_message and
# tool_result_message).
MessageLike: TypeAlias = tuple[common_pb2.Role.ValueType, str] | common_pb2.ChatMessage
# How the model may use the tools: "auto" (the model decides), "none" (it must not call any),
# "required" (it must call at least one), a ToolChoiceMode, or a ToolChoice (see require_tool).
ToolChoiceLike: TypeAlias = Literal["auto", "none", "required"] | common_pb2.ToolChoiceMode.ValueType | common_pb2.ToolChoice


class ToolCallDict(TypedDict):
    """A tool call as plain data: ``arguments`` is the JSON object the model gave."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ErrorDetails:
    """The rich details of a failed call."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    retry_delay_s: float | None = None
    field_violations: dict[str, str] = field(default_factory=dict)
    # QUOTA_EXCEEDED: who is over which limit (subject -> description), from QuotaFailure.
    quota_violations: list[tuple[str, str]] = field(default_factory=list)


def error_details(error: grpc.aio.AioRpcError) -> ErrorDetails:
    """Unpacks ``ErrorInfo``, ``RetryInfo``, ``BadRequest`` and ``QuotaFailure`` from a failed call."""
    details = ErrorDetails(code=error.code(), message=error.details() or "")
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return details
    reason, domain, metadata = "", "", {}
    retry_delay: float | None = None
    violations: dict[str, str] = {}
    quota_violations: list[tuple[str, str]] = []
    for packed in status.details:
        info = error_details_pb2.ErrorInfo()
        retry = error_details_pb2.RetryInfo()
        bad_request = error_details_pb2.BadRequest()
        quota = error_details_pb2.QuotaFailure()
        if packed.Unpack(info):
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif packed.Unpack(retry):
            retry_delay = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
        elif packed.Unpack(bad_request):
            violations = {v.field: v.description for v in bad_request.field_violations}
        elif packed.Unpack(quota):
            quota_violations = [(v.subject, v.description) for v in quota.violations]
    return ErrorDetails(details.code, details.message, reason, domain, metadata, retry_delay, violations, quota_violations)


# Struct numbers are doubles; whole numbers within this bound come back as int.
_MAX_EXACT_INT = 2**53


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= _MAX_EXACT_INT:
        return int(value)
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(item) for item in value]
    return value


def struct_from_dict(value: Mapping[str, Any]) -> struct_pb2.Struct:
    """A JSON object (nested dicts, lists, str, numbers, bools, None) as a ``Struct``."""
    if not isinstance(value, Mapping):
        raise TypeError(f"a JSON object (a dict) is needed, got {type(value).__name__}")
    result = struct_pb2.Struct()
    result.update(value)
    return result


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    """A ``Struct`` as plain Python data. ``Struct`` numbers are doubles: whole numbers come back
    as ``int`` (``15.0`` -> ``15``, as ``json.loads`` would give them), others as ``float``."""
    converted: dict[str, Any] = _plain(json_format.MessageToDict(value))
    return converted


def tool(name: str, description: str = "", parameters: Mapping[str, Any] | None = None) -> common_pb2.Tool:
    """A tool the model may call. ``parameters`` is a JSON Schema object for its arguments
    (``{"type": "object", "properties": ...}``); ``None``: the tool takes no arguments."""
    result = common_pb2.Tool(name=name, description=description)
    if parameters is not None:
        result.parameters.CopyFrom(struct_from_dict(parameters))
    return result


def require_tool(name: str) -> common_pb2.ToolChoice:
    """A tool choice that makes the model call the tool ``name`` (one of the request's tools)."""
    return common_pb2.ToolChoice(tool_name=name)


_TOOL_CHOICE_MODES: dict[str, common_pb2.ToolChoiceMode.ValueType] = {
    "auto": common_pb2.TOOL_CHOICE_MODE_AUTO,
    "none": common_pb2.TOOL_CHOICE_MODE_NONE,
    "required": common_pb2.TOOL_CHOICE_MODE_REQUIRED,
}


def tool_choice(choice: ToolChoiceLike) -> common_pb2.ToolChoice:
    """``"auto"``, ``"none"``, ``"required"``, a ``ToolChoiceMode`` or a ``ToolChoice`` as a
    ``ToolChoice``. To make the model call one named tool, use :func:`require_tool`."""
    if isinstance(choice, common_pb2.ToolChoice):
        return choice
    if isinstance(choice, str):
        try:
            return common_pb2.ToolChoice(mode=_TOOL_CHOICE_MODES[choice])
        except KeyError:
            raise ValueError(
                f"tool_choice must be 'auto', 'none' or 'required', got {choice!r} (use require_tool(name) for one tool)"
            ) from None
    return common_pb2.ToolChoice(mode=choice)


_as_tool_choice = tool_choice  # for the methods, whose tool_choice parameter hides the function


class _HasToolCalls(Protocol):
    @property
    def tool_calls(self) -> Sequence[common_pb2.ToolCall]: ...


class _HasStructuredOutput(Protocol):
    @property
    def structured_output(self) -> struct_pb2.Struct: ...

    def HasField(self, field_name: Literal["structured_output"]) -> bool: ...  # noqa: N802 (protobuf's name)


def _tool_call_dict(call: common_pb2.ToolCall) -> ToolCallDict:
    return {"id": call.id, "name": call.name, "arguments": struct_to_dict(call.arguments)}


def tool_calls(reply: _HasToolCalls | Iterable[_HasToolCalls]) -> list[ToolCallDict]:
    """The tool calls of a reply (``GenerateResponse``, ``SendMessageResponse``), or of every
    message of a stream, as plain dicts: ``{"id", "name", "arguments"}``."""
    if isinstance(reply, Iterable):
        return [_tool_call_dict(call) for message in reply for call in message.tool_calls]
    return [_tool_call_dict(call) for call in reply.tool_calls]


def structured_output(reply: _HasStructuredOutput) -> dict[str, Any] | None:
    """The reply's ``structured_output`` (with ``response_schema``) as a dict, ``None`` when the
    reply has none (for a stream, pass its last message)."""
    if not reply.HasField("structured_output"):
        return None
    return struct_to_dict(reply.structured_output)


def _tool_call(call: common_pb2.ToolCall | ToolCallDict) -> common_pb2.ToolCall:
    if isinstance(call, common_pb2.ToolCall):
        return call
    return common_pb2.ToolCall(id=call["id"], name=call["name"], arguments=struct_from_dict(call["arguments"]))


def assistant_tool_calls_message(
    calls: Iterable[common_pb2.ToolCall | ToolCallDict], content: str = ""
) -> common_pb2.ChatMessage:
    """The assistant turn that made ``calls`` (a reply's ``tool_calls``, or :func:`tool_calls`'
    dicts), to put in ``messages`` before the tools' results."""
    return common_pb2.ChatMessage(role=common_pb2.ROLE_ASSISTANT, content=content, tool_calls=[_tool_call(c) for c in calls])


def tool_result_message(call_id: str, content: object) -> common_pb2.ChatMessage:
    """The ROLE_TOOL message answering the call ``call_id``: ``content`` is the tool's result, a
    string as is, anything else as JSON (``json.dumps``)."""
    text = content if isinstance(content, str) else json.dumps(content)
    return common_pb2.ChatMessage(role=common_pb2.ROLE_TOOL, tool_call_id=call_id, content=text)


def _message(message: MessageLike) -> common_pb2.ChatMessage:
    if isinstance(message, common_pb2.ChatMessage):
        return message
    role, content = message
    return common_pb2.ChatMessage(role=role, content=content)


def _preferences(
    model: str | None,
    max_tokens: int | None,
    temperature: float | None,
    strategy: common_pb2.RoutingStrategy.ValueType | None,
    stop: Sequence[str],
    *,
    seed: int | None = None,
    top_p: float | None = None,
    response_schema: Mapping[str, Any] | None = None,
) -> common_pb2.GenerationPreferences:
    preferences = common_pb2.GenerationPreferences(model=model or "", stop=list(stop))
    if max_tokens is not None:
        preferences.max_tokens = max_tokens
    if temperature is not None:
        preferences.temperature = temperature
    if strategy is not None:
        preferences.routing_strategy = strategy
    if seed is not None:
        preferences.seed = seed
    if top_p is not None:
        preferences.top_p = top_p
    if response_schema is not None:
        preferences.response_format = common_pb2.RESPONSE_FORMAT_JSON_SCHEMA
        preferences.response_schema.CopyFrom(struct_from_dict(response_schema))
    return preferences


class GenerateOptions(TypedDict, total=False):
    """The keyword options of :meth:`LLMManagerClient.generate_request` (and so of ``generate``,
    ``stream_generate`` and ``stream_text``)."""

    messages: Sequence[MessageLike]
    system: str
    task_type: common_pb2.TaskType.ValueType
    model: str | None
    max_tokens: int | None
    temperature: float | None
    strategy: common_pb2.RoutingStrategy.ValueType | None
    stop: Sequence[str]
    no_cache: bool
    tools: Sequence[common_pb2.Tool]
    tool_choice: ToolChoiceLike | None
    response_schema: Mapping[str, Any] | None
    seed: int | None
    top_p: float | None


def _turn_request(
    conversation_id: str,
    message: str,
    preferences: common_pb2.GenerationPreferences,
    tools: Sequence[common_pb2.Tool],
    tool_choice: ToolChoiceLike | None,
    tool_results: Sequence[common_pb2.ChatMessage],
) -> conversation_service_pb2.SendMessageRequest:
    request = conversation_service_pb2.SendMessageRequest(
        conversation_id=conversation_id, message=message, preferences=preferences, tools=list(tools), tool_results=list(tool_results)
    )
    if tool_choice is not None:
        request.tool_choice.CopyFrom(_as_tool_choice(tool_choice))
    return request


def _open_channel(
    target: str, tls: bool, root_certificates: bytes | None, certificate_chain: bytes | None, private_key: bytes | None
) -> grpc.aio.Channel:
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("a client certificate needs both certificate_chain and private_key")
    if not (tls or root_certificates or certificate_chain):
        return grpc.aio.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
    return grpc.aio.secure_channel(target, credentials)


class LLMManagerClient:
    """Wraps one channel; every call takes an optional per-call ``timeout`` (seconds)."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        channel: grpc.aio.Channel | None = None,
        timeout: float | None = 60.0,
        metadata: Sequence[tuple[str, str]] = (),
        api_key: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
    ) -> None:
        """``api_key`` (a server with ``LLM_API_KEYS_FILE`` requires one) goes with every call
        as ``authorization: Bearer <key>``, and so does ``metadata``; each call may add an
        ``x-request-id`` with its ``request_id`` argument.

        TLS (a server with ``LLM_TLS_CERT_FILE``): ``tls=True`` trusts the system's CAs;
        ``root_certificates`` (PEM bytes) trusts that CA instead. For mutual TLS give the client
        certificate too, ``certificate_chain`` and ``private_key`` (PEM bytes). Any of them turns
        TLS on; none: a plaintext channel, as before."""
        if channel is not None and (tls or root_certificates or certificate_chain or private_key):
            raise ValueError("a given channel has its own credentials: pass channel or the TLS options, not both")
        self._owns_channel = channel is None
        self._channel = channel or _open_channel(target, tls, root_certificates, certificate_chain, private_key)
        self._timeout = timeout
        self._metadata = tuple(metadata)
        if api_key is not None:
            if not api_key or any(c.isspace() for c in api_key):
                raise ValueError("api_key must be a key without spaces (as the keys CLI printed it)")
            self._metadata += (("authorization", f"Bearer {api_key}"),)
        self.llm = llm_manager_service_pb2_grpc.LLMManagerServiceStub(self._channel)
        self.conversations = conversation_service_pb2_grpc.ConversationServiceStub(self._channel)

    async def __aenter__(self) -> LLMManagerClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close()

    def _timeout_for(self, timeout: float | None) -> float | None:
        return self._timeout if timeout is None else timeout

    def _metadata_for(self, request_id: str | None) -> tuple[tuple[str, str], ...]:
        return (*self._metadata, ("x-request-id", request_id)) if request_id else self._metadata

    @staticmethod
    def generate_request(
        prompt: str = "",
        *,
        messages: Sequence[MessageLike] = (),
        system: str = "",
        task_type: common_pb2.TaskType.ValueType = common_pb2.TASK_TYPE_GENERAL,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        strategy: common_pb2.RoutingStrategy.ValueType | None = None,
        stop: Sequence[str] = (),
        no_cache: bool = False,
        tools: Sequence[common_pb2.Tool] = (),
        tool_choice: ToolChoiceLike | None = None,
        response_schema: Mapping[str, Any] | None = None,
        seed: int | None = None,
        top_p: float | None = None,
    ) -> llm_manager_service_pb2.GenerateRequest:
        """The request :meth:`generate` sends. ``messages`` are ``(role, content)`` pairs or
        ``ChatMessage`` values; ``tools`` come from :func:`tool`; ``tool_choice`` is ``"auto"``,
        ``"none"``, ``"required"`` or :func:`require_tool`; ``response_schema`` (a JSON Schema
        object) asks for RESPONSE_FORMAT_JSON_SCHEMA: read the answer with :func:`structured_output`."""
        request = llm_manager_service_pb2.GenerateRequest(
            prompt=prompt,
            messages=[_message(message) for message in messages],
            system=system,
            task_type=task_type,
            preferences=_preferences(
                model, max_tokens, temperature, strategy, stop, seed=seed, top_p=top_p, response_schema=response_schema
            ),
            cache_control=common_pb2.CacheControl(no_cache=no_cache),
            tools=list(tools),
        )
        if tool_choice is not None:
            request.tool_choice.CopyFrom(_as_tool_choice(tool_choice))
        return request

    async def generate(
        self, prompt: str = "", *, timeout: float | None = None, request_id: str | None = None, **options: Unpack[GenerateOptions]
    ) -> llm_manager_service_pb2.GenerateResponse:
        """One complete answer. ``options`` are those of :meth:`generate_request`."""
        request = self.generate_request(prompt, **options)
        response: llm_manager_service_pb2.GenerateResponse = await self.llm.Generate(
            request, timeout=self._timeout_for(timeout), metadata=self._metadata_for(request_id)
        )
        return response

    async def stream_generate(
        self, prompt: str = "", *, timeout: float | None = None, request_id: str | None = None, **options: Unpack[GenerateOptions]
    ) -> AsyncIterator[llm_manager_service_pb2.StreamGenerateResponse]:
        """Every stream message; the last carries usage, metadata and finish reason (and
        ``structured_output``). Each tool call arrives once, complete, in some message's
        ``tool_calls``: :func:`tool_calls` of the messages collects them."""
        fields = self.generate_request(prompt, **options)
        request = llm_manager_service_pb2.StreamGenerateRequest.FromString(fields.SerializeToString())
        call = self.llm.StreamGenerate(request, timeout=self._timeout_for(timeout), metadata=self._metadata_for(request_id))
        try:
            async for message in call:
                yield message
        finally:
            call.cancel()  # a no-op after the stream ended; stops the server's work otherwise

    async def stream_text(
        self, prompt: str = "", *, timeout: float | None = None, **options: Unpack[GenerateOptions]
    ) -> AsyncIterator[str]:
        """Just the text pieces, as they arrive."""
        async for message in self.stream_generate(prompt, timeout=timeout, **options):
            if message.text:
                yield message.text

    async def embed(
        self,
        inputs: Sequence[str],
        *,
        model: str = "",
        no_cache: bool = False,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> llm_manager_service_pb2.EmbedResponse:
        """One vector per input, in order (``list(response.embeddings[i].values)``); ``model``
        empty: the server's default embedding model."""
        request = llm_manager_service_pb2.EmbedRequest(inputs=list(inputs), model=model)
        if no_cache:
            request.cache_control.no_cache = True
        response: llm_manager_service_pb2.EmbedResponse = await self.llm.Embed(
            request, timeout=self._timeout_for(timeout), metadata=self._metadata_for(request_id)
        )
        return response

    async def list_models(self, *, timeout: float | None = None) -> list[llm_manager_service_pb2.Model]:
        """Every configured model (follows pagination)."""
        models: list[llm_manager_service_pb2.Model] = []
        token = ""
        while True:
            page = await self.llm.ListModels(
                llm_manager_service_pb2.ListModelsRequest(page_token=token), timeout=self._timeout_for(timeout), metadata=self._metadata
            )
            models.extend(page.models)
            token = page.next_page_token
            if not token:
                return models

    async def create_conversation(
        self, *, system: str = "", metadata: dict[str, str] | None = None, timeout: float | None = None
    ) -> conversation_service_pb2.Conversation:
        response = await self.conversations.CreateConversation(
            conversation_service_pb2.CreateConversationRequest(
                conversation=conversation_service_pb2.Conversation(system=system, metadata=metadata or {})
            ),
            timeout=self._timeout_for(timeout),
            metadata=self._metadata,
        )
        return response.conversation

    async def get_conversation(self, conversation_id: str, *, timeout: float | None = None) -> conversation_service_pb2.Conversation:
        response = await self.conversations.GetConversation(
            conversation_service_pb2.GetConversationRequest(id=conversation_id), timeout=self._timeout_for(timeout), metadata=self._metadata
        )
        return response.conversation

    async def list_conversations(
        self, *, with_messages: bool = False, page_size: int = 0, timeout: float | None = None
    ) -> AsyncIterator[conversation_service_pb2.Conversation]:
        """Every conversation, newest first (follows pagination)."""
        view = conversation_service_pb2.CONVERSATION_VIEW_FULL if with_messages else conversation_service_pb2.CONVERSATION_VIEW_BASIC
        token = ""
        while True:
            page = await self.conversations.ListConversations(
                conversation_service_pb2.ListConversationsRequest(page_size=page_size, page_token=token, view=view),
                timeout=self._timeout_for(timeout),
                metadata=self._metadata,
            )
            for conversation in page.conversations:
                yield conversation
            token = page.next_page_token
            if not token:
                return

    async def delete_conversation(self, conversation_id: str, *, timeout: float | None = None) -> None:
        await self.conversations.DeleteConversation(
            conversation_service_pb2.DeleteConversationRequest(id=conversation_id), timeout=self._timeout_for(timeout), metadata=self._metadata
        )

    async def send_message(
        self,
        conversation_id: str,
        message: str = "",
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        timeout: float | None = None,
        tools: Sequence[common_pb2.Tool] = (),
        tool_choice: ToolChoiceLike | None = None,
        tool_results: Sequence[common_pb2.ChatMessage] = (),
        response_schema: Mapping[str, Any] | None = None,
        seed: int | None = None,
        request_id: str | None = None,
    ) -> conversation_service_pb2.SendMessageResponse:
        """One turn of a stored conversation. When the previous reply called tools, answer them
        with ``tool_results`` (:func:`tool_result_message` per call; ``message`` may then be empty):
        the conversation keeps the calls and their results."""
        request = _turn_request(
            conversation_id, message, _preferences(model, max_tokens, temperature, None, (), seed=seed, response_schema=response_schema),
            tools, tool_choice, tool_results,
        )
        response: conversation_service_pb2.SendMessageResponse = await self.conversations.SendMessage(
            request, timeout=self._timeout_for(timeout), metadata=self._metadata_for(request_id)
        )
        return response

    async def stream_send_message(
        self,
        conversation_id: str,
        message: str = "",
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        timeout: float | None = None,
        tools: Sequence[common_pb2.Tool] = (),
        tool_choice: ToolChoiceLike | None = None,
        tool_results: Sequence[common_pb2.ChatMessage] = (),
        seed: int | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[conversation_service_pb2.StreamSendMessageResponse]:
        """One turn of a stored conversation, streamed: text as it arrives, each tool call once,
        then the last message with usage and metadata; both turns are stored."""
        fields = _turn_request(conversation_id, message, _preferences(model, max_tokens, temperature, None, (), seed=seed), tools, tool_choice, tool_results)
        request = conversation_service_pb2.StreamSendMessageRequest.FromString(fields.SerializeToString())  # same fields, same numbers
        call = self.conversations.StreamSendMessage(request, timeout=self._timeout_for(timeout), metadata=self._metadata_for(request_id))
        try:
            async for piece in call:
                yield piece
        finally:
            call.cancel()
