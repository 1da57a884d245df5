"""Pure mappings between the domain and the OpenAI Chat Completions wire format.

Shared by every OpenAI-compatible backend: OpenAI itself, LM Studio, llama.cpp server,
Ollama's ``/v1``, vLLM, and the in-process llama.cpp engine (which emits the same dicts).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..domain.errors import ErrorKind, LLMError
from ..domain.types import (
    Completion,
    FinishReason,
    ModelCall,
    ResponseFormat,
    StreamDelta,
    Usage,
)
from ..redaction import redact

_FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
    "tool_calls": FinishReason.OTHER,
    "function_call": FinishReason.OTHER,
}


def map_finish_reason(raw: object) -> FinishReason:
    if raw is None or raw == "":
        return FinishReason.UNSPECIFIED
    return _FINISH_REASONS.get(str(raw), FinishReason.OTHER)


def chat_body(call: ModelCall, *, stream: bool, include_stream_usage: bool = True) -> dict[str, Any]:
    """The JSON body of ``POST /chat/completions`` for ``call``."""
    body: dict[str, Any] = {
        "model": call.model,
        "messages": [{"role": m.role.value, "content": m.content} for m in call.messages],
    }
    sampling = call.sampling
    if sampling.max_tokens is not None:
        body["max_tokens"] = sampling.max_tokens
    if sampling.temperature is not None:
        body["temperature"] = sampling.temperature
    if sampling.top_p is not None:
        body["top_p"] = sampling.top_p
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    if sampling.response_format is ResponseFormat.JSON_OBJECT:
        body["response_format"] = {"type": "json_object"}
    if stream:
        body["stream"] = True
        if include_stream_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def parse_usage(raw: object) -> Usage | None:
    if not isinstance(raw, Mapping):
        return None
    prompt = int(raw.get("prompt_tokens") or 0)
    completion = int(raw.get("completion_tokens") or 0)
    details = raw.get("prompt_tokens_details")
    cached = int(details.get("cached_tokens") or 0) if isinstance(details, Mapping) else 0
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=int(raw.get("total_tokens") or prompt + completion),
        cached_prompt_tokens=cached,
    )


def parse_completion(body: Mapping[str, Any], requested_model: str) -> Completion:
    """A non-streamed ``chat.completion`` object as a :class:`Completion`."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise LLMError(ErrorKind.MODEL_UNAVAILABLE, "model reply had no choices", model=requested_model)
    choice = choices[0]
    message = choice.get("message") if isinstance(choice.get("message"), Mapping) else {}
    content = message.get("content") if isinstance(message, Mapping) else None
    return Completion(
        text=content if isinstance(content, str) else "",
        model=str(body.get("model") or requested_model),
        usage=parse_usage(body.get("usage")) or Usage(),
        finish_reason=map_finish_reason(choice.get("finish_reason")),
    )


def parse_chunk(body: Mapping[str, Any]) -> StreamDelta:
    """One ``chat.completion.chunk`` as a :class:`StreamDelta`."""
    if isinstance(body.get("error"), Mapping):
        raise stream_error(body["error"], model=str(body.get("model") or ""))
    text = ""
    finish: FinishReason | None = None
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, Mapping) and isinstance(delta.get("content"), str):
            text = delta["content"]
        if choice.get("finish_reason") is not None:
            finish = map_finish_reason(choice.get("finish_reason"))
    model = body.get("model")
    return StreamDelta(
        text=text,
        model=str(model) if model else None,
        usage=parse_usage(body.get("usage")),
        finish_reason=finish,
    )


def _error_object(body_text: str) -> Mapping[str, Any]:
    try:
        parsed = json.loads(body_text)
    except ValueError:
        return {"message": body_text.strip()[:300]}
    if isinstance(parsed, Mapping) and isinstance(parsed.get("error"), Mapping):
        return parsed["error"]
    if isinstance(parsed, Mapping) and isinstance(parsed.get("error"), str):
        return {"message": parsed["error"]}
    return parsed if isinstance(parsed, Mapping) else {"message": str(parsed)[:300]}


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms`` (OpenAI) or ``retry-after`` seconds, if present and sane."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) * scale
        except ValueError:
            continue  # an HTTP date: too rare from these APIs to be worth parsing
        if 0 <= value <= 3600:
            return value
    return None


def http_error(
    status: int,
    body_text: str,
    headers: Mapping[str, str],
    *,
    model: str,
    provider_label: str,
    secrets: tuple[str, ...] = (),
) -> LLMError:
    """Maps an HTTP error reply of an OpenAI-compatible API to an :class:`LLMError`."""
    error = _error_object(body_text)
    upstream_message = redact(str(error.get("message") or "").strip(), *secrets)[:300]
    code = str(error.get("code") or "")
    error_type = str(error.get("type") or "")
    message = f"{provider_label} model {model!r} returned HTTP {status}" + (f": {upstream_message}" if upstream_message else "")
    lowered = upstream_message.lower()
    if code == "context_length_exceeded" or error_type == "exceed_context_size_error" or "context length" in lowered or "context window" in lowered:
        metadata = {}
        # llama.cpp server reports n_prompt_tokens and n_ctx.
        if error.get("n_prompt_tokens") is not None:
            metadata["prompt_tokens"] = str(error["n_prompt_tokens"])
        if error.get("n_ctx") is not None:
            metadata["context_window"] = str(error["n_ctx"])
        return LLMError(ErrorKind.CONTEXT_TOO_LARGE, message, model=model, metadata=metadata)
    if status in (401, 403):
        return LLMError(ErrorKind.AUTHENTICATION_FAILED, message, model=model, upstream_auth=True)
    if status == 429:
        return LLMError(ErrorKind.RATE_LIMIT_EXCEEDED, message, model=model, retry_after_s=retry_after_seconds(headers))
    if status == 408:
        return LLMError(ErrorKind.TIMEOUT, message, model=model)
    if status in (404, 409) or status >= 500:
        return LLMError(ErrorKind.MODEL_UNAVAILABLE, message, model=model)
    return LLMError(ErrorKind.INVALID_REQUEST, message, model=model)


def stream_error(error: Mapping[str, Any], *, model: str) -> LLMError:
    """An ``error`` object received inside a stream."""
    message = redact(str(error.get("message") or "stream error"))[:300]
    code = error.get("code")
    status = code if isinstance(code, int) else 500
    return http_error(status, json.dumps({"error": {**error, "message": message}}), {}, model=model, provider_label="upstream")
