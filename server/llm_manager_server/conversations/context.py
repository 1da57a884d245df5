"""What a turn sends to the model: the conversation so far, trimmed to the context window.

Token counts are estimated, not tokenized (the model is not known until the router picks
it), exactly as the router estimates them when it checks context windows: about 4
characters a token, plus a few tokens per message for the chat template's role markers.
The budget for the prompt is the context window less the tokens reserved for the reply:
``max_tokens`` when the caller set it (as the router counts it), else a quarter of the
window, capped at 4096.

Trimming drops whole turns, oldest first (a turn is a user message and the replies after
it), so the context never starts with an orphaned reply. The system prompt is always kept,
and so is the newest user message: if those alone do not fit, the turn is refused with
CONTEXT_TOO_LARGE before anything is stored. Empty messages are never sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..domain.errors import ErrorKind, LLMError
from ..domain.types import Message, Role
from ..routing.strategy import estimate_prompt_tokens
from .model import StoredMessage

DEFAULT_REPLY_RESERVE_CAP = 4096


def estimate_tokens(text: str) -> int:
    """One message's share of the router's ``estimate_prompt_tokens``."""
    return estimate_prompt_tokens([Message(Role.USER, text)]) - estimate_prompt_tokens([])


def reply_reserve(window: int, max_tokens: int | None) -> int:
    return max_tokens if max_tokens is not None else min(window // 4, DEFAULT_REPLY_RESERVE_CAP)


def prompt_budget(window: int, max_tokens: int | None) -> int:
    """Tokens the prompt (system prompt and messages) may take, after the router's fixed
    per-request overhead."""
    return window - reply_reserve(window, max_tokens) - estimate_prompt_tokens([])


def _too_large(needed: int, budget: int) -> LLMError:
    return LLMError(
        ErrorKind.CONTEXT_TOO_LARGE,
        f"the system prompt and the new message take about {needed} tokens; the model's context allows {budget} for the prompt",
        metadata={"estimated_tokens": str(needed), "limit_tokens": str(budget)},
    )


def check_fits(system: str, user_message: str, budget: int) -> None:
    """Raises CONTEXT_TOO_LARGE when even the system prompt and the new message do not fit."""
    needed = (estimate_tokens(system) if system else 0) + estimate_tokens(user_message)
    if needed > budget:
        raise _too_large(needed, budget)


def _turns(history: Sequence[StoredMessage]) -> list[list[StoredMessage]]:
    turns: list[list[StoredMessage]] = []
    for message in history:
        if not message.content:
            continue
        if message.role is Role.USER or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns


def context_messages(system: str, history: Sequence[StoredMessage], budget: int) -> tuple[Message, ...]:
    """The system prompt plus the newest whole turns of ``history`` that fit in ``budget``.

    ``history`` ends with the new user message, which is always kept."""
    used = estimate_tokens(system) if system else 0
    kept: list[list[StoredMessage]] = []
    for position, turn in enumerate(reversed(_turns(history))):
        cost = sum(estimate_tokens(m.content) for m in turn)
        if used + cost > budget:
            if position == 0:
                raise _too_large(used + cost, budget)
            break
        used += cost
        kept.append(turn)
    messages = [Message(Role.SYSTEM, system)] if system else []
    for turn in reversed(kept):
        messages.extend(Message(m.role, m.content) for m in turn)
    return tuple(messages)
