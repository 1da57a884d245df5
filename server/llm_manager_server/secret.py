"""An API key or password as the configuration holds it: never shown, always redacted."""

from __future__ import annotations

from .redaction import register_secret


class Secret:
    """An API key. ``repr``/``str`` never show it; only :meth:`reveal` does."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register_secret(value)  # redacted from every status, log line and span from now on

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
