from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from ownloop import Actor, Config, Workspace
from ownloop.access import authorize
from ownloop.clock import FrozenClock
from ownloop.errors import (
    AlreadyExistsError,
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from ownloop.store import tables as t
from ownloop.tokens import REJECTED, Tokens, secret_matches


class Ticks:
    """A monotonic source that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _raw_rows(ws: Workspace) -> list[dict[str, object]]:
    with ws.store.read() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(t.api_tokens)).all()]


def _audit_rows(ws: Workspace, action: str) -> list[dict[str, object]]:
    with ws.store.read() as conn:
        query = sa.select(t.audit).where(t.audit.c.action == action).order_by(t.audit.c.id)
        return [dict(r._mapping) for r in conn.execute(query).all()]


def test_secret_is_returned_once_and_only_its_hash_is_stored(ws: Workspace, team: str) -> None:
    new = ws.tokens.create("ci-risk", team=team, role="owner")
    assert new.secret.startswith("olt_")
    rows = _raw_rows(ws)
    assert len(rows) == 1
    secret_part = new.secret.rsplit("_", 1)[-1]
    assert all(new.secret not in str(v) for v in rows[0].values())
    assert all(secret_part not in str(v) for v in rows[0].values())
    stored = str(rows[0]["secret_hash"])
    assert stored.startswith("scrypt$16384$8$1$")
    assert secret_matches(new.secret, stored)
    assert not secret_matches(new.secret + "x", stored)
    audit = _audit_rows(ws, "token.create")
    assert len(audit) == 1
    key_id = new.secret.split("_")[1]
    assert all(part not in str(audit[0]) for part in (secret_part, stored, key_id))


def test_verify_gives_the_token_actor(ws: Workspace, team: str) -> None:
    owner = ws.tokens.verify(ws.tokens.create("ci", team=team, role="owner").secret)
    assert (owner.name, owner.teams, owner.admin, owner.via) == (
        "token:ci@risk",
        frozenset({"risk"}),
        False,
        "token",
    )
    viewer = ws.tokens.verify(ws.tokens.create("dash", team=team, role="viewer").secret)
    assert (viewer.teams, viewer.viewer, viewer.admin) == (frozenset(), True, False)
    admin = ws.tokens.verify(ws.tokens.create("ops", team=None, role="admin").secret)
    assert (admin.name, admin.admin, admin.team) == ("token:ops", True, None)


def test_unknown_and_malformed_tokens_are_refused_without_echo(ws: Workspace, team: str) -> None:
    real = ws.tokens.create("ci", team=team, role="owner").secret
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    for presented in [
        "",
        "olt_",
        "Bearer x",
        "olt_0123456789abcdef_" + "A" * 43,  # well formed, unknown key id
        forged,  # known key id, wrong secret
        real + "\n",
        "x" * 10_000,
    ]:
        with pytest.raises(AuthenticationError) as caught:
            ws.tokens.verify(presented)
        assert str(caught.value) == REJECTED


def test_revoked_token_is_refused(ws: Workspace, team: str) -> None:
    new = ws.tokens.create("ci", team=team, role="owner")
    ws.tokens.verify(new.secret)
    info = ws.tokens.revoke("ci")
    assert info.revoked_at is not None
    with pytest.raises(AuthenticationError):
        ws.tokens.verify(new.secret)
    assert len(_audit_rows(ws, "token.revoke")) == 1
    assert not ws.tokens.any_active()


def test_expired_token_is_refused(config: Config) -> None:
    clock = FrozenClock()
    with Workspace(config, clock=clock) as ws:
        ws.registry.add_team("risk")
        new = ws.tokens.create("ci", team="risk", role="owner", expires_in=timedelta(days=1))
        assert ws.tokens.any_active()
        ws.tokens.verify(new.secret)  # cached now
        clock.advance(days=1)
        with pytest.raises(AuthenticationError):
            ws.tokens.verify(new.secret)
        assert not ws.tokens.any_active()


def test_revocation_reaches_another_workspace_within_the_cache_age(config: Config) -> None:
    with Workspace(config) as admin, Workspace(config) as server:
        admin.registry.add_team("risk")
        secret = admin.tokens.create("ci", team="risk", role="owner").secret
        ticks = Ticks()
        server.tokens.monotonic = ticks
        server.tokens.verify(secret)
        admin.tokens.revoke("ci")
        ticks.now += 0.5
        server.tokens.verify(secret)  # still inside the cache age: allowed
        ticks.now += 0.6
        with pytest.raises(AuthenticationError):
            server.tokens.verify(secret)


def test_failures_are_not_cached(ws: Workspace, team: str) -> None:
    secret = ws.tokens.create("ci", team=team, role="owner").secret
    for n in range(20):  # a flood of bad tokens leaves nothing behind in memory
        with pytest.raises(AuthenticationError):
            ws.tokens.verify(f"olt_{n:016x}_" + "A" * 43)
    with pytest.raises(AuthenticationError):
        ws.tokens.verify(secret + "x")
    assert ws.tokens._cache == {}
    assert ws.tokens.verify(secret).name == "token:ci@risk"
    assert len(ws.tokens._cache) == 1


def test_last_used_is_written_at_most_once_a_minute(config: Config) -> None:
    clock = FrozenClock()
    with Workspace(config, clock=clock) as ws:
        ws.registry.add_team("risk")
        secret = ws.tokens.create("ci", team="risk", role="owner").secret
        ticks = Ticks()
        ws.tokens.monotonic = ticks
        first = clock.now()
        ws.tokens.verify(secret)
        clock.advance(seconds=30)
        ticks.now += 30
        ws.tokens.verify(secret)
        assert ws.tokens.list()[0].last_used_at == first
        clock.advance(seconds=31)
        ticks.now += 31
        ws.tokens.verify(secret)
        assert ws.tokens.list()[0].last_used_at == clock.now()


def test_non_admins_cannot_manage_tokens(config: Config) -> None:
    with Workspace(config) as admin:
        admin.registry.add_team("risk")
        admin.tokens.create("ci", team="risk", role="owner")
    owner = Actor.for_token("ci", team="risk", role="owner")
    with Workspace(config, actor=owner) as ws:
        with pytest.raises(PermissionDeniedError, match="token.create"):
            ws.tokens.create("mine", team="risk", role="admin", expires_in=None)
        with pytest.raises(PermissionDeniedError, match="token.read"):
            ws.tokens.list()
        with pytest.raises(PermissionDeniedError, match="token.revoke"):
            ws.tokens.revoke("ci")
        assert ws.tokens.any_active()  # authentication itself needs no permission
    with Workspace(config) as admin:
        assert [i.revoked_at for i in admin.tokens.list()] == [None]
        assert len(_audit_rows(admin, "token.create")) == 1


def test_duplicate_active_name_is_refused(ws: Workspace, team: str) -> None:
    ws.tokens.create("ci", team=team, role="owner")
    with pytest.raises(AlreadyExistsError, match="'ci' already exists"):
        ws.tokens.create("ci", team=team, role="viewer")
    ws.tokens.revoke("ci")
    ws.tokens.create("ci", team=team, role="viewer")  # a revoked name may be reused
    assert [i.role for i in ws.tokens.list(include_revoked=True)] == ["owner", "viewer"]
    assert [i.role for i in ws.tokens.list()] == ["viewer"]


def test_bad_create_requests_are_refused(ws: Workspace, team: str) -> None:
    with pytest.raises(NotFoundError, match="team 'nope' does not exist.*known teams: risk"):
        ws.tokens.create("ci", team="nope", role="owner")
    with pytest.raises(InvalidInputError, match="takes no team"):
        ws.tokens.create("ci", team=team, role="admin")
    with pytest.raises(InvalidInputError, match="needs a team"):
        ws.tokens.create("ci", team=None, role="viewer")
    with pytest.raises(InvalidInputError, match="role 'root' is unknown"):
        ws.tokens.create("ci", team=team, role="root")
    with pytest.raises(InvalidInputError, match="must be in the future"):
        ws.tokens.create("ci", team=team, role="owner", expires_in=timedelta(0))
    with pytest.raises(InvalidInputError, match="token name"):
        ws.tokens.create("../ci", team=team, role="owner")
    with pytest.raises(NotFoundError, match="no unrevoked token is named 'ci'"):
        ws.tokens.revoke("ci")
    assert _raw_rows(ws) == []


def test_anonymous_actor_has_no_read_rights() -> None:
    anon = Actor.anonymous()
    assert (anon.name, anon.viewer, anon.admin, anon.via) == (
        "anonymous",
        False,
        False,
        "anonymous",
    )
    assert Actor.local("ana").via == "local"


def test_tokens_service_is_built_from_its_parts(ws: Workspace) -> None:
    assert isinstance(ws.tokens, Tokens)
    assert not ws.tokens.any_active()


def test_token_actors_get_what_their_role_grants() -> None:
    owner = Actor.for_token("ci", team="risk", role="owner")
    authorize(owner, "label.write", "risk")
    authorize(owner, "model.read")
    with pytest.raises(PermissionDeniedError, match="team 'growth'"):
        authorize(owner, "label.write", "growth")
    viewer = Actor.for_token("dash", team="risk", role="viewer")
    authorize(viewer, "metrics.read")
    with pytest.raises(PermissionDeniedError):
        authorize(viewer, "label.write", "risk")
    with pytest.raises(PermissionDeniedError):
        authorize(Actor.anonymous(), "model.read")
    authorize(Actor.anonymous(), "token.verify")
    with pytest.raises(InvalidInputError, match="unknown role"):
        Actor.for_token("x", team="risk", role="root")
