"""Label-free performance estimates (confidence-based) and realised performance when labels arrive.

Confidence-based performance estimation (CBPE): if the model's probabilities are calibrated, each
row's chance of being predicted correctly is known, so the expected confusion matrix of a window
follows from its probabilities alone. This holds under covariate shift (the inputs move, P(y | x)
does not); under concept drift the estimate is wrong and only realised performance shows it.
Probabilities are re-calibrated with the reference's isotonic map when a Hosmer-Lemeshow test on
the reference says they are not calibrated. The band is a prediction interval for the realised
figure given the window's probabilities (exact variance for accuracy, simulation for the rest);
it leaves out the reference's own calibration error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from ownloop.intervals import wilson_interval, z_for
from ownloop.profile import ClassificationProfile, ReferenceProfile

__all__ = [
    "Calibration",
    "Estimate",
    "Realised",
    "calibrate",
    "calibration_from_profile",
    "calibration_test",
    "estimate_from_partial",
    "realised_performance",
    "regression_performance",
]

Calibration = tuple[tuple[np.ndarray, np.ndarray], ...]
CALIBRATION_ALPHA = 0.01
METHOD = "cbpe (expected confusion matrix from calibrated probabilities; assumes no concept drift)"


@dataclass(frozen=True)
class Estimate:
    """A label-free estimate with its band (a prediction interval for the realised figure)."""

    metric: str
    value: float | None
    lower: float | None
    upper: float | None
    n: int
    method: str
    calibrated: bool
    note: str = ""


@dataclass(frozen=True)
class Realised:
    """A realised figure on the labelled rows, with a confidence interval and the label coverage."""

    metric: str
    value: float | None
    lower: float | None
    upper: float | None
    n_labelled: int
    coverage: float | None
    method: str
    weighted: bool
    note: str = ""


def calibration_test(
    counts: Sequence[float] | np.ndarray,
    positives: Sequence[float] | np.ndarray,
    prob_sums: Sequence[float] | np.ndarray,
) -> float:
    """Hosmer-Lemeshow p-value of 'these probabilities are calibrated' from binned sums."""
    n = np.asarray(counts, dtype=float)
    o = np.asarray(positives, dtype=float)
    e = np.asarray(prob_sums, dtype=float)
    keep = n > 0
    n, o, e = n[keep], o[keep], e[keep]
    var = e * (1 - e / n)
    ok = var > 1e-12
    if ok.sum() < 3:
        return 1.0
    hl = float((((o - e) ** 2)[ok] / var[ok]).sum())
    return float(stats.chi2.sf(hl, max(int(ok.sum()) - 2, 1)))


def calibration_from_profile(
    profile: ReferenceProfile, calibrate: bool | None
) -> Calibration | None:
    """The reference's isotonic maps when calibration is needed (or forced); else None."""
    pred = profile.prediction
    if not isinstance(pred, ClassificationProfile):
        return None
    cmap = pred.calibration_map
    if calibrate is False or not cmap:
        return None
    if calibrate is None:
        bins = pred.calibration
        if not bins or not bins[0].prob_sums:
            return None
        worst = min(
            calibration_test(np.asarray(b.counts), np.asarray(b.positives), np.asarray(b.prob_sums))
            for b in bins
        )
        if worst >= CALIBRATION_ALPHA:
            return None
    return tuple((np.asarray(m.x, float), np.asarray(m.y, float)) for m in cmap)


def calibrate(proba: np.ndarray, calibration: Calibration | None) -> np.ndarray:
    """Apply per-class isotonic maps; rows renormalised for more than two classes."""
    if calibration is None or proba.shape[0] == 0:
        return proba
    k = proba.shape[1]
    if k == 2:
        x, y = calibration[1]
        c1 = np.interp(proba[:, 1], x, y) if x.size else proba[:, 1]
        return np.column_stack((1 - c1, c1))
    out = np.column_stack(
        [
            np.interp(proba[:, i], x, y) if x.size else proba[:, i]
            for i, (x, y) in enumerate(calibration)
        ]
    )
    s = out.sum(axis=1, keepdims=True)
    return np.where(s > 0, out / np.where(s > 0, s, 1.0), proba)


def _ratio(a: np.ndarray | float, b: np.ndarray | float) -> Any:
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.where(b_arr > 0, a_arr / np.where(b_arr > 0, b_arr, 1.0), np.nan)


def _binary_metrics(pos: np.ndarray, cnt: np.ndarray) -> dict[str, Any]:
    """Metrics from per-bin positives ``pos[..., 2, bins]`` and counts ``cnt[2, bins]``.

    Row 0 holds rows predicted as class 0, row 1 as class 1; bins are ordered by score.
    """
    tp = pos[..., 1, :].sum(axis=-1)
    fn = pos[..., 0, :].sum(axis=-1)
    fp = cnt[1].sum() - tp
    tn = cnt[0].sum() - fn
    n = cnt.sum()
    p_bin = pos.sum(axis=-2)
    n_bin = cnt.sum(axis=0) - p_bin
    neg_below = np.cumsum(n_bin, axis=-1) - n_bin
    pairs = (p_bin * (neg_below + 0.5 * n_bin)).sum(axis=-1)
    return {
        "accuracy": _ratio(tp + tn, n),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "roc_auc": _ratio(pairs, (tp + fn) * (fp + tn)),
    }


def estimate_from_partial(
    score_counts: np.ndarray,
    score_c: np.ndarray,
    score_c2: np.ndarray,
    *,
    n_classes: int,
    pred_c: float = 0.0,
    pred_c2: float = 0.0,
    n_rows: int = 0,
    calibrated: bool = False,
    level: float = 0.95,
    draws: int = 400,
    seed: int = 0,
) -> list[Estimate]:
    """CBPE figures of one window from its score histogram (binary) or predicted-class sums."""
    names = ["accuracy", "precision", "recall", "f1", "roc_auc"] if n_classes == 2 else ["accuracy"]
    n = int(score_counts.sum()) if n_classes == 2 else n_rows
    if n == 0:
        return [
            Estimate(
                m, None, None, None, 0, METHOD, calibrated, "no scored predictions in the window"
            )
            for m in names
        ]
    z = z_for(level)
    if n_classes != 2:
        acc = pred_c / n
        half = z * np.sqrt(max(pred_c - pred_c2, 0.0)) / n
        return [
            Estimate(
                "accuracy", acc, max(acc - half, 0.0), min(acc + half, 1.0), n, METHOD, calibrated
            )
        ]
    point = _binary_metrics(score_c, score_counts)
    rng = np.random.default_rng(seed)
    sd = np.sqrt(np.clip(score_c - score_c2, 0.0, None))
    # labels per score bin ~ Binomial(rows, mean probability): within a 0.001-wide bin the
    # probabilities barely differ, so this matches the exact Poisson-binomial closely
    counts = score_counts.astype(np.int64)
    mean_c = np.where(counts > 0, score_c / np.maximum(counts, 1), 0.0)
    sim = rng.binomial(
        np.broadcast_to(counts, (draws, *counts.shape)), np.clip(mean_c, 0.0, 1.0)
    ).astype(float)
    simulated = _binary_metrics(sim, score_counts)
    out = []
    for m in names:
        v = float(point[m])
        if not np.isfinite(v):
            out.append(
                Estimate(
                    m,
                    None,
                    None,
                    None,
                    n,
                    METHOD,
                    calibrated,
                    f"{m} undefined: no expected positives or negatives",
                )
            )
            continue
        if m == "accuracy":
            half = z * float(np.sqrt((sd * sd).sum())) / n
            lo, hi = v - half, v + half
        else:
            vals = np.asarray(simulated[m], dtype=float)
            vals = vals[np.isfinite(vals)]
            q = (
                np.quantile(vals - vals.mean(), [0.5 - level / 2, 0.5 + level / 2])
                if vals.size
                else [0.0, 0.0]
            )
            lo, hi = v + float(q[0]), v + float(q[1])
        out.append(Estimate(m, v, max(lo, 0.0), min(hi, 1.0), n, METHOD, calibrated))
    return out


def realised_performance(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    score: np.ndarray | None = None,
    positive: str | None = None,
    weights: np.ndarray | None = None,
    total_rows: int,
    level: float = 0.95,
    boot: int = 200,
    seed: int = 0,
) -> list[Realised]:
    """Accuracy (Wilson interval; weighted: Kish effective n) and, for binary, F1 and ROC AUC (bootstrap)."""
    n = int(y_true.size)
    coverage = n / total_rows if total_rows else None
    weighted = weights is not None
    w = np.ones(n) if weights is None else np.where(np.isfinite(weights), weights, 1.0)
    names = ["accuracy"] + (["f1", "roc_auc"] if positive is not None else [])
    if n == 0:
        return [
            Realised(
                m,
                None,
                None,
                None,
                0,
                coverage,
                "no labelled rows",
                bool(weighted),
                "no labels yet in this window",
            )
            for m in names
        ]
    correct = (y_true == y_pred).astype(float)
    acc = float((w * correct).sum() / w.sum())
    n_eff = float(w.sum() ** 2 / (w * w).sum())
    lo, hi = wilson_interval(acc * n_eff, n_eff, level)
    acc_method = (
        "weighted accuracy, Wilson interval on Kish effective n"
        if weighted
        else "accuracy, Wilson interval"
    )
    out = [Realised("accuracy", acc, lo, hi, n, coverage, acc_method, bool(weighted))]
    if positive is None:
        return out
    yt = (y_true == positive).astype(float)
    yp = (y_pred == positive).astype(float)
    rng = np.random.default_rng(seed)
    b = max(20, min(boot, 5_000_000 // max(n, 1)))
    wb = np.vstack((w, rng.multinomial(n, np.full(n, 1.0 / n), size=b) * w))
    f1 = _weighted_f1(yt, yp, wb)
    auc = _weighted_auc(yt, score, wb) if score is not None else np.full(b + 1, np.nan)
    for name, vals in (("f1", f1), ("roc_auc", auc)):
        v = float(vals[0])
        if not np.isfinite(v):
            out.append(
                Realised(
                    name,
                    None,
                    None,
                    None,
                    n,
                    coverage,
                    "bootstrap",
                    bool(weighted),
                    f"{name} undefined: the labelled rows hold one class only or no scores",
                )
            )
            continue
        rest = vals[1:][np.isfinite(vals[1:])]
        q = np.quantile(rest, [0.5 - level / 2, 0.5 + level / 2]) if rest.size else [v, v]
        out.append(
            Realised(
                name,
                v,
                float(q[0]),
                float(q[1]),
                n,
                coverage,
                f"{name}, percentile bootstrap ({b})",
                bool(weighted),
            )
        )
    return out


def _weighted_f1(yt: np.ndarray, yp: np.ndarray, w: np.ndarray) -> np.ndarray:
    """F1 per row of weights ``w`` (first row: the sample itself, then bootstrap replicates)."""
    tp = w @ (yt * yp)
    fp = w @ ((1 - yt) * yp)
    fn = w @ (yt * (1 - yp))
    result: np.ndarray = _ratio(2 * tp, 2 * tp + fp + fn)
    return result


def _weighted_auc(yt: np.ndarray, score: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ROC AUC (ties count one half) per row of weights ``w``."""
    _, group = np.unique(score, return_inverse=True)
    g = int(group.max()) + 1 if group.size else 0
    rows = w.shape[0]
    ids = (group[None, :] + g * np.arange(rows)[:, None]).ravel()
    pos = np.bincount(ids, weights=(w * yt).ravel(), minlength=rows * g).reshape(rows, g)
    neg = np.bincount(ids, weights=(w * (1 - yt)).ravel(), minlength=rows * g).reshape(rows, g)
    below = np.cumsum(neg, axis=1) - neg
    pairs = (pos * (below + 0.5 * neg)).sum(axis=1)
    result: np.ndarray = _ratio(pairs, pos.sum(axis=1) * neg.sum(axis=1))
    return result


def regression_performance(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    total_rows: int,
    level: float = 0.95,
) -> list[Realised]:
    """MAE and RMSE on the labelled rows, with normal-approximation intervals (Kish effective n)."""
    n = int(y_true.size)
    coverage = n / total_rows if total_rows else None
    if n == 0:
        return [
            Realised(
                m,
                None,
                None,
                None,
                0,
                coverage,
                "no labelled rows",
                weights is not None,
                "no labels yet in this window",
            )
            for m in ("mae", "rmse")
        ]
    w = np.ones(n) if weights is None else np.where(np.isfinite(weights), weights, 1.0)
    w = w / w.sum()
    n_eff = 1.0 / float((w * w).sum())
    z = z_for(level)
    out = []
    for name, err in (("mae", np.abs(y_pred - y_true)), ("rmse", (y_pred - y_true) ** 2)):
        m = float((w * err).sum())
        sd = float(np.sqrt(max((w * (err - m) ** 2).sum(), 0.0) * n_eff / max(n_eff - 1, 1)))
        half = z * sd / np.sqrt(n_eff)
        lo, hi = max(m - half, 0.0), m + half
        if name == "rmse":  # interval of the mean squared error, mapped through the square root
            m, lo, hi = float(np.sqrt(m)), float(np.sqrt(lo)), float(np.sqrt(hi))
        out.append(
            Realised(name, m, lo, hi, n, coverage, f"{name}, normal interval", weights is not None)
        )
    return out
