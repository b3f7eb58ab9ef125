"""One injectable clock so tests can freeze time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "FrozenClock", "SystemClock", "utcnow"]


class Clock(Protocol):
    def now(self) -> datetime: ...


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class SystemClock:
    def now(self) -> datetime:
        return utcnow()


@dataclass
class FrozenClock:
    """A clock that only moves when told to (tests, simulations)."""

    current: datetime = field(default_factory=utcnow)

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        self.current = self.current + timedelta(**delta)
        return self.current
