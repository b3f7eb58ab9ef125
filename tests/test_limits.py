"""Oversized and look-alike values: the same clear error on SQLite and PostgreSQL; racing writes."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.linear_model import LogisticRegression

from ownloop import AlreadyExistsError, Config, InvalidInputError, Workspace
from ownloop.errors import OwnloopError

# -- lengths: one check before either backend sees the value --------------------------------


def test_long_user_name_is_refused_the_same_way_on_both_backends(config: Config) -> None:
    with (
        Workspace(dataclasses.replace(config, user="u" * 300)) as ws,
        pytest.raises(
            InvalidInputError,
            match=r"user name \(OWNLOOP_USER or the token's name\) 'u{40}\.\.\.' is 300 characters; the limit is 200",
        ),
    ):
        ws.registry.add_team("risk")
    with Workspace(config) as ws:
        assert ws.registry.list_teams() == []


def test_long_webhook_url_is_refused_the_same_way_on_both_backends(ws: Workspace) -> None:
    url = "https://hooks.example.com/" + "x" * 3000
    with pytest.raises(
        InvalidInputError, match="webhook URL .* is 3026 characters; the limit is 2000"
    ):
        ws.registry.add_team("risk", webhook_url=url)
    ws.registry.add_team("risk")
    with pytest.raises(InvalidInputError, match="the limit is 2000"):
        ws.registry.update_team("risk", slack_webhook_url=url)
    assert ws.registry.get_team("risk").slack_webhook_url is None
    assert [e.action for e in ws.registry.audit_log()] == ["team.create"]


def test_long_feature_name_is_refused_at_register_on_both_backends(
    ws: Workspace, team: str
) -> None:
    long = "f" * 250
    X = pd.DataFrame({long: np.arange(20.0), "b": np.arange(20.0) % 3})
    model = LogisticRegression().fit(X, np.arange(20) % 2)
    with pytest.raises(InvalidInputError, match="250 characters; the limit is 200"):
        ws.registry.register(model, name="m", owner=team)
    assert ws.registry.list_models() == []


def test_long_description_text_columns_are_not_limited(ws: Workspace, team: str) -> None:
    X = pd.DataFrame({"a": np.arange(20.0)})
    model = LogisticRegression().fit(X, np.arange(20) % 2)
    v = ws.registry.register(model, name="m", owner=team, description="d" * 5000)
    assert len(v.description or "") == 5000


# -- look-alike names through the registry ---------------------------------------------------


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda ws: ws.registry.add_team("nl\n"), "team name"),
        (lambda ws: ws.registry.add_team("ok", members=["bob\n"]), "member name"),
        (lambda ws: ws.registry.add_member("risk", "bob\n"), "member name"),
        (lambda ws: ws.registry.add_team("ok", email="a@b.co\n"), "email"),
        (lambda ws: ws.registry.add_team("ok", webhook_url="http://x.example/\n"), "webhook"),
        (lambda ws: ws.registry.set_alias("m", "production\n", 1), "alias name"),
        (lambda ws: ws.registry.get_version("m@1\n"), "alias name"),
        (
            lambda ws: ws.deploy.set_production("m", "1\n", force=True, reason="set up"),
            "positive whole number",
        ),
        (lambda ws: ws.registry.register(_model(), name="nl\n", owner="risk"), "model name"),
    ],
)
def test_values_ending_in_a_newline_are_refused(
    ws: Workspace, team: str, call: Callable[[Workspace], Any], fragment: str
) -> None:
    ws.registry.register(_model(), name="m", owner=team)
    before = len(ws.registry.audit_log())
    with pytest.raises(InvalidInputError, match=fragment):
        call(ws)
    assert len(ws.registry.audit_log()) == before


def test_feature_name_ending_in_a_newline_is_refused(ws: Workspace, team: str) -> None:
    X = pd.DataFrame({"age\n": np.arange(20.0)})
    model = LogisticRegression().fit(X, np.arange(20) % 2)
    with pytest.raises(InvalidInputError, match="feature name 'age\\\\n' has control characters"):
        ws.registry.register(
            model, name="m", owner=team, reference=X.assign(y=np.arange(20) % 2), target="y"
        )
    with pytest.raises(InvalidInputError, match="feature name 'age\\\\n' has control characters"):
        ws.registry.register(model, name="m", owner=team)
    assert ws.registry.list_models() == []


def _model() -> LogisticRegression:
    return LogisticRegression().fit(pd.DataFrame({"a": np.arange(20.0)}), np.arange(20) % 2)


# -- racing writes on PostgreSQL: a clear, retriable error, never a raw IntegrityError ------


def _race(ws: Workspace, table: str, calls: list[Callable[[], Any]]) -> list[BaseException | None]:
    """Run ``calls`` in threads that all pass their existence check before any inserts.

    A listener on the real engine holds each thread at its INSERT INTO ``table`` until every
    thread has reached it, so the race the unique constraint settles happens every time.
    """
    barrier = threading.Barrier(len(calls), timeout=30)

    def hold(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if statement.startswith(f"INSERT INTO {table} "):
            barrier.wait()

    outcomes: list[BaseException | None] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            calls[i]()
        except BaseException as exc:  # collected and asserted on below
            outcomes[i] = exc

    sa.event.listen(ws.store.engine, "before_cursor_execute", hold)
    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
    finally:
        sa.event.remove(ws.store.engine, "before_cursor_execute", hold)
    return outcomes


@pytest.fixture
def pg_ws(pg_url: str, tmp_path: Any) -> Any:
    with Workspace(Config(home=tmp_path / "home", db_url_override=pg_url, user="tester")) as ws:
        yield ws


@pytest.mark.postgres
def test_racing_add_team_gives_one_team_and_already_exists(pg_ws: Workspace) -> None:
    outcomes = _race(pg_ws, "teams", [lambda: pg_ws.registry.add_team("risk")] * 2)
    assert sorted(type(o).__name__ for o in outcomes) == ["AlreadyExistsError", "NoneType"]
    loser = next(o for o in outcomes if o is not None)
    assert isinstance(loser, AlreadyExistsError) and "team 'risk' already exists" in str(loser)
    assert [t.name for t in pg_ws.registry.list_teams()] == ["risk"]
    assert [e.action for e in pg_ws.registry.audit_log()] == ["team.create"]


@pytest.mark.postgres
def test_racing_add_member_gives_one_member_and_already_exists(pg_ws: Workspace) -> None:
    pg_ws.registry.add_team("risk")
    outcomes = _race(pg_ws, "team_members", [lambda: pg_ws.registry.add_member("risk", "bob")] * 2)
    errors = [o for o in outcomes if o is not None]
    assert len(errors) == 1 and isinstance(errors[0], AlreadyExistsError), outcomes
    assert pg_ws.registry.get_team("risk").members == ("bob",)


@pytest.mark.postgres
def test_racing_set_alias_both_succeed_in_some_order(pg_ws: Workspace) -> None:
    pg_ws.registry.add_team("risk")
    for _ in range(2):
        pg_ws.registry.register(_model(), name="m", owner="risk")
    outcomes = _race(
        pg_ws,
        "aliases",
        [
            lambda: pg_ws.deploy.set_production("m", 1, force=True, reason="set up"),
            lambda: pg_ws.deploy.set_production("m", 2, force=True, reason="set up"),
        ],
    )
    assert outcomes == [None, None]
    history = pg_ws.registry.alias_history("m", "production")
    assert len(history) == 2 and history[-1].previous_version == history[0].version
    assert pg_ws.registry.get_model("m").aliases["production"] == history[-1].version


def test_concurrent_change_is_an_ownloop_error_with_a_retry_hint() -> None:
    from ownloop.errors import ConcurrentChangeError, ConflictError

    err = ConcurrentChangeError("x")
    assert isinstance(err, ConflictError) and isinstance(err, OwnloopError)
    assert err.http_status == 409 and err.retriable
