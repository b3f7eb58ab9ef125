"""The models page, the model page and the feature drill-down, rendered by a real server over a
real store filled through the real services (monitor windows over a real prediction log)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from markupsafe import escape

from ownloop import Config, Workspace
from ownloop.access import Actor
from ownloop.clock import FrozenClock
from ownloop.demo import log_predictions, make_churn_data, make_model
from ownloop.deploy import Guardrail, Outcome, Rollout, StepAnalysis
from ownloop.predlog import LABEL_SCHEMA, write_labels
from tests.conftest import STORES, store_url
from tests.servers import running

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
WINDOWS = 3  # hours monitored, one window each; the last one drifted
LABELLED = 0.3  # the share of predictions whose label arrives
# a feature name a page must show as text, never as markup
HOSTILE = '<img src=x>"tenure"&\''
PLAIN = "tenure_months"


def _frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    return make_churn_data(n, seed=seed, shift=shift).rename(columns={PLAIN: HOSTILE})


@pytest.fixture(scope="module", params=STORES)
def history(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workspace]:
    """churn (team risk, the caller a member) with three hourly windows monitored, the last
    drifted and alerting; quiet (team ml) registered and never monitored."""
    folder = tmp_path_factory.mktemp("pages")
    with store_url(request, folder) as url:
        config = Config(home=folder / "home", db_url_override=url, user="tester")
        with Workspace(config, clock=FrozenClock(T0 + timedelta(hours=WINDOWS))) as ws:
            _fill(ws)
            yield ws


def _fill(ws: Workspace) -> None:
    ws.registry.add_team("risk", members=["tester"])
    ws.registry.add_team("ml", members=["someone"])
    train = _frame(1500, seed=11)
    model = make_model(max_iter=20).fit(train.drop(columns="churned"), train["churned"])
    ws.registry.register(model, name="churn", owner="risk", reference=train, target="churned")
    ws.deploy.set_production("churn", 1, force=True, reason="set up")
    ws.registry.register(model, name="quiet", owner="ml", reference=train, target="churned")
    rng = np.random.default_rng(5)
    for h in range(WINDOWS):
        shift = 1.0 if h == WINDOWS - 1 else 0.0
        frame = _frame(800, seed=30 + h, shift=shift)
        start = T0 + timedelta(hours=h)
        logged = log_predictions(
            ws, "churn@1", frame.drop(columns="churned"), start, step=timedelta(seconds=4), seed=h
        )
        picked = np.flatnonzero(rng.random(len(frame)) < LABELLED)
        _labels(
            ws,
            logged.column("prediction_id").take(picked),
            frame["churned"].to_numpy()[picked],
            start,
        )
    for h in range(WINDOWS):
        ws.monitor.run("churn", window=timedelta(hours=1), end=T0 + timedelta(hours=h + 1))
    ws.alerts.set_rule("churn", "dataset_drift", for_windows=1)
    ws.alerts.evaluate(["churn"])


def _labels(ws: Workspace, ids: pa.Array, labels: np.ndarray, start: datetime) -> None:
    """Labels for ``ids``, arrived within their hour."""
    n = len(ids)
    table = pa.table(
        {
            "prediction_id": ids,
            "label": [str(v) for v in labels],
            "label_value": labels.astype(float),
            "labeled_at": [start + timedelta(minutes=59)] * n,
            "source": ["test"] * n,
            "weight": pa.nulls(n, pa.float64()),
        },
        schema=LABEL_SCHEMA,
    )
    write_labels(ws.config.predictions_dir, "churn", table)


@pytest.fixture(scope="module")
def base(history: Workspace) -> Iterator[str]:
    with running(history, log_predictions=False) as url:
        yield url


def get(base: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(base + path, params=params, timeout=60)


def section(page: str, name: str) -> str:
    """The HTML of ``<section id=name>``."""
    found = re.search(rf'<section id="{name}">(.*?)</section>', page, re.S)
    assert found is not None, f"no section {name}"
    return found.group(1)


def points(svg_html: str) -> int:
    return len(re.findall(r'<circle class="pt"', svg_html))


# -- the models page -----------------------------------------------------------------------------


def test_models_page_lists_every_model_with_owner_production_and_trends(base: str) -> None:
    r = get(base, "/")
    assert r.status_code == 200
    page = r.text
    assert '<a href="/ui/models/churn">churn</a>' in page
    assert '<a href="/ui/models/quiet">quiet</a>' in page
    assert '<a href="/ui/teams/risk">risk</a>' in page
    assert '<a href="/ui/teams/ml">ml</a>' in page
    churn = page[page.index("/ui/models/churn") : page.index("/ui/models/quiet")]
    assert "v1" in churn  # production
    # four sparklines for churn, each with a point at its last value
    assert len(re.findall(r'<svg [^>]*class="spark"', churn)) == 4
    # the headline says which accuracy it is
    assert re.search(r"(estimated|realised)</span>", churn)


def test_models_page_shows_open_alerts_with_the_worst_severity(
    base: str, history: Workspace
) -> None:
    opened = history.alerts.list(model="churn", open_only=True)
    assert opened, "the drifted window opened an alert"
    page = get(base, "/").text
    churn = page[page.index("/ui/models/churn") : page.index("/ui/models/quiet")]
    assert f"{len(opened)} (" in churn


def test_mine_filter_keeps_the_callers_teams_and_names_them(base: str) -> None:
    page = get(base, "/", mine="1").text
    assert "your teams (risk)" in page
    assert "/ui/models/churn" in page
    assert "/ui/models/quiet" not in page


def test_team_filter_keeps_one_team(base: str) -> None:
    page = get(base, "/", team="ml").text
    assert "/ui/models/quiet" in page
    assert "/ui/models/churn" not in page


def test_bad_filters_answer_400(base: str) -> None:
    assert get(base, "/", team="../etc").status_code == 400
    assert get(base, "/", team="ml", mine="1").status_code == 400
    missing = get(base, "/", team="nosuch")
    assert missing.status_code == 404
    assert "nosuch" in missing.text


# -- the model page ------------------------------------------------------------------------------


def test_model_page_charts_have_one_point_per_window(base: str) -> None:
    r = get(base, "/ui/models/churn")
    assert r.status_code == 200
    charts = section(r.text, "charts")
    figures = re.findall(r"<figure.*?</figure>", charts, re.S)
    captions = [re.search(r'data-chart="(.*?)"', f).group(1) for f in figures]  # type: ignore[union-attr]
    assert captions == [
        "accuracy",
        "latency",
        "error rate",
        "cost per 1,000 predictions",
        "drift share",
        "confidence",
    ]
    by = dict(zip(captions, figures, strict=True))
    assert points(by["accuracy"]) == 2 * WINDOWS  # estimated and realised
    assert '<path class="band"' in by["accuracy"]
    assert "realised accuracy: label coverage" in charts
    assert points(by["latency"]) == 2 * WINDOWS  # p50 and p99
    for name in ("error rate", "cost per 1,000 predictions", "drift share", "confidence"):
        assert points(by[name]) == WINDOWS, name
    assert 'data-windows="3"' in by["drift share"]


def test_model_page_range_and_arm_are_checked(base: str) -> None:
    assert get(base, "/ui/models/churn", range="7d").status_code == 200
    r = get(base, "/ui/models/churn", range="2y")
    assert r.status_code == 400
    assert "1d, 7d, 30d" in r.text
    assert get(base, "/ui/models/churn", arm="everyone").status_code == 400


def test_model_page_feature_table_is_sortable_by_effect_and_escapes_names(base: str) -> None:
    page = get(base, "/ui/models/churn").text
    drift = section(page, "drift")
    assert '<table class="sortable drift">' in drift
    scores = [float(s) for s in re.findall(r'<td class="score" data-sort="([^"]+)">', drift)]
    assert len(scores) >= 5
    assert scores == sorted(scores, reverse=True)  # largest effect first
    # the hostile feature name is text: escaped in the cell and url-quoted in the link
    assert HOSTILE not in page
    assert str(escape(HOSTILE)) in drift
    assert f"drift?feature={quote(HOSTILE, safe='')}" in drift.replace("&amp;", "&")
    # the drifted feature is marked
    assert '<tr class="drifted">' in drift


def test_model_page_sections_and_forms(base: str, history: Workspace) -> None:
    page = get(base, "/ui/models/churn").text
    for name in ("rollout", "charts", "predictions", "drift", "alerts", "rollback", "versions"):
        section(page, name)
    assert "No rollout yet" in section(page, "rollout")
    assert "<svg" in section(page, "predictions")  # the newest window's prediction bins
    alerts = section(page, "alerts")
    opened = history.alerts.list(model="churn", open_only=True)
    assert opened
    for alert in opened:
        assert f'action="/ui/models/churn/alerts/{alert.id}/resolve"' in alerts
        # only a firing alert can be acknowledged
        ack = f'action="/ui/models/churn/alerts/{alert.id}/ack"' in alerts
        assert ack == (alert.state == "firing")
    assert 'name="note" required' in alerts
    assert 'name="csrf"' in alerts
    assert 'method="get"' not in page.lower()
    versions = section(page, "versions")
    assert "v1" in versions
    assert "No rollback check stored" in section(page, "rollback")
    assert "style=" not in page
    assert "<script>" not in page


def test_model_page_without_runs_says_so(base: str) -> None:
    page = get(base, "/ui/models/quiet").text
    assert "No monitor runs stored for quiet yet: run 'ownloop monitor quiet'" in page
    assert "No feature drift stored for quiet yet" in page
    assert '<circle class="pt"' not in page  # nothing is drawn from nothing


def test_missing_model_is_404_naming_it(base: str) -> None:
    r = get(base, "/ui/models/nosuch")
    assert r.status_code == 404
    assert "nosuch" in r.text
    hostile = get(base, "/ui/models/" + quote("<b>x</b>", safe=""))
    assert hostile.status_code in (400, 404)
    assert "<b>x</b>" not in hostile.text


# -- the feature page ----------------------------------------------------------------------------


def test_feature_page_draws_score_and_p_value_per_window_and_histograms(base: str) -> None:
    r = get(base, "/ui/models/churn/drift", feature="monthly_charges")
    assert r.status_code == 200
    over = section(r.text, "over-time")
    assert points(over) == 2 * WINDOWS  # the score and the p-value, one point per window
    hist = section(r.text, "histogram")
    assert hist.count('class="bin ref"') > 0
    assert "Earlier windows" in hist


def test_feature_page_escapes_a_hostile_feature_name(base: str) -> None:
    r = get(base, "/ui/models/churn/drift", feature=HOSTILE)
    assert r.status_code == 200
    assert HOSTILE not in r.text
    assert str(escape(HOSTILE)) in r.text


def test_feature_page_of_the_prediction(base: str, history: Workspace) -> None:
    latest = history.monitor.latest_results("churn")[0][1]
    output = next(x.name for x in latest if x.kind == "prediction_drift")
    r = get(base, "/ui/models/churn/drift", feature=output, kind="prediction_drift")
    assert r.status_code == 200
    assert points(section(r.text, "over-time")) >= WINDOWS


def test_missing_feature_is_404_naming_the_known_ones(base: str) -> None:
    r = get(base, "/ui/models/churn/drift", feature="nosuch")
    assert r.status_code == 404
    assert "nosuch" in r.text
    assert "monthly_charges" in r.text
    assert get(base, "/ui/models/churn/drift").status_code == 400
    assert get(base, "/ui/models/churn/drift", feature="x", kind="bogus").status_code == 400


# -- an empty store ------------------------------------------------------------------------------


@pytest.fixture
def empty_base(config: Config) -> Iterator[str]:
    with Workspace(config) as ws, running(ws, log_predictions=False) as url:
        yield url


def test_empty_store_says_there_are_no_models_and_how_to_add_one(empty_base: str) -> None:
    page = get(empty_base, "/").text
    assert "No models yet" in page
    assert "ownloop register churn" in page
    assert "ownloop monitor churn" in page


def test_mine_without_teams_says_so(config: Config) -> None:
    with Workspace(config, actor=Actor(name="loner", admin=True)) as ws:
        ws.registry.add_team("risk")
        with running(ws, log_predictions=False) as url:
            page = get(url, "/", mine="1").text
    assert "You (loner) belong to no team" in page


# -- an active rollout ---------------------------------------------------------------------------


def _passing_step(rollout: Rollout, now: datetime, looks: int) -> StepAnalysis:
    guard = Guardrail(
        name="error_rate",
        outcome=Outcome.PASS,
        stable=0.003,
        candidate=0.004,
        difference=0.001,
        lower=-0.002,
        upper=0.006,
        bound=0.01,
        n_stable=1890,
        n_candidate=812,
        min_samples=500,
        method="sequential difference of proportions",
        text="error rate canary 0.4% vs stable 0.3% <within> the allowed +1.0 pt",
    )
    return StepAnalysis(
        outcome=Outcome.PASS,
        at=now,
        window_start=now - timedelta(minutes=10),
        window_end=now,
        arm="canary",
        n_stable=1890,
        n_candidate=812,
        guardrails=(guard,),
        decided_by=("error_rate",),
        summary="every guardrail passed with its minimum sample",
        looks=looks,
    )


@pytest.fixture
def rolling(config: Config, tmp_path: Path) -> Iterator[str]:
    """churn@1 in production and churn@2 in canary at its second step (25%), a step analysed."""
    with Workspace(config, clock=FrozenClock(T0)) as ws:
        ws.deploy.analyser = _passing_step
        ws.registry.add_team("risk", members=["tester"])
        train = make_churn_data(300, seed=3)
        model = make_model(max_iter=5).fit(train.drop(columns="churned"), train["churned"])
        for _ in range(2):
            ws.registry.register(
                model, name="churn", owner="risk", reference=train, target="churned"
            )
        ws.deploy.set_production("churn", 1, force=True, reason="set up")
        holdout = tmp_path / "holdout.parquet"
        train.to_parquet(holdout)
        gate = {
            "datasets": {"holdout": {"path": str(holdout), "label": "churned"}},
            "checks": [{"type": "model_size", "at_most": 1000}],
        }
        ws.evaluations.evaluate("churn@2", gate)
        ws.deploy.deploy("churn@2", steps=(5, 25, 100), min_samples=100)
        ws.deploy.tick()  # pending -> canary 5%
        ws.deploy.tick()  # the step passes -> canary 25%
        with running(ws, log_predictions=False) as url:
            yield url


def test_model_page_shows_the_active_rollout_its_analysis_and_its_forms(rolling: str) -> None:
    page = get(rolling, "/ui/models/churn").text
    rollout = section(page, "rollout")
    assert "rollout of <b>v2</b> against stable v1" in rollout
    assert "step 2 of 3" in rollout
    assert "steps 5%, 25%, 100%;" in rollout
    assert "candidate share <b>25%</b>, stable 75%" in rollout
    assert "every guardrail passed with its minimum sample" in rollout
    assert "n stable 1890, n canary 812" in rollout
    assert "decided by error_rate" in rollout
    assert "&lt;within&gt;" in rollout  # stored text is escaped
    assert 'action="/ui/models/churn/promote"' in rollout
    assert 'action="/ui/models/churn/abort"' in rollout
    assert 'name="reason" required' in rollout
    versions = section(page, "versions")
    assert re.search(r'<a href="/ui/evaluations/\d+">passed</a>', versions)


def test_models_page_shows_the_rollout_state(rolling: str) -> None:
    page = get(rolling, "/").text
    assert "v2 canary, step 2/3, 25% of traffic" in page


def test_done_message_after_an_action_is_shown_as_text(base: str) -> None:
    page = get(base, "/ui/models/churn", done="alert 1 <b>acknowledged</b>").text
    assert '<p class="done" role="status">alert 1 &lt;b&gt;acknowledged&lt;/b&gt;</p>' in page


def test_acknowledging_from_the_page_changes_the_alert_in_the_store(
    base: str, history: Workspace
) -> None:
    firing = [a for a in history.alerts.list(model="churn", open_only=True) if a.state == "firing"]
    alert = firing[0]
    with httpx.Client(base_url=base, timeout=60) as browser:
        page = browser.get("/ui/models/churn").text
        form = re.search(
            rf'<form method="post" action="/ui/models/churn/alerts/{alert.id}/ack".*?</form>',
            page,
            re.S,
        )
        assert form is not None
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.group(0))
        assert csrf is not None
        r = browser.post(
            f"/ui/models/churn/alerts/{alert.id}/ack",
            data={"csrf": csrf.group(1)},
            headers={"Origin": base},
        )
        assert r.status_code == 303
        assert r.headers["location"] == "/ui/models/churn?done=acknowledged"
        after = browser.get(r.headers["location"]).text
    assert history.alerts.get(alert.id).state == "acknowledged"
    assert "Alert acknowledged:" in after
    assert f'action="/ui/models/churn/alerts/{alert.id}/ack"' not in section(after, "alerts")
