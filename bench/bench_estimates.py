"""Coverage of the label-free (CBPE) accuracy band: simulation with known truth and real data.

    .venv/bin/python bench/bench_estimates.py [--data DIR] [--reps 200] [--skip-sim] [--skip-real]

Simulation: a reference of 2,000 rows and windows of 500 to 5,000 rows under covariate shift (the
inputs move, P(y | x) stays), for a calibrated model and an overconfident one (its probabilities
re-calibrated on the reference). Each repetition draws a new reference, so the band must cover the
error of the calibration fitted on it too. Concept shift (the score-outcome relation moves) is
simulated to measure the warnings and the switch to realised figures once 10% of labels arrive.

Real data: NannyML's US-census employment set (Massachusetts; reference 2015, analysis
2016-2018), read from ``--data`` (the files ``employment_MA_reference.pq``,
``employment_MA_analysis.pq`` and ``employment_MA_analysis_target.pq`` under
``nannyml/datasets/data/`` of the nannyml wheel, e.g. ``pip download nannyml==0.13.1 --no-deps``
and unzip). The reference is the full 2015 set or a random subset of it; the analysis period is
cut into chunks; each chunk's realised accuracy is compared with the estimate and its band.

Prints, per setting: windows, band coverage of the realised figure (nominal 0.95), the sd of the
standardised error (realised - estimate) / (half-width / 1.96) (1.0 when the band is right), the
mean half-width and, where the code has them, warning and switch rates.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import ownloop

HERE = Path(__file__).resolve().parent
CACHE = HERE / "out" / "nannyml-data"
BETA = np.array([3.5, -2.5, 2.0, 1.0])


def simulate(
    rng: np.random.Generator,
    n: int,
    shift: float = 0.0,
    sharpness: float = 1.0,
    concept: float = 0.0,
) -> pd.DataFrame:
    """Covariate shift by ``shift``; ``concept`` moves the outcome's logit (P(y | x) changes)."""
    X = rng.normal(0, 1, (n, 4))
    X[:, 0] += shift
    X[:, 1] -= shift / 2
    logit = X @ BETA - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-(logit - concept * (1 + X[:, 2]))))).astype(int)
    return pd.DataFrame({"p": 1 / (1 + np.exp(-sharpness * logit)), "y": y})


def _accuracy(res: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    est = [next(e for e in r.estimated if e.metric == "accuracy") for r in res]
    value = np.array([np.nan if e.value is None else e.value for e in est], dtype=float)
    lo = np.array([np.nan if e.lower is None else e.lower for e in est], dtype=float)
    hi = np.array([np.nan if e.upper is None else e.upper for e in est], dtype=float)
    return value, lo, hi


def _warned(res: Any) -> np.ndarray:
    est = [next(e for e in r.estimated if e.metric == "accuracy") for r in res]
    return np.array([bool(getattr(e, "warnings", ())) for e in est])


def _switched(res: Any) -> np.ndarray:
    """Chunks whose headline turned realised because labelled rows contradicted the estimate."""
    return np.array(
        [bool(getattr(getattr(r, "headline", None), "contradicted", False)) for r in res]
    )


def summarise(value: np.ndarray, lo: np.ndarray, hi: np.ndarray, real: np.ndarray) -> str:
    ok = np.isfinite(value) & np.isfinite(lo)
    v, low, high, r = value[ok], lo[ok], hi[ok], real[ok]
    half = (high - low) / 2
    z = (r - v) / np.where(half > 0, half / 1.96, np.nan)
    cover = float(((r >= low) & (r <= high)).mean())
    se = np.sqrt(cover * (1 - cover) / max(v.size, 1))
    return (
        f"windows {v.size:5d}  coverage {cover:.3f} (se {se:.3f})  "
        f"sd(z) {np.nanstd(z):.2f}  mean |error| {np.abs(r - v).mean():.4f}  "
        f"half-width {half.mean():.4f}"
    )


def simulation(reps: int, seed: int) -> None:
    print(
        "simulation: reference 2,000 rows, covariate shift 0 to 1.2 (windows per size:", reps, ")"
    )
    for sharpness in (1.0, 1.6):
        for size in (500, 1000, 2000, 5000):
            rng = np.random.default_rng(seed + size + int(sharpness * 10))
            vals, los, his, reals = [], [], [], []
            per_ref = 5
            for _ in range(max(reps // per_ref, 1)):
                reference = simulate(rng, 2000, sharpness=sharpness)
                chunks = [
                    simulate(rng, size, shift=s, sharpness=sharpness)
                    for s in rng.uniform(0, 1.2, per_ref)
                ]
                current = pd.concat(chunks, ignore_index=True)
                res = ownloop.estimate_performance(
                    reference, current[["p"]], y_pred_proba="p", y_true="y", chunk_size=size
                )
                v, lo, hi = _accuracy(res)
                vals.append(v)
                los.append(lo)
                his.append(hi)
                reals.append(np.array([((c["p"] > 0.5) == c["y"]).mean() for c in chunks]))
            name = "calibrated" if sharpness == 1.0 else "overconfident"
            print(
                f"  {name:13s} window {size:5d}: "
                + summarise(*map(np.concatenate, (vals, los, his, reals)))
            )


def concept(reps: int, seed: int) -> None:
    """Warnings and the switch to realised figures, with and without concept shift."""
    print("concept shift: reference 2,000 rows, windows of 2,000, 10% of labels arrive")
    for label, move in (
        ("no shift", 0.0),
        ("covariate", 0.0),
        ("covariate 3", 0.0),
        ("concept 1.0", 1.0),
        ("concept 2.0", 2.0),
    ):
        rng = np.random.default_rng(seed + int(move * 100) + len(label))
        warned, switched, n, inconclusive = 0, 0, 0, 0
        gaps, covered = [], []
        per_ref = 5
        for _ in range(max(reps // per_ref, 1)):
            reference = simulate(rng, 2000)
            shifts = (
                rng.uniform(0, 1.2, per_ref)
                if label == "covariate"
                else rng.uniform(2.5, 3.5, per_ref)
                if label == "covariate 3"
                else np.zeros(per_ref)
            )
            chunks = [simulate(rng, 2000, shift=s, concept=move) for s in shifts]
            current = pd.concat(chunks, ignore_index=True)
            res = ownloop.estimate_performance(
                reference, current[["p"]], y_pred_proba="p", y_true="y", chunk_size=2000
            )
            warned += int(_warned(res).sum())
            v, lo, hi = _accuracy(res)
            truth = np.array([((c["p"] > 0.5) == c["y"]).mean() for c in chunks])
            some = np.isfinite(v)
            inconclusive += int((~some).sum())
            gaps.append((v - truth)[some])
            covered.append(((truth >= lo) & (truth <= hi))[some])
            labelled = current.copy()
            labelled.loc[rng.random(len(current)) >= 0.1, "y"] = np.nan
            res = ownloop.estimate_performance(
                reference, labelled, y_pred_proba="p", y_true="y", chunk_size=2000
            )
            switched += int(_switched(res).sum())
            n += len(res)
        print(
            f"  {label:12s}: windows {n}  inconclusive {inconclusive / n:.3f}  estimate - realised "
            f"{np.mean(np.concatenate(gaps)):+.3f}  coverage {np.mean(np.concatenate(covered)):.3f}  "
            f"warned {warned / n:.3f}  switched to realised (contradicted) {switched / n:.3f}"
        )


def _employment(data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    names = (
        "employment_MA_reference.pq",
        "employment_MA_analysis.pq",
        "employment_MA_analysis_target.pq",
    )
    missing = [n for n in names if not (data / n).exists()]
    if missing:
        raise SystemExit(
            f"{data} lacks {', '.join(missing)}: pip download nannyml==0.13.1 --no-deps, unzip the "
            "wheel and pass --data <dir>/nannyml/datasets/data"
        )
    ref = pd.read_parquet(data / names[0])
    ana = pd.read_parquet(data / names[1]).merge(pd.read_parquet(data / names[2]), on="id")
    cols = ["predicted_probability", "prediction", "employed"]
    return ref[cols].reset_index(drop=True), ana[cols].reset_index(drop=True)


def real(data: Path, seed: int) -> None:
    ref, ana = _employment(data)
    print(f"US census employment (MA): reference {len(ref):,} rows, analysis {len(ana):,} rows")
    rng = np.random.default_rng(seed)
    for ref_rows, draws in ((None, 1), (10_000, 5), (2_000, 5)):
        for size in (1000, 5000):
            vals, los, his, reals, warned = [], [], [], [], []
            for _ in range(draws):
                reference = (
                    ref
                    if ref_rows is None
                    else ref.sample(ref_rows, random_state=rng.integers(1 << 31))
                )
                res = ownloop.estimate_performance(
                    reference,
                    ana[["predicted_probability", "prediction"]],
                    y_pred_proba="predicted_probability",
                    y_true="employed",
                    y_pred="prediction",
                    chunk_size=size,
                )
                v, lo, hi = _accuracy(res)
                truth = np.array(
                    [
                        (
                            ana["prediction"].iloc[r.start : r.end]
                            == ana["employed"].iloc[r.start : r.end]
                        ).mean()
                        for r in res
                    ]
                )
                full = np.array([r.end - r.start == size for r in res])
                vals.append(v[full])
                los.append(lo[full])
                his.append(hi[full])
                reals.append(truth[full])
                warned.append(_warned(res)[full])
            if ref_rows is None:
                _labels_arrive(ref, ana, size, rng)
            rows = "all" if ref_rows is None else f"{ref_rows:,}"
            print(
                f"  reference {rows:>6s}, chunk {size:5d}: "
                + summarise(*map(np.concatenate, (vals, los, his, reals)))
                + f"  warned {np.concatenate(warned).mean():.3f}"
            )


def _labels_arrive(
    ref: pd.DataFrame, ana: pd.DataFrame, size: int, rng: np.random.Generator
) -> None:
    """10% of the analysis rows labelled at random: how often the headline turns realised, and
    how often the headline's band covers the chunk's accuracy on all its rows."""
    cur = ana.copy()
    cur["employed"] = cur["employed"].astype(float)
    cur.loc[rng.random(len(cur)) >= 0.1, "employed"] = np.nan
    res = ownloop.estimate_performance(
        ref,
        cur,
        y_pred_proba="predicted_probability",
        y_true="employed",
        y_pred="prediction",
        chunk_size=size,
    )
    heads = [r.headline for r in res if r.end - r.start == size]
    truth = np.array(
        [
            (
                ana["prediction"].iloc[r.start : r.end] == ana["employed"].iloc[r.start : r.end]
            ).mean()
            for r in res
            if r.end - r.start == size
        ]
    )
    switched = np.array([h is not None and h.source == "realised" for h in heads])
    covered = np.array(
        [
            h is not None
            and h.lower is not None
            and h.upper is not None
            and h.lower <= t <= h.upper
            for h, t in zip(heads, truth, strict=True)
        ]
    )
    print(
        f"  reference    all, chunk {size:5d}, 10% labelled: headline realised in "
        f"{switched.mean():.3f} of {switched.size} chunks; headline band covers {covered.mean():.3f}"
    )


def california(data: Path, seed: int) -> None:
    """NannyML's California housing set: analysis rows in geographic order, so the score-outcome
    relation moves between chunks (concept shift). Per chunk: estimate, realised, warnings, and
    the headline with 10% of labels."""
    ref_path, ana_path, gt_path = (
        data / f"california_housing_{n}.csv" for n in ("reference", "analysis", "analysis_gt")
    )
    if not ref_path.exists():
        print(f"  (no {ref_path.name} under {data}: California housing skipped)")
        return
    ref = pd.read_csv(ref_path)
    ana = pd.read_csv(ana_path).merge(pd.read_csv(gt_path), on="id")
    rng = np.random.default_rng(seed)
    cur = ana[["y_pred_proba", "y_pred", "clf_target"]].astype({"clf_target": float})
    cur.loc[rng.random(len(cur)) >= 0.1, "clf_target"] = np.nan
    res = ownloop.estimate_performance(
        ref,
        cur,
        y_pred_proba="y_pred_proba",
        y_true="clf_target",
        y_pred="y_pred",
        chunk_size=1000,
    )
    print(
        f"California housing: reference {len(ref):,} rows, analysis {len(ana):,} rows in chunks "
        "of 1,000, 10% labelled"
    )
    for r in res:
        e = next(x for x in r.estimated if x.metric == "accuracy")
        part = ana.iloc[r.start : r.end]
        truth = float((part["y_pred"] == part["clf_target"]).mean())
        band = "-" if e.lower is None else f"[{e.lower:.3f}, {e.upper:.3f}]"
        h = getattr(r, "headline", None)
        head = "-" if h is None or h.value is None else f"{h.source} {h.value:.3f}"
        print(
            f"  chunk {r.index}: estimate {e.value if e.value is None else round(e.value, 3)} "
            f"{band}, realised (all rows) {truth:.3f}, warnings {len(getattr(e, 'warnings', ()))}, headline {head}"
        )


def main(argv: Iterable[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data", type=Path, default=CACHE, help="directory holding NannyML's employment_MA_*.pq"
    )
    ap.add_argument("--reps", type=int, default=200, help="simulated windows per setting")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-sim", action="store_true")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--skip-concept", action="store_true")
    args = ap.parse_args(list(argv) if argv is not None else None)
    if not args.skip_sim:
        simulation(args.reps, args.seed)
    if not args.skip_concept:
        concept(args.reps, args.seed)
    if not args.skip_real:
        california(args.data, args.seed)
        real(args.data, args.seed)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
