"""Settings from the environment and an optional ``LLM_CONFIG_FILE``, validated at start.

Precedence: environment variable > config file > built-in default. A bad value raises
:class:`ConfigError`, whose one-line message names the variable (or file key) at fault.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .catalog import Price
from .providers.registry import BY_DEPLOYMENT_TYPE, BY_KIND, BY_NAME, PROVIDERS
from .providers.spec import CloudSettings, ProviderSpec
from .redaction import register_secret
from .secret import Secret
from .tls import CERT_VARIABLE, CLIENT_CA_VARIABLE, KEY_VARIABLE, CertificateProblem, read_certificates
from .domain.types import MODEL_NAME_RULE, ProviderKind, RoutingStrategy, TaskType, is_valid_model_name

if TYPE_CHECKING:  # keys imports ConfigError from here
    from .keys import KeyRing

_LOCAL, _GPT, _CLAUDE = ProviderKind.LOCAL, ProviderKind.OPENAI, ProviderKind.ANTHROPIC
# The contract's default routing table. SQL generation tries LLM_SQL_MODEL_1/2 first, then
# this chain (the general one unless overridden).
DEFAULT_CHAINS: dict[TaskType, tuple[ProviderKind, ...]] = {
    TaskType.ANALYSIS: (_CLAUDE, _GPT, _LOCAL),
    TaskType.UI_GENERATION: (_GPT, _CLAUDE, _LOCAL),
    TaskType.CONFIG_MANAGEMENT: (_LOCAL, _GPT, _CLAUDE),
    TaskType.GENERAL: (_LOCAL, _GPT, _CLAUDE),
    TaskType.SQL_GENERATION: (_LOCAL, _GPT, _CLAUDE),
}


class ConfigError(Exception):
    """A bad setting; ``str()`` is one line naming the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class LlamaSettings:
    """Local Llama-family models: an OpenAI-compatible endpoint or an in-process GGUF."""

    endpoint: str | None = None
    model_path: str | None = None
    general_models: tuple[str, ...] = ()
    sql_models: tuple[str, ...] = ()
    context_length: int = 4096
    threads: int = 0  # 0: the machine's cores
    gpu_layers: int = 0
    parallel: int = 2
    max_queue: int = 16
    # LLM_LOCAL_TOOL_CALLING: "schema" (the server offers tools as a schema-constrained answer;
    # works with any model llama.cpp can constrain), "native" (the local server's own tool
    # calling, for models whose chat template supports tools) or "off" (local models get no
    # tool requests).
    tool_calling: str = "schema"
    # LLM_LOCAL_MAX_TOKENS: the output bound of a local model when the caller sets none (a small
    # model left unbounded can ramble until its context is full).
    max_tokens: int = 512


_DEPLOYMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class DeploymentSettings:
    """One named endpoint from ``LLM_CONFIG_FILE`` ``deployments:``."""

    name: str
    provider: str  # a provider's deployment_type (providers.registry.BY_DEPLOYMENT_TYPE)
    base_url: str
    models: tuple[str, ...]
    api_key: Secret | None = None
    weight: float = 1.0

    @property
    def kind(self) -> ProviderKind:
        return BY_DEPLOYMENT_TYPE[self.provider].kind


@dataclass(frozen=True)
class RoutingSettings:
    strategy: RoutingStrategy = RoutingStrategy.BALANCED
    # Provider order per task type (the contract's table unless overridden).
    chains: Mapping[TaskType, tuple[ProviderKind, ...]] = field(default_factory=lambda: dict(DEFAULT_CHAINS))
    max_retries: int = 2
    timeout_ms: int = 60_000
    health_interval_s: float = 15.0
    # Consecutive failures that open a model's circuit, and how long it stays open.
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0
    # A stream that produces nothing for this long is aborted as TIMEOUT.
    stall_timeout_s: float = 30.0
    # The longest 429 retry-after the router waits for before moving to the next model.
    max_retry_wait_s: float = 5.0


@dataclass(frozen=True)
class CacheSettings:
    enabled: bool = True
    ttl_seconds: int = 3600
    max_size: int = 1000
    # Total bytes of cached replies kept in memory, so a few huge replies cannot exhaust
    # memory; also the largest single reply stored in Redis.
    max_bytes: int = 64 * 1024 * 1024
    store: str = "memory"
    # LLM_CACHE_SHARED_ACROSS_CALLERS: with API keys on, a cached answer is served only to the
    # caller it was made for unless the operator opts into one scope for every caller.
    shared_across_callers: bool = False


@dataclass(frozen=True)
class TlsSettings:
    """TLS on the gRPC port and the HTTP API port (all unset: plaintext). Paths only: tls.py
    reads the files, and re-reads them when they change."""

    cert_file: str | None = None
    key_file: str | None = None
    # Mutual TLS: only clients with a certificate this CA signed connect.
    client_ca_file: str | None = None

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 50051
    data_dir: str = "data"
    llama: LlamaSettings = field(default_factory=LlamaSettings)
    # Each cloud provider's default deployment, from the variables its spec names.
    clouds: Mapping[ProviderKind, CloudSettings] = field(default_factory=dict)
    # LLM_CONFIG_FILE deployments: named endpoints beside the default ones (local, openai, ...).
    deployments: tuple[DeploymentSettings, ...] = ()
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    conversation_store: str = ""
    # LLM_LIMITS_STORE: where per-caller limit counters live ("memory", or a redis:// URL shared
    # by replicas); unset: LLM_CACHE_STORE's Redis when the cache uses one, else memory.
    limits_store: str = ""
    log_level: str = "INFO"
    # One INFO line per API call (method, status, duration); LLM_ACCESS_LOG=false silences it.
    access_log: bool = True
    # LLM_EVENT_LOOP: "uvloop" (default) or "asyncio" (the standard library's loop).
    event_loop: str = "uvloop"
    grace_period_s: float = 10.0
    # LLM_MAX_CONCURRENT_CALLS: API calls served at once; more are RESOURCE_EXHAUSTED at once.
    max_concurrent_calls: int = 1024
    # Record prompt and reply text on spans (off: they may hold personal data).
    telemetry_record_content: bool = False
    # LLM_PRICES_FILE: (model-name prefix, price) pairs merged over the shipped price table.
    price_overrides: tuple[tuple[str, Price], ...] = ()
    # LLM_EMBEDDING_MODEL: the model of an Embed call that names none (unset: the local model,
    # else OpenAI's text-embedding-3-small).
    embedding_model: str | None = None
    # LLM_API_KEYS_FILE: the callers and the sha256 of their keys; None: authentication off.
    api_keys: KeyRing | None = None
    # LLM_HTTP_PORT: the OpenAI-compatible HTTP API (and /metrics) on LLM_GRPC_HOST; None: off.
    http_port: int | None = None
    # LLM_HTTP_MAX_BODY_BYTES / LLM_HTTP_MAX_JSON_DEPTH: larger bodies are 413, deeper JSON 400.
    http_max_body_bytes: int = 4 * 1024 * 1024
    http_max_json_depth: int = 64

    def cloud(self, kind: ProviderKind) -> CloudSettings:
        """A cloud provider's default-deployment settings (its defaults when unconfigured)."""
        return self.clouds.get(kind) or BY_KIND[kind].defaults

    @property
    def conversation_store_url(self) -> str:
        return self.conversation_store or f"sqlite:{Path(self.data_dir) / 'conversations.db'}"

    @property
    def limits_store_url(self) -> str:
        if self.limits_store:
            return self.limits_store
        return self.cache.store if self.cache.store.startswith(("redis://", "rediss://")) else "memory"


# --- value parsers: each raises ConfigError naming the variable -------------------------


def _int(variable: str, raw: object, *, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ConfigError(variable, f"must be an integer, got {str(raw)!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(variable, f"must be {bound}, got {value}")
    return value


def _float(variable: str, raw: object, *, minimum: float, maximum: float) -> float:
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise ConfigError(variable, f"must be a number, got {str(raw)!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(variable, f"must be between {minimum} and {maximum}, got {value}")
    return value


def _bool(variable: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(variable, f"must be true or false, got {str(raw)!r}")


def _url(variable: str, raw: object) -> str:
    """An upstream's base URL. Credentials in it (``user:password@``) are refused: a URL is
    shown in errors, health details and logs, and a key belongs in its own variable."""
    text = str(raw).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.username is not None or parts.password is not None:
        if parts.password:
            register_secret(parts.password)  # this very error is printed: never the password
        raise ConfigError(variable, "must not carry credentials (user:password@); give the key in the provider's API key variable")
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(variable, f"must be an http(s) URL, got {text!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as error:
        raise ConfigError(variable, f"has a bad port: {error}") from None
    if any(c.isspace() for c in text) or parts.fragment:
        raise ConfigError(variable, f"must be a plain http(s) URL (no spaces or #fragment), got {text!r}")
    return text


# What an unfilled example key looks like: "sk-...", "<your key>", "your-api-key", "changeme".
_PLACEHOLDER_KEY = re.compile(r"(\.\.\.|…|<.*>|^your[-_ ]|^changeme$|^x+$|^todo$)", re.IGNORECASE)


def _api_key(variable: str, raw: object) -> Secret:
    """An API key; an obvious placeholder is refused (it would only fail at the first call)."""
    text = str(raw).strip()
    if _PLACEHOLDER_KEY.search(text):
        raise ConfigError(variable, "looks like a placeholder, not a key (e.g. 'sk-...'): set the real key or unset the variable")
    return Secret(text)


def _tool_calling(variable: str, raw: object) -> str:
    text = str(raw).strip().lower()
    if text not in {"schema", "native", "off"}:
        raise ConfigError(variable, f"must be schema, native or off, got {str(raw)!r}")
    return text


def _model_name(variable: str, raw: object) -> str:
    name = str(raw).strip()
    if not is_valid_model_name(name):
        raise ConfigError(variable, f"{MODEL_NAME_RULE}, got {name[:80]!r}")
    return name


def _strategy(variable: str, raw: object) -> RoutingStrategy:
    text = str(raw).strip().lower().removeprefix("routing_strategy_")
    try:
        return RoutingStrategy(text)
    except ValueError:
        raise ConfigError(variable, f"must be one of cost, performance, balanced, got {str(raw)!r}") from None


def _provider_order(variable: str, raw: object) -> tuple[ProviderKind, ...]:
    items = raw if isinstance(raw, list) else str(raw).split(",")
    order: list[ProviderKind] = []
    for item in items:
        name = str(item).strip().lower()
        if name not in BY_NAME:
            raise ConfigError(variable, f"unknown provider {name!r} (use {', '.join(BY_NAME)})")
        if BY_NAME[name] not in order:
            order.append(BY_NAME[name])
    if not order:
        raise ConfigError(variable, "must name at least one provider")
    return tuple(order)


def _store(variable: str, raw: object, schemes: tuple[str, ...]) -> str:
    text = str(raw).strip()
    if text == "memory" or any(text.startswith(s) for s in schemes):
        password = urlsplit(text).password if "://" in text else None
        if password:
            register_secret(password)  # a store URL may carry one; it never reaches a log line
        return text
    raise ConfigError(variable, f"must be 'memory' or start with {' or '.join(schemes)}, got {text!r}")


# --- sources -----------------------------------------------------------------------------


def _read_file(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError("LLM_CONFIG_FILE", f"cannot read {path!r}: {error.strerror}") from None
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as error:  # noqa: BLE001 - any parse error is a config error
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError("LLM_CONFIG_FILE", f"cannot parse {path!r}: {first_line}") from None
    if not isinstance(data, dict):
        raise ConfigError("LLM_CONFIG_FILE", f"{path!r} must hold a mapping at the top level")
    return data


_PRICE_FIELDS = {
    "input": "input_per_million",
    "output": "output_per_million",
    "cached_input": "cached_input_per_million",
    "cache_write": "cache_write_per_million",
}


DEFAULT_DEPLOYMENT_NAMES = frozenset(spec.name for spec in PROVIDERS)


def _deployments(raw: object, env: Mapping[str, str]) -> tuple[DeploymentSettings, ...]:
    """``deployments:`` of the config file; each entry's key is read from the variable its
    ``api_key_env`` names (the file never holds a key)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("LLM_CONFIG_FILE deployments", "must be a list")
    found: list[DeploymentSettings] = []
    names: set[str] = set()
    for index, item in enumerate(raw):
        where = f"LLM_CONFIG_FILE deployments[{index}]"
        if not isinstance(item, Mapping):
            raise ConfigError(where, "must be a mapping with name, provider, base_url, models")
        unknown = set(item) - {"name", "provider", "base_url", "baseUrl", "api_key_env", "apiKeyEnv", "models", "weight"}
        if unknown:
            raise ConfigError(where, f"unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        name = str(item.get("name") or "")
        if not _DEPLOYMENT_NAME.fullmatch(name):
            raise ConfigError(f"{where}.name", "must be 1-64 of letters, digits, . _ -")
        if name in names or name in DEFAULT_DEPLOYMENT_NAMES:
            defaults = ", ".join(sorted(DEFAULT_DEPLOYMENT_NAMES))
            raise ConfigError(f"{where}.name", f"{name!r} is taken (names are unique; {defaults} are the default deployments)")
        names.add(name)
        provider = str(item.get("provider") or "")
        if provider not in BY_DEPLOYMENT_TYPE:
            raise ConfigError(f"{where}.provider", f"must be one of {', '.join(BY_DEPLOYMENT_TYPE)}, got {provider!r}")
        base_url = _url(f"{where}.base_url", item.get("base_url") or item.get("baseUrl") or "")
        models = item.get("models")
        if not isinstance(models, list) or not models:
            raise ConfigError(f"{where}.models", "must list at least one model name")
        model_names = tuple(_model_name(f"{where}.models", m) for m in models)
        key_env = item.get("api_key_env") or item.get("apiKeyEnv")
        api_key: Secret | None = None
        if key_env:
            value = env.get(str(key_env), "").strip()
            if not value:
                raise ConfigError(f"{where}.api_key_env", f"names {key_env!r}, which is not set")
            api_key = Secret(value)
        elif BY_DEPLOYMENT_TYPE[provider].build is not None:  # a cloud API
            raise ConfigError(f"{where}.api_key_env", f"is required for a {provider} deployment (the variable holding its key)")
        weight = _float(f"{where}.weight", item.get("weight", 1), minimum=0.01, maximum=1000.0)
        found.append(DeploymentSettings(name, provider, base_url, model_names, api_key, weight))
    return tuple(found)


def _read_prices_file(path: str) -> tuple[tuple[str, Price], ...]:
    """``LLM_PRICES_FILE``: a JSON or YAML mapping of model-name prefix -> ``{input, output,
    cached_input, cache_write}`` in US dollars per million tokens. ``input`` and ``output``
    are required; ``cached_input`` defaults to ``input`` (no discount), ``cache_write`` to
    ``input``."""
    variable = "LLM_PRICES_FILE"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(variable, f"cannot read {path!r}: {error.strerror}") from None
    try:
        import yaml

        # YAML is a superset of JSON, so one parser reads both.
        data = yaml.safe_load(text)
    except Exception as error:  # noqa: BLE001 - any parse error is a config error
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(variable, f"cannot parse {path!r}: {first_line}") from None
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(variable, f"{path!r} must map model-name prefixes to prices")
    prices: list[tuple[str, Price]] = []
    for prefix, entry in data.items():
        if not isinstance(prefix, str) or not prefix.strip():
            raise ConfigError(variable, f"model-name prefix {prefix!r} must be a non-empty string")
        if not isinstance(entry, Mapping):
            raise ConfigError(variable, f"{prefix!r} must map to {{input, output, cached_input}}")
        unknown = set(entry) - set(_PRICE_FIELDS)
        if unknown:
            raise ConfigError(variable, f"{prefix!r} has unknown field(s) {', '.join(sorted(map(str, unknown)))} (use {', '.join(_PRICE_FIELDS)})")
        values: dict[str, float] = {}
        for key, raw in entry.items():
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw < 0:
                raise ConfigError(variable, f"{prefix}.{key} must be a non-negative number of dollars per million tokens, got {raw!r}")
            values[_PRICE_FIELDS[key]] = float(raw)
        for required in ("input", "output"):
            if _PRICE_FIELDS[required] not in values:
                raise ConfigError(variable, f"{prefix!r} needs {required!r}")
        values.setdefault("cached_input_per_million", values["input_per_million"])
        prices.append((prefix.strip().lower(), Price(**values)))
    return tuple(prices)


def _section(data: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    node: Any = data
    for key in path:
        node = node.get(key, {}) if isinstance(node, Mapping) else {}
    if not isinstance(node, Mapping):
        raise ConfigError("LLM_CONFIG_FILE", f"{'.'.join(path)} must be a mapping")
    return node


def _pick(section: Mapping[str, Any], *keys: str) -> Any:
    """The first present key (camelCase as in the seed's LLMConfig, or snake_case)."""
    for key in keys:
        if key in section and section[key] is not None:
            return section[key]
    return None


def _chains(env: Mapping[str, str], routing_file: Mapping[str, Any]) -> dict[TaskType, tuple[ProviderKind, ...]]:
    """The routing table: contract defaults; ``fallbackOrder`` (LLM_FALLBACK_ORDER) replaces the
    general chain; ``LLM_ROUTE_<TASK>`` or the file's ``routing.chains.<task>`` replace one task's."""
    chains = dict(DEFAULT_CHAINS)
    order_raw = env.get("LLM_FALLBACK_ORDER", "").strip() or _pick(routing_file, "fallbackOrder", "fallback_order")
    if order_raw:
        chains[TaskType.GENERAL] = chains[TaskType.SQL_GENERATION] = _provider_order("LLM_FALLBACK_ORDER", order_raw)
    file_chains = _section(routing_file, "chains")
    for task in TaskType:
        variable = f"LLM_ROUTE_{task.name}"
        raw = env.get(variable, "").strip() or _pick(file_chains, task.value, task.value.replace("_", "-"))
        if raw:
            chains[task] = _provider_order(variable, raw)
    return chains


def _keys_file(path: str) -> KeyRing | None:
    if not path:
        return None
    from .keys import load_keys_file

    return load_keys_file(path)


def _tls(env: Mapping[str, str]) -> TlsSettings:
    """The TLS files, checked now so that a bad one stops start-up before the port opens."""
    cert, key, client_ca = (env.get(v, "").strip() or None for v in (CERT_VARIABLE, KEY_VARIABLE, CLIENT_CA_VARIABLE))
    if cert is None and key is None:
        if client_ca is not None:
            raise ConfigError(CLIENT_CA_VARIABLE, f"needs {CERT_VARIABLE} and {KEY_VARIABLE} (mutual TLS is TLS with client certificates)")
        return TlsSettings()
    if cert is None or key is None:
        missing, given = (CERT_VARIABLE, KEY_VARIABLE) if cert is None else (KEY_VARIABLE, CERT_VARIABLE)
        raise ConfigError(missing, f"must be set with {given} (the certificate and its private key)")
    try:
        read_certificates(cert, key, client_ca)
    except CertificateProblem as problem:
        raise ConfigError(problem.variable, problem.problem) from None
    return TlsSettings(cert, key, client_ca)


def _cloud_settings(spec: ProviderSpec, env: Mapping[str, str], file_data: Mapping[str, Any], parsed: Any) -> CloudSettings:
    """A cloud provider's default deployment from the variables its spec names (the first of
    several set wins) or its ``LLM_CONFIG_FILE`` ``models.<section>``."""
    variables = spec.variables
    assert variables is not None
    defaults = spec.defaults
    section = _section(file_data, "models", variables.file_section)

    def first_set(names: tuple[str, ...]) -> str:
        return next((name for name in names if env.get(name, "").strip()), names[0])

    def max_tokens(name: str, raw: object) -> int:
        return _int(name, raw, minimum=1, maximum=1_000_000)

    temperature = None
    if variables.temperature is not None:
        temperature = parsed(variables.temperature, section, ("temperature",), lambda n, r: _float(n, r, minimum=0.0, maximum=2.0), defaults.temperature)
    return CloudSettings(
        api_key=parsed(first_set(variables.api_key), section, ("apiKey", "api_key"), _api_key, None),
        base_url=parsed(first_set(variables.base_url), section, ("baseUrl", "base_url", "endpoint"), _url, defaults.base_url),
        model=parsed(variables.model, section, ("model",), _model_name, defaults.model),
        max_tokens=parsed(variables.max_tokens, section, ("maxTokens", "max_tokens"), max_tokens, defaults.max_tokens),
        temperature=temperature,
    )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Builds validated settings; raises :class:`ConfigError` on the first bad value."""
    env = dict(os.environ if environ is None else environ)

    def value(variable: str, file_section: Mapping[str, Any] | None = None, *keys: str) -> tuple[str, Any]:
        """(name to blame, raw value): the environment wins over the file."""
        raw = env.get(variable)
        if raw is not None and raw.strip() != "":
            return variable, raw
        if file_section is not None:
            found = _pick(file_section, *keys)
            if found is not None:
                return f"LLM_CONFIG_FILE {keys[0]}", found
        return variable, None

    file_data = _read_file(env["LLM_CONFIG_FILE"]) if env.get("LLM_CONFIG_FILE") else {}
    llama_file = _section(file_data, "models", "llama")
    routing_file = _section(file_data, "routing")
    cache_file = _section(file_data, "cache")

    defaults = Settings()

    def parsed(variable: str, file_section: Mapping[str, Any] | None, keys: tuple[str, ...], parse: Any, default: Any) -> Any:
        name, raw = value(variable, file_section, *keys)
        return default if raw is None else parse(name, raw)

    host = env.get("LLM_GRPC_HOST", "").strip() or defaults.host
    port = parsed("LLM_GRPC_PORT", None, (), lambda n, r: _int(n, r, minimum=0, maximum=65535), defaults.port)

    general = tuple(m for m in (env.get("LLM_GENERAL_MODEL_1", "").strip(), env.get("LLM_GENERAL_MODEL_2", "").strip()) if m)
    sql = tuple(m for m in (env.get("LLM_SQL_MODEL_1", "").strip(), env.get("LLM_SQL_MODEL_2", "").strip()) if m)
    file_model = _pick(llama_file, "model", "modelName", "model_name")
    if not general and file_model:
        general = (str(file_model),)
    for variable, name in zip(("LLM_GENERAL_MODEL_1", "LLM_GENERAL_MODEL_2"), general, strict=False):
        _model_name(variable, name)
    for variable, name in zip(("LLM_SQL_MODEL_1", "LLM_SQL_MODEL_2"), sql, strict=False):
        _model_name(variable, name)

    model_path = parsed("LLM_LOCAL_MODEL_PATH", llama_file, ("modelPath", "model_path"), lambda n, r: str(r).strip(), None)
    if model_path is not None and not model_path.endswith(".gguf"):
        raise ConfigError("LLM_LOCAL_MODEL_PATH", f"must name a .gguf file, got {model_path!r}")
    ld = LlamaSettings()
    llama = LlamaSettings(
        endpoint=parsed("LM_STUDIO_ENDPOINT", llama_file, ("endpoint",), _url, None),
        model_path=model_path,
        general_models=general,
        sql_models=sql,
        context_length=parsed("LLM_LOCAL_CONTEXT_LENGTH", llama_file, ("contextLength", "context_length"), lambda n, r: _int(n, r, minimum=256, maximum=1 << 20), ld.context_length),
        threads=parsed("LLM_LOCAL_THREADS", llama_file, ("threads",), lambda n, r: _int(n, r, minimum=0, maximum=1024), ld.threads),
        gpu_layers=parsed("LLM_LOCAL_GPU_LAYERS", llama_file, ("gpuLayers", "gpu_layers"), lambda n, r: _int(n, r, minimum=-1, maximum=10_000), ld.gpu_layers),
        parallel=parsed("LLM_LOCAL_PARALLEL", llama_file, ("parallel",), lambda n, r: _int(n, r, minimum=1, maximum=64), ld.parallel),
        max_tokens=parsed("LLM_LOCAL_MAX_TOKENS", llama_file, ("maxTokens", "max_tokens"), lambda n, r: _int(n, r, minimum=1, maximum=1_000_000), ld.max_tokens),
        tool_calling=parsed("LLM_LOCAL_TOOL_CALLING", llama_file, ("toolCalling", "tool_calling"), _tool_calling, ld.tool_calling),
        max_queue=parsed("LLM_LOCAL_MAX_QUEUE", llama_file, ("maxQueue", "max_queue"), lambda n, r: _int(n, r, minimum=0, maximum=100_000), ld.max_queue),
    )

    clouds = {spec.kind: _cloud_settings(spec, env, file_data, parsed) for spec in PROVIDERS if spec.variables is not None}

    rd = RoutingSettings()
    routing = RoutingSettings(
        strategy=parsed("LLM_ROUTING_STRATEGY", routing_file, ("strategy",), _strategy, rd.strategy),
        chains=_chains(env, routing_file),
        max_retries=parsed("LLM_MAX_RETRIES", routing_file, ("maxRetries", "max_retries"), lambda n, r: _int(n, r, minimum=0, maximum=10), rd.max_retries),
        timeout_ms=parsed("LLM_TIMEOUT_MS", routing_file, ("timeoutMs", "timeout_ms"), lambda n, r: _int(n, r, minimum=1, maximum=3_600_000), rd.timeout_ms),
        health_interval_s=parsed("LLM_HEALTH_INTERVAL_SECONDS", routing_file, ("healthIntervalSeconds",), lambda n, r: _float(n, r, minimum=0.1, maximum=86_400.0), rd.health_interval_s),
        breaker_failures=parsed("LLM_BREAKER_FAILURES", routing_file, ("breakerFailures",), lambda n, r: _int(n, r, minimum=1, maximum=1000), rd.breaker_failures),
        breaker_cooldown_s=parsed("LLM_BREAKER_COOLDOWN_SECONDS", routing_file, ("breakerCooldownSeconds",), lambda n, r: _float(n, r, minimum=0.0, maximum=86_400.0), rd.breaker_cooldown_s),
        stall_timeout_s=parsed("LLM_STREAM_STALL_TIMEOUT_MS", routing_file, ("streamStallTimeoutMs",), lambda n, r: _int(n, r, minimum=1, maximum=3_600_000) / 1000, rd.stall_timeout_s),
        max_retry_wait_s=parsed("LLM_MAX_RETRY_WAIT_MS", routing_file, ("maxRetryWaitMs",), lambda n, r: _int(n, r, minimum=0, maximum=3_600_000) / 1000, rd.max_retry_wait_s),
    )

    cd = CacheSettings()
    cache = CacheSettings(
        enabled=parsed("LLM_CACHE_ENABLED", cache_file, ("enabled",), _bool, cd.enabled),
        ttl_seconds=parsed("LLM_CACHE_TTL_SECONDS", cache_file, ("ttlSeconds", "ttl_seconds"), lambda n, r: _int(n, r, minimum=1), cd.ttl_seconds),
        max_size=parsed("LLM_CACHE_MAX_SIZE", cache_file, ("maxSize", "max_size"), lambda n, r: _int(n, r, minimum=1), cd.max_size),
        max_bytes=parsed("LLM_CACHE_MAX_BYTES", cache_file, ("maxBytes", "max_bytes"), lambda n, r: _int(n, r, minimum=1024), cd.max_bytes),
        store=parsed("LLM_CACHE_STORE", cache_file, ("store",), lambda n, r: _store(n, r, ("redis://", "rediss://")), cd.store),
        shared_across_callers=parsed("LLM_CACHE_SHARED_ACROSS_CALLERS", cache_file, ("sharedAcrossCallers", "shared_across_callers"), _bool, cd.shared_across_callers),
    )

    log_level = env.get("LLM_LOG_LEVEL", "").strip().upper() or defaults.log_level
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError("LLM_LOG_LEVEL", f"must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")

    event_loop = env.get("LLM_EVENT_LOOP", "").strip().lower() or defaults.event_loop
    if event_loop not in {"uvloop", "asyncio"}:
        raise ConfigError("LLM_EVENT_LOOP", f"must be uvloop or asyncio, got {event_loop!r}")

    return Settings(
        host=host,
        port=port,
        data_dir=env.get("LLM_DATA_DIR", "").strip() or defaults.data_dir,
        llama=llama,
        clouds=clouds,
        deployments=_deployments(file_data.get("deployments"), env),
        routing=routing,
        cache=cache,
        tls=_tls(env),
        conversation_store=parsed(
            "LLM_CONVERSATION_STORE", None, (), lambda n, r: _store(n, r, ("sqlite:", "postgres://", "postgresql://")), ""
        ),
        limits_store=parsed("LLM_LIMITS_STORE", None, (), lambda n, r: _store(n, r, ("redis://", "rediss://")), ""),
        log_level=log_level,
        access_log=parsed("LLM_ACCESS_LOG", None, (), _bool, defaults.access_log),
        event_loop=event_loop,
        telemetry_record_content=parsed("LLM_TELEMETRY_RECORD_CONTENT", None, (), _bool, False),
        max_concurrent_calls=parsed("LLM_MAX_CONCURRENT_CALLS", None, (), lambda n, r: _int(n, r, minimum=1, maximum=1_000_000), defaults.max_concurrent_calls),
        grace_period_s=parsed("LLM_SHUTDOWN_GRACE_SECONDS", None, (), lambda n, r: _float(n, r, minimum=0.0, maximum=3600.0), defaults.grace_period_s),
        price_overrides=_read_prices_file(env["LLM_PRICES_FILE"].strip()) if env.get("LLM_PRICES_FILE", "").strip() else (),
        embedding_model=parsed("LLM_EMBEDDING_MODEL", None, (), _model_name, None),
        api_keys=_keys_file(env.get("LLM_API_KEYS_FILE", "").strip()),
        http_port=parsed("LLM_HTTP_PORT", None, (), lambda n, r: _int(n, r, minimum=0, maximum=65535), None),
        http_max_body_bytes=parsed("LLM_HTTP_MAX_BODY_BYTES", None, (), lambda n, r: _int(n, r, minimum=1024, maximum=1 << 30), defaults.http_max_body_bytes),
        http_max_json_depth=parsed("LLM_HTTP_MAX_JSON_DEPTH", None, (), lambda n, r: _int(n, r, minimum=8, maximum=512), defaults.http_max_json_depth),
    )
