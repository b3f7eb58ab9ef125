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


Influence = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class PreparedMetric:
    name: str
    value: Callable[[np.ndarray], np.ndarray]
    # ROC AUC only: per weight row, the value and each row's DeLong influence (rows in the
    # outputs' order), so that sum(W * psi**2) is DeLong's variance of that resample's AUC.
    influence: Influence | None = None
    smallest_class: int = 0  # ROC AUC: fewest rows on either side of any class (for 0 or 1)
    # ROC AUC only: per weight row, the AUC and DeLong's variance of it (two columns).
    auc_variance: Callable[[np.ndarray], np.ndarray] | None = None
    # Sum-based metrics: the value with each row left out in turn (for BCa's acceleration).
    leave_one_out: Callable[[], np.ndarray] | None = None
    # Precision, recall, balanced accuracy: the mean of shares k / m over classes, each share
    # a binomial count on its own rows (hits, rows), so each gets a Wilson interval.
    shares: tuple[np.ndarray, np.ndarray] | None = None
    # Means of per-row terms (log loss, Brier, MAE, RMSE via the MSE, MAPE) and R2: per weight
    # row the mean (R2 itself) and its standard error, and the map from the mean to the metric.
    moments: Callable[[np.ndarray], np.ndarray] | None = None
    from_mean: Callable[[float], float] | None = None

    def point(self, n: int) -> float:
        return float(self.value(np.ones((1, n)))[0])


class _Ratio:
    """A metric that is a function of weighted column sums: one matrix product per block."""

    def __init__(self, columns: np.ndarray, finish: Callable[[np.ndarray], np.ndarray]) -> None:
        self.columns = columns
        self.finish = finish
        self.by_dtype = {
            np.dtype(np.float64): columns,
            np.dtype(np.float32): columns.astype(np.float32),
        }

    def _finish(self, sums: np.ndarray) -> np.ndarray:
        # A resample can leave a class out: that replicate is NaN and dropped later.
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return self.finish(sums)

    def __call__(self, W: np.ndarray) -> np.ndarray:
        return self._finish((W @ self.by_dtype[W.dtype]).astype(np.float64))

    def leave_one_out(self) -> np.ndarray:
        """The metric with each row left out in turn (the jackknife), from the total sums."""
        return self._finish(self.columns.sum(axis=0)[None, :] - self.columns)


def _ratio(columns: np.ndarray, finish: Callable[[np.ndarray], np.ndarray]) -> _Ratio:
    return _Ratio(columns, finish)


class _Mean(_Ratio):
    """A metric that is a monotone function of a mean of per-row terms (sqrt for RMSE).

    Columns [x, x**2, 1]: per weight row, ``moments`` gives the mean and its standard error,
    which a studentised bootstrap needs.
    """

    def __init__(self, terms: np.ndarray, root: bool = False) -> None:
        self.root = root
        columns = np.column_stack([terms, terms**2, np.ones(terms.size)])
        super().__init__(columns, self._of_sums)

    def _of_sums(self, s: np.ndarray) -> np.ndarray:
        mean: np.ndarray = s[:, 0] / s[:, 2]
        return np.sqrt(mean) if self.root else mean

    def moments(self, W: np.ndarray) -> np.ndarray:
        """(mean, standard error of the mean) per weight row, as two columns."""
        s = (W @ self.by_dtype[W.dtype]).astype(np.float64)
        n = s[:, 2]
        mean = s[:, 0] / n
        var = np.maximum(s[:, 1] / n - mean**2, 0.0) * n / np.maximum(n - 1, 1)
        return np.column_stack([mean, np.sqrt(var / n)])

    def back(self, x: float) -> float:
        """The metric from the mean (RMSE: the root of the mean squared error)."""
        return float(np.sqrt(max(x, 0.0))) if self.root else x


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
    if d.name == "roc_auc":
        auc, influence, variance, smallest = _roc_auc(out)
        return PreparedMetric(d.name, auc, influence, smallest, auc_variance=variance)
    value = _BUILDERS[d.name](out)
    loo = value.leave_one_out if isinstance(value, _Ratio) else None
    moments: Callable[[np.ndarray], np.ndarray] | None = None
    from_mean: Callable[[float], float] | None = None
    if isinstance(value, _Mean):
        moments, from_mean = value.moments, value.back
    elif isinstance(value, _R2):
        moments, from_mean = value.moments, float
    return PreparedMetric(
        d.name,
        value,
        leave_one_out=loo,
        shares=_shares(d.name, out),
        moments=moments,
        from_mean=from_mean,
    )


def _shares(name: str, out: Outputs) -> tuple[np.ndarray, np.ndarray] | None:
    """Hits and rows per class for the metrics that are a mean of per-class shares."""
    if name not in ("precision", "recall", "balanced_accuracy"):
        return None
    k = len(out.classes)
    actual, predicted = _onehot(out.y, k), _onehot(out.pred, k)
    hits = (actual * predicted).sum(axis=0)
    rows = (predicted if name == "precision" else actual).sum(axis=0)
    if name != "balanced_accuracy":
        pick = _classes_scored(out, k)
        hits, rows = hits[pick], rows[pick]
    if np.any(rows == 0):
        return None  # a share with no rows: undefined, judged by the bootstrap
    return hits, rows


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


class _SortedScores:
    """One score column sorted once (positives first among equal scores), with its tie groups."""

    def __init__(self, score: np.ndarray, positive: np.ndarray) -> None:
        pos = positive.astype(bool)
        self.order = np.lexsort((~pos, score))
        self.in_order = bool(np.all(self.order[1:] > self.order[:-1]))  # no gather needed
        s, pos_sorted = score[self.order], pos[self.order]
        new_group = np.r_[True, s[1:] != s[:-1]]
        group = np.cumsum(new_group) - 1
        starts = np.flatnonzero(new_group)
        self.group_start = starts[group]
        self.group_end = np.r_[starts[1:] - 1, s.size - 1][group]
        self.has_ties = bool(np.any(self.group_end != np.arange(s.size)))
        self.tied_pos = np.flatnonzero(pos_sorted & (self.group_end != np.arange(s.size)))
        self.tied_end = self.group_end[self.tied_pos]
        self.pos_sorted = pos_sorted
        self.weights = {
            np.dtype(t): (pos_sorted.astype(t), (~pos_sorted).astype(t))
            for t in (np.float32, np.float64)
        }
        self.unsort = np.empty_like(self.order)
        self.unsort[self.order] = np.arange(self.order.size)
        self.smallest = int(min(pos.sum(), (~pos).sum()))

    def sorted_weights(self, W: np.ndarray) -> np.ndarray:
        return W if self.in_order else W[:, self.order]


def _auc_one(score: np.ndarray, positive: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Weighted Mann-Whitney: P(score of a positive > score of a negative), ties count half.

    Rows are sorted once by score, positives first among equal scores. With C the running sum
    of negative weights in that order, a positive at position k has C[k] negatives strictly
    below it and C[end(k)] - C[k] tied with it (end(k): the last row of its tie group), so a
    resample costs one gather, one cumulative sum and a matrix-vector product, plus small
    gathers for tied positives only.
    """
    sc = _SortedScores(score, positive)

    def value(W: np.ndarray) -> np.ndarray:
        p, q = sc.weights[W.dtype]
        ws = sc.sorted_weights(W)
        below = np.cumsum(ws * q, axis=1)
        num = ((ws * below) @ p).astype(np.float64)
        if sc.tied_pos.size:
            ties = ws[:, sc.tied_pos] * (below[:, sc.tied_end] - below[:, sc.tied_pos])
            num += 0.5 * ties.sum(axis=1, dtype=np.float64)
        w_pos = (ws @ p).astype(np.float64)
        den = w_pos * (ws.sum(axis=1, dtype=np.float64) - w_pos)
        with np.errstate(divide="ignore", invalid="ignore"):
            result: np.ndarray = np.where(den > 0, num / den, np.nan)
        return result

    return value


class _AucParts:
    """DeLong's placement values per weight row (Sun & Xu's midrank form, with weights).

    A positive's placement V10 is the weighted share of negatives below it (ties half), a
    negative's V01 the share of positives above it. AUC is the weighted mean of V10 over the
    positives, and with psi = (V10 - AUC) / sqrt(P (P - 1)) on positives and
    (V01 - AUC) / sqrt(N (N - 1)) on negatives (P, N the weighted class counts),
    sum(W * psi**2) is DeLong's variance S10 / P + S01 / N; for two scores of the same rows,
    sum(W * psi_a * psi_b) is their DeLong covariance. Rows with equal scores share their
    placements, so all of it is computed per group of tied scores: two sums per group, two
    cumulative sums over the groups.
    """

    def __init__(self, score: np.ndarray, positive: np.ndarray) -> None:
        sc = _SortedScores(score, positive)
        self.sc = sc
        starts = np.flatnonzero(np.r_[True, sc.group_start[1:] != sc.group_start[:-1]])
        self.starts = starts
        groups = starts.size
        group_of_row = np.cumsum(np.r_[True, sc.group_start[1:] != sc.group_start[:-1]]) - 1
        # psi of a row (in the caller's order) = table[:, index]: V10 part for positives,
        # V01 part (offset by the number of groups) for negatives.
        index = np.where(sc.pos_sorted, group_of_row, groups + group_of_row)
        self.row_index = index[sc.unsort]

    def _groups(self, W: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per tie group: positive and negative weights, V10 - AUC, V01 - AUC (in W's dtype;
        cumulative counts stay exact below 2**24), the AUC and the two psi scales."""
        sc, dt = self.sc, W.dtype
        p, q = sc.weights[dt]
        ws = sc.sorted_weights(W)
        wp, wq = ws * p, ws * q
        if sc.has_ties:
            wp = np.add.reduceat(wp, self.starts, axis=1)
            wq = np.add.reduceat(wq, self.starts, axis=1)
        v10 = np.cumsum(wq, axis=1, dtype=dt)
        v01 = np.cumsum(wp, axis=1, dtype=dt)
        n_pos = v01[:, -1:].astype(np.float64)
        n_neg = v10[:, -1:].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            v10 -= 0.5 * wq  # negatives below, ties half
            v10 /= n_neg.astype(dt)
            v01 -= 0.5 * wp
            np.subtract(n_pos.astype(dt), v01, out=v01)  # positives above, ties half
            v01 /= n_pos.astype(dt)
            auc = np.einsum("bn,bn->b", wp, v10, dtype=np.float64)[:, None] / n_pos
            v10 -= auc.astype(dt)
            v01 -= auc.astype(dt)
            scale_pos = 1 / np.sqrt(n_pos * (n_pos - 1))
            scale_neg = 1 / np.sqrt(n_neg * (n_neg - 1))
        return wp, wq, v10, v01, auc, scale_pos, scale_neg

    def variance(self, W: np.ndarray) -> np.ndarray:
        """Per weight row: the AUC and DeLong's variance of it, as two columns."""
        wp, wq, d10, d01, auc, sp, sn = self._groups(W)
        with np.errstate(invalid="ignore"):
            # Sums of squares in W's dtype: a relative error near 1e-6 per term is far inside
            # what a standard error needs, and float32 sums run several times faster.
            s10 = np.einsum("bn,bn->b", wp * d10, d10).astype(np.float64)
            s01 = np.einsum("bn,bn->b", wq * d01, d01).astype(np.float64)
            var = s10 * sp[:, 0] ** 2 + s01 * sn[:, 0] ** 2
        return np.column_stack([auc[:, 0], var])

    def influence(self, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per weight row: the AUC, and psi of every row in the caller's row order."""
        _, _, d10, d01, auc, sp, sn = self._groups(W)
        with np.errstate(invalid="ignore"):
            d10 *= sp.astype(W.dtype)
            d01 *= sn.astype(W.dtype)
        if self.sc.has_ties:
            return auc[:, 0], np.hstack([d10, d01])[:, self.row_index]
        psi = np.where(self.sc.pos_sorted, d10, d01)  # one group per row: already per row
        return auc[:, 0], psi if self.sc.in_order else psi[:, self.sc.unsort]


def _roc_auc(
    out: Outputs,
) -> tuple[Callable[[np.ndarray], np.ndarray], Influence, Callable[[np.ndarray], np.ndarray], int]:
    assert out.proba is not None
    k = len(out.classes)
    columns = [out.positive] if k == 2 else list(range(k))
    parts = [_auc_one(out.proba[:, c], out.y == c) for c in columns]
    delong = [_AucParts(out.proba[:, c], out.y == c) for c in columns]
    smallest = min(int(min(np.sum(out.y == c), np.sum(out.y != c))) for c in columns)
    if k == 2:
        return parts[0], delong[0].influence, delong[0].variance, smallest

    def value(W: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result: np.ndarray = np.nanmean(np.vstack([p(W) for p in parts]), axis=0)
        return result

    def influence(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Macro one-vs-rest: the mean of the classes' AUCs and of their influences."""
        found = [d.influence(W) for d in delong]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            auc: np.ndarray = np.nanmean(np.vstack([a for a, _ in found]), axis=0)
        psi: np.ndarray = np.mean([np.nan_to_num(p) for _, p in found], axis=0)
        return auc, psi

    def variance(W: np.ndarray) -> np.ndarray:
        auc, psi = influence(W)
        return np.column_stack([auc, np.einsum("bn,bn->b", W * psi, psi, dtype=np.float64)])

    return value, influence, variance, smallest


def _log_loss(out: Outputs) -> Callable[[np.ndarray], np.ndarray]:
    assert out.proba is not None
    p_true = np.clip(out.proba[np.arange(out.n), out.y], 1e-15, 1.0)
    return _Mean(-np.log(p_true))


def _brier(out: Outputs) -> Callable[[np.ndarray], np.ndarray]:
    assert out.proba is not None
    k = len(out.classes)
    if k == 2:
        sq = (out.proba[:, out.positive] - (out.y == out.positive)) ** 2
    else:
        sq = ((out.proba - _onehot(out.y, k)) ** 2).sum(axis=1)
    return _Mean(sq)


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
    return _Mean(np.abs(out.pred - out.y))


def _rmse(out: Outputs) -> Callable[[np.ndarray], np.ndarray]:
    return _Mean((out.pred - out.y) ** 2, root=True)


class _R2(_Ratio):
    """R2 = 1 - A / B (A the mean squared error, B the labels' variance) from weighted sums,
    with its delta-method standard error per weight row for a studentised bootstrap.

    Labels are centred on their overall mean first, so the fourth-moment sums do not cancel.
    Row i's influence is -(u_i - A) / B + (A / B**2) (v_i - B), u = e**2, v = (y - mean)**2;
    its sum of squares expands into sums of e**2, e**4, y**k and e**2 y**k (k <= 4).
    """

    def __init__(self, out: Outputs) -> None:
        e2 = (out.pred - out.y) ** 2
        y = out.y - out.y.mean()
        columns = np.column_stack(
            [e2, e2 * e2, y, y**2, y**3, y**4, e2 * y, e2 * y**2, np.ones(out.n)]
        )
        super().__init__(columns, self._of_sums)

    @staticmethod
    def _of_sums(s: np.ndarray) -> np.ndarray:
        n = s[:, 8]
        m1 = s[:, 2] / n
        sst = s[:, 3] / n - m1**2
        result: np.ndarray = 1 - (s[:, 0] / n) / sst
        return result

    def moments(self, W: np.ndarray) -> np.ndarray:
        """(R2, its delta-method standard error) per weight row, as two columns."""
        s = (W @ self.by_dtype[W.dtype]).astype(np.float64)
        n = s[:, 8]
        with np.errstate(divide="ignore", invalid="ignore"):
            e2, e4, y1, y2, y3, y4, e2y, e2y2 = (s[:, k] / n for k in range(8))
            c = y1  # the resample's label mean (labels already centred on the overall mean)
            b = y2 - c**2
            a = e2
            v2 = y4 - 4 * c * y3 + 6 * c**2 * y2 - 4 * c**3 * y1 + c**4  # mean of v**2
            uv = e2y2 - 2 * c * e2y + c**2 * e2  # mean of u v
            var_u, var_v, cov_uv = e4 - a**2, v2 - b**2, uv - a * b
            c1, c2 = -1 / b, a / b**2
            var = (c1**2 * var_u + c2**2 * var_v + 2 * c1 * c2 * cov_uv) / (n - 1)
            r2 = 1 - a / b
        return np.column_stack([r2, np.sqrt(np.maximum(var, 0.0))])


def _r2(out: Outputs) -> _R2:
    return _R2(out)


def _mape(out: Outputs) -> Callable[[np.ndarray], np.ndarray]:
    if np.any(out.y == 0):
        raise InvalidInputError(
            f"metric 'mape' divides by the label, and {int(np.sum(out.y == 0))} labels are 0; "
            "use mae or rmse, or drop those rows"
        )
    return _Mean(np.abs((out.pred - out.y) / out.y))


_BUILDERS: dict[str, Callable[[Outputs], Callable[[np.ndarray], np.ndarray]]] = {
    "accuracy": _accuracy,
    "balanced_accuracy": _balanced_accuracy,
    "precision": _precision,
    "recall": _recall,
    "f1": _f1,
    "log_loss": _log_loss,
    "brier": _brier,
    "ece": _ece,
    "mae": _mae,
    "rmse": _rmse,
    "r2": _r2,
    "mape": _mape,
}
