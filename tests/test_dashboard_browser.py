"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, over a real
``ownloop serve`` process on a store filled by a scripted history (tests/dashboard_history.py).

Every page must load with no console error (a Content-Security-Policy violation is one), no
failed request and no response of 400 or more; its charts must hold one point per stored window.
Screenshots of every page land in test-output/dashboard/ under the repository root.
The browser, the server and the history are built once for the module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from ownloop import Config, Workspace
from ownloop.alerts import AlertState
from tests.conftest import env_for
from tests.dashboard_history import History, build_history
from tests.servers import free_port, start_process

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Response

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-output" / "dashboard"
CHROMIUM = "/usr/bin/chromium"
REQUIRE = "OWNLOOP_TEST_REQUIRE_BROWSER"
ZONE = "America/New_York"  # the viewer's zone: times on the page must not read UTC


def _missing_browser() -> str | None:
    """Why these tests cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module (Debian's; Playwright never downloads one)."""
    reason = _missing_browser()
    if reason is not None:
        if os.environ.get(REQUIRE):
            pytest.fail(f"browser tests are required here ({REQUIRE}=1) but {reason}")
        pytest.skip(f"browser tests skipped: {reason}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    return build_history(tmp_path_factory.mktemp("dashboard") / "home")


def _serve(config: Config, log: Path) -> Any:
    # the alert loop stays out of the way: the tests read and change alerts themselves
    env = {**env_for(config), "OWNLOOP_ALERT_TICK_S": "3600"}
    port = free_port()
    return port, start_process(env, port, log=log)


@pytest.fixture(scope="module")
def base_url(
    history: History, browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real ``ownloop serve`` over the history's store; killed and reaped in teardown."""
    with ExitStack() as stack:
        port, proc = _serve(history.config, tmp_path_factory.mktemp("logs") / "serve.log")
        stack.enter_context(proc)
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def empty_url(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``ownloop serve`` over an empty store."""
    home = tmp_path_factory.mktemp("empty") / "home"
    config = Config(home=home, user="builder")
    with Workspace(config):  # the migrations build the store
        pass
    with ExitStack() as stack:
        port, proc = _serve(config, home.parent / "serve.log")
        stack.enter_context(proc)
        yield f"http://127.0.0.1:{port}"


@dataclass
class Watched:
    """A page and everything that went wrong on it: console errors, uncaught exceptions,
    failed requests and responses of 400 or more."""

    page: Page
    problems: list[str] = field(default_factory=list)
    allowed: set[int] = field(default_factory=set)  # statuses a test expects

    def on_response(self, response: Response) -> None:
        if response.status >= 400 and response.status not in self.allowed:
            self.problems.append(f"{response.status} {response.request.method} {response.url}")

    def on_console(self, kind: str, text: str, where: str) -> None:
        expected = any(f"status of {s} " in text for s in self.allowed)
        if kind == "error" and not expected:
            self.problems.append(f"console {kind} at {where}: {text}")

    def goto(self, url: str) -> None:
        response = self.page.goto(url, wait_until="load")
        assert response is not None, url
        assert response.status < 400 or response.status in self.allowed, (
            url,
            response.status,
            self.page.content()[:2000],
        )

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def check(self) -> None:
        assert self.problems == [], self.problems


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Any]:
    """Pages of a fresh browser context each (no cookies); each one's problems are asserted
    to be none when the test ends."""
    with ExitStack() as stack:
        watched: list[Watched] = []

        def make() -> Watched:
            context = browser.new_context(timezone_id=ZONE, viewport={"width": 1280, "height": 900})
            stack.callback(context.close)
            page = context.new_page()
            page.set_default_timeout(60_000)  # a hang guard on a busy machine, never a measure
            w = Watched(page)
            page.on(
                "console",
                lambda m: w.on_console(m.type, m.text, m.location.get("url", "")),
            )
            page.on("pageerror", lambda e: w.problems.append(f"page error: {e}"))
            page.on(
                "requestfailed",
                lambda r: w.problems.append(f"failed {r.method} {r.url}: {r.failure}"),
            )
            page.on("response", w.on_response)
            watched.append(w)
            return w

        yield make
        for w in watched:
            w.check()


def _login(w: Watched, base: str, secret: str, then: str = "/ui/runs") -> None:
    """Sign in through the dashboard's own form, as a person would, landing on ``then``."""
    w.goto(f"{base}/ui/login?next={then}")
    w.page.locator("form input[name='token']").fill(secret)
    with w.page.expect_navigation():
        w.page.locator("form button[type='submit'], form input[type='submit']").first.click()
    assert "/ui/login" not in w.page.url, w.page.content()[:2000]


def _signed_in(new_page: Any, base: str, history: History, who: str = "owner") -> Watched:
    w: Watched = new_page()
    _login(w, base, history.tokens[who])
    return w


def _times_shown(w: Watched) -> None:
    """Times carry UTC on hover and are shown in the viewer's zone (by app.js)."""
    times = w.page.locator("time[datetime]")
    assert times.count() > 0
    first = times.first
    assert (first.get_attribute("title") or "").endswith("UTC")
    assert "UTC" not in first.inner_text()


def _model_links(w: Watched) -> set[str]:
    hrefs = w.page.locator("a[href^='/ui/models/']").evaluate_all(
        "els => els.map(e => e.getAttribute('href'))"
    )
    return {m.group(1) for h in hrefs if (m := re.fullmatch(r"/ui/models/([\w.-]+)", h))}


# -- pages ------------------------------------------------------------------------------------


def test_login_page_loads(base_url: str, new_page: Any) -> None:
    w = new_page()
    w.goto(f"{base_url}/ui/login")
    assert w.page.locator("form input[name='token']").count() == 1
    w.shot("login")


def test_models_page_lists_every_model_with_its_trend_lines(
    base_url: str, new_page: Any, history: History
) -> None:
    w = _signed_in(new_page, base_url, history)
    w.goto(f"{base_url}/")
    assert _model_links(w) == set(history.models)
    # the monitored model has a trend line per figure, each ending in its last point
    sparks = w.page.locator("svg.spark")
    assert sparks.count() >= 1
    for i in range(sparks.count()):
        assert sparks.nth(i).locator("circle.pt").count() == 1
    for team in set(history.models.values()):
        assert w.page.get_by_text(team).count() >= 1
    w.shot("models")


def test_my_teams_filter_lists_only_the_owners_models(
    base_url: str, new_page: Any, history: History
) -> None:
    w = _signed_in(new_page, base_url, history, "owner")
    w.goto(f"{base_url}/?mine=1")
    assert _model_links(w) == {m for m, team in history.models.items() if team == "risk"}
    w.shot("models-mine")
    g = _signed_in(new_page, base_url, history, "growth")
    g.goto(f"{base_url}/?mine=1")
    assert _model_links(g) == {m for m, team in history.models.items() if team == "growth"}


def _time_charts(w: Watched) -> list[dict[str, Any]]:
    return list(
        w.page.locator("svg.chart.time").evaluate_all(
            """els => els.map(e => ({
                windows: Number(e.dataset.windows), points: Number(e.dataset.points),
                circles: e.querySelectorAll('circle.pt').length,
                title: ((e.querySelector('text.chart-title') || {}).textContent || '').trim()}))"""
        )
    )


def test_model_page_charts_a_point_per_window(
    base_url: str, new_page: Any, history: History
) -> None:
    w = _signed_in(new_page, base_url, history)
    w.goto(f"{base_url}/ui/models/{history.monitored}")
    charts = {c["title"].lower(): c for c in _time_charts(w)}
    n = history.windows
    # one point per stored window and series: below max_points nothing is bucketed
    expected = {
        "accuracy": 2 * n,  # estimated in every window, and realised: labels came for each
        "latency": 2 * n,  # p50 and p99
        "error rate": n,
        "cost per 1,000 predictions": n,
        "drift share": n,
        "confidence": n,
    }
    for title, circles in expected.items():
        chart = charts.get(title)
        assert chart is not None, (title, sorted(charts))
        assert chart["windows"] == n and chart["points"] == n, chart
        assert chart["circles"] == circles, chart
    # the feature table: one row per feature, each with its drill-down
    for feature in history.features:
        assert w.page.locator(f"a[href*='drift?feature={feature}']").count() >= 1, feature
    assert w.page.locator("svg.chart.time path.band").count() >= 1  # the estimate's band
    _times_shown(w)
    w.shot("model")


def test_model_page_with_no_monitor_runs_says_so(
    base_url: str, new_page: Any, history: History
) -> None:
    w = _signed_in(new_page, base_url, history)
    w.goto(f"{base_url}/ui/models/{history.unmonitored}")
    assert w.page.locator("svg.chart.time circle.pt").count() == 0
    assert "no monitor runs stored" in w.page.inner_text("main").lower()
    w.shot("model-no-runs")


def test_feature_drill_down_draws_each_window_and_the_true_scale(
    base_url: str, new_page: Any, history: History
) -> None:
    w = _signed_in(new_page, base_url, history)
    w.goto(f"{base_url}/ui/models/{history.monitored}/drift?feature=tenure_months")
    charts = _time_charts(w)
    # the drift score and the p-value: one point per stored window each
    assert [c["circles"] for c in charts if c["windows"] == history.windows] == [
        history.windows
    ] * 2, charts
    hist = w.page.locator("#histogram svg").first  # the newest window's histogram
    ref = hist.locator("rect.bin.ref")
    cur = hist.locator("rect.bin.cur")
    assert ref.count() >= 2 and ref.count() == cur.count()
    # the axis shows values of the feature, not bin numbers: tenure runs to years of months
    labels = hist.locator("text.tick").evaluate_all("els => els.map(e => e.textContent)")
    ticks = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", " ".join(labels))]
    assert ticks and max(ticks) > ref.count(), ticks
    w.shot("feature")


def test_eval_page_shows_failures_first_on_a_shared_axis(
    base_url: str, new_page: Any, history: History
) -> None:
    w = _signed_in(new_page, base_url, history)
    w.goto(f"{base_url}/ui/evaluations/{history.failed_evaluation}")
    text = w.page.inner_text("main")
    assert "FAIL" in text.upper()
    assert w.page.locator("line.ci").count() >= 1
    w.shot("evaluation")


def test_team_page_shows_the_scorecard(base_url: str, new_page: Any, history: History) -> None:
    w = _signed_in(new_page, base_url, history)
    w.goto(f"{base_url}/ui/teams/risk")
    text = w.page.inner_text("main").lower()
    for figure in ("deployment frequency", "lead time", "change failure rate", "time to restore"):
        assert figure in text, figure
    w.shot("team")


def test_runs_page_lists_every_stored_run(base_url: str, new_page: Any, history: History) -> None:
    w = _signed_in(new_page, base_url, history)
    w.goto(f"{base_url}/ui/runs?model={history.monitored}")
    rows = w.page.locator("table tbody tr")
    assert rows.count() == history.windows
    _times_shown(w)
    w.shot("runs")


# -- acting from a page -----------------------------------------------------------------------


def _alert_state(history: History, alert_id: int) -> AlertState:
    with Workspace(history.config) as ws:
        return ws.alerts.get(alert_id).state


def _ack_button(w: Watched, history: History, alert_id: int) -> Any:
    action = f"/ui/models/{history.monitored}/alerts/{alert_id}/ack"
    return w.page.locator(f"form[action='{action}'] button[type='submit']")


def test_a_viewer_cannot_acknowledge_from_the_page(
    base_url: str, new_page: Any, history: History
) -> None:
    assert history.open_alerts, "the history opened no alert"
    alert_id = history.open_alerts[-1]
    before = _alert_state(history, alert_id)
    w = _signed_in(new_page, base_url, history, "viewer")
    w.allowed.add(403)
    w.goto(f"{base_url}/ui/models/{history.monitored}")
    button = _ack_button(w, history, alert_id)
    assert button.count() == 1
    with w.page.expect_response(lambda r: r.request.method == "POST") as posted:
        button.click()
    assert posted.value.status == 403
    w.page.wait_for_load_state()
    assert "permission" in w.page.inner_text("body").lower() or "403" in w.page.inner_text("body")
    assert _alert_state(history, alert_id) is before
    w.shot("ack-forbidden")


def test_acknowledging_an_alert_from_the_page_changes_the_store(
    base_url: str, new_page: Any, history: History
) -> None:
    assert history.open_alerts, "the history opened no alert"
    alert_id = history.open_alerts[-1]
    assert _alert_state(history, alert_id) is AlertState.FIRING
    w = _signed_in(new_page, base_url, history, "owner")
    w.goto(f"{base_url}/ui/models/{history.monitored}")
    with w.page.expect_navigation():
        _ack_button(w, history, alert_id).click()
    assert urlsplit(w.page.url).path == f"/ui/models/{history.monitored}"
    assert _alert_state(history, alert_id) is AlertState.ACKNOWLEDGED
    assert _ack_button(w, history, alert_id).count() == 0
    w.shot("ack-done")


# -- an empty store ---------------------------------------------------------------------------


def test_pages_over_an_empty_store_say_there_is_no_data(empty_url: str, new_page: Any) -> None:
    w = new_page()
    w.goto(f"{empty_url}/")
    assert _model_links(w) == set()
    assert "no " in w.page.inner_text("main").lower()
    w.shot("models-empty")
    w.goto(f"{empty_url}/ui/runs")
    assert w.page.locator("table tbody tr").count() == 0
    assert "no " in w.page.inner_text("main").lower()
    w.shot("runs-empty")
