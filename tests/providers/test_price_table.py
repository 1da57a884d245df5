"""Cost from reported usage: the shipped price table, cache reads and writes, local models
free, and ``LLM_PRICES_FILE`` overrides (a bad file stops start-up naming the variable)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_manager_server.catalog import FREE, Price, facts_for
from llm_manager_server.config import ConfigError, load_settings
from llm_manager_server.domain.types import Usage
from llm_manager_server.routing.registry import ModelRegistry

WINDOW = 4096


@pytest.mark.parametrize(
    ("price", "usage", "dollars"),
    [
        (Price(2.50, 10.00, 1.25), Usage(1_000_000, 1_000_000, 2_000_000), 12.50),
        # 400k of the 1M prompt tokens were cache hits.
        (Price(0.15, 0.60, 0.075), Usage(1_000_000, 0, 1_000_000, cached_prompt_tokens=400_000), 0.6 * 0.15 + 0.4 * 0.075),
        # Anthropic: 100k cache reads, 200k cache writes at 1.25x, 700k plain input.
        (
            Price(3.00, 15.00, 0.30, 3.75),
            Usage(1_000_000, 10_000, 1_010_000, cached_prompt_tokens=100_000, cache_creation_tokens=200_000),
            0.7 * 3.00 + 0.1 * 0.30 + 0.2 * 3.75 + 0.01 * 15.00,
        ),
        # Without a cache-write price, writes cost the input rate.
        (Price(1.00, 2.00, 0.10), Usage(1_000_000, 0, 1_000_000, cache_creation_tokens=500_000), 1.00),
        (FREE, Usage(5_000, 5_000, 10_000), 0.0),
    ],
)
def test_price_cost(price: Price, usage: Usage, dollars: float) -> None:
    assert price.cost(usage) == pytest.approx(dollars)


@pytest.mark.parametrize(
    ("model", "price"),
    [
        ("gpt-4o-mini", Price(0.15, 0.60, 0.075)),
        ("gpt-4o-mini-2024-07-18", Price(0.15, 0.60, 0.075)),
        ("gpt-4o", Price(2.50, 10.00, 1.25)),
        ("claude-sonnet-4-5", Price(3.00, 15.00, 0.30, 3.75)),
        ("claude-haiku-4-5-20251001", Price(1.00, 5.00, 0.10, 1.25)),
        ("llama-3.2-3b-instruct", FREE),
    ],
)
def test_shipped_prices(model: str, price: Price) -> None:
    assert facts_for(model, local_context_window=WINDOW).price == price


OVERRIDES = {
    "gpt-4o": Price(1.0, 2.0, 0.5),
    "claude-": Price(9.0, 9.0, 9.0),
    "claude-sonnet-4-5": Price(2.0, 4.0, 0.2, 2.5),
    "my-llama": Price(0.01, 0.02, 0.01),
}


@pytest.mark.parametrize(
    ("model", "price"),
    [
        ("gpt-4o-2024-08-06", Price(1.0, 2.0, 0.5)),
        # gpt-4o-mini has a more specific shipped entry than the gpt-4o override.
        ("gpt-4o-mini", Price(0.15, 0.60, 0.075)),
        ("claude-sonnet-4-5-20250929", Price(2.0, 4.0, 0.2, 2.5)),
        ("claude-haiku-4-5", Price(1.00, 5.00, 0.10, 1.25)),
        ("claude-unknown-9", Price(9.0, 9.0, 9.0)),
        ("my-llama-8b", Price(0.01, 0.02, 0.01)),
        ("other-local", FREE),
    ],
)
def test_overrides_merge_over_the_shipped_table_longest_prefix_wins(model: str, price: Price) -> None:
    assert facts_for(model, local_context_window=WINDOW, price_overrides=OVERRIDES).price == price


def test_prices_file_json_and_yaml(tmp_path: Path) -> None:
    json_file = tmp_path / "prices.json"
    json_file.write_text(json.dumps({"gpt-4o": {"input": 1, "output": 2, "cached_input": 0.5}, "GPT-X": {"input": 3, "output": 4}}))
    yaml_file = tmp_path / "prices.yaml"
    yaml_file.write_text("claude-sonnet-4-5:\n  input: 2\n  output: 4\n  cached_input: 0.2\n  cache_write: 2.5\n")

    from_json = load_settings({"LLM_PRICES_FILE": str(json_file)}).price_overrides
    from_yaml = load_settings({"LLM_PRICES_FILE": str(yaml_file)}).price_overrides

    assert dict(from_json) == {"gpt-4o": Price(1.0, 2.0, 0.5), "gpt-x": Price(3.0, 4.0, 3.0)}
    assert dict(from_yaml) == {"claude-sonnet-4-5": Price(2.0, 4.0, 0.2, 2.5)}


def test_registry_prices_models_with_the_overrides(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gpt-4o-mini": {"input": 1, "output": 2, "cached_input": 0.5}}))
    settings = load_settings(
        {"LLM_PRICES_FILE": str(prices), "OPENAI_API_KEY": "sk-test", "LM_STUDIO_ENDPOINT": "http://127.0.0.1:9"}
    )

    registry = ModelRegistry.from_settings(settings)

    assert registry.models["gpt-4o-mini"].price == Price(1.0, 2.0, 0.5)
    assert registry.resolve("gpt-4o").price == Price(2.50, 10.00, 1.25)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "cannot parse"),
        ("[1, 2]", "must map model-name prefixes"),
        ('{"gpt-4o": {"input": 1}}', "needs 'output'"),
        ('{"gpt-4o": {"input": -1, "output": 2}}', "non-negative number"),
        ('{"gpt-4o": {"input": "cheap", "output": 2}}', "non-negative number"),
        ('{"gpt-4o": {"input": 1, "output": 2, "discount": 3}}', "unknown field"),
        ('{"gpt-4o": 5}', "must map to"),
    ],
)
def test_bad_prices_file_is_a_config_error_naming_the_variable(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)

    with pytest.raises(ConfigError) as raised:
        load_settings({"LLM_PRICES_FILE": str(path)})

    assert raised.value.variable == "LLM_PRICES_FILE"
    assert str(raised.value).startswith("LLM_PRICES_FILE: ")
    assert problem in str(raised.value)
    assert "\n" not in str(raised.value)


def test_missing_prices_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^LLM_PRICES_FILE: cannot read"):
        load_settings({"LLM_PRICES_FILE": str(tmp_path / "absent.json")})
