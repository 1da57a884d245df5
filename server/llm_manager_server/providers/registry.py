"""Every provider the service can talk to: one line each.

Adding a provider: write its module (an :class:`~.http.HttpJsonProvider` subclass and its wire
mapping) ending with a :class:`~.spec.ProviderSpec`, add a ``ProviderKind`` member and the
API's ``PROVIDER_<KIND>`` enum value, add it below, and its models' prices to the catalog.
"""

from __future__ import annotations

from ..domain.types import ProviderKind
from . import anthropic, gemini, openai_compat
from .spec import ProviderSpec

# LM Studio, llama.cpp server, Ollama, vLLM, ... and in-process GGUF models. Built from
# LlamaSettings by the routing registry; every model name no cloud provider claims is local.
LOCAL = ProviderSpec(kind=ProviderKind.LOCAL, names=("local", "llama"), deployment_type="openai_compatible", telemetry_name="local")

PROVIDERS: tuple[ProviderSpec, ...] = (
    LOCAL,
    openai_compat.OPENAI,
    anthropic.SPEC,
    gemini.SPEC,
)

BY_KIND: dict[ProviderKind, ProviderSpec] = {spec.kind: spec for spec in PROVIDERS}
BY_DEPLOYMENT_TYPE: dict[str, ProviderSpec] = {spec.deployment_type: spec for spec in PROVIDERS}
# Every name a chain may use for a provider (LLM_FALLBACK_ORDER, LLM_ROUTE_<TASK>).
BY_NAME: dict[str, ProviderKind] = {name: spec.kind for spec in PROVIDERS for name in spec.names}
# Model-family prefixes: a name maps to the provider whose prefix it has (else local).
MODEL_PREFIXES: tuple[tuple[tuple[str, ...], ProviderKind], ...] = tuple(
    (spec.model_prefixes, spec.kind) for spec in PROVIDERS if spec.model_prefixes
)

__all__ = ["BY_DEPLOYMENT_TYPE", "BY_KIND", "BY_NAME", "LOCAL", "MODEL_PREFIXES", "PROVIDERS"]
