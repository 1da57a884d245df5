"""Measured behaviour per model: latency, time to first token and error rate (EWMAs)."""

from __future__ import annotations

from dataclasses import dataclass

# Weight of the newest observation. 0.2 follows a change within ~10 calls while smoothing
# out single slow answers.
ALPHA = 0.2


def _ewma(previous: float | None, value: float) -> float:
    return value if previous is None else (1 - ALPHA) * previous + ALPHA * value


@dataclass
class ModelStats:
    latency_s: float | None = None
    first_token_s: float | None = None
    error_rate: float = 0.0
    calls: int = 0

    def record_success(self, latency_s: float, first_token_s: float | None = None) -> None:
        self.calls += 1
        self.latency_s = _ewma(self.latency_s, latency_s)
        if first_token_s is not None:
            self.first_token_s = _ewma(self.first_token_s, first_token_s)
        self.error_rate = _ewma(self.error_rate, 0.0)

    def record_failure(self) -> None:
        self.calls += 1
        self.error_rate = _ewma(self.error_rate, 1.0)

    def expected_latency_s(self, streaming: bool) -> float | None:
        """What a caller should expect: time to first token for streams when measured."""
        if streaming and self.first_token_s is not None:
            return self.first_token_s
        return self.latency_s
