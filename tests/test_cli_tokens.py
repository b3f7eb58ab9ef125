from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from ownloop import Config, Workspace
from ownloop.cli import cli
from ownloop.errors import InvalidInputError
from ownloop.store import Store, tables
from ownloop.store.migrations import all_migrations, latest_version
from tests.conftest import env_for


def _run(config: Config, *args: str, **env: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={**env_for(config), **env})


def test_token_round_trip(config: Config, ws: Workspace, team: str) -> None:
    made = _run(config, "token", "create", "--team", team, "--role", "owner", "--expires", "90d")
    assert made.exit_code == 0, made.output
    assert "store it now; it is not shown again" in made.output
    secret = made.output.strip().splitlines()[-1]
    assert secret.startswith("olt_")
    actor = ws.tokens.verify(secret)
    assert actor.name.startswith("token:risk-owner-") and actor.name.endswith("@risk")

    made = _run(config, "token", "create", "--name", "ops", "--role", "admin", "--json")
    assert made.exit_code == 0, made.output
    body = json.loads(made.output)
    assert (body["name"], body["team"], body["role"], body["expires_at"]) == (
        "ops",
        None,
        "admin",
        None,
    )
    assert ws.tokens.verify(body["token"]).admin

    listed = _run(config, "token", "list")
    assert listed.exit_code == 0, listed.output
    assert "ops" in listed.output and "risk-owner-" in listed.output
    assert secret not in listed.output and body["token"] not in listed.output
    rows = json.loads(_run(config, "token", "list", "--json").output)
    assert [r["name"] for r in rows][1] == "ops"
    assert all("token" not in r and "secret_hash" not in r for r in rows)

    revoked = _run(config, "token", "revoke", "ops")
    assert revoked.exit_code == 0, revoked.output
    assert "revoked token 'ops'" in revoked.output
    assert [r["name"] for r in json.loads(_run(config, "token", "list", "--json").output)] == [
        rows[0]["name"]
    ]
    everything = json.loads(_run(config, "token", "list", "--all", "--json").output)
    assert [r["revoked_at"] is not None for r in everything] == [False, True]


def test_token_cli_refuses_bad_input(config: Config, ws: Workspace, team: str) -> None:
    unknown = _run(config, "token", "create", "--team", "nope", "--role", "owner")
    assert unknown.exit_code == 1
    assert "team 'nope' does not exist (known teams: risk)" in unknown.stderr
    for args, expected in [
        (["--role", "root"], "Invalid value for '--role'"),
        (["--team", team, "--role", "owner", "--expires", "soon"], "--expires"),
        (["--team", team, "--role", "admin"], "takes no team"),
    ]:
        result = _run(config, "token", "create", *args)
        assert result.exit_code != 0
        assert expected in result.stderr
        assert "Traceback" not in result.output
    gone = _run(config, "token", "revoke", "nobody")
    assert gone.exit_code == 1 and "no unrevoked token is named 'nobody'" in gone.stderr
    assert ws.tokens.list(include_revoked=True) == []


@pytest.mark.parametrize("user", ["alice (admin)", "bob\n", "-x", "a" * 65, "é"])
def test_ownloop_user_outside_the_name_rule_is_refused(user: str) -> None:
    with pytest.raises(InvalidInputError, match="OWNLOOP_USER=.* is not a user name"):
        Config.from_env({"OWNLOOP_USER": user})


def test_ownloop_user_refusal_reaches_the_cli(config: Config) -> None:
    result = _run(config, "models", OWNLOOP_USER="alice (admin)")
    assert result.exit_code == 1
    assert "error: OWNLOOP_USER='alice (admin)' is not a user name" in result.stderr


def test_default_user_is_always_a_valid_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Config.from_env({"OWNLOOP_USER": "ana.b@x+1"}).user == "ana.b@x+1"
    for raw in ["alice (admin)", " ", "..", "é" * 80]:
        monkeypatch.setenv("LOGNAME", raw)  # getpass reads LOGNAME first
        user = Config.from_env({}).user
        assert user and " " not in user and "(" not in user, user
        assert Config.from_env({"OWNLOOP_USER": user}).user == user


@pytest.mark.empty_store  # it upgrades a store from an older schema
def test_db_upgrade_writes_one_audit_row(config: Config) -> None:
    numbers = [m.number for m in all_migrations()]
    with Store(config.db_url, check_schema=False) as old:
        old.upgrade(target=numbers[-2])
    done = _run(config, "db", "upgrade")
    assert done.exit_code == 0, done.output
    again = _run(config, "db", "upgrade")
    assert again.exit_code == 0 and "up to date" in again.output
    with Store(config.db_url) as store, store.read() as conn:
        rows = conn.execute(
            sa.select(tables.audit).where(tables.audit.c.action == "store.upgrade")
        ).all()
    assert len(rows) == 1
    assert rows[0].actor == config.user
    assert rows[0].before == {"schema_version": numbers[-2]}
    assert rows[0].after == {"schema_version": latest_version(), "applied": [numbers[-1]]}
