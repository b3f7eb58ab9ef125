"""Who may do what, named in one place for every state-changing call and HTTP route.

Today the only actor is the local user, who is an admin. Tokens later map to other
actors (team members, viewers) and this table decides for them without touching callers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from ownloop.errors import InvalidInputError, PermissionDeniedError

__all__ = ["POLICY", "Actor", "Role", "authorize", "required_role"]


class Role(IntEnum):
    ANYONE = 0
    VIEWER = 1
    OWNER = 2  # a member of the team that owns the model
    ADMIN = 3


# action -> the least role that may perform it
POLICY: dict[str, Role] = {
    "health.read": Role.ANYONE,
    "model.predict": Role.ANYONE,
    "model.metadata": Role.ANYONE,
    "api.read": Role.ANYONE,
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
}


@dataclass(frozen=True)
class Actor:
    """Someone acting on ownloop: a name, the teams they belong to, whether they administer."""

    name: str
    teams: frozenset[str] = field(default_factory=frozenset)
    admin: bool = False
    viewer: bool = True

    @classmethod
    def local(cls, name: str) -> Actor:
        """The person at this machine: full rights until tokens are switched on."""
        return cls(name=name, admin=True)


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
