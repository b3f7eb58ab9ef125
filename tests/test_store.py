from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from ownloop import Config, Workspace
from ownloop.cli import cli
from ownloop.errors import InvalidInputError, SchemaOutOfDateError, StoreUnavailableError
from ownloop.store import Store, tables
from ownloop.store.migrations import all_migrations, latest_version

pytestmark = pytest.mark.empty_store  # these tests build and upgrade stores from empty


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'm.db'}") as store, store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_fresh_database_is_created_at_the_latest_schema(db_url: str) -> None:
    with Store(db_url) as store:
        assert store.schema_version() == latest_version() >= 2
    assert [m.number for m in all_migrations()] == sorted({m.number for m in all_migrations()})


def test_out_of_date_schema_is_refused_until_upgraded(db_url: str) -> None:
    with Store(db_url, check_schema=False) as old:
        old.upgrade(target=1)
    with pytest.raises(
        SchemaOutOfDateError, match=r"back up the database, then run `ownloop db upgrade`"
    ):
        Store(db_url)
    with Store(db_url, check_schema=False) as old:
        assert old.upgrade() == [m.number for m in all_migrations()][1:]
    with Store(db_url) as store:
        assert store.schema_version() == latest_version()


def test_a_migration_skipped_in_the_middle_is_still_applied(db_url: str) -> None:
    numbers = [m.number for m in all_migrations()]
    with Store(db_url, check_schema=False) as old:
        old.upgrade(target=numbers[0])
        # a database that got a later migration but missed one between (the third needs only
        # the first: later ones alter tables of the ones before them)
        last = all_migrations()[2]
        with old.write() as conn:
            last.upgrade(conn)
            conn.execute(
                tables.schema_versions.insert().values(
                    version=last.number, description=last.description, applied_at=datetime.now(UTC)
                )
            )
        missing = [n for n in numbers[1:] if n != last.number]
        assert old.pending_migrations() == missing
    with pytest.raises(SchemaOutOfDateError, match="out of date"):
        Store(db_url)
    with Store(db_url, check_schema=False) as old:
        assert old.upgrade() == missing
    with Store(db_url) as store:
        assert store.pending_migrations() == []


def test_db_upgrade_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with Store(url, check_schema=False) as old:
        old.upgrade(target=1)
    env = {"OWNLOOP_HOME": str(tmp_path), "OWNLOOP_DB_URL": url}
    runner = CliRunner()
    refused = runner.invoke(cli, ["models"], env=env)
    assert refused.exit_code == 1
    assert "schema" in refused.stderr
    assert "ownloop db upgrade" in refused.stderr
    assert runner.invoke(cli, ["db", "status"], env=env).output.count("out of date") == 1
    done = runner.invoke(cli, ["db", "upgrade"], env=env)
    assert done.exit_code == 0, done.output
    assert "applied migrations 2" in done.output
    assert runner.invoke(cli, ["models"], env=env).exit_code == 0


def test_schema_from_a_newer_ownloop_is_refused(db_url: str) -> None:
    with Store(db_url) as store, store.write() as conn:
        conn.execute(
            tables.schema_versions.insert().values(
                version=999, description="future", applied_at=datetime.now(UTC)
            )
        )
    with pytest.raises(SchemaOutOfDateError, match="newer than this ownloop"):
        Store(db_url)


def test_change_and_audit_roll_back_together(db_url: str) -> None:
    store = Store(db_url)
    request_close = store.close
    now = datetime.now(UTC)
    with pytest.raises(RuntimeError), store.write() as conn:
        conn.execute(tables.teams.insert().values(name="t", created_at=now, created_by="me"))
        store.audit(conn, at=now, actor="me", action="team.create", target="team:t")
        raise RuntimeError("crash between the change and the commit")
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.teams)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.audit)).scalar() == 0
    request_close()


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="unavailable"):
        Store("postgresql+psycopg://nobody@127.0.0.1:1/none")


def test_unsupported_database_url(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not supported"):
        Store("mysql://x@localhost/db")


def test_config_reads_the_environment(tmp_path: Path) -> None:
    c = Config.from_env({"OWNLOOP_HOME": str(tmp_path), "OWNLOOP_USER": "ana"})
    assert c.db_url == f"sqlite:///{tmp_path / 'ownloop.db'}"
    assert c.user == "ana"
    assert c.artifacts_dir == tmp_path / "artifacts"
    assert c.predictions_dir == tmp_path / "predictions"
    pg = Config.from_env(
        {"OWNLOOP_HOME": str(tmp_path), "OWNLOOP_DB_URL": "postgresql+psycopg://u@h/db"}
    )
    assert pg.db_url == "postgresql+psycopg://u@h/db"


def test_workspace_creates_its_home(tmp_path: Path) -> None:
    with Workspace(Config(home=tmp_path / "new" / "home")) as ws:
        assert (tmp_path / "new" / "home" / "ownloop.db").exists()
        assert ws.registry.list_models() == []
