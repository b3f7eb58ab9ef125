"""API tokens: created by an admin for a team and a role, shown once, stored as a keyed slow hash,
listed without the secret, revocable; a presented token becomes the request's ``Actor``.

>>> new = ws.tokens.create("ci-risk", team="risk", role="owner")  # doctest: +SKIP
>>> ws.tokens.verify(new.secret).teams  # doctest: +SKIP
frozenset({'risk'})
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ownloop.access import Acting, Actor
from ownloop.clock import Clock
from ownloop.errors import (
    AlreadyExistsError,
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
)
from ownloop.names import validate_name
from ownloop.registry import Registry, require_team
from ownloop.store import Store, aware
from ownloop.store import tables as t

__all__ = ["NewToken", "OpenedSession", "Session", "TokenInfo", "Tokens"]

ROLES = ("viewer", "owner", "admin")
PREFIX = "olt_"
# olt_<16 hex key id>_<secrets.token_urlsafe(32): 43 url-safe characters>
_TOKEN = re.compile(r"olt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
# scrypt cost: about 16 MiB and tens of milliseconds per check, paid once per cache refresh
_N, _R, _P, _DKLEN = 2**14, 8, 1, 32
CACHE_TTL_S = 1.0  # a revocation or expiry is seen within this long in every process
CACHE_MAX = 10_000  # entries; the cache is emptied when full rather than grow without bound
LAST_USED_EVERY = timedelta(minutes=1)
REJECTED = (
    "the token is unknown, expired or revoked; ask an admin for a new one with "
    "'ownloop token create'"
)


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

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True)
class NewToken:
    """A token just made; ``secret`` is shown this once and never stored."""

    info: TokenInfo
    secret: str


@dataclass(frozen=True)
class _Verified:
    actor: Actor
    row_id: int
    expires_at: datetime | None
    checked_at: float  # monotonic seconds


@dataclass(frozen=True)
class Session:
    """A browser's open dashboard session: who it acts as and the form token of its pages."""

    id: int
    actor: Actor
    csrf: str
    expires_at: datetime


@dataclass(frozen=True)
class OpenedSession:
    """A session just opened; ``key`` goes in the browser's cookie and is stored only hashed."""

    session: Session
    key: str


@dataclass(frozen=True)
class _Cached:
    session: Session
    token_id: int
    checked_at: float  # monotonic seconds


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$<salt>$<hash>``: a slow salted hash, the only form a secret is stored in."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def secret_matches(secret: str, stored: str) -> bool:
    """Whether ``secret`` hashes to ``stored`` (compared in constant time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        got = hashlib.scrypt(
            secret.encode(),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except ValueError:  # a damaged stored hash never authenticates
        return False
    return hmac.compare_digest(got, expected)


class Tokens:
    """The API tokens of one store."""

    def __init__(
        self, store: Store, registry: Registry, clock: Clock, actor: Actor | Acting
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.acting = Acting.of(actor)
        # seconds for the verification cache's age; tests replace it to step time by hand
        self.monotonic: Callable[[], float] = time.monotonic
        self._cache: dict[bytes, _Verified] = {}
        self._sessions: dict[str, _Cached] = {}  # by key hash
        self._lock = threading.Lock()

    @property
    def actor(self) -> Actor:
        """Who acts now: the request's actor, else the workspace's."""
        return self.acting.actor

    def create(
        self,
        name: str,
        *,
        team: str | None,
        role: str,
        expires_in: timedelta | None = None,
    ) -> NewToken:
        """Make a token for ``team`` with ``role``; its secret is in the result and nowhere else."""
        validate_name("token", name)
        actor = self.acting.check("token.create", target=f"token:{name}")
        team = _check_role_team(role, team)
        if expires_in is not None and expires_in <= timedelta(0):
            raise InvalidInputError(
                f"token expiry must be in the future, not {expires_in}; give e.g. '90d'"
            )
        now = self.clock.now()
        expires_at = None if expires_in is None else now + expires_in
        key_id = secrets.token_hex(8)
        secret = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        with self.store.write() as conn:
            if self.store.dialect == "postgresql":
                # two creates of one name must not both pass the check below (READ COMMITTED);
                # SQLite takes its write lock at BEGIN already
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(20260013)"))
            if team is not None:
                require_team(conn, team)
            active = [r for r in _rows(conn, name) if _info(r).active(now)]
            if active:
                raise AlreadyExistsError(
                    f"an active token named '{name}' already exists; revoke it first with "
                    f"'ownloop token revoke {name}' or choose another name"
                )
            values: dict[str, Any] = {
                "key_id": key_id,
                "name": name,
                "team": team,
                "role": role,
                "secret_hash": hash_secret(secret),
                "created_at": now,
                "created_by": actor.name,
                "expires_at": expires_at,
            }
            row_id = conn.execute(t.api_tokens.insert().values(**values)).inserted_primary_key[0]  # type: ignore[index]
            self.store.audit(
                conn,
                at=now,
                actor=actor.name,
                action="token.create",
                target=f"token:{name}",
                # no key id either: with it, anyone who reads the audit log could make every
                # server spend a scrypt check per guess
                after={
                    "team": team,
                    "role": role,
                    "expires_at": None if expires_at is None else expires_at.isoformat(),
                },
            )
        info = TokenInfo(
            id=int(row_id),
            name=name,
            team=team,
            role=role,
            created_at=now,
            created_by=actor.name,
            expires_at=expires_at,
            revoked_at=None,
            last_used_at=None,
        )
        return NewToken(info=info, secret=secret)

    def list(self, *, include_revoked: bool = False) -> list[TokenInfo]:
        """Tokens without their secrets, oldest first: the active ones, or all with
        ``include_revoked`` (revoked and expired too)."""
        self.acting.check("token.read")
        now = self.clock.now()
        with self.store.read() as conn:
            rows = conn.execute(sa.select(t.api_tokens).order_by(t.api_tokens.c.id)).all()
        infos = [_info(r) for r in rows]
        return infos if include_revoked else [i for i in infos if i.active(now)]

    def revoke(self, name: str) -> TokenInfo:
        """Revoke the token named ``name``; every process refuses it within ``CACHE_TTL_S``."""
        validate_name("token", name)
        actor = self.acting.check("token.revoke", target=f"token:{name}")
        now = self.clock.now()
        with self.store.write() as conn:
            live = [r for r in _rows(conn, name) if r.revoked_at is None]
            if not live:
                raise NotFoundError(
                    f"no unrevoked token is named '{name}'; see 'ownloop token list --all'"
                )
            ids = [r.id for r in live]
            conn.execute(
                t.api_tokens.update()
                .where(t.api_tokens.c.id.in_(ids))
                .values(revoked_at=now, revoked_by=actor.name)
            )
            self.store.audit(
                conn,
                at=now,
                actor=actor.name,
                action="token.revoke",
                target=f"token:{name}",
                before={"tokens": len(live), "revoked": False},
                after={"revoked": True},
            )
            row = conn.execute(sa.select(t.api_tokens).where(t.api_tokens.c.id == ids[-1])).one()
        with self._lock:
            for key in [k for k, v in self._cache.items() if v.row_id in ids]:
                del self._cache[key]
            for digest in [k for k, v in self._sessions.items() if v.token_id in ids]:
                del self._sessions[digest]
        return _info(row)

    def verify(self, presented: str) -> Actor:
        """The actor a presented secret stands for; AuthenticationError if unknown, expired or
        revoked."""
        self.acting.check("token.verify")
        return self._verified(presented).actor

    def _verified(self, presented: str) -> _Verified:
        key = hashlib.sha256(presented.encode("utf-8", "replace")).digest()
        now, tick = self.clock.now(), self.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        fresh = hit is not None and tick - hit.checked_at < CACHE_TTL_S
        if fresh and hit is not None and (hit.expires_at is None or hit.expires_at > now):
            return hit
        verified = self._check(presented, now, tick, hit)
        with self._lock:
            if verified is None:
                self._cache.pop(key, None)
            else:
                if len(self._cache) >= CACHE_MAX:
                    self._cache.clear()
                self._cache[key] = verified
        if verified is None:
            raise AuthenticationError(REJECTED)
        return verified

    def open_session(self, presented: str, *, hours: float) -> OpenedSession:
        """Sign a browser in with a token's secret: a session acting as the token, for ``hours``
        and never past the token's expiry. Only the sha256 of the session key is stored."""
        self.acting.check("ui.login")
        verified = self._verified(presented)
        now = self.clock.now()
        expires_at = now + timedelta(hours=hours)
        if verified.expires_at is not None:
            expires_at = min(expires_at, verified.expires_at)
        key, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self.store.write() as conn:
            values = {
                "key_hash": _key_hash(key),
                "token_id": verified.row_id,
                "csrf": csrf,
                "created_at": now,
                "expires_at": expires_at,
            }
            row_id = conn.execute(t.ui_sessions.insert().values(**values)).inserted_primary_key[0]  # type: ignore[index]
            self.store.audit(
                conn,
                at=now,
                actor=verified.actor.name,
                action="ui.login",
                target=f"session:{row_id}",
                after={"expires_at": expires_at.isoformat()},
            )
        session = Session(id=int(row_id), actor=verified.actor, csrf=csrf, expires_at=expires_at)
        return OpenedSession(session=session, key=key)

    def session(self, key: str) -> Session:
        """The open session a browser's cookie names; AuthenticationError when it is unknown,
        closed or expired, or its token was revoked or expired (seen within ``CACHE_TTL_S``)."""
        self.acting.check("token.verify")
        digest = _key_hash(key)
        now, tick = self.clock.now(), self.monotonic()
        with self._lock:
            hit = self._sessions.get(digest)
        if hit is None or tick - hit.checked_at >= CACHE_TTL_S:
            hit = self._read_session(digest, tick)
            with self._lock:
                if hit is None:
                    self._sessions.pop(digest, None)
                else:
                    if len(self._sessions) >= CACHE_MAX:
                        self._sessions.clear()
                    self._sessions[digest] = hit
        if hit is None or hit.session.expires_at <= now:
            raise AuthenticationError(
                "the dashboard session is unknown, closed or expired; sign in again at /ui/login"
            )
        return hit.session

    def _read_session(self, digest: str, tick: float) -> _Cached | None:
        s, k = t.ui_sessions, t.api_tokens
        query = (
            sa.select(
                s.c.id.label("session_id"),
                s.c.csrf.label("session_csrf"),
                s.c.expires_at.label("session_expires_at"),
                k,
            )
            .join(k, k.c.id == s.c.token_id)
            .where(s.c.key_hash == digest, s.c.closed_at.is_(None))
        )
        with self.store.read() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        info = _info(row)
        if not info.active(self.clock.now()):
            return None
        actor = Actor.for_token(info.name, team=info.team, role=info.role)
        session = Session(
            id=int(row.session_id),
            actor=actor,
            csrf=row.session_csrf,
            expires_at=aware(row.session_expires_at),
        )
        return _Cached(
            session=session,
            token_id=info.id,
            checked_at=tick,
        )

    def close_session(self, key: str) -> None:
        """Sign out: the session ``key`` names is closed (a closed or unknown one is left as is)."""
        self.acting.check("ui.login")
        digest = _key_hash(key)
        now = self.clock.now()
        with self._lock:
            self._sessions.pop(digest, None)
        with self.store.write() as conn:
            row = conn.execute(
                sa.select(t.ui_sessions.c.id, t.ui_sessions.c.token_id).where(
                    t.ui_sessions.c.key_hash == digest, t.ui_sessions.c.closed_at.is_(None)
                )
            ).first()
            if row is None:
                return
            conn.execute(
                t.ui_sessions.update().where(t.ui_sessions.c.id == row.id).values(closed_at=now)
            )
            token = conn.execute(
                sa.select(t.api_tokens).where(t.api_tokens.c.id == row.token_id)
            ).first()
            who = (
                self.actor.name
                if token is None
                else Actor.for_token(token.name, team=token.team, role=token.role).name
            )
            self.store.audit(
                conn, at=now, actor=who, action="ui.logout", target=f"session:{row.id}"
            )

    def _check(
        self, presented: str, now: datetime, tick: float, hit: _Verified | None
    ) -> _Verified | None:
        """Read the token's row and check it; None when it does not authenticate."""
        match = _TOKEN.fullmatch(presented)
        if match is None:
            return None
        with self.store.read() as conn:
            row = conn.execute(
                sa.select(t.api_tokens).where(t.api_tokens.c.key_id == match.group(1))
            ).first()
        if row is None:
            return None
        info = _info(row)
        if not info.active(now):
            return None
        # the hash was checked when the entry was made and a row's hash never changes
        if (hit is None or hit.row_id != row.id) and not secret_matches(presented, row.secret_hash):
            return None
        if info.last_used_at is None or now - info.last_used_at >= LAST_USED_EVERY:
            with self.store.write() as conn:
                conn.execute(
                    t.api_tokens.update()
                    .where(t.api_tokens.c.id == row.id)
                    .values(last_used_at=now)
                )
        actor = Actor.for_token(info.name, team=info.team, role=info.role)
        return _Verified(actor=actor, row_id=info.id, expires_at=info.expires_at, checked_at=tick)

    def any_active(self) -> bool:
        """Whether at least one unexpired, unrevoked token exists (serve off loopback needs one)."""
        self.acting.check("token.verify")
        now = self.clock.now()
        with self.store.read() as conn:
            rows = conn.execute(
                sa.select(t.api_tokens.c.expires_at).where(t.api_tokens.c.revoked_at.is_(None))
            ).all()
        return any(r.expires_at is None or aware(r.expires_at) > now for r in rows)


def _check_role_team(role: str, team: str | None) -> str | None:
    if role not in ROLES:
        raise InvalidInputError(f"token role '{role}' is unknown; use one of {', '.join(ROLES)}")
    if role == "admin":
        if team is not None:
            raise InvalidInputError(
                f"an admin token acts for every team, so it takes no team (got '{team}'); "
                "leave out --team"
            )
        return None
    if team is None:
        raise InvalidInputError(f"a {role} token needs a team; give --team TEAM")
    return validate_name("team", team)


def _rows(conn: sa.Connection, name: str) -> list[sa.Row[Any]]:
    query = sa.select(t.api_tokens).where(t.api_tokens.c.name == name).order_by(t.api_tokens.c.id)
    return list(conn.execute(query).all())


def _when(value: datetime | None) -> datetime | None:
    return None if value is None else aware(value)


def _info(row: sa.Row[Any]) -> TokenInfo:
    return TokenInfo(
        id=int(row.id),
        name=row.name,
        team=row.team,
        role=row.role,
        created_at=aware(row.created_at),
        created_by=row.created_by,
        expires_at=_when(row.expires_at),
        revoked_at=_when(row.revoked_at),
        last_used_at=_when(row.last_used_at),
    )
