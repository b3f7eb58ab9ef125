"""Bearer tokens over HTTP: who the request acts as, 401 and 403 answers, refusal off loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from click.testing import CliRunner

from ownloop import Config, Workspace, __version__
from ownloop.access import Actor
from ownloop.cli import cli
from ownloop.clock import FrozenClock
from ownloop.errors import InvalidInputError
from ownloop.server import ROUTES, check_exposure, uvicorn_config
from ownloop.server._openapi import openapi
from tests.conftest import env_for
from tests.servers import running

CHALLENGE = 'Bearer realm="ownloop"'


@pytest.fixture
def risky(
    tmp_path: Path, churn_model: Any, churn_data: pd.DataFrame
) -> Iterator[tuple[Workspace, FrozenClock]]:
    """churn (team risk) in production on SQLite, teams risk and growth, a clock tests move."""
    clock = FrozenClock()
    with Workspace(Config(home=tmp_path / "home", user="tester"), clock=clock) as ws:
        ws.registry.add_team("risk")
        ws.registry.add_team("growth")
        v = ws.registry.register(
            churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
        )
        ws.deploy.set_production("churn", v.version, force=True, reason="set up")
        yield ws, clock


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _row(churn_data: pd.DataFrame) -> dict[str, Any]:
    row: dict[str, Any] = churn_data.drop(columns="churned").head(1).to_dict("records")[0]
    return row


def _label(c: httpx.Client, secret: str, pid: str) -> httpx.Response:
    return c.post(
        "/models/churn/labels", json=[{"prediction_id": pid, "label": 1}], headers=_bearer(secret)
    )


def test_a_label_post_runs_as_the_token_and_its_audit_row_names_it(
    risky: tuple[Workspace, FrozenClock], churn_data: pd.DataFrame
) -> None:
    ws, _ = risky
    secret = ws.tokens.create("ci", team="risk", role="owner").secret
    authed = replace(ws.config, auth=True)
    with (
        Workspace(authed, clock=ws.clock) as server_ws,
        running(server_ws) as url,
        httpx.Client(base_url=url, timeout=30) as c,
    ):
        row = {"instances": [_row(churn_data)]}
        r = c.post("/models/churn/predict", json=row, headers=_bearer(secret))
        assert r.status_code == 200, r.text
        pid = r.json()["prediction_ids"][0]
        r = _label(c, secret, pid)
        assert r.status_code == 200, r.text
        assert r.json()["stored"] == 1
    labelled = [e for e in ws.registry.audit_log(model="churn") if "label" in e.action]
    assert labelled, ws.registry.audit_log(model="churn")
    assert labelled[0].actor == "token:ci@risk"


def test_a_denial_is_reported_with_the_token_actor(
    risky: tuple[Workspace, FrozenClock],
) -> None:
    ws, _ = risky
    secret = ws.tokens.create("growth-ci", team="growth", role="owner").secret
    seen: list[tuple[Actor, str, str | None, str | None]] = []
    with Workspace(replace(ws.config, auth=True)) as server_ws:
        before = server_ws.acting.on_denied

        def denied(actor: Actor, action: str, team: str | None, target: str | None) -> None:
            seen.append((actor, action, team, target))
            if before is not None:
                before(actor, action, team, target)

        server_ws.acting.on_denied = denied
        with running(server_ws) as url, httpx.Client(base_url=url, timeout=30) as c:
            r = _label(c, secret, "0" * 26)
    assert r.status_code == 403, r.text
    assert r.json() == {
        "error": "'token:growth-ci@growth' may not label.write: it needs team 'risk'",
        "code": "permission_denied",
    }
    assert [(a.name, action, team, target) for a, action, team, target in seen] == [
        ("token:growth-ci@growth", "label.write", "risk", "churn")
    ]


@pytest.mark.parametrize("auth", [True, False], ids=["auth", "open-loopback"])
def test_bad_revoked_and_expired_tokens_are_401_with_a_challenge(
    risky: tuple[Workspace, FrozenClock], auth: bool
) -> None:
    ws, clock = risky
    revoked = ws.tokens.create("old", team="risk", role="owner").secret
    ws.tokens.revoke("old")
    expiring = ws.tokens.create("brief", team="risk", role="owner", expires_in=timedelta(hours=1))
    clock.advance(hours=2)
    good = ws.tokens.create("good", team="risk", role="viewer").secret
    presented = {
        "unknown": "Bearer olt_not-a-token",
        "revoked": f"Bearer {revoked}",
        "expired": f"Bearer {expiring.secret}",
        "not bearer": f"Basic {good}",
        "empty": "Bearer",
    }
    with (
        Workspace(replace(ws.config, auth=auth), clock=clock) as server_ws,
        running(server_ws) as url,
        httpx.Client(base_url=url, timeout=30) as c,
    ):
        assert c.get("/models", headers=_bearer(good)).status_code == 200
        for why, header in presented.items():
            r = c.get("/models", headers={"Authorization": header})
            assert r.status_code == 401, (why, r.text)
            assert r.headers["www-authenticate"] == f'{CHALLENGE}, error="invalid_token"', why
            assert set(r.json()) == {"error", "code"} and r.json()["code"] == "unauthenticated"
            assert header.partition(" ")[2] not in r.text or not header.partition(" ")[2], why
        twice = c.get("/models", headers=[("Authorization", f"Bearer {good}")] * 2)
        assert twice.status_code == 401 and "send exactly one" in twice.text
        missing = c.get("/models")
        if auth:
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == CHALLENGE
            assert "Authorization: Bearer" in missing.json()["error"]
        else:
            assert missing.status_code == 200  # the local admin, as before tokens


def test_a_transfer_moves_who_may_post_labels_at_once(
    risky: tuple[Workspace, FrozenClock],
) -> None:
    ws, _ = risky
    risk = ws.tokens.create("risk-ci", team="risk", role="owner").secret
    growth = ws.tokens.create("growth-ci", team="growth", role="owner").secret
    pid = "0" * 26
    with (
        Workspace(replace(ws.config, auth=True), clock=ws.clock) as server_ws,
        running(server_ws) as url,
        httpx.Client(base_url=url, timeout=30) as c,
    ):
        assert _label(c, risk, pid).status_code == 200
        assert _label(c, growth, pid).status_code == 403
        ws.registry.transfer("churn", "growth")
        assert _label(c, risk, pid).status_code == 403
        assert _label(c, growth, pid).status_code == 200


def test_serving_off_loopback_needs_an_active_token(ws: Workspace) -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_exposure(ws, host)
    for host in ("0.0.0.0", "::", "192.0.2.1", "example.com"):
        with pytest.raises(InvalidInputError, match="no active token exists"):
            check_exposure(ws, host)
    ws.tokens.create("edge", team=None, role="admin")
    check_exposure(ws, "0.0.0.0")


def test_serve_off_loopback_without_a_token_exits_2_before_binding(config: Config) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here, so nothing could be bound even if the
    # refusal were missing: the exit code and message tell the refusal apart from a bind failure
    with Workspace(config):
        pass
    r = CliRunner().invoke(
        cli, ["serve", "--host", "192.0.2.1", "--port", "0"], env=env_for(config)
    )
    assert r.exit_code == 2, r.output
    assert "refusing to serve on 192.0.2.1" in r.output
    assert "ownloop token create" in r.output


def test_off_loopback_auth_is_on_whatever_the_configuration_says(ws: Workspace) -> None:
    ws.tokens.create("edge", team=None, role="admin")
    assert not ws.config.auth
    config = uvicorn_config(ws, "192.0.2.1", 0, log_predictions=False)  # built, never bound
    assert config.app.state.server.auth is True


def test_openapi_declares_bearer_tokens_on_every_route_but_health() -> None:
    doc = openapi(ROUTES, __version__)
    assert doc["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    for spec in ROUTES:
        op = doc["paths"][spec.path][spec.method.lower()]
        if spec.action == "health.read":
            assert "security" not in op, spec.path
        else:
            assert op["security"] == [{"bearer": []}], spec.path
            assert "401" in op["responses"], spec.path
