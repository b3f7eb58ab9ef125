"""Shared fixtures: a real SQLite file per test, and the same tests on PostgreSQL when reachable."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ownloop import Config, Workspace
from ownloop.demo import make_churn_data, make_model
from ownloop.store import Store

pytest_plugins = ["tests.receivers"]  # loopback webhook and SMTP receivers for alert tests

PG_ENV = "OWNLOOP_TEST_PG_URL"


def _pg_admin_url() -> str | None:
    return os.environ.get(PG_ENV) or None


def _pg_reachable(url: str) -> str | None:
    """None when reachable, else the reason."""
    try:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except (sa.exc.OperationalError, sa.exc.InterfaceError, ModuleNotFoundError) as exc:
        return f"PostgreSQL at {url} is not reachable: {str(exc).splitlines()[0]}"
    return None


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    url = _pg_admin_url()
    if url is None:
        pytest.skip(
            f"PostgreSQL tests skipped: set {PG_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
        )
    reason = _pg_reachable(url)
    if reason is not None:
        if os.environ.get("OWNLOOP_TEST_REQUIRE_PG"):
            pytest.fail(reason)
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    return url


TEMPLATE = "t_template_schema"  # where a copy's script names its schema


@contextmanager
def pg_schema(admin_url: str, script: str | None = None) -> Iterator[str]:
    """A fresh schema on the test PostgreSQL (its URL), dropped afterwards: empty, or built by
    ``script`` (from ``pg_template``)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, poolclass=sa.NullPool)
    if script is None:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    else:
        raw = admin.raw_connection()
        try:
            raw.cursor().execute(script.replace(TEMPLATE, schema))  # one round trip
            raw.commit()
        finally:
            raw.close()
    url = make_url(admin_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty schema on the test PostgreSQL, dropped afterwards."""
    with pg_schema(pg_admin_url) as url:
        yield url


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> str | None:
    """The SQL that rebuilds a freshly migrated store in one round trip, or None (no pg_dump).

    Running every migration costs a PostgreSQL test seconds, under a lock that serialises the
    test processes; a copy of a store the migrations built once costs a fraction of that."""
    if shutil.which("pg_dump") is None:
        return None
    with pg_schema(pg_admin_url) as url:
        with Store(url):  # the migrations build it, as for any fresh store
            pass
        schema = make_url(url).query["options"].removeprefix("-csearch_path=")  # type: ignore[union-attr]
        admin = make_url(pg_admin_url)
        env = {**os.environ, **({"PGPASSWORD": admin.password} if admin.password else {})}
        dump = subprocess.run(
            ["pg_dump", "--schema", schema, "--no-owner", "--no-privileges", "--inserts",
             "-h", admin.host or "127.0.0.1", "-p", str(admin.port or 5432),
             "-U", admin.username or "postgres", "-d", admin.database or "postgres"],
            env=env, capture_output=True, text=True, check=True, timeout=120,
        ).stdout  # fmt: skip
    lines = [line for line in dump.splitlines() if not line.startswith("\\")]  # psql commands
    return re.sub(rf"\b{schema}\b", TEMPLATE, "\n".join(lines))


STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def store_url(request: pytest.FixtureRequest, folder: Path) -> Iterator[str]:
    """The store URL for ``request.param`` ("sqlite" in ``folder``, or a fresh PostgreSQL schema);
    for fixtures of a wider scope than a test, parametrized with ``STORES``."""
    if request.param == "sqlite":
        yield f"sqlite:///{folder / 'ownloop.db'}"
        return
    with pg_schema(request.getfixturevalue("pg_admin_url")) as url:
        yield url


@pytest.fixture(params=STORES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every store-touching test runs on real SQLite and, when reachable, real PostgreSQL.

    SQLite starts empty; PostgreSQL starts as a copy of a freshly migrated store (see
    ``pg_template``) unless the test is marked ``empty_store``."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ownloop.db'}"
        return
    script = None
    if request.node.get_closest_marker("empty_store") is None:
        script = request.getfixturevalue("pg_template")
    with pg_schema(request.getfixturevalue("pg_admin_url"), script) as url:
        yield url


@pytest.fixture
def config(tmp_path: Path, db_url: str) -> Config:
    return Config(home=tmp_path / "home", db_url_override=db_url, user="tester")


@pytest.fixture
def ws(config: Config) -> Iterator[Workspace]:
    with Workspace(config) as workspace:
        yield workspace


@pytest.fixture(scope="session")
def churn_data() -> pd.DataFrame:
    return make_churn_data(2000, seed=11)


@pytest.fixture(scope="session")
def churn_model(churn_data: pd.DataFrame) -> object:
    return make_model(max_iter=20).fit(churn_data.drop(columns="churned"), churn_data["churned"])


@pytest.fixture
def team(ws: Workspace) -> str:
    ws.registry.add_team("risk", email="risk@example.com", members=["tester"])
    return "risk"


def env_for(config: Config) -> dict[str, str]:
    """Environment for a subprocess that should use ``config``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OWNLOOP_")}
    env["OWNLOOP_HOME"] = str(config.home)
    env["OWNLOOP_DB_URL"] = config.db_url
    env["OWNLOOP_USER"] = config.user
    return env
