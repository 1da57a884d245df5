"""The configured models, their providers, facts and current health."""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import Price, capabilities_for, facts_for, provider_for_model
from ..config import Settings
from ..domain.errors import ErrorKind, LLMError
from ..domain.types import MODEL_NAME_RULE, Capability, ProviderKind, is_valid_model_name
from ..providers.anthropic import AnthropicProvider
from ..providers.base import Provider
from ..providers.llama_inprocess import BUNDLED_MODEL_NAME, LlamaInProcessProvider, bundled_model_path
from ..providers.openai_compat import OpenAICompatibleProvider
from ..providers.tool_emulation import EmulatedToolsProvider
from .breaker import CircuitBreaker
from .stats import ModelStats

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT_MODEL = "local-model"

# Models a caller pins that no configuration names are served, but remembered (with their
# breaker and statistics) only in an LRU of this many: callers cannot grow the server's state.
MAX_ADHOC_MODELS = 64



class HealthState:
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    NOT_READY = "not_ready"


@dataclass
class ModelEntry:
    name: str
    provider_kind: ProviderKind
    provider: Provider
    context_window: int
    price: Price
    capabilities: frozenset[Capability] = frozenset()
    health: str = HealthState.UNKNOWN
    health_detail: str = ""
    # The model's own routing state, kept with it (and dropped with an evicted ad-hoc entry).
    stats: ModelStats = field(default_factory=ModelStats)
    breaker: CircuitBreaker | None = None  # created by the router on first use

    @property
    def available(self) -> bool:
        """Candidates are models not known to be down (unknown counts as available)."""
        return self.health in (HealthState.HEALTHY, HealthState.UNKNOWN)


@dataclass
class ModelRegistry:
    """Models by name plus one provider instance per backend.

    ``models`` are the configured models: listed by ListModels, probed, published in health.
    A model a caller pins by name without configuring it lives in ``adhoc``, a bounded LRU,
    and is never listed."""

    settings: Settings
    providers: dict[ProviderKind, Provider] = field(default_factory=dict)
    models: dict[str, ModelEntry] = field(default_factory=dict)
    adhoc: OrderedDict[str, ModelEntry] = field(default_factory=OrderedDict)
    # The models each provider contributes to a chain when no preference variable names one.
    default_models: dict[ProviderKind, str] = field(default_factory=dict)
    # True when the local provider serves exactly one in-process model.
    local_is_inprocess: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        registry = cls(settings)
        llama = settings.llama
        if llama.endpoint:
            registry.providers[ProviderKind.LOCAL] = registry._local(
                OpenAICompatibleProvider(kind=ProviderKind.LOCAL, base_url=llama.endpoint, label="local")
            )
            local_names = [m for m in (*llama.general_models, *llama.sql_models) if provider_for_model(m) is ProviderKind.LOCAL]
            registry.default_models[ProviderKind.LOCAL] = local_names[0] if local_names else DEFAULT_ENDPOINT_MODEL
            for name in local_names or [DEFAULT_ENDPOINT_MODEL]:
                registry.add(name)
        else:
            path = llama.model_path or bundled_model_path()
            if path:
                name = _inprocess_name(path, llama.model_path is None)
                registry.providers[ProviderKind.LOCAL] = registry._local(LlamaInProcessProvider(
                    model_path=path,
                    model_name=name,
                    context_length=llama.context_length,
                    threads=llama.threads,
                    gpu_layers=llama.gpu_layers,
                    parallel=llama.parallel,
                    max_queue=llama.max_queue,
                    verbose=settings.log_level == "DEBUG",
                ))
                registry.local_is_inprocess = True
                registry.default_models[ProviderKind.LOCAL] = name
                registry.add(name)
        if settings.openai.api_key is not None:
            registry.providers[ProviderKind.OPENAI] = OpenAICompatibleProvider(
                kind=ProviderKind.OPENAI,
                base_url=settings.openai.base_url,
                api_key=settings.openai.api_key,
                label="openai",
                connect_error_kind=ErrorKind.NETWORK_ERROR,
                # OPENAI_MAX_TOKENS / OPENAI_TEMPERATURE apply where the caller gives none.
                default_max_tokens=settings.openai.max_tokens,
                default_temperature=settings.openai.temperature,
            )
            registry.default_models[ProviderKind.OPENAI] = settings.openai.model
            registry.add(settings.openai.model)
        if settings.anthropic.api_key is not None:
            # Connect errors are NETWORK_ERROR inside the provider (a cloud API, not a local server).
            registry.providers[ProviderKind.ANTHROPIC] = AnthropicProvider(
                api_key=settings.anthropic.api_key,
                base_url=settings.anthropic.base_url,
                default_max_tokens=settings.anthropic.max_tokens,
            )
            registry.default_models[ProviderKind.ANTHROPIC] = settings.anthropic.model
            registry.add(settings.anthropic.model)
        for name in (*llama.general_models, *llama.sql_models):
            if provider_for_model(name) in registry.providers and not (
                registry.local_is_inprocess and provider_for_model(name) is ProviderKind.LOCAL
            ):
                registry.add(name)
        return registry

    def _local(self, provider: Provider) -> Provider:
        """A local provider, with tools offered as a schema-constrained answer when
        ``LLM_LOCAL_TOOL_CALLING`` is ``schema`` (the default)."""
        return EmulatedToolsProvider(provider) if self.settings.llama.tool_calling == "schema" else provider

    def _entry(self, name: str) -> ModelEntry:
        kind = provider_for_model(name)
        facts = facts_for(
            name, local_context_window=self.settings.llama.context_length, price_overrides=dict(self.settings.price_overrides)
        )
        capabilities = capabilities_for(name, local_tools=self.settings.llama.tool_calling != "off")
        return ModelEntry(name, kind, self.providers[kind], facts.context_window, facts.price, capabilities)

    def add(self, name: str) -> ModelEntry:
        """Registers (or returns) a configured model of a configured provider."""
        if name not in self.models:
            self.models[name] = self._entry(name)
        return self.models[name]

    def resolve(self, name: str) -> ModelEntry:
        """The entry for a caller-pinned model, mapped to its provider by name: a configured
        one, or an ad-hoc entry in the bounded LRU."""
        if name in self.models:
            return self.models[name]
        if name in self.adhoc:
            self.adhoc.move_to_end(name)
            return self.adhoc[name]
        if not is_valid_model_name(name):  # callers validate first; this guards the state
            raise LLMError(ErrorKind.INVALID_REQUEST, f"invalid model name: {MODEL_NAME_RULE}")
        kind = provider_for_model(name)
        if kind not in self.providers:
            hint = {
                ProviderKind.OPENAI: "set OPENAI_API_KEY",
                ProviderKind.ANTHROPIC: "set CLAUDE_API_KEY",
                ProviderKind.LOCAL: "set LM_STUDIO_ENDPOINT or LLM_LOCAL_MODEL_PATH",
            }[kind]
            raise LLMError(
                ErrorKind.CONFIGURATION_ERROR,
                f"model {name!r} needs the {kind.value} provider, which is not configured ({hint})",
                model=name,
            )
        if kind is ProviderKind.LOCAL and self.local_is_inprocess:
            loaded = self.default_models[ProviderKind.LOCAL]
            raise LLMError(
                ErrorKind.MODEL_UNAVAILABLE,
                f"local model {name!r} is not loaded; the in-process model is {loaded!r}",
                model=name,
            )
        entry = self.adhoc[name] = self._entry(name)
        while len(self.adhoc) > MAX_ADHOC_MODELS:
            self.adhoc.popitem(last=False)
        return entry


def _inprocess_name(path: str, bundled: bool) -> str:
    if bundled:
        return BUNDLED_MODEL_NAME
    stem = Path(path).name.removesuffix(".gguf")
    return stem.lower()
