"""Every route of the app, called anonymously and with each role, against one literal matrix.

The routes are read from the app itself, so a route added without a row here fails the suite.
API routes are called with a bearer token; dashboard routes as a browser calls them: signed in
with the token (a session cookie), with the form's CSRF token and the page's Origin.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import httpx
import pandas as pd
import pytest
from starlette.routing import Route

from ownloop import Config, Workspace
from ownloop.server import create_app
from tests.servers import running

CALLERS = ("anonymous", "viewer", "owner", "other owner", "admin")
ANY = ("ok",) * 5
TOKEN = ("401", "ok", "ok", "ok", "ok")
TEAM = ("401", "403", "ok", "403", "ok")
PAGE = ("login", "ok", "ok", "ok", "ok")  # anonymous: sent to the sign-in page (303)

# (method, path) -> the answer for each caller in CALLERS, with auth on: 401, 403, or "ok"
# (any status but 401 and 403). "owner" owns the model's team, "other owner" another team.
MATRIX: dict[tuple[str, str], tuple[str, ...]] = {
    ("GET", "/v2"): ANY,
    ("GET", "/v2/health/live"): ANY,
    ("GET", "/v2/health/ready"): ANY,
    ("GET", "/v2/models/{name}"): TOKEN,
    ("GET", "/v2/models/{name}/versions/{version}"): TOKEN,
    ("GET", "/v2/models/{name}/ready"): ANY,
    ("GET", "/v2/models/{name}/versions/{version}/ready"): ANY,
    ("POST", "/v2/models/{name}/infer"): TOKEN,
    ("POST", "/v2/models/{name}/versions/{version}/infer"): TOKEN,
    ("GET", "/models"): TOKEN,
    ("POST", "/models/{name}/predict"): TOKEN,
    ("POST", "/models/{name}/invocations"): TOKEN,
    ("POST", "/invocations"): TOKEN,
    ("POST", "/models/{name}/labels"): TEAM,
    ("GET", "/metrics"): TOKEN,
    ("GET", "/openapi.json"): TOKEN,
    ("GET", "/"): PAGE,
    ("GET", "/ui/models/{name}"): PAGE,
    ("GET", "/ui/models/{name}/drift"): PAGE,
    ("GET", "/ui/evaluations/{eval_id}"): PAGE,
    ("GET", "/ui/teams/{team}"): PAGE,
    ("GET", "/ui/runs"): PAGE,
    ("GET", "/ui/login"): ANY,
    ("POST", "/ui/login"): ANY,
    ("POST", "/ui/logout"): ANY,
    ("POST", "/ui/models/{name}/alerts/{alert_id}/ack"): TEAM,
    ("POST", "/ui/models/{name}/alerts/{alert_id}/resolve"): TEAM,
    ("POST", "/ui/models/{name}/promote"): TEAM,
    ("POST", "/ui/models/{name}/abort"): TEAM,
    ("GET", "/ui/static/{asset}"): ANY,
}
INFERENCE = {
    ("POST", "/v2/models/{name}/infer"),
    ("POST", "/v2/models/{name}/versions/{version}/infer"),
    ("POST", "/models/{name}/predict"),
    ("POST", "/models/{name}/invocations"),
    ("POST", "/invocations"),
}


def app_routes(ws: Workspace) -> set[tuple[str, str]]:
    """(method, path) of every route the app answers, read from the app, not from ROUTES."""
    app = create_app(ws, log_predictions=False)
    found = set()
    for route in app.routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":  # starlette adds HEAD to every GET
                found.add((method, route.path))
    return found


def _body(path: str, row: dict[str, Any]) -> dict[str, Any] | list[dict[str, Any]] | None:
    if path.endswith("/labels"):
        return [{"prediction_id": "0" * 26, "label": 1}]
    if path.endswith("/infer"):
        return {
            "inputs": [
                {
                    "name": k,
                    "shape": [1],
                    "datatype": "BYTES" if isinstance(v, str) else "FP64",
                    "data": [v],
                }
                for k, v in row.items()
            ]
        }
    if path.endswith("/predict") or path.endswith("/invocations"):
        return {"instances": [row]}
    return None


def _url(path: str) -> str:
    for key, value in (
        ("{name}", "churn"),
        ("{version}", "1"),
        ("{eval_id}", "1"),
        ("{alert_id}", "1"),
        ("{team}", "risk"),
        ("{asset}", "app.css"),
    ):
        path = path.replace(key, value)
    return path


def ui_route(path: str) -> bool:
    return path == "/" or path.startswith("/ui/")


def call(c: httpx.Client, route: tuple[str, str], row: dict[str, Any], token: str | None) -> str:
    method, path = route
    url = _url(path)
    if ui_route(path):
        return call_page(c, method, url, token)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    r = c.request(method, url, json=_body(path, row), headers=headers)
    if r.status_code == 401:
        assert r.headers["www-authenticate"].startswith('Bearer realm="ownloop"'), r.headers
    if r.status_code in (401, 403):
        assert set(r.json()) == {"error", "code"}, r.text
        if token is not None:
            assert token not in r.text
        return str(r.status_code)
    return "ok"


_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def call_page(c: httpx.Client, method: str, url: str, token: str | None) -> str:
    """A dashboard route as a browser calls it: a fresh browser, signed in with ``token`` (its
    session cookie names the caller), a POST carrying the page's CSRF token and Origin."""
    base = str(c.base_url).rstrip("/")
    with httpx.Client(base_url=base, headers={"Origin": base}) as browser:
        login = browser.get("/ui/login")
        csrf = _CSRF.findall(login.text)[0]
        if token is not None:
            signed = browser.post("/ui/login", data={"token": token, "csrf": csrf, "next": "/"})
            assert signed.status_code == 303 and "ownloop_session" in browser.cookies, signed.text
            csrf = _CSRF.findall(browser.get("/ui/login").text)[0]
        form = {"csrf": csrf, "note": "checked", "reason": "checked"}
        r = browser.request(method, url, data=form if method == "POST" else None)
        assert r.headers["content-security-policy"].startswith("default-src 'none'"), url
        if r.status_code == 303 and r.headers["location"].startswith("/ui/login?next="):
            return "login"
        if r.status_code in (401, 403):
            assert r.headers["content-type"].startswith("text/html"), r.text
            if token is not None:
                assert token not in r.text
            return str(r.status_code)
        return "ok"


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, churn_model: Any, churn_data: pd.DataFrame
) -> tuple[Config, dict[str, str | None], dict[str, Any]]:
    """churn (team risk) in production; a token for each caller but the anonymous one."""
    home = tmp_path_factory.mktemp("matrix") / "home"
    config = Config(home=home, user="tester")
    with Workspace(config) as ws:
        ws.registry.add_team("risk")
        ws.registry.add_team("growth")
        v = ws.registry.register(
            churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
        )
        ws.deploy.set_production("churn", v.version, force=True, reason="set up")
        tokens: dict[str, str | None] = {
            "anonymous": None,
            "viewer": ws.tokens.create("risk-viewer", team="risk", role="viewer").secret,
            "owner": ws.tokens.create("risk-owner", team="risk", role="owner").secret,
            "other owner": ws.tokens.create("growth-owner", team="growth", role="owner").secret,
            "admin": ws.tokens.create("root", team=None, role="admin").secret,
        }
    row: dict[str, Any] = churn_data.drop(columns="churned").head(1).to_dict("records")[0]
    return config, tokens, row


def answers(
    config: Config, tokens: dict[str, str | None], row: dict[str, Any]
) -> dict[tuple[str, str], tuple[str, ...]]:
    with Workspace(config) as ws:
        routes = app_routes(ws)
        with running(ws, log_predictions=False) as url, httpx.Client(base_url=url) as c:
            return {
                route: tuple(call(c, route, row, tokens[who]) for who in CALLERS)
                for route in sorted(routes)
            }


def test_every_route_of_the_app_has_a_row_in_the_matrix(
    setup: tuple[Config, dict[str, str | None], dict[str, Any]],
) -> None:
    with Workspace(setup[0]) as ws:
        assert app_routes(ws) == set(MATRIX)


def test_with_auth_each_caller_gets_exactly_the_matrix(
    setup: tuple[Config, dict[str, str | None], dict[str, Any]],
) -> None:
    config, tokens, row = setup
    got = answers(replace(config, auth=True), tokens, row)
    assert got == {route: MATRIX.get(route, ("missing",) * 5) for route in got}


def test_public_inference_opens_inference_and_nothing_else(
    setup: tuple[Config, dict[str, str | None], dict[str, Any]],
) -> None:
    config, tokens, row = setup
    got = answers(replace(config, auth=True, public_inference=True), tokens, row)
    expected = {
        route: ("ok", *MATRIX[route][1:]) if route in INFERENCE else MATRIX[route]
        for route in MATRIX
    }
    assert got == expected


def test_without_auth_on_loopback_no_token_is_the_local_admin_and_a_token_still_counts(
    setup: tuple[Config, dict[str, str | None], dict[str, Any]],
) -> None:
    config, tokens, row = setup
    got = answers(config, tokens, row)
    assert got == {route: ("ok", *MATRIX[route][1:]) for route in MATRIX}


def test_a_session_cookie_is_never_a_caller_on_api_routes(
    setup: tuple[Config, dict[str, str | None], dict[str, Any]],
) -> None:
    config, tokens, _ = setup
    with (
        Workspace(replace(config, auth=True)) as ws,
        running(ws, log_predictions=False) as url,
        httpx.Client(base_url=url, headers={"Origin": url}) as browser,
    ):
        csrf = _CSRF.findall(browser.get("/ui/login").text)[0]
        signed = browser.post("/ui/login", data={"token": tokens["admin"], "csrf": csrf})
        assert signed.status_code == 303
        assert "token:root" in browser.get("/ui/login").text  # signed in
        for path in ("/models", "/metrics", "/openapi.json", "/v2/models/churn"):
            r = browser.get(path)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["code"] == "unauthenticated"
