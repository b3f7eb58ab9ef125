"""A served model gets a NumPy array when a DataFrame adds nothing, and the same answers either way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ownloop.server._decode import decode_records
from ownloop.server._served import ServedModel
from ownloop.signature import infer_signature


def _data(n: int = 400, *, text: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 10, n).round(1),
            "visits": rng.integers(0, 30, n),
            "spend": rng.gamma(2.0, 50.0, n).round(2),
        }
    )
    if text:
        frame["plan"] = rng.choice(["basic", "pro", "team"], n)
    y = ((frame["age"] > 40) ^ (frame["visits"] > 12)).to_numpy().astype(int)
    return frame, y


def hgb_frame() -> tuple[Any, pd.DataFrame]:
    X, y = _data()
    return HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y), X


def logistic_frame() -> tuple[Any, pd.DataFrame]:
    X, y = _data()
    return LogisticRegression(max_iter=500).fit(X, y), X


def hgb_regressor_frame() -> tuple[Any, pd.DataFrame]:
    X, _ = _data()
    return HistGradientBoostingRegressor(max_iter=30).fit(X, X["spend"] * 0.1), X


def scaled_pipeline_frame() -> tuple[Any, pd.DataFrame]:
    X, y = _data()
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y), X


def column_transformer_pipeline() -> tuple[Any, pd.DataFrame]:
    X, y = _data(text=True)
    prep = ColumnTransformer(
        [("plan", OneHotEncoder(), ["plan"]), ("num", StandardScaler(), ["age", "visits", "spend"])]
    )
    return Pipeline([("prep", prep), ("lr", LogisticRegression(max_iter=500))]).fit(X, y), X


def numpy_fitted() -> tuple[Any, pd.DataFrame]:
    X, y = _data()
    return HistGradientBoostingClassifier(max_iter=30).fit(X.to_numpy(), y), X


def reordered_columns() -> tuple[Any, pd.DataFrame]:
    X, y = _data()
    model = LogisticRegression(max_iter=500).fit(X[["spend", "age", "visits"]], y)
    return model, X  # the signature's order is not the model's


CASES: dict[str, tuple[Callable[[], tuple[Any, pd.DataFrame]], bool]] = {
    "hgb-frame": (hgb_frame, False),
    "logistic-frame": (logistic_frame, False),
    "hgb-regressor-frame": (hgb_regressor_frame, False),
    "scaled-pipeline": (scaled_pipeline_frame, True),
    "column-transformer": (column_transformer_pipeline, True),
    "numpy-fitted": (numpy_fitted, False),
}


def served(model: Any, X: pd.DataFrame) -> ServedModel:
    return ServedModel("m", 1, "team", infer_signature(model, X, None), model)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_both_inputs_give_identical_answers(case: str) -> None:
    make, frame_input = CASES[case]
    model, X = make()
    entry = served(model, X)
    assert entry.frame_input is frame_input
    rows = X.head(60)
    got = entry.predict(decode_records(entry.signature, rows.to_dict("records")))
    # the reference answer: the model itself, given the DataFrame it was fitted on
    given = rows if hasattr(model, "feature_names_in_") else rows.to_numpy()
    if entry.classes is not None:
        want = model.predict_proba(given)
        assert got.probabilities is not None
        np.testing.assert_array_equal(got.probabilities, want)
        assert got.values == list(model.classes_[want.argmax(axis=1)])
    else:
        np.testing.assert_array_equal(np.asarray(got.values), model.predict(given))


def test_array_input_scores_without_the_feature_name_warning() -> None:
    model, X = hgb_frame()
    entry = served(model, X)
    assert not entry.frame_input
    # pytest turns warnings into errors here: scoring many requests must raise none
    for record in X.head(20).to_dict("records"):
        entry.predict(decode_records(entry.signature, [record]))
    assert hasattr(model, "feature_names_in_")  # the registry's model object is not changed


def test_a_model_whose_columns_are_in_another_order_keeps_the_dataframe() -> None:
    model, X = reordered_columns()
    signature = infer_signature(model, X, None)
    assert signature.feature_names == ["spend", "age", "visits"]  # check_columns orders by model
    reordered = signature.__class__(
        tuple(signature.feature(n) for n in ["age", "visits", "spend"]),
        signature.task,
        signature.classes,
        signature.target,
    )
    entry = ServedModel("m", 1, "team", reordered, model)
    assert entry.frame_input
    rows = X.head(30)
    got = entry.predict(decode_records(reordered, rows.to_dict("records")))
    np.testing.assert_array_equal(
        got.probabilities, model.predict_proba(rows[model.feature_names_in_])
    )
