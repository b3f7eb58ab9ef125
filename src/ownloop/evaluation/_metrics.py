"""Metrics as functions of bootstrap weights: ``value(W)`` gives one value per weight row.

With ``W`` a (resamples, rows) count matrix, most metrics are ratios of weighted sums, so a
whole block of resamples is one matrix product. ROC AUC sorts the scores once and uses
weighted cumulative sums. ``W = ones((1, n))`` gives the plain point estimate.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ownloop.errors import InvalidInputError

__all__ = [
    "CLASSIFIER_METRICS",
    "METRICS",
    "REGRESSOR_METRICS",
    "MetricDef",
    "Outputs",
    "PreparedMetric",
    "metric_def",
    "prepare_metric",
]

ECE_BINS = 10


@dataclass(frozen=True)
class MetricDef:
    name: str
    task: str  # "classification" or "regression"
    higher_is_better: bool
    needs_proba: bool = False
    proportion: bool = False  # a share of rows: Wilson interval instead of the bootstrap
    describe: str = ""


_DEFS = [
    MetricDef("accuracy", "classification", True, proportion=True, describe="share of rows right"),
    MetricDef("balanced_accuracy", "classification", True, describe="mean recall over classes"),
    MetricDef("precision", "classification", True, describe="positive class, macro if multiclass"),
    MetricDef("recall", "classification", True, describe="positive class, macro if multiclass"),
    MetricDef("f1", "classification", True, describe="positive class, macro if multiclass"),
    MetricDef("roc_auc", "classification", True, True, describe="one-vs-rest macro if multiclass"),
    MetricDef("log_loss", "classification", False, True, describe="mean negative log likelihood"),
    MetricDef("brier", "classification", False, True, describe="mean squared probability error"),
    MetricDef("ece", "classification", False, True, describe=f"{ECE_BINS} equal-width bins"),
    MetricDef("mae", "regression", False, describe="mean absolute error"),
    MetricDef("rmse", "regression", False, describe="root mean squared error"),
    MetricDef("r2", "regression", True, describe="coefficient of determination"),
    MetricDef("mape", "regression", False, describe="mean absolute percentage error (share)"),
]
METRICS: dict[str, MetricDef] = {m.name: m for m in _DEFS}
CLASSIFIER_METRICS = tuple(m.name for m in _DEFS if m.task == "classification")
REGRESSOR_METRICS = tuple(m.name for m in _DEFS if m.task == "regression")
_ALIASES = {"auc": "roc_auc", "logloss": "log_loss", "brier_score": "brier", "rsquared": "r2"}


def metric_def(name: str, where: str = "") -> MetricDef:
    """Look a metric up; an unknown name lists the known ones and suggests the closest."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key in METRICS:
        return METRICS[key]
    close = difflib.get_close_matches(key, list(METRICS) + list(_ALIASES), n=1, cutoff=0.5)
    hint = f"did you mean '{_ALIASES.get(close[0], close[0])}'? " if close else ""
    raise InvalidInputError(
        f"{where}unknown metric '{name}'; {hint}known metrics: classifiers "
        f"{', '.join(CLASSIFIER_METRICS)}; regressors {', '.join(REGRESSOR_METRICS)}"
    )


@dataclass(frozen=True)
class Outputs:
    """A model's outputs on a dataset, with the labels, ready for any metric.

    Classification: ``y`` and ``pred`` are class indices into ``classes``; ``proba`` (rows,
    classes) when the model gives probabilities. Regression: float arrays, ``classes`` empty.
    """

    y: np.ndarray
    pred: np.ndarray
    proba: np.ndarray | None
    classes: tuple[object, ...]
    positive: int = 1

    @property
    def n(self) -> int:
        return int(self.y.size)


@dataclass(frozen=True)
class PreparedMetric:
    name: str
    value: Callable[[np.ndarray], np.ndarray]

    def point(self, n: int) -> float:
        return float(self.value(np.ones((1, n)))[0])


def _ratio(
    columns: np.ndarray, finish: Callable[[np.ndarray], np.ndarray]
) -> Callable[..., np.ndarray]:
    by_dtype = {np.dtype(np.float64): columns, np.dtype(np.float32): columns.astype(np.float32)}

    def value(W: np.ndarray) -> np.ndarray:
        sums = (W @ by_dtype[W.dtype]).astype(np.float64)
        # A resample can leave a class out: that replicate is NaN and dropped later.
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return finish(sums)

    return value


def prepare_metric(name: str, out: Outputs) -> PreparedMetric:
    """Bind metric ``name`` to the outputs; raise when it does not fit the task or outputs."""
    d = metric_def(name)
    is_clf = len(out.classes) > 0
    if (d.task == "classification") != is_clf:
        kind = "classifier" if is_clf else "regressor"
        allowed = CLASSIFIER_METRICS if is_clf else REGRESSOR_METRICS
        raise InvalidInputError(
            f"metric '{d.name}' is for {d.task} models but this model is a {kind}; "
            f"use one of: {', '.join(allowed)}"
        )
    if d.needs_proba and out.proba is None:
        raise InvalidInputError(
            f"metric '{d.name}' needs class probabilities but the model has no predict_proba; "
            "use accuracy, balanced_accuracy, precision, recall or f1"
        )
    builder = _BUILDERS[d.name]
    return PreparedMetric(d.name, builder(out))


def _onehot(idx: np.ndarray, k: int) -> np.ndarray:
    m = np.zeros((idx.size, k))
    m[np.arange(idx.size), idx] = 1.0
    return m


def _accuracy(out: Outputs) -> Callable[[np.ndarray], np.ndarray]:
    cols = np.column_stack([out.y == out.pred, np.ones(out.n)]).astype(float)
    return _ratio(cols, lambda s: s[:, 0] / s[:, 1])


def _per_class(out: Outputs) -> tuple[np.ndarray, int]:
    """Columns [tp_c..., predicted_c..., actual_c...] for every class, and the class count."""
    k = len(out.classes)
    actual, predicted = _onehot(out.y, k), _onehot(out.pred, k)
    return np.hstack([actual * predicted, predicted, actual]), k


def _classes_scored(out: Outputs, k: int) -> slice | list[int]:
    return [out.positive] if k == 2 else slice(None)


def _balanced_accuracy(out: Outputs) -> Callable[[np.ndarray], np.ndarray]:
    cols, k = _per_class(out)
    return _ratio(cols, lambda s: np.nanmean(s[:, :k] / s[:, 2 * k :], axis=1))


def _precision(out: Outputs) -> Callable[[np.ndarray], np.ndarray]:
    cols, k = _per_class(out)
    pick = _classes_scored(out, k)
    return _ratio(cols, lambda s: np.mean((s[:, :k] / s[:, k : 2 * k])[:, pick], axis=1))


def _recall(out: Outputs) -> Callable[[np.ndarray], np.ndarray]:
    cols, k = _per_class(out)
    pick = _classes_scored(out, k)
    return _ratio(cols, lambda s: np.mean((s[:, :k] / s[:, 2 * k :])[:, pick], axis=1))


def _f1(out: Outputs) -> Callable[[np.ndarray], np.ndarray]:
    cols, k = _per_class(out)
    pick = _classes_scored(out, k)
    return _ratio(
        cols,
        lambda s: np.mean((2 * s[:, :k] / (s[:, k : 2 * k] + s[:, 2 * k :]))[:, pick], axis=1),
    )


def _auc_one(score: np.ndarray, positive: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Weighted Mann-Whitney: P(score of a positive > score of a negative), ties count half.

    Rows are sorted once by score, positives first among equal scores. With C the running sum
    of negative weights in that order, a positive at position k has C[k] negatives strictly
    below it and C[end(k)] - C[k] tied with it (end(k): the last row of its tie group), so a
    resample costs one gather, one cumulative sum and a matrix-vector product, plus small
    gathers for tied positives only.
    """
    pos = positive.astype(bool)
    order = np.lexsort((~pos, score))
    in_order = bool(np.all(order[1:] > order[:-1]))  # rows already sorted: no gather needed
    s, pos_sorted = score[order], pos[order]
    new_group = np.r_[True, s[1:] != s[:-1]]
    group_end = np.r_[np.flatnonzero(new_group)[1:] - 1, s.size - 1][np.cumsum(new_group) - 1]
    tied_pos = np.flatnonzero(pos_sorted & (group_end != np.arange(s.size)))
    tied_end = group_end[tied_pos]
    weights = {
        np.dtype(t): (pos_sorted.astype(t), (~pos_sorted).astype(t))
        for t in (np.float32, np.float64)
    }

    def value(W: np.ndarray) -> np.ndarray:
        p, q = weights[W.dtype]
        ws = W if in_order else W[:, order]
        below = np.cumsum(ws * q, axis=1)
        num = ((ws * below) @ p).astype(np.float64)
        if tied_pos.size:
            ties = ws[:, tied_pos] * (below[:, tied_end] - below[:, tied_pos])
            num += 0.5 * ties.sum(axis=1, dtype=np.float64)
        w_pos = (ws @ p).astype(np.float64)
        den = w_pos * (ws.sum(axis=1, dtype=np.float64) - w_pos)
        with np.errstate(divide="ignore", invalid="ignore"):
            result: np.ndarray = np.where(den > 0, num / den, np.nan)
        return result

    return value


def _roc_auc(out: Outputs) -> Callable[[np.ndarray], np.ndarray]:
    assert out.proba is not None
    k = len(out.classes)
    if k == 2:
        return _auc_one(out.proba[:, out.positive], out.y == out.positive)
    parts = [_auc_one(out.proba[:, c], out.y == c) for c in range(k)]

    def value(W: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result: np.ndarray = np.nanmean(np.vstack([p(W) for p in parts]), axis=0)
        return result

    return value


def _log_loss(out: Outputs) -> Callable[[np.ndarray], np.ndarray]:
    assert out.proba is not None
    p_true = np.clip(out.proba[np.arange(out.n), out.y], 1e-15, 1.0)
    cols = np.column_stack([-np.log(p_true), np.ones(out.n)])
    return _ratio(cols, lambda s: s[:, 0] / s[:, 1])


def _brier(out: Outputs) -> Callable[[np.ndarray], np.ndarray]:
    assert out.proba is not None
    k = len(out.classes)
    if k == 2:
        sq = (out.proba[:, out.positive] - (out.y == out.positive)) ** 2
    else:
        sq = ((out.proba - _onehot(out.y, k)) ** 2).sum(axis=1)
    cols = np.column_stack([sq, np.ones(out.n)])
    return _ratio(cols, lambda s: s[:, 0] / s[:, 1])


def _ece(out: Outputs) -> Callable[[np.ndarray], np.ndarray]:
    assert out.proba is not None
    conf = out.proba.max(axis=1)
    b = np.clip((conf * ECE_BINS).astype(int), 0, ECE_BINS - 1)
    inbin = _onehot(b, ECE_BINS)
    correct = (out.pred == out.y).astype(float)[:, None]
    cols = np.hstack([inbin * correct, inbin * conf[:, None], np.ones((out.n, 1))])
    return _ratio(
        cols,
        lambda s: np.abs(s[:, :ECE_BINS] - s[:, ECE_BINS : 2 * ECE_BINS]).sum(axis=1) / s[:, -1],
    )


def _mae(out: Outputs) -> Callable[[np.ndarray], np.ndarray]:
    cols = np.column_stack([np.abs(out.pred - out.y), np.ones(out.n)])
    return _ratio(cols, lambda s: s[:, 0] / s[:, 1])


def _rmse(out: Outputs) -> Callable[[np.ndarray], np.ndarray]:
    cols = np.column_stack([(out.pred - out.y) ** 2, np.ones(out.n)])
    return _ratio(cols, lambda s: np.sqrt(s[:, 0] / s[:, 1]))


def _r2(out: Outputs) -> Callable[[np.ndarray], np.ndarray]:
    cols = np.column_stack([(out.pred - out.y) ** 2, out.y, out.y**2, np.ones(out.n)])

    def finish(s: np.ndarray) -> np.ndarray:
        sst = s[:, 2] - s[:, 1] ** 2 / s[:, 3]
        result: np.ndarray = 1 - s[:, 0] / sst
        return result

    return _ratio(cols, finish)


def _mape(out: Outputs) -> Callable[[np.ndarray], np.ndarray]:
    if np.any(out.y == 0):
        raise InvalidInputError(
            f"metric 'mape' divides by the label, and {int(np.sum(out.y == 0))} labels are 0; "
            "use mae or rmse, or drop those rows"
        )
    cols = np.column_stack([np.abs((out.pred - out.y) / out.y), np.ones(out.n)])
    return _ratio(cols, lambda s: s[:, 0] / s[:, 1])


_BUILDERS: dict[str, Callable[[Outputs], Callable[[np.ndarray], np.ndarray]]] = {
    "accuracy": _accuracy,
    "balanced_accuracy": _balanced_accuracy,
    "precision": _precision,
    "recall": _recall,
    "f1": _f1,
    "roc_auc": _roc_auc,
    "log_loss": _log_loss,
    "brier": _brier,
    "ece": _ece,
    "mae": _mae,
    "rmse": _rmse,
    "r2": _r2,
    "mape": _mape,
}
