"""The dashboard's eval, team and monitor-runs pages, served by a real server over a real store
(SQLite and PostgreSQL) filled through the real services: a gate run, deploys, monitor runs."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from ownloop import Config, Workspace
from ownloop.clock import FrozenClock
from ownloop.demo import log_predictions, make_churn_data, make_model
from ownloop.evaluation import FAIL, PASS, CheckResult
from ownloop.store import tables as t
from ownloop.ui import _runs_page
from ownloop.ui._eval_page import interval_groups, ordered
from tests.conftest import STORES, store_url
from tests.servers import running

DAY = timedelta(days=1)
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
NOW = T0 + 30 * DAY
HOSTILE = "<script>alert(1)</script>"

REPORT_SUITE: dict[str, Any] = {
    "level": 0.95,
    "min_slice_rows": 100,
    "bootstrap": {"resamples": 200, "seed": 1},
    "baseline": "production",
    "slices": [{"column": "plan"}],
    "checks": [
        {"metric": "roc_auc", "at_least": 0.5},
        {"metric": "accuracy", "at_least": 0.99, "name": f"accuracy {HOSTILE}"},
        {"type": "non_inferiority", "metric": "accuracy", "margin": 0.1, "slices": False},
    ],
}


@pytest.fixture(scope="module")
def models() -> tuple[Any, Any, pd.DataFrame]:
    train = make_churn_data(1500, seed=41)
    X, y = train.drop(columns="churned"), train["churned"]
    return make_model(max_iter=20).fit(X, y), make_model(max_iter=5, max_depth=2).fit(X, y), train


def _gate(ws: Workspace, ref: str, data: Path) -> None:
    ws.evaluations.evaluate(
        ref,
        {
            "datasets": {"holdout": {"path": str(data), "label": "churned"}},
            "checks": [{"type": "model_size", "at_most": 1000}],
        },
    )


def _alert(ws: Workspace, opened: datetime, minutes: float | None) -> None:
    """An alert row as the alert loop stores it (opened, and resolved after ``minutes``)."""
    resolved = None if minutes is None else opened + timedelta(minutes=minutes)
    with ws.store.write() as conn:
        conn.execute(
            t.alerts.insert().values(
                fingerprint=f"churn-{opened.timestamp()}",
                open_fingerprint=None if resolved else f"churn-{opened.timestamp()}",
                model="churn",
                version=2,
                team="risk",
                rule="dataset_drift",
                severity="page",
                state="resolved" if resolved else "firing",
                summary="drift share 0.6 above 0.3",
                details={},
                opened_at=opened,
                last_seen_at=opened,
                resolved_at=resolved,
            )
        )


def _script(config: Config, folder: Path, models: tuple[Any, Any, pd.DataFrame]) -> int:
    """risk owns churn: v1 promoted on day 1, v2 gated (the report run, failing) on day 2 and
    promoted on day 3; an alert resolved after 30 min (day 10) and one still open (day 25);
    two hours of churn@2's predictions (the second drifted), monitored per hour, plus a canary
    run of the second hour. ops owns ledger and deployed nothing. Returns the report run's id."""
    good, weak, train = models
    clock = FrozenClock(T0)
    data = folder / "holdout.parquet"
    make_churn_data(800, seed=42).to_parquet(data)
    with Workspace(config, clock=clock) as ws:
        ws.registry.add_team("risk", members=["tester"])
        ws.registry.add_team("ops", members=["tester"])
        for m in (good, weak):
            ws.registry.register(m, name="churn", owner="risk", reference=train, target="churned")
        ws.registry.register(good, name="ledger", owner="ops", reference=train, target="churned")
        clock.advance(days=1)
        _gate(ws, "churn@1", data)
        ws.deploy.set_production("churn", 1)
        clock.advance(days=1)
        suite = {**REPORT_SUITE, "datasets": {"holdout": {"path": str(data), "label": "churned"}}}
        report = ws.evaluations.evaluate("churn@2", suite)
        assert report.evaluation_id is not None
        clock.advance(days=1)
        _gate(ws, "churn@2", data)
        ws.deploy.deploy("churn@2", strategy="direct")
        _alert(ws, T0 + 10 * DAY, 30)
        _alert(ws, T0 + 25 * DAY, None)
        clock.advance(days=27)
        assert clock.now() == NOW
        start = NOW - 3 * timedelta(hours=1)
        quiet = make_churn_data(1200, seed=43).drop(columns="churned")
        drifted = make_churn_data(1200, seed=44, shift=1.0).drop(columns="churned")
        log_predictions(ws, "churn@2", quiet, start, step=timedelta(seconds=3), seed=1)
        log_predictions(
            ws, "churn@2", drifted, start + timedelta(hours=1), step=timedelta(seconds=3), seed=2
        )
        hour = timedelta(hours=1)
        ws.monitor.run("churn", window=hour, end=start + hour)
        ws.monitor.run("churn", window=hour, end=start + 2 * hour)
        ws.monitor.run("churn", window=hour, end=start + 2 * hour, arm="canary")
        return report.evaluation_id


@pytest.fixture(scope="module", params=STORES)
def scripted(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    models: tuple[Any, Any, pd.DataFrame],
) -> Iterator[tuple[Config, int]]:
    """The scripted history, built once per module and store."""
    folder = tmp_path_factory.mktemp("history")
    with store_url(request, folder) as url:
        config = Config(home=folder / "home", db_url_override=url, user="tester")
        yield config, _script(config, folder, models)


@pytest.fixture(scope="module")
def served(scripted: tuple[Config, int]) -> Iterator[tuple[Workspace, httpx.Client, int]]:
    """A real server on the scripted history (its clock at NOW) and a client for it."""
    config, eval_id = scripted
    with (
        Workspace(config, clock=FrozenClock(NOW)) as ws,
        running(ws) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield ws, client, eval_id


def _page(client: httpx.Client, path: str, status: int = 200, **params: str) -> str:
    r = client.get(path, params=params)
    assert r.status_code == status, r.text
    if status == 200:
        assert r.headers["content-type"].startswith("text/html")
    return r.text


def _section(page: str, heading: str) -> str:
    """The page's ``<section>`` whose ``<h2>`` starts with ``heading``."""
    m = re.search(rf"<h2>{re.escape(heading)}.*?</section>", page, re.S)
    assert m is not None, f"no section {heading!r}"
    return m.group(0)


def _rows(table_html: str, cls: str) -> list[str]:
    return re.findall(rf'<tr class="{cls}[^"]*"[^>]*>.*?</tr>', table_html, re.S)


# -- eval page ----------------------------------------------------------------------------------


def test_eval_page_lists_failures_first_with_figures(served: Any) -> None:
    ws, client, eval_id = served
    stored = ws.evaluations.get(eval_id)
    result = stored.result
    page = _page(client, f"/ui/evaluations/{eval_id}")
    checks = _section(page, "Checks")
    rows = _rows(checks, "check ")
    whole = [c for c in result.checks if c.slice is None]
    assert len(rows) == len(whole) == 3
    statuses = [re.search(r'class="check (\w+)"', r).group(1) for r in rows]  # type: ignore[union-attr]
    assert statuses[0] == "failed" and statuses.count("failed") == 1
    assert statuses == [str(c.status) for c in ordered(whole)]
    failed = next(c for c in whole if c.status == FAIL)
    assert failed.estimate is not None and failed.interval is not None
    assert f"{failed.estimate:.4g}" in rows[0] and f"{failed.interval[0]:.4g}" in rows[0]
    assert f"{failed.n:,}" in rows[0] and html.escape(failed.method) in rows[0]
    # the stored figures of every check and slice appear with their bound
    for c in result.checks:
        assert html.escape(c.name) in page
    # what it ran on, who ran it
    assert 'href="/ui/models/churn"' in page
    assert "churn@2" in page and "churn@1 (production)" in page
    assert result.suite_digest[:12] in page
    for digest in result.dataset_digests.values():
        assert digest[:12] in page
    assert "tester" in page and stored.created_at.isoformat() in page


def test_eval_page_shows_slices_and_the_comparison(served: Any) -> None:
    ws, client, eval_id = served
    result = ws.evaluations.get(eval_id).result
    page = _page(client, f"/ui/evaluations/{eval_id}")
    sliced = [c for c in result.checks if c.slice is not None]
    assert sliced, "the suite slices by plan"
    slices = _section(page, "Slices")
    assert len(_rows(slices, "check ")) == len(sliced)
    for c in sliced:
        assert html.escape(c.name) in slices
    comparison = _section(page, "Candidate against baseline")
    (c,) = [c for c in result.checks if c.candidate is not None]
    assert c.baseline is not None
    assert f"{c.candidate:.4g}" in comparison and f"{c.baseline:.4g}" in comparison


def test_eval_page_draws_one_shared_axis_per_figure(served: Any) -> None:
    ws, client, eval_id = served
    result = ws.evaluations.get(eval_id).result
    groups = {g.title: g for g in interval_groups(result.checks)}
    # every accuracy check with an interval (whole data and each judged slice) shares one axis
    accuracy = [
        c for c in result.checks if c.metric == "accuracy" and c.type == "metric" and c.interval
    ]
    assert len(accuracy) >= 2
    chart = str(groups["accuracy"].chart)
    assert chart.count('class="ci') == len(accuracy)
    assert set(groups) >= {"roc_auc", "accuracy: change", "accuracy: candidate and baseline"}
    intervals = _section(_page(client, f"/ui/evaluations/{eval_id}"), "Intervals")
    assert intervals.count("<svg") == len(groups)


def test_interval_groups_put_each_figure_on_its_own_axis_in_its_unit() -> None:
    """Hand-made results: a metric and its slices share an axis; a latency comparison's
    ratio has none of the ms its candidate and baseline are timed in; size is in MB."""

    def check(name: str, type_: str, status: str, **kw: Any) -> CheckResult:
        return CheckResult(name, type_, status, "", "m", 100, 0.95, **kw)

    checks = [
        check("acc", "metric", PASS, metric="accuracy", estimate=0.8, interval=(0.7, 0.9), bound=0.6),
        check("acc [a]", "metric", FAIL, metric="accuracy", slice="a", estimate=0.5,
              interval=(0.4, 0.55), bound=0.6),
        check("lat", "latency", PASS, estimate=1.1, interval=(1.0, 1.2), bound=2.0,
              candidate=7.0, candidate_interval=(6.5, 7.5), baseline=6.4,
              baseline_interval=(6.0, 6.8)),
        check("size", "model_size", PASS, estimate=0.64, bound=5.0),
    ]  # fmt: skip
    groups = {g.title: g for g in interval_groups(checks)}
    assert list(groups) == [
        "accuracy",
        "latency: ratio candidate / baseline",
        "latency: candidate and baseline",
        "model_size",
    ]
    assert [g.unit for g in groups.values()] == ["", "", "ms", "MB"]
    accuracy = str(groups["accuracy"].chart)
    assert accuracy.count('class="ci') == 2
    assert "ms" in str(groups["latency: candidate and baseline"].chart)


def test_eval_page_escapes_names_from_the_suite(served: Any) -> None:
    _, client, eval_id = served
    page = _page(client, f"/ui/evaluations/{eval_id}")
    assert HOSTILE not in page
    assert html.escape(HOSTILE) in page


def test_a_missing_gate_run_is_a_404_naming_it(served: Any) -> None:
    _, client, eval_id = served
    body = html.unescape(_page(client, f"/ui/evaluations/{eval_id + 1000}", 404))
    assert str(eval_id + 1000) in body


# -- team page ----------------------------------------------------------------------------------


def test_team_page_shows_the_scorecard_with_counts(served: Any) -> None:
    ws, client, _ = served
    page = _page(client, "/ui/teams/risk")
    card = _section(page, "Scorecard")
    team_row = _rows(card, "team-row")[0]
    assert "2 deploys" in team_row
    assert "2.0 d" in team_row and "2 versions" in team_row  # lead times of 1 and 3 days
    assert "0 of 2 changes" in team_row
    assert "30 min" in team_row and "1 alert" in team_row
    (model_row,) = _rows(card, "model-row")
    assert 'href="/ui/models/churn"' in model_row
    # the latest stored window's figures, next to the key metrics
    latest = ws.scorecard.card(team="risk", since=12 * 7 * DAY).model("churn").quality
    p99 = latest["latency_p99_s"]
    assert p99.windows >= 1 and p99.latest is not None
    assert f"{p99.latest:.4g} s" in model_row
    assert "no-deploys" not in page


def test_team_page_trend_has_a_point_per_week(served: Any) -> None:
    _, client, _ = served
    trend = _section(_page(client, "/ui/teams/risk"), "Trend")
    charts = re.findall(r"<svg[^>]*>.*?</svg>", trend, re.S)
    assert len(charts) == 7
    # a week without a figure is a gap; every week has a deploy count (0 or 1 here)
    deploys = charts[0]
    assert 'aria-label="deploys per week"' in deploys and 'data-windows="12"' in deploys
    assert deploys.count('<circle class="pt"') == 12
    # every chart spans the same twelve weeks (accuracy has two lines over them)
    windows = [re.search(r'data-windows="(\d+)"', c).group(1) for c in charts]  # type: ignore[union-attr]
    assert windows == ["12"] * 7


def test_team_page_lists_models_and_open_alerts(served: Any) -> None:
    _, client, _ = served
    page = _page(client, "/ui/teams/risk")
    assert 'href="/ui/models/churn"' in _section(page, "Models")
    alerts = _section(page, "Open alerts")
    assert len(_rows(alerts, "alert ")) == 1
    assert "drift share 0.6 above 0.3" in alerts


def test_team_with_no_deploys_says_so(served: Any) -> None:
    _, client, _ = served
    page = _page(client, "/ui/teams/ops")
    assert "deployed nothing to production in the last 12 weeks" in page
    assert "0 deploys" in page
    assert 'href="/ui/models/ledger"' in page
    assert "No open alerts for team ops" in page


def test_a_missing_team_is_a_404_naming_it(served: Any) -> None:
    _, client, _ = served
    body = html.unescape(_page(client, "/ui/teams/nosuchteam", 404))
    assert "nosuchteam" in body


# -- monitor runs page ----------------------------------------------------------------------------


def _runs(page: str) -> list[str]:
    return _rows(page, "run ")


def test_runs_page_lists_stored_runs_newest_first(served: Any) -> None:
    ws, client, _ = served
    page = _page(client, "/ui/runs")
    rows = _runs(page)
    stored = ws.monitor.runs("churn")
    assert len(rows) == len(stored) == 3
    ids = [int(re.search(r'data-run="(\d+)"', r).group(1)) for r in rows]  # type: ignore[union-attr]
    assert ids == [r.id for r in stored]
    ends = [r.window_end for r in stored]
    assert ends == sorted(ends, reverse=True)
    drifted = next(r for r in stored if r.summary["arms"] == ["stable", "canary"])
    row = rows[ids.index(drifted.id)]
    assert 'href="/ui/models/churn"' in row
    assert f"{drifted.rows:,}" in row
    assert f"{100 * drifted.summary['drift_share']:.1f}%" in row
    assert f'{100 * drifted.summary["accuracy"]:.1f}% <span class="sub">estimated' in row
    assert f"{100 * drifted.summary['error_rate']:.1f}%" in row
    assert drifted.window_start.isoformat() in row and drifted.window_end.isoformat() in row


def test_runs_page_filters_by_arm_version_and_time(served: Any) -> None:
    _, client, _ = served
    (canary,) = _runs(_page(client, "/ui/runs", arm="canary"))
    assert "canary" in canary and "no_data" in canary
    assert len(_runs(_page(client, "/ui/runs", arm="default"))) == 2
    assert len(_runs(_page(client, "/ui/runs", model="churn", version="2"))) == 3
    none = _page(client, "/ui/runs", model="churn", version="1")
    assert not _runs(none)
    assert "No monitor runs stored that match this filter" in none
    assert "ownloop monitor churn" in none
    since = (NOW - timedelta(minutes=90)).strftime("%Y-%m-%dT%H:%M")
    later = _runs(_page(client, "/ui/runs", since=since))
    assert len(later) == 2 and all((NOW - timedelta(hours=1)).isoformat() in r for r in later)
    assert len(_runs(_page(client, "/ui/runs", since="90m"))) == 2
    assert len(_runs(_page(client, "/ui/runs", until=since))) == 1
    # a day alone: from its first moment, up to its last
    day = NOW.date().isoformat()
    assert len(_runs(_page(client, "/ui/runs", since=day, until=day))) == 3
    # the form keeps what was asked
    page = _page(client, "/ui/runs", arm="canary", model="churn")
    assert '<option value="canary" selected>' in page and 'value="churn"' in page


def test_runs_page_pages_keep_the_filter(served: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, client, _ = served
    monkeypatch.setattr(_runs_page, "PAGE_SIZE", 2)
    first = _page(client, "/ui/runs", model="churn")
    assert len(_runs(first)) == 2
    assert 'href="/ui/runs?model=churn&amp;page=2"' in first and 'rel="prev"' not in first
    second = _page(client, "/ui/runs", model="churn", page="2")
    assert len(_runs(second)) == 1
    assert 'href="/ui/runs?model=churn"' in second and 'rel="next"' not in second
    assert "No runs on page 9" in _page(client, "/ui/runs", page="9")


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("version", "two", "is not a whole number"),
        ("version", "0", "must be at least 1"),
        ("page", "-1", "is not a whole number"),
        ("arm", "blue", "is not one of default, stable, canary, shadow"),
        ("since", "yesterday", "is not a time; write an ISO 8601 date"),
        ("until", "2026-13-01", "is not a time"),
        ("since", "0d", "must be positive"),
        ("until", "9999-12-31", "is out of range"),
        ("since", "0001-01-01T00:00+14:00", "is out of range"),
        ("model", "../etc", "is not allowed"),
    ],
)
def test_bad_filters_are_a_400_naming_the_value(
    served: Any, field: str, value: str, says: str
) -> None:
    _, client, _ = served
    body = html.unescape(_page(client, "/ui/runs", 400, **{field: value}))
    assert value in body and says in body


def test_since_after_until_is_a_400(served: Any) -> None:
    _, client, _ = served
    body = _page(client, "/ui/runs", 400, since="2026-04-02", until="2026-04-01")
    assert "is not before until" in html.unescape(body)


def test_no_runs_says_so_and_how_to_store_one(ws: Workspace) -> None:
    with running(ws) as url, httpx.Client(base_url=url, timeout=60) as client:
        page = _page(client, "/ui/runs")
    assert not _runs(page)
    assert "No monitor runs stored." in page
    assert "ownloop monitor MODEL" in page


# -- every page -----------------------------------------------------------------------------------


def test_pages_keep_to_the_content_security_policy(served: Any) -> None:
    """No inline style or script and no event handlers: the policy would block them."""
    _, client, eval_id = served
    for path in (f"/ui/evaluations/{eval_id}", "/ui/teams/risk", "/ui/teams/ops", "/ui/runs"):
        page = _page(client, path)
        assert not re.search(r"\sstyle\s*=|<style|\son\w+\s*=", page, re.I), path
        scripts = re.findall(r"<script[^>]*>", page)
        assert scripts and all('src="/ui/static/' in s for s in scripts), path
