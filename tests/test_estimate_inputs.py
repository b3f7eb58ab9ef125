"""ownloop.estimate_performance and ownloop.drift on frames of the dtypes users bring (known truth)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import ownloop
from ownloop import InvalidInputError

BETA = np.array([3.0, -2.0, 1.5])


def _simulate(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    """Calibrated probabilities; the label as float 0.0/1.0 and the predicted class as int,
    the dtypes of NannyML's car-loan data set."""
    X = rng.normal(0, 1, (n, 3))
    X[:, 0] += shift
    p = 1 / (1 + np.exp(-(X @ BETA - 0.3)))
    y = (rng.random(n) < p).astype(float)
    return pd.DataFrame({"x0": X[:, 0], "p": p, "y_pred": (p >= 0.5).astype(int), "y": y})


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(7)
    return _simulate(rng, 20_000), _simulate(rng, 10_000, shift=0.8)


def test_float_labels_and_int_predictions_are_compared_by_value(
    frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    reference, current = frames
    assert reference["y"].dtype == np.float64 and current["y_pred"].dtype == np.int64
    res = ownloop.estimate_performance(
        reference, current, y_pred_proba="p", y_true="y", y_pred="y_pred", chunk_number=2
    )
    for chunk in res:
        part = current.iloc[chunk.start : chunk.end]
        est = next(e for e in chunk.estimated if e.metric == "accuracy")
        real = next(r for r in chunk.realised if r.metric == "accuracy")
        truth = float((part["y_pred"] == part["y"]).mean())
        assert est.n == len(part)
        assert real.value == pytest.approx(truth)
        assert est.lower is not None and est.upper is not None
        assert est.lower - 0.01 <= truth <= est.upper + 0.01  # calibrated: the band holds


def test_string_classes_match_numeric_predictions(
    frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    reference, current = frames
    ref = reference.assign(y=reference["y"].map({0.0: "0", 1.0: "1"}))
    res = ownloop.estimate_performance(
        ref, current, y_pred_proba="p", y_true="y", y_pred="y_pred", chunk_number=1
    )
    assert res[0].estimated[0].n == len(current)


def test_predictions_that_match_no_class_are_refused(
    frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    reference, current = frames
    cur = current.assign(y_pred=current["y_pred"].map({0: "no", 1: "yes"}))
    with pytest.raises(InvalidInputError, match=r"holds no, yes; the classes are 0.0, 1.0"):
        ownloop.estimate_performance(reference, cur, y_pred_proba="p", y_true="y", y_pred="y_pred")


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (
            ["0.2", "high", "0.4"],
            r"probability column 'p' of the current frame holds text that is not a number in 1 "
            r"rows, e.g. 'high' at row 1; convert the column",
        ),
        (
            ["0,83", "0,12", "0.4"],
            r"'p' of the current frame holds text that is not a number in 2 rows, e.g. '0,83' at "
            r"row 0; 2 of them look like numbers with a decimal comma",
        ),
        (
            [0.2, 87.0, 43.5],
            r"probability column 'p' of the current frame holds values up to 87 \(2 of 3 outside "
            r"\[0, 1\]\); probabilities must lie in \[0, 1\]; pass predict_proba output, not "
            r"logits or percentages",
        ),
        ([0.2, -0.1, 0.4], r"column 'p' of the current frame holds values down to -0.1 \(1 of 3"),
        ([-2.5, 0.3, 3.1], r"column 'p' of the current frame holds values from -2.5 to 3.1"),
    ],
)
def test_bad_probability_columns_are_named(
    frames: tuple[pd.DataFrame, pd.DataFrame], values: list[object], match: str
) -> None:
    reference, current = frames
    cur = current.head(3).assign(p=values)
    with pytest.raises(InvalidInputError, match=match):
        ownloop.estimate_performance(reference, cur, y_pred_proba="p", y_true="y")


def test_missing_reference_probabilities_are_refused(
    frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    reference, current = frames
    ref = reference.copy()
    ref.loc[3, "p"] = np.nan
    with pytest.raises(InvalidInputError, match="'p' of the reference frame has 1 missing"):
        ownloop.estimate_performance(ref, current, y_pred_proba="p", y_true="y")


def test_chunk_results_are_frames(frames: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    reference, current = frames
    est = ownloop.estimate_performance(
        reference, current, y_pred_proba="p", y_true="y", chunk_number=2
    )
    table = est.to_frame()
    assert set(table["chunk"]) == {0, 1}
    assert set(table["kind"]) == {"estimated", "realised", "headline"}
    acc = table[(table.kind == "estimated") & (table.metric == "accuracy")]
    assert list(acc["value"]) == [c.estimated[0].value for c in est]
    res = ownloop.drift(reference[["x0"]], current[["x0"]], chunk_number=2)
    frame = res.to_frame()
    assert len(frame) == 2  # one feature in each of two chunks
    assert frame["drifted"].tolist() == [True, True]  # x0 moved by 0.8 sd
    assert frame["dataset_drift"].tolist() == [True, True]
    assert list(res[0].report.to_frame()["feature"]) == ["x0"]


def test_text_in_a_numeric_column_is_refused_by_drift_naming_it() -> None:
    reference = pd.DataFrame({"x": np.linspace(0, 1, 200)})
    current = pd.DataFrame({"x": ["0,83", "0,12"] * 50})
    with pytest.raises(
        InvalidInputError,
        match=r"column 'x' of the current frame \(numeric in the reference\) holds text that is "
        r"not a number in 100 rows, e.g. '0,83' at row 0; 100 of them look like numbers with a "
        r"decimal comma",
    ):
        ownloop.drift(reference, current)


def test_multiclass_rows_not_summing_to_one_are_refused() -> None:
    rng = np.random.default_rng(11)
    p = rng.dirichlet(np.ones(3), 300)
    y = np.array([rng.choice(3, p=row) for row in p])
    frame = pd.DataFrame({"a": p[:, 0], "b": p[:, 1], "c": p[:, 2], "y": y})
    bad = frame.assign(a=frame["a"] * 100)  # one column as a percentage
    bad["a"] = bad["a"].clip(upper=1.0)
    with pytest.raises(InvalidInputError, match=r"'a', 'b', 'c' of the current frame do not sum"):
        ownloop.estimate_performance(frame, bad, y_pred_proba=["a", "b", "c"], y_true="y")
    ok = ownloop.estimate_performance(
        frame, frame.round(3), y_pred_proba=["a", "b", "c"], y_true="y"
    )
    assert ok[0].estimated[0].value is not None  # rounding to 3 decimals stays within tolerance


@pytest.mark.parametrize("rows", [3, 29])
def test_too_few_rows_give_inconclusive_not_a_number(
    frames: tuple[pd.DataFrame, pd.DataFrame], rows: int
) -> None:
    reference, current = frames
    res = ownloop.estimate_performance(reference, current.head(rows), y_pred_proba="p", y_true="y")
    for e in res[0].estimated:
        assert (e.value, e.lower, e.upper) == (None, None, None)
        assert e.status == "inconclusive"
        assert f"{rows} scored rows; an estimate needs at least 30" in e.note
    assert "inconclusive" in res[0].summary
    # with labels the headline falls back to the realised figure and says why
    assert res[0].headline is not None and res[0].headline.source == "realised"
    assert "inconclusive" in res[0].headline.reason


def test_too_few_expected_minority_rows_give_inconclusive(
    frames: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    reference, current = frames
    sure = current[current["p"] < 0.02].head(200)  # about 1 expected positive in 200 rows
    assert len(sure) == 200
    res = ownloop.estimate_performance(reference, sure, y_pred_proba="p", y_true="y")
    acc = res[0].estimated[0]
    assert acc.value is None and acc.status == "inconclusive"
    assert "rows of the rarer class expected among 200 (at least 5 needed)" in acc.note
    enough = ownloop.estimate_performance(reference, current.head(30), y_pred_proba="p", y_true="y")
    assert enough[0].estimated[0].status == "ok"


def test_numbers_with_decimal_commas_in_the_reference_are_refused_not_taken_for_categories() -> (
    None
):
    reference = pd.DataFrame({"x": ["0,83", "1,5", "2,25"] * 50, "k": ["a", "b", "c"] * 50})
    with pytest.raises(
        InvalidInputError,
        match=r"column 'x' of the reference frame holds numbers written as text with a decimal "
        r"comma, e.g. '0,83'",
    ):
        ownloop.drift(reference, reference)
    assert len(ownloop.drift(reference[["k"]], reference[["k"]])) == 1  # real text is fine
