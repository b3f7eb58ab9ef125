"""Who may do what, named in one place for every service call and HTTP route.

``POLICY`` maps each action to the least role that may perform it. ``Acting`` is the one seam
that says who acts now: a workspace holds one, every service reads its actor from it, and a
request sets its own actor for its duration (``ws.acting_as(actor)``), so the audit row names the
caller and the permission check sees the caller's teams.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TypeVar

from ownloop.errors import InvalidInputError, PermissionDeniedError

__all__ = [
    "POLICY",
    "Acting",
    "Actor",
    "Role",
    "action",
    "action_of",
    "authorize",
    "required_role",
]


class Role(IntEnum):
    ANYONE = 0
    VIEWER = 1
    OWNER = 2  # a member of the team that owns the model
    ADMIN = 3


# action -> the least role that may perform it
POLICY: dict[str, Role] = {
    "health.read": Role.ANYONE,
    "model.predict": Role.VIEWER,  # anyone too, when a server is told --public-inference
    "model.metadata": Role.VIEWER,
    "api.read": Role.VIEWER,
    "metrics.read": Role.VIEWER,
    "model.read": Role.VIEWER,
    "team.read": Role.VIEWER,
    "audit.read": Role.VIEWER,
    "team.create": Role.ADMIN,
    "team.update": Role.OWNER,
    "model.register": Role.OWNER,
    "model.transfer": Role.OWNER,
    "alias.set": Role.OWNER,
    "alias.delete": Role.OWNER,
    "version.evaluate": Role.OWNER,
    "label.write": Role.OWNER,
    "monitor.configure": Role.OWNER,
    "deploy.read": Role.VIEWER,
    "deploy.start": Role.OWNER,
    "deploy.promote": Role.OWNER,
    "deploy.abort": Role.OWNER,
    "deploy.rollback": Role.OWNER,
    "deploy.policy": Role.OWNER,
    "alert.read": Role.VIEWER,
    "alert.ack": Role.OWNER,
    "alert.resolve": Role.OWNER,
    "alert.rules": Role.OWNER,
    "alert.evaluate": Role.ADMIN,  # the evaluator: whatever runs monitors or rollouts
    "scorecard.read": Role.VIEWER,
    "evalset.export": Role.OWNER,
    "store.upgrade": Role.ADMIN,
    "token.create": Role.ADMIN,
    "token.read": Role.ADMIN,
    "token.revoke": Role.ADMIN,
    "token.verify": Role.ANYONE,  # presenting a token is how anyone becomes someone
    "monitor.read": Role.VIEWER,
    "monitor.run": Role.OWNER,
    "deploy.tick": Role.ADMIN,  # the rollout controller steps every model's rollout
    "deploy.pause": Role.OWNER,
    "deploy.resume": Role.OWNER,
    "evaluation.read": Role.VIEWER,
    "label.read": Role.VIEWER,
    "notification.read": Role.VIEWER,
    "notification.deliver": Role.ADMIN,  # the outbox loop sends for every team
    "ui.read": Role.VIEWER,  # the dashboard's pages
    "ui.login": Role.ANYONE,  # the sign-in page, its form and the dashboard's static files
}


@dataclass(frozen=True)
class Actor:
    """Someone acting on ownloop: a name, the teams they belong to, whether they administer."""

    name: str
    teams: frozenset[str] = field(default_factory=frozenset)
    admin: bool = False
    viewer: bool = True
    team: str | None = None  # the team a token was made for (None: local user, admin token)
    # viewer | owner | admin as a token grants it ("admin" for the local user); rights are
    # decided by teams, admin and viewer above, never by this text
    role: str = ""
    via: str = "local"  # local | token | anonymous: how this actor was established

    @classmethod
    def local(cls, name: str) -> Actor:
        """The person at this machine: full rights until tokens are switched on."""
        return cls(name=name, admin=True, role="admin")

    @classmethod
    def for_token(cls, name: str, *, team: str | None, role: str) -> Actor:
        """The actor a token stands for, named ``token:<name>@<team>`` in audit rows.

        >>> Actor.for_token("ci", team="risk", role="owner").name
        'token:ci@risk'
        """
        shown = f"token:{name}@{team}" if team else f"token:{name}"
        if role == "admin":
            return cls(name=shown, admin=True, team=team, role=role, via="token")
        if role == "owner":
            return cls(
                name=shown,
                teams=frozenset({team} if team else ()),
                team=team,
                role=role,
                via="token",
            )
        if role == "viewer":
            return cls(name=shown, team=team, role=role, via="token")
        raise InvalidInputError(f"unknown role '{role}'; use viewer, owner or admin")

    @classmethod
    def anonymous(cls) -> Actor:
        """A caller who presented no token: only what POLICY grants to anyone."""
        return cls(name="anonymous", viewer=False, role="anonymous", via="anonymous")


# The actor of the current request or task, with the ``Acting`` it was set on; module-level as
# contextvars should be. Threads started with a copied context (anyio's worker threads) inherit it.
_CURRENT: ContextVar[tuple[Acting, Actor] | None] = ContextVar("ownloop_actor", default=None)


class Acting:
    """Who acts now, for one workspace: its default actor unless a request set its own.

    >>> acting = Acting(Actor.local("ana"))
    >>> with acting.as_actor(Actor("bot", teams=frozenset({"risk"}))):
    ...     acting.actor.name
    'bot'
    >>> acting.actor.name
    'ana'
    """

    def __init__(self, default: Actor) -> None:
        self.default = default
        # called with (actor, action, owner_team, target) before a denial is raised; the
        # workspace writes it to the audit log
        self.on_denied: Callable[[Actor, str, str | None, str | None], None] | None = None

    @classmethod
    def of(cls, actor: Actor | Acting) -> Acting:
        return actor if isinstance(actor, Acting) else cls(actor)

    @property
    def actor(self) -> Actor:
        current = _CURRENT.get()
        if current is not None and current[0] is self:
            return current[1]
        return self.default

    def check(
        self, action: str, owner_team: str | None = None, *, target: str | None = None
    ) -> Actor:
        """Authorize the current actor for ``action`` (on a thing of ``owner_team``) and return
        it; a denial is reported to ``on_denied`` (the audit log) before it is raised."""
        actor = self.actor
        try:
            authorize(actor, action, owner_team)
        except PermissionDeniedError:
            if self.on_denied is not None:
                self.on_denied(actor, action, owner_team, target)
            raise
        return actor

    @contextmanager
    def as_actor(self, actor: Actor) -> Iterator[Actor]:
        """Within this block, every service of this workspace acts as ``actor``."""
        token = _CURRENT.set((self, actor))
        try:
            yield actor
        finally:
            _CURRENT.reset(token)


def required_role(action: str) -> Role:
    try:
        return POLICY[action]
    except KeyError:
        raise InvalidInputError(f"unknown action '{action}' has no access rule") from None


def authorize(actor: Actor, action: str, owner_team: str | None = None) -> None:
    """Raise PermissionDeniedError unless ``actor`` may perform ``action`` on a thing of ``owner_team``."""
    role = required_role(action)
    if actor.admin or role is Role.ANYONE:
        return
    if role is Role.VIEWER and actor.viewer:
        return
    if role is Role.OWNER and owner_team is not None and owner_team in actor.teams:
        return
    who = f"team '{owner_team}'" if role is Role.OWNER and owner_team else role.name.lower()
    raise PermissionDeniedError(f"'{actor.name}' may not {action}: it needs {who}")


_F = TypeVar("_F", bound=Callable[..., Any])

ACTION_ATTRIBUTE = "__ownloop_action__"


def action(name: str) -> Callable[[_F], _F]:
    """Name the POLICY action a service method performs; an unknown action fails at import.

    The method itself calls ``self.acting.check(name, owner_team, target=...)`` with the owner
    at the time of the call; the name recorded here lets a test prove every method has a rule.
    """
    required_role(name)

    def mark(method: _F) -> _F:
        setattr(method, ACTION_ATTRIBUTE, name)
        return method

    return mark


def action_of(method: Callable[..., Any]) -> str | None:
    """The POLICY action a service method was marked with, or None."""
    found = getattr(method, ACTION_ATTRIBUTE, None)
    return found if isinstance(found, str) else None
