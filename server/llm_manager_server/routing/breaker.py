"""A circuit breaker per model.

Closed: calls flow; ``failure_threshold`` consecutive failures open it. Open: the router
skips the model until ``cooldown_s`` has passed. Half-open: one probe call is let through;
success closes the circuit, failure opens it for another cooldown. The clock is injectable
so tests drive time instead of sleeping.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    failure_threshold: int = 5
    cooldown_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    consecutive_failures: int = 0
    opened_at: float | None = None
    probe_in_flight: bool = False
    last_error: str = ""
    _listeners: list[Callable[[CircuitState], None]] = field(default_factory=list)

    @property
    def state(self) -> CircuitState:
        if self.opened_at is None:
            return CircuitState.CLOSED
        if self.clock() - self.opened_at >= self.cooldown_s:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def remaining_open_s(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (self.clock() - self.opened_at))

    def allows_call(self) -> bool:
        """True when a call may go to the model now (half-open admits one probe at a time)."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.HALF_OPEN and not self.probe_in_flight:
            return True
        return False

    def on_call(self) -> None:
        if self.state is CircuitState.HALF_OPEN:
            self.probe_in_flight = True

    def on_success(self) -> None:
        was_open = self.opened_at is not None
        self.consecutive_failures, self.opened_at, self.probe_in_flight, self.last_error = 0, None, False, ""
        if was_open:
            self._notify(CircuitState.CLOSED)

    def on_failure(self, reason: str) -> None:
        self.consecutive_failures += 1
        self.last_error = reason
        probing = self.probe_in_flight
        self.probe_in_flight = False
        if probing or self.consecutive_failures >= self.failure_threshold:
            self.opened_at = self.clock()
            self._notify(CircuitState.OPEN)

    def subscribe(self, listener: Callable[[CircuitState], None]) -> None:
        self._listeners.append(listener)

    def _notify(self, state: CircuitState) -> None:
        for listener in self._listeners:
            listener(state)
