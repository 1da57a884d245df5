"""The cache key: changing any one field that can change the answer is a miss (property
based), and fields that cannot change it do not split the cache."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from llm_manager_server.cache import cache_key, key_document
from llm_manager_server.cache.keys import EXCLUDED_REQUEST_FIELDS
from llm_manager_server.domain.types import (
    GenerationRequest,
    Message,
    ResponseFormat,
    Role,
    RoutingStrategy,
    SamplingOptions,
    TaskType,
)

DEFAULT = RoutingStrategy.BALANCED

texts = st.text(min_size=1, max_size=40)
messages = st.lists(st.builds(Message, st.sampled_from(list(Role)), texts), min_size=1, max_size=4).map(tuple)
samplings = st.builds(
    SamplingOptions,
    max_tokens=st.none() | st.integers(1, 100_000),
    temperature=st.none() | st.floats(0.0, 2.0),
    top_p=st.none() | st.floats(0.01, 1.0),
    stop=st.lists(texts, max_size=4, unique=True).map(tuple),
    seed=st.none() | st.integers(-(2**63), 2**63 - 1),
    response_format=st.sampled_from(list(ResponseFormat)),
)
requests = st.builds(
    GenerationRequest,
    messages=messages,
    task_type=st.sampled_from(list(TaskType)),
    sampling=samplings,
    model=st.none() | texts,
    strategy=st.none() | st.sampled_from(list(RoutingStrategy)),
    no_cache=st.booleans(),
    no_store=st.booleans(),
)

# Every field that can change the answer, with how to change it: (path, mutation).
FIELD_CHANGES = {
    "messages.content": lambda r, t: dataclasses.replace(r, messages=(*r.messages[:-1], Message(r.messages[-1].role, r.messages[-1].content + t))),
    "messages.role": lambda r, t: dataclasses.replace(
        r, messages=(*r.messages[:-1], Message(_other_role(r.messages[-1].role), r.messages[-1].content))
    ),
    "messages.extra": lambda r, t: dataclasses.replace(r, messages=(*r.messages, Message(Role.USER, t))),
    "messages.system": lambda r, t: dataclasses.replace(r, messages=(Message(Role.SYSTEM, t), *r.messages)),
    "task_type": lambda r, t: dataclasses.replace(r, task_type=_next(list(TaskType), r.task_type)),
    "model": lambda r, t: dataclasses.replace(r, model=(r.model or "") + t),
    "strategy": lambda r, t: dataclasses.replace(r, strategy=_next(list(RoutingStrategy), r.strategy or DEFAULT)),
    "max_tokens": lambda r, t: _sampling(r, max_tokens=(r.sampling.max_tokens or 0) + 1),
    "temperature": lambda r, t: _sampling(r, temperature=0.5 if r.sampling.temperature is None else r.sampling.temperature + 0.125),
    "top_p": lambda r, t: _sampling(r, top_p=0.5 if r.sampling.top_p is None else r.sampling.top_p / 2),
    "stop": lambda r, t: _sampling(r, stop=(*r.sampling.stop, "\x00" + t)),
    "seed": lambda r, t: _sampling(r, seed=0 if r.sampling.seed is None else r.sampling.seed ^ 1),
    "response_format": lambda r, t: _sampling(r, response_format=_next(list(ResponseFormat), r.sampling.response_format)),
}


def _next(values: list[Any], current: Any) -> Any:
    return values[(values.index(current) + 1) % len(values)]


def _other_role(role: Role) -> Role:
    return Role.ASSISTANT if role is Role.USER else Role.USER


def _sampling(request: GenerationRequest, **changes: Any) -> GenerationRequest:
    return dataclasses.replace(request, sampling=dataclasses.replace(request.sampling, **changes))


def test_every_request_field_is_covered_by_a_change_or_deliberately_excluded() -> None:
    """A field added to GenerationRequest or SamplingOptions is keyed automatically; this
    makes sure the property test below learns to change it too."""
    request_fields = {f.name for f in dataclasses.fields(GenerationRequest)} - EXCLUDED_REQUEST_FIELDS - {"sampling", "messages"}
    sampling_fields = {f.name for f in dataclasses.fields(SamplingOptions)}
    assert request_fields | sampling_fields <= set(FIELD_CHANGES)
    document = key_document(GenerationRequest(messages=(Message(Role.USER, "x"),)), DEFAULT)
    assert set(document["sampling"]) == sampling_fields


@settings(max_examples=300, deadline=None, database=None)
@given(request=requests, field=st.sampled_from(sorted(FIELD_CHANGES)), text=texts)
def test_changing_any_one_field_is_a_miss(request: GenerationRequest, field: str, text: str) -> None:
    changed = FIELD_CHANGES[field](request, text)
    assert changed != request
    assert cache_key(changed, DEFAULT) != cache_key(request, DEFAULT)


@settings(max_examples=100, deadline=None, database=None)
@given(request=requests)
def test_fields_that_cannot_change_the_answer_share_a_key(request: GenerationRequest) -> None:
    key = cache_key(request, DEFAULT)
    assert cache_key(dataclasses.replace(request, no_cache=not request.no_cache, no_store=not request.no_store), DEFAULT) == key
    assert cache_key(_sampling(request, stop=tuple(reversed(request.sampling.stop))), DEFAULT) == key
    if request.strategy is None:
        assert cache_key(dataclasses.replace(request, strategy=DEFAULT), DEFAULT) == key
    assert cache_key(request, DEFAULT) == key  # deterministic


def test_the_server_default_strategy_is_part_of_the_key() -> None:
    request = GenerationRequest(messages=(Message(Role.USER, "hi"),))
    assert cache_key(request, RoutingStrategy.COST) != cache_key(request, RoutingStrategy.PERFORMANCE)
