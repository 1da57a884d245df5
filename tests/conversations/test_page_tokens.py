"""ListConversations page tokens: a token the server did not issue is INVALID_ARGUMENT with
a ``page_token`` field violation, whatever it decodes to and whichever store is behind the
server (issue 10, item 7: an out-of-range time overflowed SQLite and came back INTERNAL).

The property tests run the real server in-process per store and drive it from a worker
thread through a synchronous channel, so hypothesis can shrink while the server's event loop
keeps serving."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_manager.client import error_details
from llm_manager.v1 import conversation_service_pb2 as conv, conversation_service_pb2_grpc
from llm_manager_server.conversations import PageCursor
from llm_manager_server.conversations.model import MAX_CURSOR_ID_CHARS, MAX_CURSOR_TIME_US

from ..conftest import StartApp, Stubs
from ..support.services import postgres_dsn, postgres_server  # noqa: F401 - fixtures

STORE_KINDS = ("memory", "sqlite", "postgres")
# Fewer examples against PostgreSQL: each call is a round trip to another process.
EXAMPLES = {"memory": 150, "sqlite": 150, "postgres": 60}
PAGE_SIZE = 2
CONVERSATIONS = 5


def b64url(raw: bytes, *, pad: bool = False) -> str:
    encoded = base64.urlsafe_b64encode(raw).decode()
    return encoded if pad else encoded.rstrip("=")


# The token from the issue: 23 digits, far beyond a signed 64-bit integer.
OVERFLOW_TOKEN = b64url(b"v1:99999999999999999999999:x")


@pytest.fixture(params=STORE_KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """LLM_CONVERSATION_STORE for each store kind; PostgreSQL is the session's private
    server (a missing one fails, never skips)."""
    kind: str = request.param
    if kind == "memory":
        return "memory"
    if kind == "sqlite":
        return f"sqlite:{tmp_path / 'conversations.db'}"
    dsn: str = request.getfixturevalue("postgres_dsn")
    return dsn


def _kind(store_url: str) -> str:
    return "memory" if store_url == "memory" else store_url.split(":", 1)[0].replace("postgresql", "postgres")


async def test_the_overflowing_token_from_the_issue_is_invalid_argument(
    store_url: str, start_app: StartApp, connect: Callable[..., Stubs]
) -> None:
    stubs = connect(await start_app(LLM_CONVERSATION_STORE=store_url))
    await stubs.conversations.CreateConversation(conv.CreateConversationRequest())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs.conversations.ListConversations(conv.ListConversationsRequest(page_token=OVERFLOW_TOKEN))
    details = error_details(raised.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.reason == "INVALID_REQUEST" and set(details.field_violations) == {"page_token"}, details


# --- tokens ---------------------------------------------------------------------------------

_BOUNDARY_NUMBERS = st.sampled_from([0, 1, MAX_CURSOR_TIME_US, MAX_CURSOR_TIME_US + 1, 2**64, 2**64 - 1, -1, -(2**63), -(2**63) - 1, 10**22, 99999999999999999999999])
_NUMBERS = st.one_of(
    _BOUNDARY_NUMBERS.map(str),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.integers(min_value=0, max_value=2**80).map(lambda n: f"00{n}"),  # leading zeros
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", "1e5", "0x10", "+5", " 5", "5 ", "1_000", "١٢٣", "²", "５", "-0", "1.0"]),
)
_IDS = st.one_of(
    st.uuids().map(str),
    st.text(alphabet="0123456789abcdef-", min_size=1, max_size=40),
    st.text(max_size=40),  # anything: ':', NUL, non-ASCII, spaces, empty
    st.sampled_from(["", "x", "x" * MAX_CURSOR_ID_CHARS, "x" * (MAX_CURSOR_ID_CHARS + 1), "a\x00b", "é", "a b", "a/b", "..", "a=b"]),
)
_VERSIONS = st.one_of(st.just("v1"), st.sampled_from(["v2", "v0", "V1", "", "v1 ", " v1", "v", "v１"]))


@st.composite
def _structured(draw: st.DrawFn) -> str:
    """``v1:<time>:<id>`` and its near misses: other versions, numbers and ids, parts
    missing or extra."""
    parts = [draw(_VERSIONS), draw(_NUMBERS), draw(_IDS)]
    shape = draw(st.sampled_from(["whole", "whole", "whole", "missing", "extra"]))
    if shape == "missing":
        parts = parts[: draw(st.integers(min_value=0, max_value=2))]
    elif shape == "extra":
        parts += draw(st.lists(st.text(max_size=8), min_size=1, max_size=3))
    return ":".join(parts)


@st.composite
def _mutated(draw: st.DrawFn, issued: list[str]) -> str:
    """One of the server's own tokens with a character appended, dropped, replaced or
    inserted, or padded with '='."""
    token = draw(st.sampled_from(issued))
    change = draw(st.sampled_from(["append", "drop", "replace", "pad", "insert"]))
    if change == "drop":
        return token[:-1]
    if change == "pad":
        return token + "=" * draw(st.integers(min_value=1, max_value=3))
    position = draw(st.integers(min_value=0, max_value=len(token) - 1))
    char = draw(st.characters())
    if change == "append":
        return token + char
    if change == "insert":
        return token[:position] + char + token[position:]
    return token[:position] + char + token[position + 1 :]


def tokens(issued: list[str]) -> st.SearchStrategy[str]:
    """Random text, random base64url of random bytes, encoded near misses, and the
    server's own tokens as issued and mutated."""
    encodable = st.one_of(_structured(), st.text(max_size=60)).map(lambda raw: raw.encode())
    return st.one_of(
        st.text(max_size=80),
        st.binary(max_size=160).map(b64url),
        st.binary(max_size=160).flatmap(lambda raw: st.booleans().map(lambda pad: b64url(raw, pad=pad))),
        encodable.map(b64url),
        encodable.map(lambda raw: b64url(raw, pad=True)),
        st.sampled_from(issued),
        _mutated(issued),
    )


def _accepted(token: str) -> PageCursor | None:
    try:
        return PageCursor.from_token(token)
    except ValueError:
        return None


# --- properties -----------------------------------------------------------------------------


@given(update_time_us=st.integers(min_value=0, max_value=MAX_CURSOR_TIME_US), conversation_id=st.from_regex(r"\A[A-Za-z0-9_-]{1,128}\Z"))
def test_every_cursor_the_server_can_issue_round_trips(update_time_us: int, conversation_id: str) -> None:
    cursor = PageCursor(update_time_us, conversation_id)
    assert PageCursor.from_token(cursor.token()) == cursor


@given(update_time_us=st.one_of(st.integers(max_value=-1), st.integers(min_value=MAX_CURSOR_TIME_US + 1)), conversation_id=st.uuids().map(str))
def test_a_time_no_store_column_holds_is_refused(update_time_us: int, conversation_id: str) -> None:
    with pytest.raises(ValueError):
        PageCursor.from_token(b64url(f"v1:{update_time_us}:{conversation_id}".encode()))


async def test_any_token_gives_a_valid_page_or_invalid_argument(
    store_url: str, start_app: StartApp, connect: Callable[..., Stubs]
) -> None:
    """Through the real server for each store: every token is either one ``from_token``
    accepts, answered with the page that follows it, or INVALID_ARGUMENT on ``page_token``;
    never another code."""
    app = await start_app(LLM_CONVERSATION_STORE=store_url)
    stubs = connect(app)
    for _ in range(CONVERSATIONS):
        await stubs.conversations.CreateConversation(conv.CreateConversationRequest())
    listed = await stubs.conversations.ListConversations(conv.ListConversationsRequest(page_size=100))
    everything = [(c.update_time.ToMicroseconds(), c.id) for c in listed.conversations]
    assert len(everything) == CONVERSATIONS
    issued, token = [], ""
    while True:
        page = await stubs.conversations.ListConversations(conv.ListConversationsRequest(page_size=1, page_token=token))
        token = page.next_page_token
        if not token:
            break
        issued.append(token)
    assert len(issued) == CONVERSATIONS - 1
    times = {update_time for update_time, _ in everything}

    def check_all() -> None:
        with grpc.insecure_channel(app.address) as channel:
            stub = conversation_service_pb2_grpc.ConversationServiceStub(channel)

            @settings(max_examples=EXAMPLES[_kind(store_url)], deadline=None, suppress_health_check=[HealthCheck.too_slow])
            @given(tokens(issued))
            def check(token: str) -> None:
                cursor = _accepted(token)
                try:
                    page = stub.ListConversations(conv.ListConversationsRequest(page_size=PAGE_SIZE, page_token=token), timeout=10)
                except grpc.RpcError as error:
                    details = error_details(error)  # type: ignore[arg-type]
                    assert details.code == grpc.StatusCode.INVALID_ARGUMENT, details
                    assert set(details.field_violations) == {"page_token"}, details
                    assert cursor is None, f"refused a token from_token accepts: {cursor}"
                    return
                got = [(c.update_time.ToMicroseconds(), c.id) for c in page.conversations]
                if not token:  # no token: the first page
                    assert got == everything[:PAGE_SIZE]
                    return
                assert cursor is not None, "served a page for a token from_token refuses"
                assert len(got) <= PAGE_SIZE and all(entry in everything for entry in got)
                assert all(update_time <= cursor.update_time_us for update_time, _ in got)
                if cursor.update_time_us not in times:  # ties on time compare ids by the store's collation
                    assert got == [e for e in everything if e[0] < cursor.update_time_us][:PAGE_SIZE]
                if token in issued:
                    assert got == [e for e in everything if e < (cursor.update_time_us, cursor.id)][:PAGE_SIZE]

            check()

    await asyncio.to_thread(check_all)
