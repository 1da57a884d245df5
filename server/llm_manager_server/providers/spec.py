"""What the service knows about a provider, declared by the provider's own module.

A provider is one module (its HTTP client and wire mapping) that ends with a ``SPEC``, plus one
line in :data:`providers.registry.PROVIDERS`. The spec names the provider (its default
deployment, its ``deployments:`` type, the names chains may use for it), the model-family
prefixes that map a model name to it, its OpenTelemetry ``gen_ai.provider.name``, the
variables that configure its default deployment, and how to build one of its deployments.
Configuration (``config``), routing (``routing.registry``), the model catalog, telemetry and
the API's provider enum are all derived from the specs; none of them lists providers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..domain.types import ProviderKind
from ..secret import Secret
from .base import Provider


@dataclass(frozen=True)
class CloudSettings:
    """One cloud deployment's settings: the default deployment's from its variables, or a
    ``deployments:`` entry's (key and URL only; the rest are the provider's own defaults)."""

    api_key: Secret | None = None
    base_url: str = ""
    model: str = ""
    # Applied when a caller gives none; None: the provider's own default.
    max_tokens: int | None = None
    temperature: float | None = None


@dataclass(frozen=True)
class CloudVariables:
    """The environment variables (and ``LLM_CONFIG_FILE`` section ``models.<file_section>``)
    that configure a cloud provider's default deployment. Where a setting has several
    variables, the first one set wins (``CLAUDE_API_KEY`` over ``ANTHROPIC_API_KEY``)."""

    api_key: tuple[str, ...]
    base_url: tuple[str, ...]
    model: str
    max_tokens: str
    file_section: str
    temperature: str | None = None


@dataclass(frozen=True)
class ProviderSpec:
    kind: ProviderKind
    # The first name is its default deployment's; all of them name it in LLM_FALLBACK_ORDER
    # and LLM_ROUTE_<TASK> (``gpt`` for openai, ``claude`` for anthropic ...).
    names: tuple[str, ...]
    # ``provider:`` of a ``deployments:`` entry of this kind.
    deployment_type: str
    # gen_ai.provider.name (the semantic conventions' well-known value where there is one).
    telemetry_name: str
    # Model names starting with one of these map to this provider (case-insensitive); a name
    # no provider claims is a local model.
    model_prefixes: tuple[str, ...] = ()
    # Cloud providers: their variables, defaults and how to build a deployment from its
    # settings and name. The local kind has none: it is built from LlamaSettings.
    variables: CloudVariables | None = None
    defaults: CloudSettings = field(default_factory=CloudSettings)
    build: Callable[[CloudSettings, str], Provider] | None = None

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def setup_hint(self) -> str:
        """What an operator sets to configure it (named in a CONFIGURATION_ERROR)."""
        if self.variables is None:
            return "set LM_STUDIO_ENDPOINT or LLM_LOCAL_MODEL_PATH"
        return f"set {self.variables.api_key[0]}"


def require_key(settings: CloudSettings, provider: str) -> Secret:
    """The deployment's key (the config loader refuses a cloud deployment without one)."""
    if settings.api_key is None:
        raise ValueError(f"a {provider} deployment needs an API key")
    return settings.api_key
