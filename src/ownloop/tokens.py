"""API tokens: created by an admin for a team and a role, shown once, stored as a keyed slow hash,
listed without the secret, revocable; a presented token becomes the request's ``Actor``.

>>> new = ws.tokens.create("ci-risk", team="risk", role="owner")  # doctest: +SKIP
>>> ws.tokens.verify(new.secret).teams  # doctest: +SKIP
frozenset({'risk'})
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ownloop.access import Acting, Actor
from ownloop.clock import Clock
from ownloop.registry import Registry
from ownloop.store import Store

__all__ = ["NewToken", "TokenInfo", "Tokens"]

ROLES = ("viewer", "owner", "admin")


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed: everything but its secret."""

    id: int
    name: str
    team: str | None
    role: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class NewToken:
    """A token just made; ``secret`` is shown this once and never stored."""

    info: TokenInfo
    secret: str


class Tokens:
    """The API tokens of one store."""

    def __init__(
        self, store: Store, registry: Registry, clock: Clock, actor: Actor | Acting
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.acting = Acting.of(actor)

    def create(
        self,
        name: str,
        *,
        team: str | None,
        role: str,
        expires_in: timedelta | None = None,
    ) -> NewToken:
        raise NotImplementedError("tokens are being built")

    def list(self, *, include_revoked: bool = False) -> list[TokenInfo]:
        raise NotImplementedError("tokens are being built")

    def revoke(self, name: str) -> TokenInfo:
        raise NotImplementedError("tokens are being built")

    def verify(self, presented: str) -> Actor:
        """The actor a presented secret stands for; AuthenticationError if unknown, expired or
        revoked."""
        raise NotImplementedError("tokens are being built")

    def any_active(self) -> bool:
        """Whether at least one unexpired, unrevoked token exists (serve off loopback needs one)."""
        raise NotImplementedError("tokens are being built")
