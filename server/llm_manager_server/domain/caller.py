"""Who is calling: the caller an API key names (``LLM_API_KEYS_FILE``), with its limits.

Set once per call by the call gate (``calls.CallGate``) in ``caller_var``; ``None`` when
authentication is off (``make run``'s default), and then every call is the same anonymous
caller: no limits, any model, one shared cache scope.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    """A caller as its key's entry describes it. It never holds the key (nor its hash): it goes
    on spans, log lines and the usage ledger by ``name`` only."""

    name: str
    # The models this caller may use, pinned or routed; ``None``: any model.
    models: frozenset[str] | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    budget_usd_per_day: float | None = None

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


caller_var: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)


def current_caller_name() -> str:
    """The calling caller's name, or ``""`` when authentication is off (one shared scope)."""
    caller = caller_var.get()
    return "" if caller is None else caller.name
