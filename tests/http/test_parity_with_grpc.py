"""Property: the HTTP API and gRPC are one service. For the same request, sent once through
each (plain or streamed, in either order), they give the same text, usage and cost, send the
upstream the same body, and share the one response cache: what one transport stored, the
other serves, marked cached, at the same cost."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

import grpc
import openai
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as api, llm_manager_service_pb2_grpc

from ..fakes import TokenCounts
from .conftest import OPENAI_MODEL, Served

_serial = itertools.count()


@dataclass(frozen=True)
class Case:
    prompt: str
    system: str
    pinned: bool
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    seed: int | None
    stop: tuple[str, ...]
    reply: str
    prompt_tokens: int
    completion_tokens: int
    http_streams: bool
    grpc_streams: bool
    http_first: bool
    no_cache: bool


_words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40)
cases = st.builds(
    Case,
    prompt=_words.filter(str.strip),
    system=st.one_of(st.just(""), _words.filter(str.strip)),
    pinned=st.booleans(),
    max_tokens=st.one_of(st.none(), st.integers(1, 4000)),
    temperature=st.one_of(st.none(), st.floats(0, 2, allow_nan=False)),
    top_p=st.one_of(st.none(), st.floats(0.01, 1.0, allow_nan=False)),
    seed=st.one_of(st.none(), st.integers(0, 2**31)),
    stop=st.lists(st.text(alphabet="xyz\n#", min_size=1, max_size=3), max_size=3).map(tuple),
    reply=_words,
    prompt_tokens=st.integers(1, 5000),
    completion_tokens=st.integers(1, 500),
    http_streams=st.booleans(),
    grpc_streams=st.booleans(),
    http_first=st.booleans(),
    no_cache=st.booleans(),
)


@dataclass(frozen=True)
class Result:
    text: str
    usage: tuple[int, int, int]
    cost_usd: float
    cached: bool


def _via_http(sdk: openai.OpenAI, case: Case, prompt: str) -> Result:
    messages: list[Any] = ([{"role": "system", "content": case.system}] if case.system else []) + [{"role": "user", "content": prompt}]
    options: dict[str, Any] = {
        key: value for key, value in
        (("max_tokens", case.max_tokens), ("temperature", case.temperature), ("top_p", case.top_p), ("seed", case.seed)) if value is not None
    }
    if case.stop:
        options["stop"] = list(case.stop)
    extra = {"llm_manager": {"no_cache": True}} if case.no_cache else None
    model = OPENAI_MODEL if case.pinned else "auto"
    if not case.http_streams:
        completion = sdk.chat.completions.create(model=model, messages=messages, extra_body=extra, **options)
        extension = (completion.model_extra or {})["llm_manager"]
        usage = completion.usage
        assert usage is not None
        return Result(completion.choices[0].message.content or "", (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens), extension["cost_usd"], extension["cached"])
    chunks = list(sdk.chat.completions.create(model=model, messages=messages, extra_body=extra, stream=True, stream_options={"include_usage": True}, **options))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    extension = next((c.model_extra or {})["llm_manager"] for c in chunks if c.choices and c.choices[0].finish_reason)
    usage = chunks[-1].usage
    assert usage is not None
    return Result(text, (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens), extension["cost_usd"], extension["cached"])


def _via_grpc(stub: llm_manager_service_pb2_grpc.LLMManagerServiceStub, case: Case, prompt: str) -> Result:
    preferences = common_pb2.GenerationPreferences(
        model=OPENAI_MODEL if case.pinned else "", max_tokens=case.max_tokens, temperature=case.temperature, top_p=case.top_p,
        seed=case.seed, stop=list(case.stop),
    )
    fields: dict[str, Any] = {"prompt": prompt, "system": case.system, "preferences": preferences, "cache_control": common_pb2.CacheControl(no_cache=case.no_cache)}
    if not case.grpc_streams:
        reply = stub.Generate(api.GenerateRequest(**fields), timeout=20)
        return Result(reply.text, (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens), reply.usage.cost_usd, reply.metadata.cached)
    messages = list(stub.StreamGenerate(api.StreamGenerateRequest(**fields), timeout=20))
    last = messages[-1]
    text = "".join(m.text for m in messages)
    return Result(text, (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens), last.usage.cost_usd, last.metadata.cached)


async def test_http_and_grpc_answer_alike_and_share_the_cache(served: Served) -> None:
    def check_all() -> None:
        with grpc.insecure_channel(served.app.address) as channel, openai.OpenAI(api_key="unused", base_url=served.base_url, max_retries=0) as sdk:
            stub = llm_manager_service_pb2_grpc.LLMManagerServiceStub(channel)

            @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
            @given(cases)
            def check(case: Case) -> None:
                prompt = f"{next(_serial)}: {case.prompt}"  # each example its own cache entry
                counts = TokenCounts(prompt=case.prompt_tokens, completion=case.completion_tokens)
                calls = [lambda: _via_http(sdk, case, prompt), lambda: _via_grpc(stub, case, prompt)]
                first, second = calls if case.http_first else calls[::-1]
                before = len(served.fake.generation_requests)
                served.fake.reply_text(case.reply, counts)
                if case.no_cache:
                    served.fake.reply_text(case.reply, counts)
                one, other = first(), second()
                sent = served.fake.generation_requests[before:]
                assert one.text == case.reply and other.text == case.reply
                assert one.usage == other.usage == (counts.prompt, counts.completion, counts.prompt + counts.completion)
                assert one.cost_usd > 0 and not one.cached
                if case.no_cache:
                    # Both asked the upstream, with the same body (modulo the stream flag).
                    assert len(sent) == 2 and not other.cached and other.cost_usd == one.cost_usd
                    bodies = [{k: v for k, v in r.body.items() if k not in ("stream", "stream_options")} for r in sent]
                    assert bodies[0] == bodies[1]
                else:
                    # The second transport was served what the first stored; so is the first, again.
                    again = first()
                    assert len(sent) == 1 and other.cached and again.cached
                    assert again == other

            check()

    await asyncio.to_thread(check_all)
