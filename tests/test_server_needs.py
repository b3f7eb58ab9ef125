"""A server will not serve a version whose recorded needs its environment does not meet."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import pandas as pd
import sqlalchemy as sa

from ownloop import Config, Workspace
from ownloop.store import tables as t
from tests.servers import running


def _needing_old_sklearn(ws: Workspace, churn_model: Any, churn_data: pd.DataFrame) -> None:
    v = ws.registry.register(
        churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
    )
    needs = dict(v.needs or {})
    needs["libraries"] = {
        **needs["libraries"],
        "scikit-learn": {"version": "0.20.4", "role": "model", "source": "artifact"},
    }
    with ws.store.write() as conn:
        conn.execute(t.versions.update().where(t.versions.c.id > 0).values(needs=needs))
    ws.deploy.set_production("churn", 1, force=True, reason="set up")


def test_a_version_needing_another_sklearn_minor_is_not_ready_naming_both_sides(
    ws: Workspace, team: str, churn_model: Any, churn_data: pd.DataFrame
) -> None:
    _needing_old_sklearn(ws, churn_model, churn_data)
    with running(ws) as url, httpx.Client(base_url=url, timeout=30) as client:
        (model,) = client.get("/models").json()["models"]
        answer = client.post("/models/churn/predict", json={"instances": []})
    assert model["ready"] is False
    assert "0.20.4" in model["reason"] and "--allow-env-mismatch" in model["reason"]
    assert answer.status_code == 503


def test_allowing_the_mismatch_serves_it_and_audits_it(
    config: Config, team: str, churn_model: Any, churn_data: pd.DataFrame
) -> None:
    with Workspace(config) as ws:
        _needing_old_sklearn(ws, churn_model, churn_data)
    with Workspace(replace(config, allow_env_mismatch=True)) as ws:
        rows = churn_data.drop(columns="churned").head(2).to_dict("records")
        with running(ws) as url, httpx.Client(base_url=url, timeout=30) as client:
            answer = client.post("/models/churn/predict", json={"instances": rows})
        with ws.store.read() as conn:
            audited = conn.execute(
                sa.select(t.audit.c.after).where(t.audit.c.action == "serve.env_mismatch")
            ).all()
    assert answer.status_code == 200
    assert len(audited) == 1
    assert audited[0].after["mismatches"][0]["library"] == "scikit-learn"
