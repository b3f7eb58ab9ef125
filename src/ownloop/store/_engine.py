"""Engines for SQLite (WAL, foreign keys, busy timeout, write lock taken up front) and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from ownloop._files import create_private, private_folder
from ownloop.errors import InvalidInputError, StoreUnavailableError

__all__ = ["BUSY_TIMEOUT_MS", "create_engine", "safe_url"]

BUSY_TIMEOUT_MS = 30_000


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable url>"


def create_engine(url: str) -> sa.Engine:
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise InvalidInputError(
            f"database URL '{url}' is not valid; use sqlite:///path or postgresql+psycopg://..."
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend == "postgresql":
        return _postgres_engine(parsed)
    raise InvalidInputError(
        f"database '{backend}' is not supported; use sqlite:///path or postgresql+psycopg://..."
    )


def _sqlite_engine(url: sa.URL) -> sa.Engine:
    if url.database and url.database != ":memory:":
        _make_file(Path(url.database))
    engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so BEGIN IMMEDIATE can be issued below.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # A writer takes the write lock before its first read, so "read max, then insert"
        # can never interleave with another writer (SQLite has one writer at a time anyway).
        if conn.get_execution_options().get("ownloop_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def _make_file(database: Path) -> None:
    """The database's folder (0700) and, when new, an empty database file (0600).

    SQLite gives the -wal and -shm files the mode of the database file, so they are 0600 too.
    """
    folder = database.parent
    try:
        private_folder(folder)
        if not database.exists():
            create_private(database)
    except FileExistsError:  # another process created the database first
        pass
    except OSError as exc:
        raise StoreUnavailableError(
            f"cannot create the folder {folder} for the SQLite database {database}: "
            f"{exc.strerror or exc}; point OWNLOOP_DB_URL (or OWNLOOP_HOME) at a writable folder"
        ) from exc
    if not folder.is_dir():
        raise StoreUnavailableError(
            f"{folder} is not a folder, so the SQLite database {database} cannot live there; "
            "point OWNLOOP_DB_URL (or OWNLOOP_HOME) at a writable folder"
        )


def _postgres_engine(url: sa.URL) -> sa.Engine:
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    try:
        return sa.create_engine(url, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise StoreUnavailableError(
            f"PostgreSQL support is not installed ({exc.name} missing); "
            "run: pip install 'ownloop[postgres]'"
        ) from exc
