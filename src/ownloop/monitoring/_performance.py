"""Label-free performance estimates (confidence-based) and realised performance when labels arrive.

Confidence-based performance estimation (CBPE): if the model's probabilities are calibrated, each
row's chance of being predicted correctly is known, so the expected confusion matrix of a window
follows from its probabilities alone. This holds under covariate shift (the inputs move, P(y | x)
does not); under concept drift the estimate is wrong and only realised performance shows it.
Probabilities are re-calibrated with the reference's isotonic map when a Hosmer-Lemeshow test on
the reference says they are not calibrated.

The band is a prediction interval for the realised figure with two parts: the sampling variance of
the window's outcomes given its calibrated probabilities (exact for accuracy, simulated for the
rest), and the calibration's own variance, the spread of the figure over isotonic maps refitted on
bootstrap resamples of the reference. The second is shared by every row of the window, so it does
not shrink as the window grows. Warnings say when the window's scores lie where the reference had
few rows, and when the calibration there is much less certain than on the reference's own scores;
once labels arrive, :func:`choose_headline` tests the estimate against them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from ownloop.intervals import wilson_interval, z_for
from ownloop.profile import PROB_EDGES, ClassificationProfile, ReferenceProfile

__all__ = [
    "MIN_EXPECTED",
    "MIN_ROWS",
    "Calibration",
    "Estimate",
    "Headline",
    "Realised",
    "ReferenceSupport",
    "bootstrap_pred_sums",
    "calibrate",
    "calibration_from_profile",
    "calibration_test",
    "choose_headline",
    "estimate_from_partial",
    "realised_performance",
    "regression_performance",
    "support_from_profile",
    "support_from_rows",
]

Calibration = tuple[tuple[np.ndarray, np.ndarray], ...]
CALIBRATION_ALPHA = 0.01
METHOD = "cbpe (expected confusion matrix from calibrated probabilities; assumes no concept drift)"
MIN_ROWS = 30  # fewer scored rows than this: no estimate (INCONCLUSIVE)
MIN_EXPECTED = 5.0  # ... nor with fewer expected rows of either class (binary)
THIN_BIN = 30  # a score bin with fewer reference rows than this barely supports the calibration
THIN_SHARE = 0.10  # warn when at least this share of the window lies in such bins ...
THIN_EXCESS = 0.05  # ... and it exceeds the reference's own share by this much
WIDE_FACTOR = 2.0  # warn when the calibration sd is this many times the reference's own ...
WIDE_FLOOR = 0.01  # ... and at least this much (accuracy points)
WIDE_MULTICLASS = 0.02  # multiclass (no reference baseline): warn above this calibration sd
MIN_LABELS = 30  # labelled rows needed to test the estimate against realised accuracy
AGREE_ALPHA = 0.01  # two-sided level of that test


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
    # "ok"; "empty" (no scored rows); "inconclusive" (too few rows); "undefined" (no positives)
    status: str = "ok"
    warnings: tuple[str, ...] = ()  # why the estimate may not hold in this window
    sampling_sd: float | None = None  # sd of the realised figure given the calibrated probabilities
    calibration_sd: float | None = None  # sd of the estimate from the calibration map's own error


@dataclass(frozen=True)
class ReferenceSupport:
    """What the reference says about the calibration: per class, isotonic maps refitted on
    bootstrap resamples (points, draws x points), and its rows per ``PROB_EDGES`` bin of the
    positive-class score (binary) or of the top-class probability (multiclass)."""

    bootstrap: tuple[tuple[np.ndarray, np.ndarray], ...]
    score_hist: np.ndarray
    rows: int

    @property
    def draws(self) -> int:
        return int(self.bootstrap[0][1].shape[0]) if self.bootstrap else 0


@dataclass(frozen=True)
class Headline:
    """The accuracy a window report leads with, where it comes from and why."""

    metric: str
    value: float | None
    lower: float | None
    upper: float | None
    source: str  # "estimated", "realised" or "none"
    reason: str
    p_value: float | None = None  # of the test of the estimate against the labelled rows
    contradicted: bool = False  # labelled rows disagree with the estimate (the test rejected)


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
    n_effective: float | None = None  # Kish effective size of the labelled rows (weighted)


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


def support_from_profile(profile: ReferenceProfile) -> ReferenceSupport | None:
    """The calibration's bootstrap maps and the reference's score histogram (None if not stored)."""
    pred = profile.prediction
    if not isinstance(pred, ClassificationProfile) or not pred.calibration_bootstrap:
        return None
    boot = tuple(
        (np.asarray(b.x, float), np.asarray(b.maps, float).reshape(len(b.maps), len(b.x)))
        for b in pred.calibration_bootstrap
    )
    if len(pred.classes) == 2:
        hist = np.asarray(pred.probability.get(pred.classes[1], ()), dtype=float)
    else:
        hist = np.asarray(pred.confidence.hist_counts, dtype=float)
    rows = pred.reference_rows if pred.reference_rows is not None else int(hist.sum())
    return ReferenceSupport(boot, hist, rows)


def support_from_rows(proba: np.ndarray, onehot: np.ndarray, seed: int = 0) -> ReferenceSupport:
    """The same from reference rows: probabilities (n, k) and one-hot labels (n, k)."""
    from ownloop.profile import calibration_bootstrap

    k = proba.shape[1]
    boot = []
    for i in range(k):
        if k == 2 and i == 0:
            continue  # binary estimates read the positive class's maps only
        x, maps = calibration_bootstrap(proba[:, i], onehot[:, i], seed=seed + i)
        boot.append((np.asarray(x, float), np.asarray(maps, float).reshape(len(maps), len(x))))
    if k == 2:
        boot.insert(0, boot[0])  # keep the index of the class: [1] is the positive class
    score = proba[:, 1] if k == 2 else proba.max(axis=1)
    return ReferenceSupport(
        tuple(boot), np.histogram(score, bins=PROB_EDGES)[0].astype(float), int(proba.shape[0])
    )


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


def bootstrap_pred_sums(
    proba: np.ndarray, pred_idx: np.ndarray, bootstrap: tuple[tuple[np.ndarray, np.ndarray], ...]
) -> np.ndarray:
    """Per bootstrap calibration map: the sum over rows of the predicted class's calibrated
    probability (multiclass; each row renormalised to sum to 1)."""
    draws = int(bootstrap[0][1].shape[0]) if bootstrap else 0
    out = np.zeros(draws)
    if proba.shape[0] == 0:
        return out
    rows = np.arange(proba.shape[0])
    for b in range(draws):
        cal = np.column_stack(
            [np.interp(proba[:, i], x, maps[b]) for i, (x, maps) in enumerate(bootstrap)]
        )
        total = cal.sum(axis=1)
        picked = cal[rows, pred_idx]
        out[b] = float(np.where(total > 0, picked / np.where(total > 0, total, 1.0), 0.0).sum())
    return out


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
    support: ReferenceSupport | None = None,
    pred_c_boot: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
) -> list[Estimate]:
    """CBPE figures of one window from its score histogram (binary) or predicted-class sums.

    With ``support`` (the reference's bootstrap calibration maps and score histogram) the band
    includes the calibration's own uncertainty and the estimate carries warnings; multiclass
    needs ``pred_c_boot`` (the predicted-class probability summed under each bootstrap map) and
    the window's ``confidence`` histogram for the same.
    """
    names = ["accuracy", "precision", "recall", "f1", "roc_auc"] if n_classes == 2 else ["accuracy"]
    n = int(score_counts.sum()) if n_classes == 2 else n_rows
    if n == 0:
        return [
            Estimate(
                m,
                None,
                None,
                None,
                0,
                METHOD,
                calibrated,
                "no scored predictions in the window",
                status="empty",
            )
            for m in names
        ]
    why = _too_few(n, float(score_c.sum()) if n_classes == 2 else None)
    if why:
        return [
            Estimate(m, None, None, None, n, METHOD, calibrated, why, status="inconclusive")
            for m in names
        ]
    z = z_for(level)
    if n_classes != 2:
        return [
            _multiclass(
                n, pred_c, pred_c2, z, calibrated, support, pred_c_boot, confidence, level=level
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
    cal_sd: dict[str, float] = {}
    warnings: tuple[str, ...] = ()
    if support is not None and support.draws >= 2:
        cal_sd = _calibration_sd(score_counts, support.bootstrap[1])
        warnings = _binary_warnings(score_counts, support, cal_sd.get("accuracy"), z)
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
                    status="undefined",
                )
            )
            continue
        c_sd = cal_sd.get(m)
        extra = (z * c_sd) ** 2 if c_sd is not None else 0.0
        if m == "accuracy":
            s_sd = float(np.sqrt((sd * sd).sum())) / n
            half = float(np.sqrt((z * s_sd) ** 2 + extra))
            lo, hi = v - half, v + half
        else:
            vals = np.asarray(simulated[m], dtype=float)
            vals = vals[np.isfinite(vals)]
            q = (
                np.quantile(vals - vals.mean(), [0.5 - level / 2, 0.5 + level / 2])
                if vals.size
                else [0.0, 0.0]
            )
            s_sd = float(vals.std()) if vals.size else 0.0
            lo = v - float(np.sqrt(float(q[0]) ** 2 + extra))
            hi = v + float(np.sqrt(float(q[1]) ** 2 + extra))
        out.append(
            Estimate(
                m,
                v,
                max(lo, 0.0),
                min(hi, 1.0),
                n,
                _method(c_sd is not None),
                calibrated,
                status="ok",
                warnings=warnings,
                sampling_sd=s_sd,
                calibration_sd=c_sd,
            )
        )
    return out


def _method(with_calibration: bool) -> str:
    if not with_calibration:
        return METHOD + "; band: sampling only (the profile has no calibration bootstrap)"
    return METHOD + "; band: sampling and calibration-map uncertainty"


def _too_few(n: int, expected_positives: float | None) -> str:
    """Why a window is too small to estimate on (empty when it is not)."""
    if n < MIN_ROWS:
        return f"inconclusive: {n} scored rows; an estimate needs at least {MIN_ROWS}, so none is given"
    if expected_positives is not None:
        rarer = min(expected_positives, n - expected_positives)
        if rarer < MIN_EXPECTED:
            return (
                f"inconclusive: {rarer:.1f} rows of the rarer class expected among {n} "
                f"(at least {MIN_EXPECTED:g} needed), so no estimate is given"
            )
    return ""


def _centres(bins: int) -> np.ndarray:
    result: np.ndarray = (np.arange(bins) + 0.5) / bins
    return result


def _calibration_sd(
    score_counts: np.ndarray, boot: tuple[np.ndarray, np.ndarray]
) -> dict[str, float]:
    """The sd of each binary figure over the bootstrap calibration maps (scores at bin centres)."""
    x, maps = boot
    centres = _centres(score_counts.shape[-1])
    c = np.stack([np.interp(centres, x, row) for row in maps])  # draws x bins
    pos = score_counts[None, :, :] * c[:, None, :]
    figures = _binary_metrics(pos, score_counts)
    out = {}
    for m, vals in figures.items():
        v = np.asarray(vals, dtype=float)
        v = v[np.isfinite(v)]
        if v.size >= 2:
            out[m] = float(v.std(ddof=1))
    return out


def _coarse(hist: np.ndarray, bins: int) -> np.ndarray:
    """A fine histogram on [0, 1] summed into ``bins`` equal bins (its size a multiple of them)."""
    result: np.ndarray = np.asarray(hist, dtype=float).reshape(bins, -1).sum(axis=1)
    return result


def _thin_warning(window_hist: np.ndarray, ref_hist: np.ndarray) -> str:
    """Warn when the window's scores lie where the reference had few rows."""
    n, total = float(window_hist.sum()), float(ref_hist.sum())
    if n == 0 or total == 0 or window_hist.size != ref_hist.size:
        return ""
    thin = ref_hist < THIN_BIN
    share = float(window_hist[thin].sum()) / n
    ref_share = float(ref_hist[thin].sum()) / total
    if share >= THIN_SHARE and share - ref_share >= THIN_EXCESS:
        return (
            f"{share:.0%} of the window's scores lie where the reference had fewer than "
            f"{THIN_BIN} rows per {1 / ref_hist.size:.2f}-wide score bin (reference: "
            f"{ref_share:.0%}); the calibration there rests on few rows"
        )
    return ""


def _binary_warnings(
    score_counts: np.ndarray, support: ReferenceSupport, cal_sd: float | None, z: float
) -> tuple[str, ...]:
    bins = support.score_hist.size
    out = [_thin_warning(_coarse(score_counts.sum(axis=0), bins), support.score_hist)]
    if cal_sd is not None:
        # the same figure on the reference's own scores (its histogram, rows at bin centres)
        ref = np.zeros((2, bins))
        above = _centres(bins) >= 0.5
        ref[1, above], ref[0, ~above] = support.score_hist[above], support.score_hist[~above]
        base = _calibration_sd(ref, support.bootstrap[1]).get("accuracy") if ref.sum() else None
        if base is not None and cal_sd > max(WIDE_FACTOR * base, WIDE_FLOOR):
            out.append(
                f"the calibration is uncertain where this window's scores lie: +-{z * cal_sd:.3f} "
                f"accuracy from the calibration alone, against +-{z * base:.3f} on the "
                "reference's own scores"
            )
    return tuple(w for w in out if w)


def _multiclass(
    n: int,
    pred_c: float,
    pred_c2: float,
    z: float,
    calibrated: bool,
    support: ReferenceSupport | None,
    pred_c_boot: np.ndarray | None,
    confidence: np.ndarray | None,
    *,
    level: float,
) -> Estimate:
    acc = pred_c / n
    s_sd = float(np.sqrt(max(pred_c - pred_c2, 0.0))) / n
    c_sd = None
    if pred_c_boot is not None and np.asarray(pred_c_boot).size >= 2:
        c_sd = float(np.std(np.asarray(pred_c_boot, dtype=float) / n, ddof=1))
    half = z * float(np.sqrt(s_sd**2 + (c_sd or 0.0) ** 2))
    warnings = []
    if support is not None and confidence is not None and confidence.sum():
        warnings.append(
            _thin_warning(_coarse(confidence, support.score_hist.size), support.score_hist)
        )
    if c_sd is not None and c_sd > WIDE_MULTICLASS:
        warnings.append(
            f"the calibration is uncertain where this window's scores lie: +-{z * c_sd:.3f} "
            "accuracy from the calibration alone"
        )
    return Estimate(
        "accuracy",
        acc,
        max(acc - half, 0.0),
        min(acc + half, 1.0),
        n,
        _method(c_sd is not None),
        calibrated,
        status="ok",
        warnings=tuple(w for w in warnings if w),
        sampling_sd=s_sd,
        calibration_sd=c_sd,
    )


def choose_headline(
    estimated: Sequence[Estimate], realised: Sequence[Realised], *, level: float = 0.95
) -> Headline:
    """The accuracy to lead with: the estimate, unless labelled rows contradict it.

    The realised accuracy on the labelled rows (a random or weighted sample of the window) is
    compared with the estimate: under 'the estimate holds' their difference has variance
    (calibration variance) + (per-row outcome variance) / (effective labelled rows). When the
    two-sided test rejects at ``AGREE_ALPHA``, or the estimate is missing or inconclusive, or
    every row is labelled, the realised figure leads, and the reason says so.
    """
    est = next((e for e in estimated if e.metric == "accuracy"), None)
    real = next((r for r in realised if r.metric == "accuracy"), None)
    has_real = real is not None and real.value is not None and real.n_labelled > 0
    has_est = est is not None and est.value is not None
    if not has_est and not has_real:
        why = est.note if est is not None and est.note else "no estimate and no labels"
        return Headline("accuracy", None, None, None, "none", why)
    if not has_est:
        assert real is not None
        why = est.note if est is not None and est.note else "no estimate"
        return _realised_headline(real, f"{why}; showing realised")
    assert est is not None and est.value is not None
    if not has_real:
        return _estimated_headline(est, "no labels yet (the estimate assumes no concept drift)")
    assert real is not None and real.value is not None
    if real.coverage is not None and real.coverage >= 0.99:
        return _realised_headline(real, "every row of the window is labelled; showing realised")
    n_eff = real.n_effective if real.n_effective is not None else float(real.n_labelled)
    if real.n_labelled < MIN_LABELS or est.sampling_sd is None:
        return _estimated_headline(
            est,
            f"{real.n_labelled:,} labelled rows are too few to test it against "
            f"(at least {MIN_LABELS} needed)",
        )
    row_var = est.sampling_sd**2 * est.n  # the window's mean p(1 - p)
    var = (est.calibration_sd or 0.0) ** 2 + row_var / max(n_eff, 1.0)
    diff = real.value - est.value
    p = float(2 * stats.norm.sf(abs(diff) / np.sqrt(var))) if var > 0 else float(diff == 0)
    rows = f"{real.n_labelled:,} labelled rows"
    if p < AGREE_ALPHA:
        return _realised_headline(
            real,
            f"estimated accuracy {est.value:.2f} disagrees with {real.value:.2f} realised on "
            f"{rows} (p = {p:.2g}); showing realised",
            p,
        )
    return _estimated_headline(
        est, f"agrees with {real.value:.2f} realised on {rows} (p = {p:.2g})", p
    )


def _estimated_headline(est: Estimate, reason: str, p: float | None = None) -> Headline:
    return Headline("accuracy", est.value, est.lower, est.upper, "estimated", reason, p)


def _realised_headline(real: Realised, reason: str, p: float | None = None) -> Headline:
    contradicted = p is not None and p < AGREE_ALPHA
    return Headline(
        "accuracy", real.value, real.lower, real.upper, "realised", reason, p, contradicted
    )


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
    out = [
        Realised(
            "accuracy", acc, lo, hi, n, coverage, acc_method, bool(weighted), n_effective=n_eff
        )
    ]
    if positive is None:
        return out
    yt = (y_true == positive).astype(float)
    yp = (y_pred == positive).astype(float)
    b = max(20, min(boot, 5_000_000 // max(n, 1)))
    f1, auc = _replicates(yt, yp, score, w, b, np.random.default_rng(seed))
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
    tp = (w * (yt * yp)).sum(axis=1)  # a row's sum never depends on how many rows there are
    fp = (w * ((1 - yt) * yp)).sum(axis=1)
    fn = (w * (yt * (1 - yp))).sum(axis=1)
    result: np.ndarray = _ratio(2 * tp, 2 * tp + fp + fn)
    return result


def _replicates(
    yt: np.ndarray,
    yp: np.ndarray,
    score: np.ndarray | None,
    w: np.ndarray,
    b: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """F1 and ROC AUC (NaN without scores) of the sample, then of ``b`` bootstrap replicates.

    The replicates' weights are drawn a few rows at a time (one multinomial draw per replicate,
    in order, so the figures do not depend on the block size) and dropped once their figures are
    taken: memory holds about ``_AUC_CELLS`` weights whatever ``b`` and the labelled rows."""
    n = w.size
    uniform = np.full(n, 1.0 / n)
    group, g = None, 0
    if score is not None:
        _, group = np.unique(score, return_inverse=True)
        g = int(group.max()) + 1 if group.size else 0
    step = max(1, _AUC_CELLS // max(n, 1))
    f1: list[np.ndarray] = []
    auc: list[np.ndarray] = []
    for at in range(0, b + 1, step):
        rows = min(step, b + 1 - at)
        wb = np.empty((rows, n))  # row 0 of the first block: the sample's own weights
        for i in range(rows):
            wb[i] = w if at + i == 0 else rng.multinomial(n, uniform) * w
        f1.append(_weighted_f1(yt, yp, wb))
        auc.append(_auc_rows(yt, group, g, wb) if group is not None else np.full(rows, np.nan))
    return np.concatenate(f1), np.concatenate(auc)


_AUC_CELLS = 2_000_000  # bootstrap weights held at once by _replicates


def _auc_rows(yt: np.ndarray, group: np.ndarray, g: int, w: np.ndarray) -> np.ndarray:
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
