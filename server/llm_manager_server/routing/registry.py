"""The configured models, their providers, facts and current health."""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from ..catalog import Price, capabilities_for, facts_for, provider_for_model
from ..config import ConfigError, DeploymentSettings, Settings
from ..domain.caller import Caller
from ..domain.errors import ErrorKind, LLMError
from ..domain.types import MODEL_NAME_RULE, Capability, ProviderKind, is_valid_model_name
from ..providers.base import Provider
from ..providers.llama_inprocess import BUNDLED_MODEL_NAME, LlamaInProcessProvider, bundled_model_path
from ..providers.openai_compat import OpenAICompatibleProvider
from ..providers.registry import BY_DEPLOYMENT_TYPE, BY_KIND, PROVIDERS
from ..providers.spec import CloudSettings
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


_AVAILABLE = (HealthState.HEALTHY, HealthState.UNKNOWN)


@dataclass(eq=False)
class Deployment:
    """One named endpoint (a provider instance) and its health; calls in flight to it are
    counted for balancing."""

    name: str
    kind: ProviderKind
    provider: Provider
    weight: float = 1.0
    health: str = HealthState.UNKNOWN
    health_detail: str = ""
    in_flight: int = 0

    @property
    def available(self) -> bool:
        """Not known to be down (unknown counts as available)."""
        return self.health in _AVAILABLE


@dataclass(eq=False)
class Route:
    """One model on one deployment: its own circuit breaker and latency statistics."""

    deployment: Deployment
    stats: ModelStats = field(default_factory=ModelStats)
    breaker: CircuitBreaker | None = None  # created by the router on first use


@dataclass(eq=False)
class ModelEntry:
    name: str
    provider_kind: ProviderKind
    routes: list[Route]
    context_window: int
    price: Price
    capabilities: frozenset[Capability] = frozenset()
    # The model's routing statistics across its deployments (the strategies rank by them),
    # kept with it (and dropped with an evicted ad-hoc entry).
    stats: ModelStats = field(default_factory=ModelStats)

    @property
    def health(self) -> str:
        """Healthy while any deployment is; else unknown or not ready if any is; else unhealthy."""
        states = {r.deployment.health for r in self.routes}
        for state in (HealthState.HEALTHY, HealthState.UNKNOWN, HealthState.NOT_READY):
            if state in states:
                return state
        return HealthState.UNHEALTHY

    @property
    def health_detail(self) -> str:
        details = [r.deployment.health_detail for r in self.routes if r.deployment.health_detail and not r.deployment.available]
        if len(self.routes) == 1:
            return details[0] if details else ""
        return "; ".join(f"{r.deployment.name}: {r.deployment.health_detail}" for r in self.routes if r.deployment.health_detail)

    @property
    def available(self) -> bool:
        """Candidates are models with a deployment not known to be down."""
        return any(r.deployment.available for r in self.routes)


@dataclass
class ModelRegistry:
    """Deployments by name, and the models they serve.

    ``deployments`` are named endpoints: the default ones from the environment (``local``,
    ``openai``, ``anthropic``, ``gemini``) and those of ``LLM_CONFIG_FILE`` ``deployments:``.
    ``defaults`` is each kind's default deployment (a pinned model of that kind
    that no deployment lists goes there). ``models`` are the configured models: listed by
    ListModels, published in health; a model served by several deployments has a route to each.
    A model a caller pins by name without configuring it lives in ``adhoc``, a bounded LRU,
    and is never listed."""

    settings: Settings
    deployments: dict[str, Deployment] = field(default_factory=dict)
    defaults: dict[ProviderKind, Deployment] = field(default_factory=dict)
    models: dict[str, ModelEntry] = field(default_factory=dict)
    adhoc: OrderedDict[str, ModelEntry] = field(default_factory=OrderedDict)
    # The models each provider contributes to a chain when no preference variable names one.
    default_models: dict[ProviderKind, str] = field(default_factory=dict)
    # True when the local provider serves exactly one in-process model.
    local_is_inprocess: bool = False
    # The models configured deployments serve, by kind: they join their provider's place in
    # the chains (kept here so that planning a call does not scan every model).
    deployment_models: dict[ProviderKind, list[str]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        registry = cls(settings)
        llama = settings.llama
        if llama.endpoint:
            registry._default_deployment(
                "local",
                ProviderKind.LOCAL,
                registry._local(
                    OpenAICompatibleProvider(kind=ProviderKind.LOCAL, base_url=llama.endpoint, label="local", default_max_tokens=llama.max_tokens)
                ),
            )
            local_names = [m for m in (*llama.general_models, *llama.sql_models) if provider_for_model(m) is ProviderKind.LOCAL]
            registry.default_models[ProviderKind.LOCAL] = local_names[0] if local_names else DEFAULT_ENDPOINT_MODEL
            for name in local_names or [DEFAULT_ENDPOINT_MODEL]:
                registry.add(name)
        else:
            path = llama.model_path or bundled_model_path()
            if path:
                name = _inprocess_name(path, llama.model_path is None)
                registry._default_deployment("local", ProviderKind.LOCAL, registry._local(LlamaInProcessProvider(
                    model_path=path,
                    model_name=name,
                    context_length=llama.context_length,
                    threads=llama.threads,
                    gpu_layers=llama.gpu_layers,
                    parallel=llama.parallel,
                    max_queue=llama.max_queue,
                    default_max_tokens=llama.max_tokens,
                    verbose=settings.log_level == "DEBUG",
                )))
                registry.local_is_inprocess = True
                registry.default_models[ProviderKind.LOCAL] = name
                registry.add(name)
        for spec in PROVIDERS:
            cloud = settings.cloud(spec.kind)
            if spec.build is not None and cloud.api_key is not None:
                registry._default_deployment(spec.name, spec.kind, spec.build(cloud, spec.name))
                registry.default_models[spec.kind] = cloud.model
                registry.add(cloud.model)
        for deployment in settings.deployments:
            registry._configured_deployment(deployment)
        # LLM_EMBEDDING_MODEL is configured too: listed with its capabilities and health (it
        # joins no chain: chains come from the provider and preference variables).
        embedding = (settings.embedding_model,) if settings.embedding_model else ()
        for name in (*llama.general_models, *llama.sql_models, *embedding):
            if provider_for_model(name) in registry.defaults and not (
                registry.local_is_inprocess and provider_for_model(name) is ProviderKind.LOCAL
            ):
                registry.add(name)
        return registry

    async def discover_models(self) -> list[str]:
        """Replaces the placeholder model of a local endpoint configured without a model name
        (``LM_STUDIO_ENDPOINT`` alone) by the models the endpoint lists (``GET /models``), so the
        name sent upstream is the real one (Ollama and LM Studio refuse unknown names). A path
        (llama.cpp lists its GGUF file) becomes its file name without ``.gguf``. Returns the
        names found; none when the endpoint does not answer (the placeholder stays)."""
        placeholder = self.models.get(DEFAULT_ENDPOINT_MODEL)
        deployment = self.deployments.get("local")
        lister = getattr(deployment.provider, "list_models", None) if deployment is not None else None
        if placeholder is None or deployment is None or lister is None or self.default_models.get(ProviderKind.LOCAL) != DEFAULT_ENDPOINT_MODEL:
            return []
        names = []
        for found in await lister():
            name = Path(found).name.removesuffix(".gguf") if "/" in found and not is_valid_model_name(found) else found
            if is_valid_model_name(name) and name not in names:
                names.append(name)
        if not names:
            log.warning("local endpoint lists no models; calls go out as %r", DEFAULT_ENDPOINT_MODEL)
            return []
        del self.models[DEFAULT_ENDPOINT_MODEL]
        for name in names:
            self.add(name, deployment)
        self.default_models[ProviderKind.LOCAL] = names[0]
        log.info("local endpoint serves %s", ", ".join(names))
        return names

    def _default_deployment(self, name: str, kind: ProviderKind, provider: Provider) -> None:
        self.deployments[name] = Deployment(name, kind, provider)
        self.defaults[kind] = self.deployments[name]

    def _configured_deployment(self, configured: DeploymentSettings) -> None:
        """A ``deployments:`` entry: its provider, and a route to it for each model it serves."""
        kind = configured.kind
        spec = BY_DEPLOYMENT_TYPE[configured.provider]
        provider: Provider
        if spec.build is not None:  # a cloud API: its key and URL, the provider's own defaults
            provider = spec.build(CloudSettings(api_key=configured.api_key, base_url=configured.base_url), configured.name)
        else:  # an OpenAI-compatible local server
            provider = self._local(
                OpenAICompatibleProvider(
                    kind=kind,
                    base_url=configured.base_url,
                    api_key=configured.api_key,
                    label=configured.name,
                    connect_error_kind=ErrorKind.MODEL_UNAVAILABLE,
                    default_max_tokens=self.settings.llama.max_tokens,
                )
            )
        deployment = Deployment(configured.name, kind, provider, configured.weight)
        self.deployments[configured.name] = deployment
        self.defaults.setdefault(kind, deployment)
        for model in configured.models:
            self.add(model, deployment)
            served = self.deployment_models.setdefault(kind, [])
            if model not in served:
                served.append(model)

    def _local(self, provider: Provider) -> Provider:
        """A local provider, with tools offered as a schema-constrained answer when
        ``LLM_LOCAL_TOOL_CALLING`` is ``schema`` (the default)."""
        return EmulatedToolsProvider(provider) if self.settings.llama.tool_calling == "schema" else provider

    def _entry(self, name: str, deployment: Deployment) -> ModelEntry:
        facts = facts_for(
            name, local_context_window=self.settings.llama.context_length, price_overrides=dict(self.settings.price_overrides)
        )
        capabilities = capabilities_for(name, local_tools=self.settings.llama.tool_calling != "off", kind=deployment.kind)
        return ModelEntry(name, deployment.kind, [Route(deployment)], facts.context_window, facts.price, capabilities)

    def add(self, name: str, deployment: Deployment | None = None) -> ModelEntry:
        """Registers (or returns) a configured model, served by ``deployment`` (by default, the
        default deployment of its provider by name); a model named by several deployments gets
        a route to each."""
        if deployment is None:
            deployment = self.defaults[provider_for_model(name)]
        entry = self.models.get(name)
        if entry is None:
            entry = self.models[name] = self._entry(name, deployment)
        elif all(r.deployment is not deployment for r in entry.routes):
            if deployment.kind is not entry.provider_kind:
                raise ConfigError(
                    f"LLM_CONFIG_FILE deployment {deployment.name}",
                    f"serves {name!r}, which another deployment serves with a different provider type",
                )
            entry.routes.append(Route(deployment))
        return entry

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
        if kind not in self.defaults:
            raise LLMError(
                ErrorKind.CONFIGURATION_ERROR,
                f"model {name!r} needs the {kind.value} provider, which is not configured ({BY_KIND[kind].setup_hint})",
                model=name,
            )
        in_process = self.deployments.get("local")
        if kind is ProviderKind.LOCAL and self.local_is_inprocess and self.defaults[kind] is in_process:
            loaded = self.default_models[ProviderKind.LOCAL]
            raise LLMError(
                ErrorKind.MODEL_UNAVAILABLE,
                f"local model {name!r} is not loaded; the in-process model is {loaded!r}",
                model=name,
            )
        entry = self.adhoc[name] = self._entry(name, self.defaults[kind])
        while len(self.adhoc) > MAX_ADHOC_MODELS:
            self.adhoc.popitem(last=False)
        return entry


def _inprocess_name(path: str, bundled: bool) -> str:
    if bundled:
        return BUNDLED_MODEL_NAME
    stem = Path(path).name.removesuffix(".gguf")
    return stem.lower()


def visible_models(registry: ModelRegistry, caller: Caller | None) -> list[ModelEntry]:
    """The configured models a caller is shown (every transport's model listing): those its
    key may use (``Caller.may_use``), all of them with authentication off (``caller`` None)."""
    return [entry for entry in registry.models.values() if caller is None or caller.may_use(entry.name)]
