"""The dashboard's guards, through a real uvicorn server on 127.0.0.1 and a real store: sessions
from tokens, CSRF and Origin on every POST, the Host check, the browser headers, HTML errors, and
the POST actions changing the store only when every check passes."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from ownloop import Config, Workspace
from ownloop.alerts import AlertState
from ownloop.clock import FrozenClock
from ownloop.errors import AuthenticationError
from ownloop.store import tables as t
from ownloop.ui import _runs_page
from tests.servers import running

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
)
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


@dataclass
class World:
    config: Config
    alert_id: int
    secrets: dict[str, str]  # token name -> secret


@pytest.fixture
def world(ws: Workspace, churn_model: object, churn_data: pd.DataFrame) -> World:
    """churn (team risk) in production with one open alert; tokens for a risk viewer, a risk
    owner and a growth owner."""
    ws.registry.add_team("risk", members=["tester"])
    ws.registry.add_team("growth")
    ws.registry.register(
        churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
    )
    ws.deploy.set_production("churn", 1, force=True, reason="set up")
    ws.alerts.set_rule("churn", "latency_p99", for_windows=1)
    end = ws.clock.now().replace(microsecond=0) - timedelta(minutes=1)
    with ws.store.write() as conn:
        run = conn.execute(
            t.monitor_runs.insert().values(
                model="churn",
                version=1,
                window_start=end - timedelta(hours=1),
                window_end=end,
                rows=1000,
                status="ok",
                summary={"arms": ["stable", "canary"]},
                started_at=end,
                finished_at=end,
                run_by="test",
            )
        ).inserted_primary_key
        assert run is not None
        conn.execute(
            t.monitor_results.insert().values(
                run_id=int(run[0]),
                model="churn",
                version=1,
                window_end=end,
                kind="system",
                name="latency_p99_s",
                status="ok",
                value=3.0,
                n=1000,
            )
        )
    (alert,) = ws.alerts.evaluate()
    secrets = {
        name: ws.tokens.create(name, team=team, role=role).secret
        for name, team, role in (
            ("root", None, "admin"),
            ("risk-viewer", "risk", "viewer"),
            ("risk-owner", "risk", "owner"),
            ("growth-owner", "growth", "owner"),
        )
    }
    return World(config=ws.config, alert_id=alert.id, secrets=secrets)


@pytest.fixture
def auth_on(world: World) -> Iterator[tuple[Workspace, str]]:
    with Workspace(replace(world.config, auth=True)) as ws, running(ws) as url:
        yield ws, url


@pytest.fixture
def auth_off(world: World) -> Iterator[tuple[Workspace, str]]:
    with Workspace(world.config) as ws, running(ws) as url:
        yield ws, url


def browser(url: str, **headers: str) -> httpx.Client:
    """A client as a browser on the dashboard sends: the page's Origin on every request."""
    return httpx.Client(base_url=url, headers={"Origin": url, **headers}, timeout=60)


def csrf_of(c: httpx.Client) -> str:
    found = _CSRF.findall(c.get("/ui/login").text)
    assert found and found[0], "the login page carries the form token"
    return found[0]


def sign_in(c: httpx.Client, secret: str, next_: str = "/") -> httpx.Response:
    return c.post("/ui/login", data={"token": secret, "csrf": csrf_of(c), "next": next_})


def alert_state(ws: Workspace, alert_id: int) -> AlertState:
    return ws.alerts.get(alert_id, check=False).state


def audit_rows(ws: Workspace, *actions: str) -> list[Any]:
    with ws.store.read() as conn:
        query = sa.select(t.audit).where(t.audit.c.action.in_(actions)).order_by(t.audit.c.id)
        return list(conn.execute(query).all())


ACK = "/ui/models/churn/alerts/{}/ack"


# -- sessions ----------------------------------------------------------------------------------


def test_signing_in_sets_a_strict_httponly_cookie_and_stores_only_the_keys_hash(
    auth_on: tuple[Workspace, str], world: World
) -> None:
    ws, url = auth_on
    secret = world.secrets["risk-owner"]
    with browser(url) as c:
        r = sign_in(c, secret, next_="/ui/runs?model=churn")
        assert r.status_code == 303 and r.headers["location"] == "/ui/runs?model=churn"
        cookie = next(
            h for h in r.headers.get_list("set-cookie") if h.startswith("ownloop_session=")
        )
        flags = {f.strip().split("=")[0].lower() for f in cookie.split(";")[1:]}
        assert {"httponly", "path", "samesite", "max-age"} <= flags and "secure" not in flags
        assert "samesite=strict" in cookie.lower() and "path=/" in cookie.lower()
        key = c.cookies["ownloop_session"]
        assert len(key) >= 43  # 256 random bits, url-safe
        page = c.get("/ui/login")
        assert "token:risk-owner@risk" in page.text and 'action="/ui/logout"' in page.text
    with ws.store.read() as conn:
        (row,) = conn.execute(sa.select(t.ui_sessions)).all()
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    stored = " ".join(str(v) for v in row)
    assert key not in stored and secret not in stored
    (login,) = audit_rows(ws, "ui.login")
    assert login.actor == "token:risk-owner@risk"
    assert key not in str(tuple(login)) and secret not in str(tuple(login))


def test_signing_in_again_closes_the_browsers_previous_session(
    auth_on: tuple[Workspace, str], world: World
) -> None:
    ws, url = auth_on
    with browser(url) as c:
        assert sign_in(c, world.secrets["risk-viewer"]).status_code == 303
        first = c.cookies["ownloop_session"]
        assert sign_in(c, world.secrets["risk-owner"]).status_code == 303
        assert c.cookies["ownloop_session"] != first
        assert "token:risk-owner@risk" in c.get("/ui/login").text
    with ws.store.read() as conn:
        rows = conn.execute(sa.select(t.ui_sessions).order_by(t.ui_sessions.c.id)).all()
    assert [r.closed_at is not None for r in rows] == [True, False]


def test_a_bad_token_is_a_401_sign_in_page_and_no_session(
    auth_on: tuple[Workspace, str], world: World
) -> None:
    ws, url = auth_on
    with browser(url) as c:
        r = sign_in(c, world.secrets["risk-owner"][:-2] + "xx")
        assert r.status_code == 401 and "unknown, expired or revoked" in r.text
        assert "ownloop_session" not in c.cookies
        empty = c.post("/ui/login", data={"token": "", "csrf": csrf_of(c)})
        assert empty.status_code == 400 and "ownloop_session" not in c.cookies
    with ws.store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.ui_sessions)).scalar() == 0


def test_a_revoked_token_ends_its_sessions_in_every_process(
    auth_on: tuple[Workspace, str], world: World
) -> None:
    _, url = auth_on
    with browser(url) as c:
        assert sign_in(c, world.secrets["risk-viewer"]).status_code == 303
        assert "token:risk-viewer@risk" in c.get("/ui/login").text
        # another process (its own workspace on the same store) revokes the token
        with Workspace(world.config) as admin:
            admin.tokens.revoke("risk-viewer")
        deadline = datetime.now(UTC) + timedelta(seconds=60)  # a hang guard, not a timing
        while "token:risk-viewer@risk" in c.get("/ui/login").text:
            assert datetime.now(UTC) < deadline, "the revoked session still acts"
        page = c.get("/ui/runs")
        assert page.status_code == 303 and page.headers["location"].startswith("/ui/login?next=")


def test_a_session_never_outlives_its_token_nor_its_hours(world: World) -> None:
    clock = FrozenClock(datetime(2026, 6, 1, 8, 0, tzinfo=UTC))
    with Workspace(world.config) as ws:
        ws.tokens.clock = clock
        short = ws.tokens.create("short", team="risk", role="viewer", expires_in=timedelta(hours=1))
        opened = ws.tokens.open_session(short.secret, hours=12)
        assert opened.session.expires_at == clock.now() + timedelta(hours=1)  # the token's
        long = ws.tokens.open_session(world.secrets["risk-owner"], hours=2)
        assert long.session.expires_at == clock.now() + timedelta(hours=2)
        assert ws.tokens.session(long.key).actor.name == "token:risk-owner@risk"
        clock.advance(hours=2, seconds=1)
        for key in (opened.key, long.key):
            with pytest.raises(AuthenticationError, match="sign in again"):
                ws.tokens.session(key)


def test_signing_out_closes_the_session_for_good(
    auth_on: tuple[Workspace, str], world: World
) -> None:
    ws, url = auth_on
    with browser(url) as c:
        assert sign_in(c, world.secrets["risk-owner"]).status_code == 303
        key = c.cookies["ownloop_session"]
        out = c.post("/ui/logout", data={"csrf": csrf_of(c)})
        assert out.status_code == 303 and out.headers["location"] == "/ui/login"
        assert "ownloop_session" not in c.cookies
    with browser(url) as replay:  # the old cookie, sent again, is no session
        replay.cookies.set("ownloop_session", key)
        r = replay.get("/ui/runs")
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
    with ws.store.read() as conn:
        (row,) = conn.execute(sa.select(t.ui_sessions)).all()
    assert row.closed_at is not None
    assert [a.actor for a in audit_rows(ws, "ui.logout")] == ["token:risk-owner@risk"]


def test_without_a_session_pages_go_to_sign_in_with_a_local_next_and_posts_are_401(
    auth_on: tuple[Workspace, str], world: World
) -> None:
    ws, url = auth_on
    with browser(url) as c:
        r = c.get("/ui/runs?model=churn&page=2")
        assert r.status_code == 303
        assert r.headers["location"] == "/ui/login?next=%2Fui%2Fruns%3Fmodel%3Dchurn%26page%3D2"
        post = c.post(ACK.format(world.alert_id), data={"csrf": csrf_of(c)})
        assert post.status_code == 401 and post.headers["content-type"].startswith("text/html")
        assert "sign in" in post.text.lower()
        for hostile in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "x"):
            page = c.get("/ui/login", params={"next": hostile})
            assert 'name="next" value="/"' in page.text, hostile
            with browser(url) as fresh:
                r = sign_in(fresh, world.secrets["risk-viewer"], next_=hostile)
                assert r.status_code == 303 and r.headers["location"] == "/", hostile
    assert alert_state(ws, world.alert_id) is AlertState.FIRING


# -- CSRF, Origin, Host --------------------------------------------------------------------------


def test_a_post_without_the_sessions_csrf_token_is_403_and_changes_nothing(
    auth_on: tuple[Workspace, str], world: World
) -> None:
    ws, url = auth_on
    path = ACK.format(world.alert_id)
    with browser(url) as c:
        assert sign_in(c, world.secrets["risk-owner"]).status_code == 303
        for form in ({}, {"csrf": ""}, {"csrf": "x" * 43}, {"csrf": csrf_of(c) + "x"}):
            r = c.post(path, data=form)
            assert r.status_code == 403 and "CSRF" in r.text, form
            assert r.headers["content-type"].startswith("text/html")
        assert alert_state(ws, world.alert_id) is AlertState.FIRING
        done = c.post(path, data={"csrf": csrf_of(c), "note": "looking"})
        assert done.status_code == 303
        assert done.headers["location"] == "/ui/models/churn?done=acknowledged"
    assert alert_state(ws, world.alert_id) is AlertState.ACKNOWLEDGED
    (ack,) = audit_rows(ws, "alert.ack")
    assert ack.actor == "token:risk-owner@risk"


def test_without_a_session_the_double_submit_cookie_must_match_the_form(
    auth_off: tuple[Workspace, str], world: World
) -> None:
    ws, url = auth_off
    path = ACK.format(world.alert_id)
    with browser(url) as c:
        r = c.post(path, data={"csrf": "a" * 43})  # no cookie yet: a forged form
        assert r.status_code == 403
        token = csrf_of(c)  # the page set the cookie; the form carries its value
        cookie = c.cookies["ownloop_csrf"]
        assert token == cookie
        assert c.post(path, data={"csrf": "b" * 43}).status_code == 403
        assert alert_state(ws, world.alert_id) is AlertState.FIRING
        assert c.post(path, data={"csrf": token}).status_code == 303
    assert alert_state(ws, world.alert_id) is AlertState.ACKNOWLEDGED


def test_the_csrf_cookie_is_httponly_and_strict(auth_off: tuple[Workspace, str]) -> None:
    _, url = auth_off
    r = httpx.get(f"{url}/ui/login")
    (cookie,) = [h for h in r.headers.get_list("set-cookie") if h.startswith("ownloop_csrf=")]
    low = cookie.lower()
    assert "httponly" in low and "samesite=strict" in low and "path=/" in low


def test_a_post_from_another_origin_is_403_even_with_the_right_token(
    auth_on: tuple[Workspace, str], world: World
) -> None:
    ws, url = auth_on
    path = ACK.format(world.alert_id)
    with browser(url) as c:
        assert sign_in(c, world.secrets["risk-owner"]).status_code == 303
        csrf = csrf_of(c)
        cases: list[dict[str, str]] = [
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Origin": url.replace("http://", "https://")},
            {"Origin": "", "Referer": "http://evil.example/page"},
            {"Origin": ""},  # neither header
        ]
        for headers in cases:
            sent = {k: v for k, v in headers.items() if v}
            request = c.build_request("POST", path, data={"csrf": csrf})
            if "Origin" not in sent:
                del request.headers["Origin"]
            request.headers.update(sent)
            r = c.send(request)
            assert r.status_code == 403 and "Origin" in r.text, headers
        assert alert_state(ws, world.alert_id) is AlertState.FIRING
        request = c.build_request("POST", path, data={"csrf": csrf})
        del request.headers["Origin"]
        request.headers["Referer"] = f"{url}/ui/models/churn"  # no Origin: the Referer counts
        assert c.send(request).status_code == 303
    assert alert_state(ws, world.alert_id) is AlertState.ACKNOWLEDGED


def test_with_auth_off_only_loopback_hosts_or_allowed_ones_are_answered(
    world: World,
) -> None:
    config = replace(world.config, allowed_hosts=("dash.example",))
    with Workspace(config) as ws, running(ws) as url:
        port = url.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "dash.example"):
            r = httpx.get(f"{url}/ui/login", headers={"Host": host})
            assert r.status_code == 200, host
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", ""):
            for path in ("/ui/login", "/ui/static/app.css", "/"):
                r = httpx.get(f"{url}{path}", headers={"Host": host})
                assert r.status_code == 403, (host, path)
                assert "OWNLOOP_ALLOWED_HOSTS" in r.text
                assert r.headers["content-security-policy"] == CSP
        # the API is not the dashboard: a script on another name cannot read its cookies anyway
        assert httpx.get(f"{url}/v2/health/live", headers={"Host": "evil.example"}).is_success


def test_with_auth_on_the_session_guards_and_any_host_is_answered(
    auth_on: tuple[Workspace, str],
) -> None:
    _, url = auth_on
    r = httpx.get(f"{url}/ui/login", headers={"Host": "dash.internal.example"})
    assert r.status_code == 200


# -- headers and errors ------------------------------------------------------------------------


def test_every_dashboard_answer_carries_the_browser_headers(
    auth_on: tuple[Workspace, str], world: World
) -> None:
    _, url = auth_on
    with browser(url) as c:
        answers = {
            "login page": c.get("/ui/login"),
            "redirect": c.get("/ui/runs"),
            "static": c.get("/ui/static/app.css"),
            "missing static": c.get("/ui/static/nope.js"),
            "405": c.get("/ui/logout"),
            "401": c.post(ACK.format(world.alert_id), data={}),
            "unknown page": c.get("/ui/nothing/here"),
        }
        assert sign_in(c, world.secrets["risk-owner"]).status_code == 303
        answers["403"] = c.post(ACK.format(world.alert_id), data={})
        answers["404"] = c.post(ACK.format(999), data={"csrf": csrf_of(c)})
    for what, r in answers.items():
        h = r.headers
        assert h["content-security-policy"] == CSP, what
        assert h["x-content-type-options"] == "nosniff", what
        assert h["x-frame-options"] == "DENY", what
        assert h["referrer-policy"] == "same-origin", what
        assert h["cross-origin-opener-policy"] == "same-origin", what
        expected = "no-cache" if what == "static" else "no-store"
        assert h["cache-control"] == expected, what
    assert answers["static"].headers["content-type"].startswith("text/css")
    for what in ("missing static", "405", "401", "unknown page", "403", "404"):
        r = answers[what]
        assert r.headers["content-type"].startswith("text/html"), what
        assert "<!doctype html>" in r.text and "Traceback" not in r.text, what
    assert answers["405"].status_code == 405 and "GET is not allowed" in answers["405"].text
    assert answers["404"].status_code == 404 and "alert 999 does not exist" in answers["404"].text
    assert "token:risk-owner@risk" in answers["404"].text  # an error page still names the caller


def test_pages_and_the_static_files_have_no_inline_script_or_style(
    auth_off: tuple[Workspace, str], world: World
) -> None:
    _, url = auth_off
    with browser(url) as c:
        pages = [c.get("/ui/login"), c.post(ACK.format(999), data={"csrf": csrf_of(c)})]
    for page in pages:
        assert "<script src=" in page.text and "<style" not in page.text
        assert not re.search(r"<script(?![^>]*\bsrc=)", page.text)
        assert not re.search(r"\s(on[a-z]+|style)\s*=", page.text)
    js = httpx.get(f"{url}/ui/static/app.js")
    assert js.headers["content-type"].startswith("text/javascript")
    assert "eval(" not in js.text and "innerHTML" not in js.text


def test_an_unexpected_error_is_a_logged_500_page_without_details(
    auth_off: tuple[Workspace, str], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    _, url = auth_off

    def broken(view: object) -> str:
        raise RuntimeError("a secret detail of a bug")

    monkeypatch.setattr(_runs_page, "runs_page", broken)
    with caplog.at_level("ERROR", logger="ownloop.server"):
        r = httpx.get(f"{url}/ui/runs")
    assert r.status_code == 500 and r.headers["content-type"].startswith("text/html")
    assert "secret detail" not in r.text and "Traceback" not in r.text
    assert "server log" in r.text and r.headers["content-security-policy"] == CSP
    assert any("internal error on GET /ui/runs" in rec.getMessage() for rec in caplog.records)


def test_client_text_on_a_page_is_escaped(auth_off: tuple[Workspace, str]) -> None:
    _, url = auth_off
    hostile = '/"><script>alert(1)</script><a x="'
    page = httpx.get(f"{url}/ui/login", params={"next": hostile})
    assert page.status_code == 200
    assert "<script>alert" not in page.text and '"><' not in page.text.split("next")[1][:40]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


# -- the actions -------------------------------------------------------------------------------


def test_actions_need_their_fields_and_the_alert_must_be_the_models(
    auth_on: tuple[Workspace, str], world: World
) -> None:
    ws, url = auth_on
    with browser(url) as c:
        assert sign_in(c, world.secrets["risk-owner"]).status_code == 303
        csrf = csrf_of(c)
        resolve = f"/ui/models/churn/alerts/{world.alert_id}/resolve"
        r = c.post(resolve, data={"csrf": csrf, "note": "  "})
        assert r.status_code == 400 and "needs a note" in r.text
        r = c.post("/ui/models/churn/abort", data={"csrf": csrf})
        assert r.status_code == 400 and "needs a reason" in r.text
        assert alert_state(ws, world.alert_id) is AlertState.FIRING
        r = c.post(resolve, data={"csrf": csrf, "note": "restarted the pods"})
        assert r.status_code == 303
        assert r.headers["location"] == "/ui/models/churn?done=resolved"
    assert alert_state(ws, world.alert_id) is AlertState.RESOLVED


def test_an_alert_is_reached_only_under_its_own_models_path(
    auth_on: tuple[Workspace, str], world: World
) -> None:
    ws, url = auth_on
    with browser(url) as c:  # an admin, whom no owner check stops
        assert sign_in(c, world.secrets["root"]).status_code == 303
        r = c.post(f"/ui/models/upsell/alerts/{world.alert_id}/ack", data={"csrf": csrf_of(c)})
        assert r.status_code == 404 and f"has no alert {world.alert_id}" in r.text
    assert alert_state(ws, world.alert_id) is AlertState.FIRING


@pytest.mark.parametrize("who", ["risk-viewer", "growth-owner"])
def test_a_viewer_or_another_team_may_not_act_from_the_page(
    auth_on: tuple[Workspace, str], world: World, who: str
) -> None:
    ws, url = auth_on
    with browser(url) as c:
        assert sign_in(c, world.secrets[who]).status_code == 303
        csrf = csrf_of(c)
        for path, form in (
            (ACK.format(world.alert_id), {}),
            (f"/ui/models/churn/alerts/{world.alert_id}/resolve", {"note": "n"}),
            ("/ui/models/churn/promote", {}),
            ("/ui/models/churn/abort", {"reason": "r"}),
        ):
            r = c.post(path, data={"csrf": csrf, **form})
            assert r.status_code == 403 and "CSRF" not in r.text, (path, r.text)
    assert alert_state(ws, world.alert_id) is AlertState.FIRING
    assert audit_rows(ws, "alert.ack", "alert.resolve") == []
