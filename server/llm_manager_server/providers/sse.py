"""Server-sent events, decoded incrementally as bytes arrive.

The decoder follows the WHATWG event-stream rules that matter for LLM APIs: lines end in
LF, CRLF or CR (possibly split across reads), ``:`` starts a comment, ``data`` lines join
with LF, a blank line dispatches the event. UTF-8 is decoded incrementally, so a character
split across network reads is never mangled.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: str
    id: str | None = None


class SSEDecoder:
    """Feed it bytes, get whole events back."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._pending_cr = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        text = self._utf8.decode(chunk)
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across reads
        self._pending_cr = False
        buffer = self._buffer + text
        events: list[SSEEvent] = []
        if "\r" not in buffer:
            # The usual case (every LLM API ends lines with LF): split at once.
            *lines, self._buffer = buffer.split("\n")
        else:
            # One linear pass over every terminator (CRLF counts as one): a whole body fed
            # at once must not be rescanned line by line.
            lines, start = [], 0
            for terminator in _LINE_END.finditer(buffer):
                lines.append(buffer[start : terminator.start()])
                start = terminator.end()
            if buffer.endswith("\r"):
                self._pending_cr = True  # maybe the first half of a CRLF split across reads
            self._buffer = buffer[start:]
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    @property
    def has_partial_event(self) -> bool:
        """True when bytes of an event arrived but the event was never completed."""
        return bool(self._buffer.strip() or self._data)

    def _line(self, line: str) -> SSEEvent | None:
        if line == "":
            if not self._data:
                self._event = ""
                return None
            event = SSEEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data = "", []
            return event
        if line.startswith("data: "):
            self._data.append(line[6:])
            return None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None


_LINE_END = re.compile("\r\n|\r|\n")


class IncompleteStreamError(Exception):
    """The byte stream ended in the middle of an event."""


async def iter_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[SSEEvent]:
    """Events from an async byte source (e.g. ``response.content.iter_any()``)."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    if decoder.has_partial_event:
        raise IncompleteStreamError("event stream ended in the middle of an event")
