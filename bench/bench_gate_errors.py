"""Gate error rates: how often a bound placed exactly at the true value is passed.

    .venv/bin/python bench/bench_gate_errors.py [--reps 400] [--resamples 1000] [--sizes 100,200,1000,10000]

A bound at the true value should pass at most (1 - level) / 2 = 2.5% of the time. For each
metric the gate offers, data are simulated with a known true value (ROC AUC from the
binormal model; every other metric's true value computed on 2,000,000 rows of the same
model), the bound is put at that value on the metric's passing side, and the share of runs
whose confidence limit clears it is printed. ROC AUC is shown before (percentile bootstrap,
the old method) and after (studentised logit bootstrap with DeLong's standard error), alone
and as candidate - baseline with the candidate exactly the margin worse (old: paired
percentile bootstrap of the difference; new: MOVER). Other metrics use the gate's own
intervals: Wilson for accuracy; before (percentile bootstrap) and after (Wilson per class for
precision, recall and balanced accuracy, studentised bootstrap of the mean for log loss, Brier,
MAE, RMSE and MAPE and of R2 with its delta-method standard error, percentile for ECE, BCa for
F1).

Everything runs through the functions the gate's checks call, on the gate's resample blocks.
The Monte-Carlo sd of a rate near 2.5% with R runs is sqrt(0.025 * 0.975 / R) (0.8 points at
400 runs, 1.1 at 200).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from scipy import stats

from ownloop.evaluation import _stats as st
from ownloop.evaluation._checks import _auc_of, _bca, _delong, _delong_pair, _paired_aucs
from ownloop.evaluation._metrics import METRICS, Outputs, prepare_metric

LEVEL = 0.95
ALPHA = (1 - LEVEL) / 2
PREVALENCE = 0.3
AUCS = (0.6, 0.8, 0.9, 0.99, 0.995)
MARGIN = 0.01


def _binormal(rng: np.random.Generator, n: int, auc: float) -> tuple[np.ndarray, np.ndarray]:
    y = rng.random(n) < PREVALENCE
    return y, rng.normal(size=n) + np.sqrt(2) * stats.norm.ppf(auc) * y


def _clf(y: np.ndarray, score: np.ndarray, shift: float = 0.0) -> Outputs:
    p = 1 / (1 + np.exp(-(score - shift)))
    return Outputs(
        y.astype(np.int64), (p > 0.5).astype(np.int64), np.column_stack([1 - p, p]), (0, 1)
    )


def _blocks(
    fn: Callable[[np.ndarray], np.ndarray], n: int, resamples: int, seed: int
) -> np.ndarray:
    return np.concatenate([fn(W) for W in st.BootstrapPlan(resamples, seed).blocks(n)])


def auc_single(
    rng: np.random.Generator, n: int, auc: float, resamples: int, seed: int
) -> tuple[bool, bool]:
    y, s = _binormal(rng, n, auc)
    out = _clf(y, s)
    m = prepare_metric("roc_auc", out)
    fn = _delong(m)
    reps = _blocks(fn, n, resamples, seed)
    before = st.percentile_interval(reps[:, 0], LEVEL)[0] >= auc
    after = _auc_of(m, out.y, fn(np.ones((1, n))), reps, 0, 1).limits(ALPHA)[0] >= auc
    return bool(before), bool(after)


def auc_paired(
    rng: np.random.Generator, n: int, auc: float, resamples: int, seed: int
) -> tuple[bool, bool]:
    """Baseline AUC ``auc``, candidate exactly MARGIN worse, scores correlated 0.7."""
    y = rng.random(n) < PREVALENCE
    e1, e2 = rng.normal(size=(2, n))
    base_s = np.sqrt(2) * stats.norm.ppf(auc) * y + e1
    cand_s = np.sqrt(2) * stats.norm.ppf(auc - MARGIN) * y + 0.7 * e1 + np.sqrt(1 - 0.49) * e2
    cand, base = _clf(y, cand_s), _clf(y, base_s)
    cm, bm = prepare_metric("roc_auc", cand), prepare_metric("roc_auc", base)
    fn = _delong_pair(cm, bm)
    reps = _blocks(fn, n, resamples, seed)
    before = st.percentile_interval(reps[:, 0] - reps[:, 1], LEVEL)[0] >= -MARGIN
    c, b, corr = _paired_aucs(cm, bm, cand.y, reps)
    after = st.auc_difference_interval(c, b, corr, ALPHA)[0] >= -MARGIN
    return bool(before), bool(after)


# -- every other metric ------------------------------------------------------------------------


def _classification(rng: np.random.Generator, n: int, auc: float) -> Outputs:
    y, s = _binormal(rng, n, auc)
    return _clf(y, s, shift=np.sqrt(2) * stats.norm.ppf(auc) / 2)


def _regression(rng: np.random.Generator, n: int, heavy: bool) -> Outputs:
    y = rng.uniform(5, 15, n)  # away from 0, so MAPE has a finite mean
    noise = rng.standard_t(5, n) if heavy else rng.normal(0, 1, n)
    return Outputs(y, y + noise, None, ())


MODELS: dict[str, Callable[[np.random.Generator, int], Outputs]] = {
    "clf AUC 0.8": lambda rng, n: _classification(rng, n, 0.8),
    "clf AUC 0.99": lambda rng, n: _classification(rng, n, 0.99),
    "reg normal errors": lambda rng, n: _regression(rng, n, False),
    "reg t(5) errors": lambda rng, n: _regression(rng, n, True),
}


def other_metric(
    name: str, model: str, rng: np.random.Generator, n: int, truth: float, resamples: int, seed: int
) -> tuple[bool, bool]:
    """(before, after): percentile, then the gate's interval now (Wilson per class for
    precision, recall and balanced accuracy; studentised bootstrap of the mean for log loss,
    Brier, MAE, RMSE and MAPE and of R2; percentile for ECE; BCa for F1); Wilson for accuracy."""
    out = MODELS[model](rng, n)
    d = METRICS[name]
    m = prepare_metric(name, out)
    if d.proportion:
        hits = float(np.sum(out.y == out.pred))
        old = new = st.wilson_interval(hits, n, LEVEL)
    else:
        reps = _blocks(m.value, n, resamples, seed)
        old = st.percentile_interval(reps, LEVEL)
        if m.shares is not None:
            new = st.mean_of_shares_interval(*m.shares, ALPHA)
        elif m.moments is not None and m.from_mean is not None:
            mean, se = m.moments(np.ones((1, n)))[0]
            moments = _blocks(m.moments, n, resamples, seed)
            new = st.studentised_mean(mean, se, moments, m.from_mean).limits(ALPHA)
        else:
            new = _bca(m.point(n), reps, m.leave_one_out, name).limits(ALPHA)
    side = 0 if d.higher_is_better else 1

    def passes(limits: tuple[float, float]) -> bool:
        x = limits[side]
        return bool(x >= truth) if d.higher_is_better else bool(x <= truth)

    return passes(old), passes(new)


def _paired_clf(rng: np.random.Generator, n: int) -> tuple[Outputs, Outputs]:
    """Baseline AUC 0.85, candidate 0.8, scores correlated 0.7 (as in the AUC comparison)."""
    y = rng.random(n) < PREVALENCE
    e1, e2 = rng.normal(size=(2, n))
    mb, mc = np.sqrt(2) * stats.norm.ppf(0.85), np.sqrt(2) * stats.norm.ppf(0.8)
    base = _clf(y, mb * y + e1, shift=mb / 2)
    cand = _clf(y, mc * y + 0.7 * e1 + np.sqrt(0.51) * e2, shift=mc / 2)
    return cand, base


def paired_other(
    name: str, rng: np.random.Generator, n: int, margin: float, resamples: int, seed: int
) -> tuple[bool, bool]:
    """Candidate worse than the baseline by exactly ``margin``: (percentile, gate now) pass?"""
    cand, base = _paired_clf(rng, n)
    d = METRICS[name]
    cm, bm = prepare_metric(name, cand), prepare_metric(name, base)
    plan = st.BootstrapPlan(resamples, seed)
    reps = np.vstack([np.column_stack([cm.value(W), bm.value(W)]) for W in plan.blocks(n)])
    diff = reps[:, 0] - reps[:, 1]
    c_loo, b_loo = cm.leave_one_out, bm.leave_one_out
    both = None if c_loo is None or b_loo is None else (lambda: c_loo() - b_loo())
    new = _bca(cm.point(n) - bm.point(n), diff, both, name).limits(ALPHA)
    old = st.percentile_interval(diff, LEVEL)
    if d.higher_is_better:
        return bool(old[0] >= -margin), bool(new[0] >= -margin)
    return bool(old[1] <= margin), bool(new[1] <= margin)


def _rate(runs: list[bool]) -> str:
    return f"{np.mean(runs):6.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=400, help="simulated data sets per cell")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--sizes", default="100,200,1000,10000")
    parser.add_argument(
        "--only", default="", help="auc, paired, other or paired-other (default: all)"
    )
    parser.add_argument("--big-reps", type=int, default=0, help="runs per cell at n > 1000")
    parser.add_argument("--aucs", default=",".join(map(str, AUCS)), help="true AUCs")
    parser.add_argument("--seed", type=int, default=0, help="another seed: other data sets")
    parser.add_argument("--metrics", default="", help="only these metrics (comma-separated)")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    aucs = [float(x) for x in args.aucs.split(",")]
    extra = [args.seed] if args.seed else []  # seed 0: the data sets quoted in the docs

    def reps_for(n: int) -> int:
        return args.reps if n <= 1000 else args.big_reps or max(args.reps // 2, 50)

    start = time.perf_counter()
    print(f"bound at the true value; stated false pass rate {ALPHA:.1%}; prevalence {PREVALENCE}")
    print(
        f"{reps_for(100)} runs per cell ({reps_for(10_000)} at n > 1000), {args.resamples} resamples\n"
    )
    if args.only in ("", "auc", "paired"):
        for kind, fn in (("auc", auc_single), ("paired", auc_paired)):
            if args.only and args.only != kind:
                continue
            what = (
                "ROC AUC >= true AUC"
                if kind == "auc"
                else f"AUC non-inferiority, candidate exactly {MARGIN} worse"
            )
            print(f"{what}: before (percentile) / after (new)")
            print(f"{'n':>7} " + " ".join(f"{'AUC ' + str(a):>15}" for a in aucs))
            for n in sizes:
                cells = []
                for auc in aucs:
                    rng = np.random.default_rng([n, int(auc * 1000), kind == "auc", *extra])
                    runs = [fn(rng, n, auc, args.resamples, r) for r in range(reps_for(n))]
                    b, a = zip(*runs, strict=True)
                    cells.append(f"{_rate(list(b))} /{_rate(list(a))}")
                print(f"{n:>7} " + " ".join(f"{c:>15}" for c in cells), flush=True)
            print()
    if args.only in ("", "other"):
        print("other metrics, bound at the true value: before (percentile) / after (now)")
        print("after: Wilson per class (precision, recall, balanced accuracy), studentised mean")
        print(
            "(log loss, Brier, MAE, RMSE, MAPE; R2 with its delta-method se), percentile (ECE), BCa (F1);"
        )
        print("accuracy: the Wilson interval both times")
        print(
            f"{'metric':<18}{'model':<20}{'true':>9} "
            + " ".join(f"{'n=' + str(n):>15}" for n in sizes)
        )
        for model in MODELS:
            big = MODELS[model](np.random.default_rng(99), 2_000_000)
            names = [
                m for m in METRICS if (METRICS[m].task == "classification") == bool(big.classes)
            ]
            for name in names:
                if name == "roc_auc" or (args.metrics and name not in args.metrics.split(",")):
                    continue
                truth = prepare_metric(name, big).point(big.n)
                cells = []
                for n in sizes:
                    rng = np.random.default_rng([n, len(name), len(model), *extra])
                    runs = [
                        other_metric(name, model, rng, n, truth, args.resamples, r)
                        for r in range(reps_for(n))
                    ]
                    b, a = zip(*runs, strict=True)
                    cells.append(f"{_rate(list(b))} /{_rate(list(a))}")
                print(
                    f"{name:<18}{model:<20}{truth:>9.4f} " + " ".join(f"{c:>15}" for c in cells),
                    flush=True,
                )
    if args.only in ("", "paired-other"):
        print("\nnon-inferiority on other metrics, candidate (AUC 0.8) worse than the baseline")
        print("(AUC 0.85) by exactly the margin: before (paired percentile) / after (paired BCa)")
        print(f"{'metric':<18}{'margin':>9} " + " ".join(f"{'n=' + str(n):>15}" for n in sizes))
        c_big, b_big = _paired_clf(np.random.default_rng(98), 2_000_000)
        for name in ("balanced_accuracy", "f1", "log_loss", "brier"):
            if args.metrics and name not in args.metrics.split(","):
                continue
            margin = abs(
                prepare_metric(name, c_big).point(c_big.n)
                - prepare_metric(name, b_big).point(b_big.n)
            )
            cells = []
            for n in sizes:
                rng = np.random.default_rng([n, len(name), 7, *extra])
                runs = [
                    paired_other(name, rng, n, margin, args.resamples, r)
                    for r in range(reps_for(n))
                ]
                b, a = zip(*runs, strict=True)
                cells.append(f"{_rate(list(b))} /{_rate(list(a))}")
            print(f"{name:<18}{margin:>9.4f} " + " ".join(f"{c:>15}" for c in cells), flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
