"""The typed reference profile: every stored version reads, and what it writes reads back."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from ownloop.errors import InvalidInputError
from ownloop.profile import (
    PROFILE_VERSION,
    CategoricalProfile,
    ClassificationProfile,
    NumericProfile,
    ReferenceProfile,
    compute_profile,
    numeric_profile,
)
from ownloop.signature import Feature, Signature


def _profile() -> ReferenceProfile:
    rng = np.random.default_rng(1)
    n = 3000
    df = pd.DataFrame(
        {
            "x": rng.normal(0, 1, n),
            "k": rng.integers(0, 3, n).astype(float),
            "c": rng.choice(["a", "b"], n),
            "y": rng.integers(0, 2, n),
        }
    )
    model = LogisticRegression().fit(df[["x", "k"]].assign(c=(df["c"] == "a") * 1.0), df["y"])

    class OnFrame:
        classes_ = model.classes_

        def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
            return np.asarray(
                model.predict_proba(X[["x", "k"]].assign(c=(X["c"] == "a") * 1.0)), float
            )

    sig = Signature(
        features=(Feature("x", "float"), Feature("k", "float"), Feature("c", "string")),
        task="classification",
        target="y",
        classes=(0, 1),
    )
    return compute_profile(OnFrame(), df, sig)


def test_profile_round_trips_through_its_stored_bytes() -> None:
    p = _profile()
    assert p.version == PROFILE_VERSION
    back = ReferenceProfile.from_bytes(p.to_bytes())
    assert back == p
    assert back.to_bytes() == p.to_bytes()


def test_a_discrete_numeric_column_keeps_its_values_and_a_continuous_one_does_not() -> None:
    p = _profile()
    k, x = p.features["k"], p.features["x"]
    assert isinstance(k, NumericProfile) and isinstance(x, NumericProfile)
    assert k.support == (0.0, 1.0, 2.0) and k.discrete and k.distinct == 3
    assert k.support_counts is not None and sum(k.support_counts) == 3000
    assert x.support is None and not x.discrete and x.distinct == 3000
    c = p.features["c"]
    assert isinstance(c, CategoricalProfile)
    assert c.singletons == 0 and c.top_share is not None and 0.45 < c.top_share < 0.55


def _as_version_2(d: dict[str, Any]) -> dict[str, Any]:
    """What the previous release stored: no distinct/support/singletons/identifier, raw classes."""
    old = json.loads(json.dumps(d))
    old["format"] = 2
    for f in old["features"].values():
        for key in ("distinct", "support", "support_counts", "singletons", "identifier"):
            if f["kind"] == "numeric" or key != "distinct":
                f.pop(key, None)
    old["prediction"]["classes"] = [0, 1]
    return old


def test_a_version_2_profile_still_reads_with_the_new_fields_unknown() -> None:
    p = _profile()
    old = ReferenceProfile.from_bytes(json.dumps(_as_version_2(p.to_dict())).encode())
    assert old.version == 2
    k = old.features["k"]
    assert isinstance(k, NumericProfile)
    assert k.support is None and k.distinct is None and not k.discrete
    assert k.grid == p.features["k"].grid  # type: ignore[union-attr]
    pred = old.prediction
    assert isinstance(pred, ClassificationProfile)
    assert pred.classes == ("0", "1")
    assert pred.calibration_map == p.prediction.calibration_map  # type: ignore[union-attr]


def test_a_version_1_profile_reads_without_a_grid() -> None:
    d = {"rows": 10, "features": {"x": numeric_profile(np.arange(10.0)).to_dict()}}
    del d["features"]["x"]["grid"], d["features"]["x"]["grid_counts"]  # type: ignore[index]
    p = ReferenceProfile.from_dict(d)
    assert p.version == 1
    assert p.features["x"].grid is None  # type: ignore[union-attr]
    assert p.prediction.kind == "none"


def test_a_profile_from_a_newer_release_is_refused_naming_the_fix() -> None:
    d = _profile().to_dict()
    d["format"] = PROFILE_VERSION + 1
    with pytest.raises(InvalidInputError, match="upgrade ownloop"):
        ReferenceProfile.from_dict(d)
