"""A tiny name -> object registry used for advantage estimators, policy losses and rewards.

Configs name components only by registry key, so a user-supplied job can never select an
arbitrary import path. Registering a name twice is an error (it would silently shadow the
first entry), and a lookup miss lists the valid names so the message is actionable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (usually functions sharing one signature)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # what is registered, used in error messages, e.g. "policy loss"
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding the decorated object under `name`; returns the object unchanged."""
        if not name:
            raise ValueError(f"{self.kind} name must be a non-empty string")

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(self.names()) or "(none registered)"
            raise KeyError(f"unknown {self.kind} '{name}'; valid names: {valid}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"
