"""OpenTelemetry: tracer and meter providers, and the GenAI span and metrics per model call.

Spans always exist (trace context flows from callers into the server and on to providers
as W3C ``traceparent``); they and the metrics are exported by OTLP only when the standard
``OTEL_*`` variables ask for it (``OTEL_EXPORTER_OTLP_ENDPOINT`` or the per-signal
endpoints), else nowhere. Prompt and reply text are recorded only with
``LLM_TELEMETRY_RECORD_CONTENT=true``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, NoOpMeterProvider, Observation
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from . import __version__, genai
from .domain.embeddings import EmbeddingCall, Embeddings
from .domain.errors import LLMError
from .domain.types import Answer, ModelCall, ProviderKind, ResponseFormat
from .providers.registry import PROVIDERS

log = logging.getLogger(__name__)

# gen_ai.provider.name values, from each provider's spec.
PROVIDER_NAMES = {spec.kind: spec.telemetry_name for spec in PROVIDERS}


def _exporting(env: Mapping[str, str], signal: str) -> bool:
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))


def _resource(env: Mapping[str, str]) -> Resource:
    return Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "llm-manager"), "service.version": __version__})


def build_tracer_provider(
    environ: Mapping[str, str] | None = None, extra_processors: tuple[SpanProcessor, ...] = ()
) -> TracerProvider:
    """The SDK's provider; ``OTEL_TRACES_SAMPLER`` chooses the sampler as usual. When no
    exporter or processor would see a span and no sampler is configured, spans are sampled
    only when the caller's trace is (``parentbased_always_off``): the rest are non-recording
    spans, which carry the trace context on to providers but skip the recording work. A
    caller's sampled flag is kept, so services further down still see it."""
    env = os.environ if environ is None else environ
    exporting = _exporting(env, "TRACES")
    sampler = None
    if not exporting and not extra_processors and not env.get("OTEL_TRACES_SAMPLER"):
        sampler = ParentBased(ALWAYS_OFF)
    provider = TracerProvider(resource=_resource(env), sampler=sampler)
    if exporting:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        log.info("exporting traces by OTLP")
    for processor in extra_processors:
        provider.add_span_processor(processor)
    return provider


class PrometheusMetrics:
    """The metrics as Prometheus scrapes them (``GET /metrics`` on the HTTP port): the
    OpenTelemetry Prometheus exporter's reader, collecting into a registry of its own (not
    prometheus_client's global one, so each server in a process has its own series)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        self.registry = CollectorRegistry(auto_describe=True)
        self.reader: MetricReader = PrometheusMetricReader(registry=self.registry)

    def scrape(self) -> bytes:
        """The text exposition of every metric now (collects: blocking, call off the loop)."""
        return generate_latest(self.registry)


def build_meter_provider(
    environ: Mapping[str, str] | None = None, extra_readers: tuple[MetricReader, ...] = (), *, prometheus: PrometheusMetrics | None = None
) -> MeterProvider:
    """The SDK's provider with the readers asked for: OTLP when the ``OTEL_*`` variables say so,
    Prometheus (``prometheus``, when the HTTP port serves /metrics); none: the no-op provider."""
    env = os.environ if environ is None else environ
    readers: list[MetricReader] = list(extra_readers)
    if prometheus is not None:
        readers.append(prometheus.reader)
    if _exporting(env, "METRICS"):
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        log.info("exporting metrics by OTLP")
    if not readers:
        return NoOpMeterProvider()
    return SdkMeterProvider(metric_readers=readers, resource=_resource(env))


@dataclass
class Attempt:
    """One model call being observed; the router reports its outcome."""

    span: Span
    attributes: dict[str, str]
    started: float = field(default_factory=time.perf_counter)
    first_chunk_s: float | None = None

    def first_chunk(self) -> None:
        if self.first_chunk_s is None:
            self.first_chunk_s = time.perf_counter() - self.started


class Telemetry:
    """Creates the per-model-call spans and records the GenAI metrics."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        *,
        record_content: bool = False,
    ) -> None:
        self.tracer: Tracer = (tracer_provider or trace.NoOpTracerProvider()).get_tracer("llm_manager_server", __version__)
        meter: Meter = (meter_provider or NoOpMeterProvider()).get_meter("llm_manager_server", __version__)
        self._record_content = record_content
        self._duration = meter.create_histogram(
            genai.METRIC_OPERATION_DURATION, unit="s", description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=list(genai.DURATION_BUCKETS),
        )
        self._tokens = meter.create_histogram(
            genai.METRIC_TOKEN_USAGE, unit="{token}", description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=list(genai.TOKEN_BUCKETS),
        )
        self._first_chunk = meter.create_histogram(
            genai.METRIC_TIME_TO_FIRST_CHUNK, unit="s", description="Time to the first chunk of a streamed answer",
            explicit_bucket_boundaries_advisory=list(genai.DURATION_BUCKETS),
        )
        self._meter = meter
        self._cost = meter.create_counter(genai.METRIC_COST, unit="USD", description="Price of model calls from the price table")

    @contextmanager
    def attempt(
        self,
        call: ModelCall | EmbeddingCall,
        provider: ProviderKind,
        *,
        deployment: str = "",
        attempt: int,
        fallback: bool,
        streaming: bool,
        candidates: list[str],
        strategy: str,
    ) -> Iterator[Attempt]:
        """A CLIENT span ``chat <model>`` (``embeddings <model>`` for an embedding call) around
        one model call; on exit it records the duration metric, and marks the span failed when
        an ``LLMError`` escapes."""
        operation = genai.OPERATION_EMBEDDINGS if isinstance(call, EmbeddingCall) else genai.OPERATION_CHAT
        attributes = {
            genai.OPERATION_NAME: operation,
            genai.PROVIDER_NAME: PROVIDER_NAMES[provider],
            genai.REQUEST_MODEL: call.model,
        }
        span = self.tracer.start_span(f"{operation} {call.model}", kind=SpanKind.CLIENT, attributes=attributes)
        if span.is_recording():  # a sampled-out span would drop them anyway
            span.set_attribute(genai.DEPLOYMENT, deployment)
            if isinstance(call, EmbeddingCall):
                span.set_attributes({genai.ATTEMPT: attempt, genai.FALLBACK: fallback, genai.EMBEDDING_INPUTS: len(call.inputs)})
            else:
                self._describe(span, call, attempt=attempt, fallback=fallback, streaming=streaming, candidates=candidates, strategy=strategy)
        observed = Attempt(span, dict(attributes))
        try:
            yield observed
        except LLMError as error:
            observed.attributes[genai.ERROR_TYPE] = error.kind.value
            span.set_attribute(genai.ERROR_TYPE, error.kind.value)
            span.set_status(Status(StatusCode.ERROR, error.kind.value))
            raise
        except BaseException as error:
            observed.attributes[genai.ERROR_TYPE] = type(error).__name__
            span.set_attribute(genai.ERROR_TYPE, type(error).__name__)
            raise
        finally:
            self._duration.record(time.perf_counter() - observed.started, observed.attributes)
            span.end()

    def _describe(
        self, span: Span, call: ModelCall, *, attempt: int, fallback: bool, streaming: bool, candidates: list[str], strategy: str
    ) -> None:
        """The request parameters and the router's decision, as span attributes."""
        sampling = call.sampling
        for key, value in (
            (genai.REQUEST_MAX_TOKENS, sampling.max_tokens),
            (genai.REQUEST_TEMPERATURE, sampling.temperature),
            (genai.REQUEST_TOP_P, sampling.top_p),
            (genai.REQUEST_SEED, sampling.seed),
        ):
            if value is not None:
                span.set_attribute(key, value)
        if sampling.stop:
            span.set_attribute(genai.REQUEST_STOP_SEQUENCES, list(sampling.stop))
        span.set_attributes(
            {genai.ATTEMPT: attempt, genai.FALLBACK: fallback, genai.STREAMING: streaming, genai.CANDIDATES: candidates, genai.STRATEGY: strategy}
        )
        json_output = sampling.response_format is not ResponseFormat.TEXT
        span.set_attribute(genai.OUTPUT_TYPE, "json" if json_output else "text")
        if call.tools:
            span.set_attribute(genai.REQUEST_TOOL_NAMES, [t.name for t in call.tools])
        if self._record_content:
            span.set_attribute(genai.INPUT_MESSAGES, json.dumps([{"role": m.role.value, "content": m.content} for m in call.messages]))
            if call.tools:
                span.set_attribute(
                    genai.TOOL_DEFINITIONS,
                    json.dumps([{"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters} for t in call.tools]),
                )

    def succeeded(self, observed: Attempt, *, answer: Answer, streaming: bool) -> None:
        span = observed.span
        model, usage, cost_usd = answer.model, answer.usage, answer.cost_usd
        observed.attributes[genai.RESPONSE_MODEL] = model
        span.set_attribute(genai.RESPONSE_MODEL, model)
        span.set_attribute(genai.RESPONSE_FINISH_REASONS, [answer.finish_reason.value])
        if answer.tool_calls:
            span.set_attribute(genai.RESPONSE_TOOL_CALLS, [c.name for c in answer.tool_calls])
        if usage is not None:
            span.set_attributes({genai.USAGE_INPUT_TOKENS: usage.prompt_tokens, genai.USAGE_OUTPUT_TOKENS: usage.completion_tokens})
            self._tokens.record(usage.prompt_tokens, {**observed.attributes, genai.TOKEN_TYPE: "input"})
            self._tokens.record(usage.completion_tokens, {**observed.attributes, genai.TOKEN_TYPE: "output"})
        if observed.first_chunk_s is not None:
            self._first_chunk.record(observed.first_chunk_s, observed.attributes)
        if cost_usd:
            self._cost.add(cost_usd, {genai.REQUEST_MODEL: observed.attributes[genai.REQUEST_MODEL]})
        if self._record_content and not streaming:
            output: dict[str, object] = {"role": "assistant", "content": answer.text}
            if answer.tool_calls:
                output["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in answer.tool_calls]
            span.set_attribute(genai.OUTPUT_MESSAGES, json.dumps([output]))

    def embedded(self, observed: Attempt, embeddings: Embeddings) -> None:
        """An embedding call's outcome: the model, the vectors' size, input tokens and cost
        (embeddings have no output tokens)."""
        span = observed.span
        observed.attributes[genai.RESPONSE_MODEL] = embeddings.model
        span.set_attributes(
            {
                genai.RESPONSE_MODEL: embeddings.model,
                genai.EMBEDDINGS_DIMENSION_COUNT: embeddings.dimensions,
                genai.USAGE_INPUT_TOKENS: embeddings.usage.prompt_tokens,
            }
        )
        self._tokens.record(embeddings.usage.prompt_tokens, {**observed.attributes, genai.TOKEN_TYPE: "input"})
        if embeddings.cost_usd:
            self._cost.add(embeddings.cost_usd, {genai.REQUEST_MODEL: observed.attributes[genai.REQUEST_MODEL]})

    def observe_cache(self, snapshot: Callable[[], Mapping[str, float]]) -> None:
        """Publishes the response cache's counters (``hits``, ``misses``, ``errors``, ...) as
        ``llm_manager.cache.lookups{result=...}``, read when metrics are collected."""

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            counts = snapshot()
            results = {"hits": "hit", "misses": "miss", "errors": "error"}
            return [Observation(counts[key], {"result": result}) for key, result in results.items() if key in counts]

        self._meter.create_observable_counter(
            genai.METRIC_CACHE_LOOKUPS, callbacks=[observe], unit="{lookup}", description="Response cache lookups by result"
        )

    @staticmethod
    def trace_headers(observed: Attempt) -> dict[str, str]:
        """The trace context a provider's HTTP request carries: ``traceparent`` of the
        model-call span, and nothing else. A caller's ``baggage`` and ``tracestate`` are the
        caller's business and are never passed on to a third party (the global propagator
        would forward both)."""
        context = observed.span.get_span_context()
        if not context.is_valid:
            return {}
        return {"traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"}
