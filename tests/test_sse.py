"""The incremental SSE decoder: split reads, multi-byte UTF-8, comments, CR/LF, cut streams."""

from __future__ import annotations

import pytest

from llm_manager_server.providers.sse import IncompleteStreamError, SSEDecoder, SSEEvent, iter_sse


def feed_all(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


STREAM = (
    b": keep-alive comment\n\n"
    b'data: {"text":"caf\xc3\xa9 \xf0\x9f\x9a\x80"}\n\n'
    b"event: message_delta\r\ndata: line one\r\ndata: line two\r\n\r\n"
    b"id: 7\rdata: cr only\r\r"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    SSEEvent("message", '{"text":"café 🚀"}'),
    SSEEvent("message_delta", "line one\nline two"),
    SSEEvent("message", "cr only", "7"),
    SSEEvent("message", "[DONE]", "7"),
]


def test_whole_stream_in_one_read() -> None:
    assert feed_all([STREAM]) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13])
def test_every_split_gives_the_same_events(size: int) -> None:
    # Splits land inside multi-byte characters, between CR and LF, inside "data:".
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert feed_all(chunks) == EXPECTED


def test_a_long_crlf_body_in_one_read() -> None:
    # Local unary answers are decoded from the whole body at once (one pass over it, not a
    # rescan per line): thousands of CRLF events; the body ends on a lone CR, which ends the
    # blank line at once (a CR is a line end of its own), and the LF that may follow is not
    # another blank line.
    body = b"".join(b"data: %d\r\n\r\n" % n for n in range(5000)) + b"data: last\r\n\r"
    decoder = SSEDecoder()
    assert [e.data for e in decoder.feed(body)] == [*map(str, range(5000)), "last"]
    assert decoder.feed(b"\n") == [] and not decoder.has_partial_event
    assert [e.data for e in decoder.feed(b"data: next\n\n")] == ["next"]


def test_field_without_space_and_unknown_fields() -> None:
    assert feed_all([b"data:x\nretry: 10\nfoo: bar\n\n"]) == [SSEEvent("message", "x")]


async def test_cut_stream_raises_instead_of_hanging() -> None:
    async def source() -> object:
        yield b'data: {"a":1}\n\n'
        yield b'data: {"b":'

    events = []
    with pytest.raises(IncompleteStreamError):
        async for event in iter_sse(source()):  # type: ignore[arg-type]
            events.append(event)
    assert events == [SSEEvent("message", '{"a":1}')]


async def test_clean_end_after_last_event() -> None:
    async def source() -> object:
        yield b"data: one\n\ndata: two\n\n"

    assert [e.data async for e in iter_sse(source())] == ["one", "two"]  # type: ignore[arg-type]
