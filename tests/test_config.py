"""Configuration: every variable of the contract, the config file, precedence, bad values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llm_manager_server.config import ConfigError, Secret, load_settings
from llm_manager_server.domain.types import ProviderKind, RoutingStrategy, TaskType


def test_defaults_need_no_environment() -> None:
    settings = load_settings({})
    assert (settings.host, settings.port) == ("127.0.0.1", 50051)
    assert settings.llama.endpoint is None
    assert settings.cloud(ProviderKind.OPENAI).api_key is None and settings.cloud(ProviderKind.ANTHROPIC).api_key is None
    assert settings.routing.strategy is RoutingStrategy.BALANCED
    assert settings.cache.enabled and settings.cache.store == "memory"
    assert settings.conversation_store_url == f"sqlite:{Path('data') / 'conversations.db'}"
    assert settings.access_log and settings.event_loop == "uvloop"
    assert not load_settings({"LLM_ACCESS_LOG": "false"}).access_log
    assert load_settings({"LLM_EVENT_LOOP": "AsyncIO"}).event_loop == "asyncio"


def test_every_contract_variable_is_read() -> None:
    env = {
        "LLM_GRPC_HOST": "0.0.0.0",
        "LLM_GRPC_PORT": "6000",
        "LM_STUDIO_ENDPOINT": "http://localhost:1234/v1",
        "LLM_GENERAL_MODEL_1": "llama-3.1-8b",
        "LLM_GENERAL_MODEL_2": "gpt-4o",
        "LLM_SQL_MODEL_1": "sqlcoder",
        "LLM_SQL_MODEL_2": "claude-3-5-haiku-latest",
        "OPENAI_API_KEY": "sk-test-openai",
        "OPENAI_MODEL": "gpt-4.1-mini",
        "OPENAI_MAX_TOKENS": "512",
        "OPENAI_TEMPERATURE": "0.2",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "CLAUDE_API_KEY": "sk-ant-test",
        "CLAUDE_MODEL": "claude-3-5-haiku-latest",
        "CLAUDE_BASE_URL": "http://127.0.0.1:9",
        "LLM_ROUTING_STRATEGY": "cost",
        "LLM_CACHE_ENABLED": "false",
        "LLM_CACHE_TTL_SECONDS": "60",
        "LLM_CACHE_MAX_SIZE": "10",
        "LLM_CACHE_STORE": "redis://127.0.0.1:6379/0",
        "LLM_CONVERSATION_STORE": "postgres://u@127.0.0.1/db",
        "LLM_DATA_DIR": "/tmp/x",
        "LLM_MAX_RETRIES": "4",
        "LLM_TIMEOUT_MS": "1500",
    }
    settings = load_settings(env)
    assert (settings.host, settings.port) == ("0.0.0.0", 6000)
    assert settings.llama.endpoint == "http://localhost:1234/v1"
    assert settings.llama.general_models == ("llama-3.1-8b", "gpt-4o")
    assert settings.llama.sql_models == ("sqlcoder", "claude-3-5-haiku-latest")
    assert settings.cloud(ProviderKind.OPENAI).api_key == Secret("sk-test-openai")
    assert (settings.cloud(ProviderKind.OPENAI).model, settings.cloud(ProviderKind.OPENAI).max_tokens, settings.cloud(ProviderKind.OPENAI).temperature) == ("gpt-4.1-mini", 512, 0.2)
    assert settings.cloud(ProviderKind.OPENAI).base_url == "http://127.0.0.1:9/v1"
    assert settings.cloud(ProviderKind.ANTHROPIC).api_key == Secret("sk-ant-test")
    assert settings.cloud(ProviderKind.ANTHROPIC).model == "claude-3-5-haiku-latest"
    assert settings.cloud(ProviderKind.ANTHROPIC).base_url == "http://127.0.0.1:9"
    assert settings.routing.strategy is RoutingStrategy.COST
    assert (settings.routing.max_retries, settings.routing.timeout_ms) == (4, 1500)
    assert (settings.cache.enabled, settings.cache.ttl_seconds, settings.cache.max_size) == (False, 60, 10)
    assert settings.cache.store == "redis://127.0.0.1:6379/0"
    assert settings.conversation_store_url == "postgres://u@127.0.0.1/db"
    assert settings.data_dir == "/tmp/x"


def test_anthropic_aliases() -> None:
    settings = load_settings({"ANTHROPIC_API_KEY": "sk-ant-x", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"})
    assert settings.cloud(ProviderKind.ANTHROPIC).api_key == Secret("sk-ant-x")
    assert settings.cloud(ProviderKind.ANTHROPIC).base_url == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("LLM_GRPC_PORT", "abc", "must be an integer"),
        ("LLM_GRPC_PORT", "70000", "must be 0..65535"),
        ("LM_STUDIO_ENDPOINT", "localhost:1234", "must be an http(s) URL"),
        ("OPENAI_MAX_TOKENS", "0", "must be 1..1000000"),
        ("OPENAI_TEMPERATURE", "3", "must be between 0.0 and 2.0"),
        ("OPENAI_TEMPERATURE", "warm", "must be a number"),
        ("OPENAI_BASE_URL", "ftp://x", "must be an http(s) URL"),
        ("CLAUDE_BASE_URL", "nope", "must be an http(s) URL"),
        ("LLM_ROUTING_STRATEGY", "fastest", "must be one of cost, performance, balanced"),
        ("LLM_CACHE_ENABLED", "maybe", "must be true or false"),
        ("LLM_CACHE_TTL_SECONDS", "-5", "must be >= 1"),
        ("LLM_CACHE_MAX_SIZE", "x", "must be an integer"),
        ("LLM_CACHE_STORE", "memcached://x", "must be 'memory' or start with redis://"),
        ("LLM_CONVERSATION_STORE", "mysql://x", "must be 'memory' or start with sqlite:"),
        ("LLM_LOCAL_MODEL_PATH", "/models/x.bin", "must name a .gguf file"),
        ("LLM_MAX_RETRIES", "11", "must be 0..10"),
        ("LLM_TIMEOUT_MS", "0", "must be 1..3600000"),
        ("LLM_LOG_LEVEL", "LOUD", "must be DEBUG, INFO, WARNING or ERROR"),
        ("LLM_ACCESS_LOG", "sometimes", "must be true or false"),
        ("LLM_EVENT_LOOP", "trio", "must be uvloop or asyncio"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({variable: value})
    message = str(raised.value)
    assert message.startswith(f"{variable}: ")
    assert expected in message
    assert "\n" not in message


def test_config_file_in_the_seed_shape_and_env_precedence(tmp_path: Path) -> None:
    config = tmp_path / "llm.yaml"
    config.write_text(
        """
models:
  llama: {endpoint: "http://127.0.0.1:1234", contextLength: 8192, threads: 2, gpuLayers: 0}
  gpt: {apiKey: sk-file-key, model: gpt-4o, maxTokens: 1000, temperature: 0.5}
  claude: {apiKey: sk-ant-file, model: claude-3-opus-latest, maxTokens: 2000}
routing: {strategy: performance, fallbackOrder: [claude, gpt, llama], maxRetries: 1, timeoutMs: 9000}
cache: {enabled: true, ttlSeconds: 30, maxSize: 5}
"""
    )
    settings = load_settings({"LLM_CONFIG_FILE": str(config), "OPENAI_MODEL": "gpt-4o-mini"})
    assert settings.llama.endpoint == "http://127.0.0.1:1234"
    assert (settings.llama.context_length, settings.llama.threads) == (8192, 2)
    assert settings.cloud(ProviderKind.OPENAI).api_key == Secret("sk-file-key")
    assert settings.cloud(ProviderKind.OPENAI).model == "gpt-4o-mini"  # the environment wins over the file
    assert settings.cloud(ProviderKind.OPENAI).max_tokens == 1000
    assert settings.cloud(ProviderKind.ANTHROPIC).model == "claude-3-opus-latest" and settings.cloud(ProviderKind.ANTHROPIC).max_tokens == 2000
    assert settings.routing.strategy is RoutingStrategy.PERFORMANCE
    assert settings.routing.chains[TaskType.GENERAL] == (ProviderKind.ANTHROPIC, ProviderKind.OPENAI, ProviderKind.LOCAL)
    assert settings.routing.chains[TaskType.ANALYSIS] == (ProviderKind.ANTHROPIC, ProviderKind.OPENAI, ProviderKind.LOCAL)
    assert (settings.routing.max_retries, settings.routing.timeout_ms) == (1, 9000)
    assert (settings.cache.ttl_seconds, settings.cache.max_size) == (30, 5)


def test_json_config_file_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "llm.json"
    good.write_text(json.dumps({"routing": {"strategy": "cost"}}))
    assert load_settings({"LLM_CONFIG_FILE": str(good)}).routing.strategy is RoutingStrategy.COST

    bad_value = tmp_path / "bad.json"
    bad_value.write_text(json.dumps({"cache": {"ttlSeconds": "soon"}}))
    with pytest.raises(ConfigError, match=r"^LLM_CONFIG_FILE ttlSeconds: must be an integer"):
        load_settings({"LLM_CONFIG_FILE": str(bad_value)})

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match=r"^LLM_CONFIG_FILE: cannot parse"):
        load_settings({"LLM_CONFIG_FILE": str(broken)})

    with pytest.raises(ConfigError, match=r"^LLM_CONFIG_FILE: cannot read"):
        load_settings({"LLM_CONFIG_FILE": str(tmp_path / "missing.yaml")})


def test_secret_never_shows_in_repr() -> None:
    settings = load_settings({"OPENAI_API_KEY": "sk-live-very-secret", "CLAUDE_API_KEY": "sk-ant-also-secret"})
    text = repr(settings) + str(settings)
    assert "very-secret" not in text and "also-secret" not in text
    assert "Secret('********')" in text


def test_bad_variable_stops_start_up_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llm_manager_server"],
        env={"PATH": "/usr/bin:/bin", "LLM_GRPC_PORT": "not-a-port"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "llm-manager: configuration error: LLM_GRPC_PORT: must be an integer, got 'not-a-port'"
    ]
