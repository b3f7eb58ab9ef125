"""The scorecard's four key metrics and quality figures against a scripted history whose figures
are known by construction (real store on SQLite and PostgreSQL, real deploys without servers)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from ownloop import Config, Workspace
from ownloop.access import Actor
from ownloop.cli import cli
from ownloop.clock import FrozenClock
from ownloop.demo import make_churn_data, make_model
from ownloop.deploy import Outcome, State
from ownloop.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from ownloop.intervals import wilson_interval
from ownloop.store import tables as t
from tests.conftest import STORES, env_for, store_url
from tests.test_deploy import Script

DAY = timedelta(days=1)
# the history starts 60 days before today, so the CLI (on the system clock) sees all of it
T = datetime.now(UTC).replace(microsecond=0) - 60 * DAY
NOW = T + 60 * DAY


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return make_churn_data(300, seed=5)


@pytest.fixture(scope="module")
def fitted(train: pd.DataFrame) -> Any:
    return make_model(max_iter=5).fit(train.drop(columns="churned"), train["churned"])


def _gate(ws: Workspace, ref: str, data: Path, passed: bool) -> None:
    ws.evaluations.evaluate(
        ref,
        {
            "datasets": {"holdout": {"path": str(data), "label": "churned"}},
            "checks": [{"type": "model_size", "at_most": 1000 if passed else 0.0001}],
        },
    )


def _rollback(ws: Workspace, model: str, version: int) -> None:
    """Production back to ``version`` as ``ownloop rollback`` moves it (its check left out)."""
    with ws.store.write() as conn:
        row = ws.registry.require_model_row(conn, model)
        ws.deploy.move_production(
            conn,
            row,
            version,
            ws.clock.now(),
            action="deploy.rollback",
            reason="scripted",
            evidence=None,
        )


def _alert(ws: Workspace, model: str, opened: datetime, minutes: float | None) -> None:
    resolved = None if minutes is None else opened + timedelta(minutes=minutes)
    with ws.store.write() as conn:
        conn.execute(
            t.alerts.insert().values(
                fingerprint=f"{model}-{opened.timestamp()}",
                open_fingerprint=None if resolved else f"{model}-{opened.timestamp()}",
                model=model,
                version=1,
                team="risk",
                rule="dataset_drift",
                severity="page",
                state="resolved" if resolved else "firing",
                summary="scripted",
                details={},
                opened_at=opened,
                last_seen_at=opened,
                resolved_at=resolved,
            )
        )


def _window(ws: Workspace, model: str, end: datetime, arms: list[str], **figures: float) -> None:
    kinds = {
        "estimated": ("estimated_performance", "accuracy"),
        "realised": ("realised_performance", "accuracy"),
        "p99": ("system", "latency_p99_s"),
        "errors": ("system", "error_rate"),
        "cost": ("system", "cost_per_1k"),
    }
    with ws.store.write() as conn:
        run_id = conn.execute(
            t.monitor_runs.insert()
            .values(
                model=model,
                version=1,
                window_start=end - timedelta(hours=1),
                window_end=end,
                rows=100,
                status="ok",
                summary={"arms": arms},
                started_at=end,
                finished_at=end,
                run_by="tester",
            )
            .returning(t.monitor_runs.c.id)
        ).scalar_one()
        conn.execute(
            t.monitor_results.insert(),
            [
                {
                    "run_id": run_id,
                    "model": model,
                    "version": 1,
                    "window_end": end,
                    "kind": kinds[k][0],
                    "name": kinds[k][1],
                    "status": "ok",
                    "value": v,
                }
                for k, v in figures.items()
            ],
        )


def _script_history(config: Config, folder: Path, train: pd.DataFrame, fitted: Any) -> None:
    """churn (risk): promoted on days 1 (v1), 5 (v2, rolled back on day 8) and 10 (v3 through a
    canary); a canary of v2 aborted on day 3; failed gates on days 9 (v2) and 12 (v1), neither
    in production then. upsell (risk): v1 promoted on day 2, its gate failed on day 4 while in
    production. ledger (ops): nothing. Alerts resolved after 30 and 90 min (churn), 240 (upsell)."""
    clock = FrozenClock(T)
    script = Script()
    data = folder / "holdout.parquet"
    train.to_parquet(data)
    with Workspace(config, clock=clock) as ws:
        ws.deploy.analyser = script
        ws.registry.add_team("risk", members=["tester"])
        ws.registry.add_team("ops", members=["tester"])
        for _ in range(3):
            ws.registry.register(
                fitted, name="churn", owner="risk", reference=train, target="churned"
            )
        ws.registry.register(fitted, name="upsell", owner="risk", reference=train, target="churned")
        ws.registry.register(fitted, name="ledger", owner="ops", reference=train, target="churned")
        clock.advance(days=1)
        _gate(ws, "churn@1", data, passed=True)
        ws.deploy.set_production("churn", 1)
        clock.advance(days=1)
        _gate(ws, "upsell@1", data, passed=True)
        ws.deploy.set_production("upsell", 1)
        clock.advance(days=1)  # day 3
        _gate(ws, "churn@2", data, passed=True)
        ws.deploy.deploy("churn@2", steps=(50, 100))
        ws.deploy.tick()
        assert ws.deploy.abort("churn", reason="scripted").state == State.ABORTED
        clock.advance(days=1)  # day 4
        _gate(ws, "upsell@1", data, passed=False)
        clock.advance(days=1)  # day 5
        ws.deploy.deploy("churn@2", strategy="direct")
        clock.advance(days=3)  # day 8
        _rollback(ws, "churn", 1)
        clock.advance(days=1)  # day 9
        _gate(ws, "churn@2", data, passed=False)
        clock.advance(days=1)  # day 10
        _gate(ws, "churn@3", data, passed=True)
        ws.deploy.deploy("churn@3", steps=(50, 100))
        ws.deploy.tick()
        script.then("churn", Outcome.PASS)
        ws.deploy.tick()
        assert ws.registry.get_version("churn@production").version == 3
        clock.advance(days=2)  # day 12
        _gate(ws, "churn@1", data, passed=False)
        _alert(ws, "churn", T + 20 * DAY, 30)
        _alert(ws, "churn", T + 21 * DAY, 90)
        _alert(ws, "upsell", T + 22 * DAY, 240)
        _alert(ws, "churn", T + 23 * DAY, None)  # still open
        stable = ["stable", "canary"]
        _window(ws, "churn", T + 30 * DAY, stable, estimated=0.8, p99=0.1, errors=0.01, cost=2.0)
        _window(
            ws, "churn", T + 31 * DAY, stable, estimated=0.9, realised=0.85, p99=0.3, errors=0.03,
            cost=4.0,
        )  # fmt: skip
        _window(ws, "churn", T + 32 * DAY, ["shadow"], estimated=0.1, p99=9.0)  # not served
        clock.advance(days=48)
        assert clock.now() == NOW


@pytest.fixture(scope="module", params=STORES)
def scripted(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    train: pd.DataFrame,
    fitted: Any,
) -> Iterator[Config]:
    """The scripted history, built once per module and store (it takes a second or two)."""
    folder = tmp_path_factory.mktemp("history")
    with store_url(request, folder) as url:
        config = Config(home=folder / "home", db_url_override=url, user="tester")
        _script_history(config, folder, train, fitted)
        yield config


_SCRIPTED = (t.teams, t.models, t.versions, t.alias_history, t.evaluations, t.rollouts, t.alerts)


def _fingerprint(ws: Workspace) -> tuple[object, ...]:
    """What the scorecard reads from the scripted history: row counts, and who owns what."""
    with ws.store.read() as conn:
        counts = [
            conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in _SCRIPTED
        ]
    models = [(m.name, m.owner, sorted(m.aliases.items())) for m in ws.registry.list_models()]
    return (*counts, models)


@pytest.fixture
def history(scripted: Config) -> Iterator[Workspace]:
    """A workspace on the shared scripted history, for tests that only read it; a test that
    changes it fails here (it needs ``own_history``), so no test sees another's leftovers."""
    with Workspace(scripted, clock=FrozenClock(NOW)) as ws:
        before = _fingerprint(ws)
        yield ws
        assert _fingerprint(ws) == before, "a test changed the shared history: use own_history"


@pytest.fixture
def own_history(
    config: Config, tmp_path: Path, train: pd.DataFrame, fitted: Any
) -> Iterator[Workspace]:
    """The scripted history in a store of its own, for a test that changes it."""
    _script_history(config, tmp_path, train, fitted)
    with Workspace(config, clock=FrozenClock(NOW)) as ws:
        yield ws


def test_the_four_figures_of_each_model_match_the_history(history: Workspace) -> None:
    card = history.scorecard.card()
    assert (card.since, card.until) == (NOW - 90 * DAY, NOW)
    churn = card.model("churn").key
    assert churn.deployment_frequency.count == 3  # days 1, 5, 10; the rollback is no deploy
    assert churn.deployment_frequency.per_week == pytest.approx(3 / (90 / 7))
    assert (churn.lead_time.count, churn.lead_time.median_s) == (3, (5 * DAY).total_seconds())
    cfr = churn.change_failure_rate
    assert (cfr.failed, cfr.changes, cfr.rate) == (2, 4, 0.5)  # the abort and the rolled-back v2
    assert (cfr.lower, cfr.upper) == pytest.approx(wilson_interval(2, 4, 0.95))
    assert (churn.time_to_restore.count, churn.time_to_restore.median_s) == (2, 60 * 60)
    upsell = card.model("upsell").key
    assert upsell.change_failure_rate.failed == upsell.change_failure_rate.changes == 1
    assert upsell.lead_time.median_s == (2 * DAY).total_seconds()


def test_team_figures_pool_the_teams_models(history: Workspace) -> None:
    card = history.scorecard.card()
    risk = card.team("risk")
    assert risk.models == ("churn", "upsell")
    assert risk.key.deployment_frequency.count == 4
    lead = [d.total_seconds() for d in (DAY, 2 * DAY, 5 * DAY, 10 * DAY)]
    assert risk.key.lead_time.median_s == statistics.median(lead)
    cfr = risk.key.change_failure_rate
    assert (cfr.failed, cfr.changes) == (3, 5)
    assert risk.key.time_to_restore.median_s == 90 * 60
    assert risk.key.time_to_restore.count == 3
    ops = card.team("ops")
    assert ops.models == ("ledger",)
    assert ops.key.deployment_frequency.count == 0
    assert ops.key.lead_time == ops.key.time_to_restore
    assert ops.key.lead_time.median_s is None
    assert ops.key.change_failure_rate.rate is None


def test_quality_from_served_windows_only(history: Workspace) -> None:
    q = history.scorecard.card(model="churn").model("churn").quality
    est = q["estimated_accuracy"]
    assert (est.latest, est.mean, est.windows) == (0.9, pytest.approx(0.85), 2)
    assert est.latest_at == T + 31 * DAY
    assert (q["realised_accuracy"].latest, q["realised_accuracy"].windows) == (0.85, 1)
    assert q["latency_p99_s"].mean == pytest.approx(0.2)
    assert q["error_rate"].latest == 0.03
    assert q["cost_per_1k"].mean == pytest.approx(3.0)
    team = history.scorecard.card(team="risk").team("risk").quality["estimated_accuracy"]
    assert (team.latest, team.mean, team.windows) == (None, pytest.approx(0.85), 2)


def test_a_shorter_period_keeps_only_its_events(history: Workspace) -> None:
    churn = history.scorecard.card(since=56 * DAY).model("churn").key  # from day 4 on
    assert churn.deployment_frequency.count == 2
    assert churn.lead_time.median_s == (7.5 * DAY).total_seconds()
    assert (churn.change_failure_rate.failed, churn.change_failure_rate.changes) == (1, 2)


def test_an_empty_period_says_no_data(history: Workspace) -> None:
    card = history.scorecard.card(model="churn", since=DAY)
    key = card.model("churn").key
    assert key.deployment_frequency.count == 0
    assert (key.lead_time.count, key.lead_time.median_s) == (0, None)
    assert (key.change_failure_rate.changes, key.change_failure_rate.rate) == (0, None)
    assert key.change_failure_rate.lower is None
    assert key.time_to_restore.median_s is None
    assert all(q.windows == 0 and q.mean is None for q in card.model("churn").quality.values())


def test_the_weekly_trend_adds_up_to_the_period(history: Workspace) -> None:
    card = history.scorecard.card(team="risk")
    (trend,) = card.trends
    assert len(trend.weeks) == 13 and trend.weeks[-1].end == NOW
    assert trend.weeks[0].start == card.since
    assert sum(w.key.deployment_frequency.count for w in trend.weeks) == 4
    assert sum(w.key.change_failure_rate.changes for w in trend.weeks) == 5
    first = next(w for w in trend.weeks if w.start < T + DAY <= w.end)
    assert first.key.deployment_frequency.count >= 1
    assert first.key.deployment_frequency.weeks == pytest.approx(1.0)


def test_a_transferred_model_counts_for_its_new_owner(own_history: Workspace) -> None:
    own_history.registry.transfer("upsell", "ops")
    card = own_history.scorecard.card(team="ops")
    assert card.team("ops").models == ("ledger", "upsell")
    assert card.team("ops").key.deployment_frequency.count == 1
    assert [m.model for m in card.models] == ["ledger", "upsell"]


def test_unknown_names_and_bad_periods_are_refused(history: Workspace) -> None:
    with pytest.raises(NotFoundError, match="team 'nobody'"):
        history.scorecard.card(team="nobody")
    with pytest.raises(NotFoundError, match="'nothing'"):
        history.scorecard.card(model="nothing")
    with pytest.raises(InvalidInputError, match="belongs to team 'risk', not 'ops'"):
        history.scorecard.card(team="ops", model="churn")
    with pytest.raises(InvalidInputError, match="positive duration"):
        history.scorecard.card(since=timedelta(0))


def test_reading_the_scorecard_needs_a_viewer(history: Workspace) -> None:
    stranger = Actor("stranger", frozenset(), viewer=False)
    with history.acting_as(stranger), pytest.raises(PermissionDeniedError, match="scorecard.read"):
        history.scorecard.card()


def test_json_round_trips(history: Workspace) -> None:
    data = json.loads(json.dumps(history.scorecard.card().to_dict()))
    churn = next(m for m in data["models"] if m["model"] == "churn")
    assert churn["change_failure_rate"]["rate"] == 0.5
    assert churn["quality"]["realised_accuracy"]["windows"] == 1
    assert {t["team"] for t in data["trends"]} == {"ops", "risk"}


# -- the CLI ----------------------------------------------------------------------------------


def _cli(ws: Workspace, *args: str) -> Result:
    return CliRunner().invoke(cli, ["scorecard", *args], env=env_for(ws.config))


def test_cli_prints_the_table_and_json(history: Workspace) -> None:
    res = _cli(history, "--team", "risk")
    assert res.exit_code == 0, res.output
    assert "churn" in res.output and "upsell" in res.output
    assert "2/4" in res.output  # churn's failed of changes
    out = _cli(history, "--model", "churn", "--since", "90d", "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    (churn,) = data["models"]
    assert churn["deployment_frequency"]["count"] == 3
    assert churn["time_to_restore"]["median_s"] == 3600


def test_cli_says_no_data_for_an_empty_period(history: Workspace) -> None:
    res = _cli(history, "--model", "churn", "--since", "1h")
    assert res.exit_code == 0, res.output
    assert "no alerts resolved" in res.output
    assert "no changes" in res.output


def test_cli_unknown_team_or_model_is_a_usage_error(history: Workspace) -> None:
    bad_team = _cli(history, "--team", "nobody")
    assert bad_team.exit_code == 2
    assert "team 'nobody'" in bad_team.output
    bad_model = _cli(history, "--model", "nothing")
    assert bad_model.exit_code == 2
    assert "nothing" in bad_model.output
    bad_since = _cli(history, "--since", "90")
    assert bad_since.exit_code == 2
    assert "has no unit" in bad_since.output


def test_scorecard_reads_straight_from_the_store(history: Workspace) -> None:
    with history.store.read() as conn:
        moves = conn.execute(
            sa.select(sa.func.count())
            .select_from(t.alias_history)
            .where(t.alias_history.c.alias == "production")
        ).scalar_one()
    assert moves == 5  # churn 1, 2, back to 1, 3; upsell 1: four deploys and one rollback
