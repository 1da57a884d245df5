"""What a turn sends to the model: the conversation so far, trimmed to the context window.

Token counts are estimated, not tokenized (the model is not known until the router picks
it), exactly as the router estimates them when it checks context windows: about 4
characters a token, plus a few tokens per message for the chat template's role markers. A
message's characters are its text, its tool calls' names and JSON arguments, and its tool
result. The budget for the prompt is the context window less the tokens reserved for the
reply: ``max_tokens`` when the caller set it (as the router counts it), else a quarter of
the window, capped at 4096.

First the history is made consistent, as every provider requires: a tool call is sent only
with a result answering it, and a result only right after its call. So a call nobody
answered (the caller sent a new message instead) is left out, and so is its reply if
nothing else remains of it; a result whose call is not right before it is left out; a
result sent again (the retry of a failed turn) replaces the earlier one. Empty messages are
never sent; a tool result always is, since it answers its call.

Then trimming drops whole turns, oldest first. A turn is a user message and everything
after it until the next user message: the replies, the tool calls they make and the
results answering them. So a result never loses its call, and the context never starts
with an orphaned reply, a tool result or a call whose results were dropped. The system
prompt is always kept, and so is every turn holding one of the turn's new messages (the
new user message; for tool results, the turn of the calls they answer): if those alone do
not fit, the turn is refused with CONTEXT_TOO_LARGE (before anything is stored, when
:func:`check_fits` can tell from the new messages alone).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..domain.errors import ErrorKind, LLMError
from ..domain.types import Message, Role, ToolCall
from ..routing.strategy import estimate_prompt_tokens
from .model import StoredMessage, reply_message

DEFAULT_REPLY_RESERVE_CAP = 4096

_NO_MESSAGES = estimate_prompt_tokens([])


def estimate_tokens(text: str) -> int:
    """One text message's share of the router's ``estimate_prompt_tokens``."""
    return estimate_prompt_tokens([Message.of(Role.USER, text)]) - _NO_MESSAGES


def estimate_message_tokens(message: Message) -> int:
    """One message's share of the router's ``estimate_prompt_tokens`` (text, tool calls and
    tool results, counted by ``Message.chars``)."""
    return estimate_prompt_tokens([message]) - _NO_MESSAGES


def reply_reserve(window: int, max_tokens: int | None) -> int:
    return max_tokens if max_tokens is not None else min(window // 4, DEFAULT_REPLY_RESERVE_CAP)


def prompt_budget(window: int, max_tokens: int | None) -> int:
    """Tokens the prompt (system prompt and messages) may take, after the router's fixed
    per-request overhead."""
    return window - reply_reserve(window, max_tokens) - _NO_MESSAGES


def _too_large(needed: int, budget: int, what: str) -> LLMError:
    return LLMError(
        ErrorKind.CONTEXT_TOO_LARGE,
        f"the system prompt and {what} take about {needed} tokens; the model's context allows {budget} for the prompt",
        metadata={"estimated_tokens": str(needed), "limit_tokens": str(budget)},
    )


def check_fits(system: str, new_messages: Sequence[Message], budget: int) -> None:
    """Raises CONTEXT_TOO_LARGE when even the system prompt and the turn's new messages
    (tool results and/or the user's message) do not fit."""
    needed = (estimate_tokens(system) if system else 0) + sum(estimate_message_tokens(m) for m in new_messages)
    if needed > budget:
        raise _too_large(needed, budget, "the new messages")


# A message to send, with the position in the history of the newest stored message it came from.
_Sent = tuple[int, Message]


def consistent_history(history: Sequence[StoredMessage]) -> list[_Sent]:
    """The history as providers accept it (see the module's docstring), each message with
    its position in ``history``."""
    sent: list[_Sent] = []
    position = 0
    while position < len(history):
        message = history[position]
        if message.role is Role.TOOL:  # not right after its call: an orphan
            position += 1
            continue
        if message.role is not Role.ASSISTANT or not message.tool_calls:
            if message.content:
                sent.append((position, message.to_message()))
            position += 1
            continue
        # A reply with tool calls, and the results that follow it.
        results: dict[str, int] = {}
        end = position + 1
        while end < len(history) and history[end].role is Role.TOOL:
            results[history[end].tool_call_id or ""] = end  # a later result replaces an earlier one
            end += 1
        calls: list[ToolCall] = []
        for call in message.tool_calls:
            if call.id in results and all(c.id != call.id for c in calls):
                calls.append(call)
        if message.content or calls:
            sent.append((position, reply_message(message.content, calls)))
            sent.extend((results[c.id], history[results[c.id]].to_message()) for c in calls)
        position = end
    return sent


def context_messages(system: str, history: Sequence[StoredMessage], budget: int, *, new_count: int) -> tuple[Message, ...]:
    """The system prompt plus the newest whole turns of ``history`` that fit in ``budget``,
    as domain messages (text, tool calls and tool results as parts).

    ``history`` ends with the turn's ``new_count`` new messages, whose turns are always
    kept (CONTEXT_TOO_LARGE if they cannot be)."""
    if new_count < 1:
        raise ValueError("a turn has at least one new message")
    first_new = len(history) - new_count
    turns: list[list[_Sent]] = []
    for position, message in consistent_history(history):
        if message.role is Role.USER or not turns:
            turns.append([(position, message)])
        else:
            turns[-1].append((position, message))
    used = estimate_tokens(system) if system else 0
    kept: list[list[_Sent]] = []
    for turn in reversed(turns):
        cost = sum(estimate_message_tokens(m) for _, m in turn)
        if used + cost > budget:
            if turn[-1][0] >= first_new:  # holds a new message: cannot be dropped
                raise _too_large(used + cost, budget, "the turn being answered")
            break
        used += cost
        kept.append(turn)
    messages = [Message.of(Role.SYSTEM, system)] if system else []
    for turn in reversed(kept):
        messages.extend(m for _, m in turn)
    return tuple(messages)
