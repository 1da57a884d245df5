"""OpenTelemetry set-up: a tracer provider for the server's spans.

Spans always exist (so trace context flows from callers into the server and on to
providers); they are exported by OTLP only when the standard ``OTEL_*`` variables ask for it
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), else nowhere.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from . import __version__

log = logging.getLogger(__name__)


def build_tracer_provider(
    environ: Mapping[str, str] | None = None, extra_processors: tuple[SpanProcessor, ...] = ()
) -> TracerProvider:
    env = os.environ if environ is None else environ
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "llm-manager"), "service.version": __version__})
    provider = TracerProvider(resource=resource)
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        log.info("exporting traces by OTLP")
    for processor in extra_processors:
        provider.add_span_processor(processor)
    return provider
