"""Metadata store: SQLAlchemy 2 over SQLite (default) or PostgreSQL, migrations, audit rows.

The store knows tables and transactions, never the domain that uses them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from ownloop.errors import ConcurrentChangeError, SchemaOutOfDateError, StoreUnavailableError
from ownloop.store import _schema as tables
from ownloop.store._engine import create_engine, safe_url
from ownloop.store._limits import check_statement, length_limit
from ownloop.store.migrations import all_migrations, latest_version

__all__ = ["Store", "aware", "length_limit", "tables"]


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything ownloop stores is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Store:
    """One metadata database. ``write()`` and ``read()`` give a connection inside a transaction."""

    def __init__(self, url: str, *, check_schema: bool = True) -> None:
        self.url = url
        self.engine = create_engine(url)
        sa.event.listen(self.engine, "before_cursor_execute", _check_lengths)
        if check_schema:
            try:
                self.ensure_schema()
            except BaseException:
                self.engine.dispose()
                raise

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A write transaction: the SQLite write lock is taken at BEGIN; commit or roll back whole."""
        with self._translate(), self.engine.connect() as conn:
            conn = conn.execution_options(ownloop_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self._translate(), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except sa.exc.IntegrityError as exc:
            # Two writers passed the same "does it exist?" check (PostgreSQL, READ COMMITTED);
            # the constraint stopped the second. Its transaction rolled back whole.
            if not _is_race(exc):
                raise
            raise ConcurrentChangeError(
                "another change to the same record was committed at the same moment, so this one "
                f"was not written ({_constraint(exc)}); run it again"
            ) from exc
        except sa.exc.OperationalError as exc:
            if "no such table" in str(exc) or "does not exist" in str(exc.orig):
                raise SchemaOutOfDateError(self._out_of_date_message()) from exc
            raise StoreUnavailableError(
                f"metadata store {safe_url(self.url)} is unavailable: {exc.orig}; "
                "check that the database is reachable, its folder exists and is writable, "
                "and it is not locked by another tool"
            ) from exc

    def audit(
        self,
        conn: sa.Connection,
        *,
        at: datetime,
        actor: str,
        action: str,
        target: str,
        model: str | None = None,
        before: Any = None,
        after: Any = None,
    ) -> None:
        """Write one audit row; call it inside the transaction that makes the change."""
        conn.execute(
            tables.audit.insert().values(
                at=at,
                actor=actor,
                action=action,
                target=target,
                model=model,
                before=before,
                after=after,
            )
        )

    # -- schema -------------------------------------------------------------------------

    def schema_version(self) -> int:
        """The highest migration applied to this database (0 when it is empty)."""
        return max(self.applied_migrations(), default=0)

    def applied_migrations(self) -> set[int]:
        with self._translate(), self.engine.connect() as conn, conn.begin():
            return self._applied(conn)

    def _applied(self, conn: sa.Connection) -> set[int]:
        if not sa.inspect(conn).has_table(tables.schema_versions.name):
            return set()
        return {int(v) for v in conn.execute(sa.select(tables.schema_versions.c.version)).scalars()}

    def pending_migrations(self, applied: set[int] | None = None) -> list[int]:
        """Migrations this code has that the database has not applied (gaps included)."""
        done = self.applied_migrations() if applied is None else applied
        return [m.number for m in all_migrations() if m.number not in done]

    def ensure_schema(self) -> None:
        """Create a fresh database; refuse to touch one that is behind or ahead of this code."""
        applied = self.applied_migrations()
        current, latest = max(applied, default=0), latest_version()
        if not applied and not self._has_foreign_tables():
            self.upgrade()
        elif current > latest:
            raise SchemaOutOfDateError(
                f"metadata schema at {safe_url(self.url)} is at version {current}, newer than "
                f"this ownloop knows ({latest}); upgrade ownloop (pip install -U ownloop)"
            )
        elif self.pending_migrations(applied):
            raise SchemaOutOfDateError(self._out_of_date_message(current))

    def _has_foreign_tables(self) -> bool:
        with self.engine.connect() as conn:
            names = set(sa.inspect(conn).get_table_names())
        return bool(names & {"teams", "models", "versions"})

    def _out_of_date_message(self, current: int | None = None) -> str:
        at = (
            ""
            if current is None
            else f" (at version {current}, this ownloop needs {latest_version()})"
        )
        return (
            f"metadata schema at {safe_url(self.url)} is out of date{at}: "
            "back up the database, then run `ownloop db upgrade`"
        )

    def upgrade(self, target: int | None = None) -> list[int]:
        """Apply pending migrations up to ``target`` (default: all) in one transaction."""
        applied: list[int] = []
        with self._translate(), self.engine.connect() as conn:
            conn = conn.execution_options(ownloop_write=True)
            with conn.begin():
                if self.dialect == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(20260001)"))
                if not sa.inspect(conn).has_table(tables.schema_versions.name):
                    tables.schema_versions.create(conn)
                done = self._applied(conn)
                for migration in all_migrations():
                    if migration.number in done or (
                        target is not None and migration.number > target
                    ):
                        continue
                    migration.upgrade(conn)
                    conn.execute(
                        tables.schema_versions.insert().values(
                            version=migration.number,
                            description=migration.description,
                            applied_at=datetime.now(UTC),
                        )
                    )
                    applied.append(migration.number)
        return applied


def _check_lengths(
    _conn: sa.Connection,
    _cursor: Any,
    _statement: str,
    _parameters: Any,
    context: Any,
    _executemany: bool,
) -> None:
    check_statement(context)


_RACE_SQLSTATES = {"23505", "23503"}  # unique violation, foreign key violation
_RACE_SQLITE = ("UNIQUE constraint failed", "FOREIGN KEY constraint failed")


def _is_race(exc: sa.exc.IntegrityError) -> bool:
    """A unique or foreign-key violation: what two concurrent writers cause (not a NOT NULL bug)."""
    if getattr(exc.orig, "sqlstate", None) in _RACE_SQLSTATES:
        return True
    return str(exc.orig).startswith(_RACE_SQLITE)


def _constraint(exc: sa.exc.IntegrityError) -> str:
    """The violated constraint's name (PostgreSQL) or the database's one-line reason (SQLite)."""
    diag = getattr(exc.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    if name:
        return f"constraint {name}"
    return str(exc.orig).splitlines()[0] if exc.orig is not None else "a unique constraint"
