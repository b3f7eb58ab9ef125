from __future__ import annotations

import pandas as pd

from ownloop import Workspace


def test_register_and_load_round_trip(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame
) -> None:
    v = ws.registry.register(
        churn_model, name="churn", owner=team, reference=churn_data, target="churned"
    )
    assert v.version == 1
    loaded = ws.registry.load("churn@1")
    X = churn_data.drop(columns="churned").head(5)
    assert (loaded.predict_proba(X) == churn_model.predict_proba(X)).all()  # type: ignore[attr-defined]
