"""A lease in the store: which one of several processes does a job that must run once per store
(the rollout controller, the alert evaluator).

Each holder renews before ``ttl`` runs out; a holder that dies simply stops renewing, and once
``expires_at`` has passed another process takes the lease with a compare-and-set update. The same
statements work on SQLite (one writer at a time) and PostgreSQL (row lock on UPDATE).
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from ownloop.clock import Clock
from ownloop.errors import ConcurrentChangeError
from ownloop.store import Store, aware
from ownloop.store import tables as t

__all__ = ["Lease", "LeaseHolder", "holder_id"]


def holder_id() -> str:
    """``host:pid:random``: unique per process, and says where the holder runs."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a lease and until when (read from the ``leases`` table)."""

    name: str
    holder: str
    acquired_at: datetime
    expires_at: datetime


class Lease:
    """One named lease held by ``holder`` for ``ttl_s`` seconds at a time.

    >>> lease = Lease(ws.store, ws.clock, "deploy.controller", ttl_s=15)  # doctest: +SKIP
    >>> lease.acquire()  # doctest: +SKIP  (True: this process holds it until renewed or expired)
    True
    """

    def __init__(
        self, store: Store, clock: Clock, name: str, *, ttl_s: float, holder: str | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        self.name = name
        self.ttl = timedelta(seconds=ttl_s)
        self.holder = holder if holder is not None else holder_id()

    def acquire(self) -> bool:
        """Take the lease if it is free or expired, or renew it if held here; True when held."""
        now = self.clock.now()
        try:
            with self.store.write() as conn:
                if self._take(conn, now):
                    return True
                exists = conn.execute(
                    sa.select(t.leases.c.name).where(t.leases.c.name == self.name)
                ).first()
                if exists is not None:
                    return False
                conn.execute(
                    t.leases.insert().values(
                        name=self.name,
                        holder=self.holder,
                        acquired_at=now,
                        expires_at=now + self.ttl,
                    )
                )
                return True
        except ConcurrentChangeError:  # another process inserted the first row at the same moment
            return False

    def _take(self, conn: sa.Connection, now: datetime) -> bool:
        """Compare-and-set: the row moves to us only if we hold it or it has expired."""
        mine = t.leases.c.holder == self.holder
        updated = conn.execute(
            t.leases.update()
            .where(t.leases.c.name == self.name, sa.or_(mine, t.leases.c.expires_at < now))
            .values(
                holder=self.holder,
                acquired_at=sa.case(
                    (mine, t.leases.c.acquired_at),
                    else_=sa.literal(now, t.leases.c.acquired_at.type),
                ),
                expires_at=now + self.ttl,
            )
        )
        return updated.rowcount == 1

    def release(self) -> None:
        """Let the lease go at once (graceful shutdown), so another process need not wait."""
        with self.store.write() as conn:
            conn.execute(
                t.leases.update()
                .where(t.leases.c.name == self.name, t.leases.c.holder == self.holder)
                .values(expires_at=self.clock.now() - timedelta(seconds=1))
            )

    def current(self) -> LeaseHolder | None:
        """The lease's row (its holder may have expired: compare ``expires_at`` with now)."""
        with self.store.read() as conn:
            row = conn.execute(sa.select(t.leases).where(t.leases.c.name == self.name)).first()
        if row is None:
            return None
        return LeaseHolder(row.name, row.holder, aware(row.acquired_at), aware(row.expires_at))
