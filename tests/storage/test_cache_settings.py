"""The cache's settings: LLM_CACHE_MAX_BYTES beside the seed's variables, and the factory."""

from __future__ import annotations

import pytest

from llm_manager_server.cache import MemoryCacheStore, RedisCacheStore, build_response_cache
from llm_manager_server.config import CacheSettings, ConfigError, load_settings
from llm_manager_server.domain.types import RoutingStrategy


def test_max_bytes_defaults_to_64_mib_and_is_validated() -> None:
    assert load_settings({}).cache.max_bytes == 64 * 1024 * 1024
    assert load_settings({"LLM_CACHE_MAX_BYTES": "1048576"}).cache.max_bytes == 1 << 20
    for bad in ("lots", "12", "-5"):
        with pytest.raises(ConfigError) as raised:
            load_settings({"LLM_CACHE_MAX_BYTES": bad})
        assert raised.value.variable == "LLM_CACHE_MAX_BYTES"


def test_max_bytes_from_the_config_file(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "config.json"
    path.write_text('{"cache": {"enabled": true, "ttlSeconds": 60, "maxSize": 10, "maxBytes": 4096}}')
    cache = load_settings({"LLM_CONFIG_FILE": str(path)}).cache
    assert (cache.ttl_seconds, cache.max_size, cache.max_bytes) == (60, 10, 4096)


def test_the_factory_builds_the_configured_store() -> None:
    assert build_response_cache(CacheSettings(enabled=False), default_strategy=RoutingStrategy.BALANCED) is None
    memory = build_response_cache(CacheSettings(), default_strategy=RoutingStrategy.BALANCED)
    assert memory is not None and isinstance(memory.store, MemoryCacheStore)
    redis = build_response_cache(CacheSettings(store="redis://127.0.0.1:1/0"), default_strategy=RoutingStrategy.BALANCED)
    assert redis is not None and isinstance(redis.store, RedisCacheStore)
