"""Label-free (CBPE) and realised performance on simulated data with known truth (seeded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

import ownloop
from ownloop.monitoring import sample_rows
from ownloop.monitoring._performance import realised_performance

BETA = np.array([3.5, -2.5, 2.0, 1.0])


def _simulate(
    rng: np.random.Generator, n: int, shift: float = 0.0, sharpness: float = 1.0
) -> pd.DataFrame:
    """Covariate shift only: the inputs move, P(y | x) stays; the model outputs sigmoid(sharpness * logit)."""
    X = rng.normal(0, 1, (n, 4))
    X[:, 0] += shift
    X[:, 1] -= shift / 2
    logit = X @ BETA - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"p": 1 / (1 + np.exp(-sharpness * logit)), "y": y})


def _check(sharpness: float, seed: int, windows: int) -> dict[str, tuple[float, float, float]]:
    rng = np.random.default_rng(seed)
    reference = _simulate(rng, 20_000, sharpness=sharpness)
    chunks = [
        _simulate(rng, 5000, shift=s, sharpness=sharpness) for s in np.linspace(0, 1.2, windows)
    ]
    current = pd.concat(chunks, ignore_index=True)
    res = ownloop.estimate_performance(
        reference, current.drop(columns="y"), y_pred_proba="p", y_true="y", chunk_size=5000
    )
    assert all(r.calibrated == (sharpness != 1.0) for r in res)
    out = {}
    for metric, realise in (
        ("accuracy", lambda c: accuracy_score(c["y"], c["p"] > 0.5)),
        ("f1", lambda c: f1_score(c["y"], c["p"] > 0.5)),
        ("roc_auc", lambda c: roc_auc_score(c["y"], c["p"])),
    ):
        est = np.array(
            [next(e for e in r.estimated if e.metric == metric).value for r in res], dtype=float
        )
        lo = np.array(
            [next(e for e in r.estimated if e.metric == metric).lower for r in res], dtype=float
        )
        hi = np.array(
            [next(e for e in r.estimated if e.metric == metric).upper for r in res], dtype=float
        )
        real = np.array([realise(c) for c in chunks])
        out[metric] = (
            float(np.abs(est - real).mean()),  # mean absolute error (it bounds the bias too)
            float(np.abs(est - real).max()),
            float(((real >= lo) & (real <= hi)).mean()),
        )
    return out


@pytest.mark.parametrize("sharpness", [1.0, 1.6], ids=["calibrated", "overconfident"])
def test_cbpe_tracks_realised_performance_under_covariate_shift(sharpness: float) -> None:
    figures = _check(sharpness, seed=int(sharpness * 10), windows=40)
    for metric, (mean_abs, worst, coverage) in figures.items():
        assert mean_abs <= 0.005, (metric, mean_abs)
        assert worst <= 0.015, (metric, worst)
        assert coverage >= 0.85, (metric, coverage)  # nominal 0.95, over 40 windows


@pytest.mark.slow
def test_cbpe_band_coverage_is_near_nominal_over_many_windows() -> None:
    figures = _check(1.0, seed=3, windows=200)
    for metric, (mean_abs, worst, coverage) in figures.items():
        assert mean_abs <= 0.005, metric
        assert worst <= 0.02, metric
        assert 0.90 <= coverage <= 0.99, (metric, coverage)


def test_cbpe_multiclass_accuracy() -> None:
    rng = np.random.default_rng(4)

    def sim(n: int, shift: float) -> pd.DataFrame:
        x = rng.normal(shift, 1, (n, 2))
        logits = np.column_stack((2 * x[:, 0], 2 * x[:, 1], np.zeros(n)))
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        y = np.array([rng.choice(3, p=row) for row in p])
        return pd.DataFrame({"p0": p[:, 0], "p1": p[:, 1], "p2": p[:, 2], "y": y})

    ref, cur = sim(10_000, 0.0), sim(5000, 0.7)
    res = ownloop.estimate_performance(ref, cur, y_pred_proba=["p0", "p1", "p2"], y_true="y")
    est = res[0].estimated[0]
    real = res[0].realised[0]
    assert est.metric == "accuracy"
    assert real.metric == "accuracy"
    assert abs(est.value - real.value) < 0.02  # type: ignore[operator]
    assert real.coverage == 1.0


def test_cbpe_on_an_empty_chunk_says_so() -> None:
    rng = np.random.default_rng(5)
    ref = _simulate(rng, 2000)
    res = ownloop.estimate_performance(ref, ref.iloc[:0], y_pred_proba="p", y_true="y")
    assert res[0].estimated[0].value is None
    assert "no scored" in res[0].estimated[0].note


def test_realised_accuracy_has_wilson_interval_and_coverage() -> None:
    y = np.array(["1"] * 80 + ["0"] * 20)
    pred = np.array(["1"] * 70 + ["0"] * 10 + ["0"] * 20)
    out = realised_performance(y, pred, score=np.linspace(0, 1, 100), positive="1", total_rows=400)
    acc = out[0]
    assert acc.value == pytest.approx(0.9)
    assert acc.coverage == 0.25
    assert acc.lower is not None
    assert acc.upper is not None
    assert acc.lower < 0.9 < acc.upper
    assert acc.upper <= 1.0
    assert {r.metric for r in out} == {"accuracy", "f1", "roc_auc"}


def test_realised_auc_undefined_with_one_class_says_so() -> None:
    y = np.array(["1"] * 50)
    out = realised_performance(y, y, score=np.linspace(0, 1, 50), positive="1", total_rows=50)
    auc = next(r for r in out if r.metric == "roc_auc")
    assert auc.value is None
    assert "one class" in auc.note


def test_weighted_review_sample_gives_unbiased_accuracy() -> None:
    """Oversampling low-confidence rows biases the plain mean; the recorded weights remove it."""
    rng = np.random.default_rng(6)
    n = 20_000
    conf = rng.uniform(0.5, 1.0, n)
    correct = rng.random(n) < conf  # calibrated: low confidence, low accuracy
    window = pa.table(
        {
            "prediction_id": [str(i) for i in range(n)],
            "status": ["ok"] * n,
            "confidence": conf,
            "prediction": ["1"] * n,
        }
    )
    truth = correct.mean()
    weighted, plain = [], []
    for rep in range(200):
        s = sample_rows(window, 200, low_confidence=0.6, low_share=0.5, seed=rep)
        ids = np.array(s.table.column("prediction_id").to_pylist(), dtype=int)
        w = s.table.column("weight").to_numpy()
        y_true = np.where(correct[ids], "1", "0")
        weighted.append(
            realised_performance(y_true, np.array(["1"] * ids.size), weights=w, total_rows=n)[
                0
            ].value
        )
        plain.append(correct[ids].mean())
    assert abs(np.mean(weighted) - truth) < 0.01
    assert abs(np.mean(plain) - truth) > 0.03
    assert s.picked_low == 100
    assert s.picked_rest == 100
    assert w[:100] == pytest.approx(s.low_rows / 100)


def test_sampler_tops_up_when_a_stratum_is_short() -> None:
    window = pa.table({"prediction_id": ["a", "b", "c"], "confidence": [0.55, 0.9, 0.95]})
    s = sample_rows(window, 10, seed=0)
    assert s.table.num_rows == 3
    assert sorted(s.table.column("weight").to_pylist()) == [1.0, 1.0, 1.0]


def test_review_queue_written_as_csv_or_parquet(tmp_path: Path) -> None:
    from ownloop import InvalidInputError
    from ownloop.monitoring import write_sample

    window = pa.table(
        {
            "prediction_id": ["a", "b", "c", "d"],
            "confidence": [0.55, 0.9, 0.95, 0.58],
            "in.age": [1.0, 2.0, 3.0, 4.0],
        }
    )
    s = sample_rows(window, 2, seed=0)
    csv = pd.read_csv(write_sample(s, tmp_path / "q.csv"))
    assert list(csv.columns) == ["prediction_id", "confidence", "age", "stratum", "weight", "label"]
    assert len(pd.read_parquet(write_sample(s, tmp_path / "q.parquet"))) == 2
    with pytest.raises(InvalidInputError, match=r"\.csv or \.parquet"):
        write_sample(s, tmp_path / "q.xlsx")
