"""Drift detection rate against window size, for several shift sizes: the table and a plot.

    .venv/bin/python bench/bench_drift_power.py [--windows 200] [--svg docs/img/drift-power.svg]

Reference: 1,000,000 rows of N(0, 1) and of a boolean with 30% True (so the reference's own
sampling error, about 0.001 sd, does not blur the shifts). Each window is one feature's partial
statistics drawn as multinomial counts over the reference grid's bins from the shifted
distribution (what binning that many rows gives, without drawing them; the sums beyond the grid's
ends are set to their expectation), judged alone by ``evaluate_drift`` with the default settings
(alpha 0.05, min_effect 0.05 sd). Series: mean shifts of 0, 0.05, 0.1, 0.2 and 0.5 sd; boolean
share moves of 5 and 10 points (0.11 and 0.21 sd); 1% of rows moved by +10 sd, judged by the tail
check (``tail_drifted``) and by the drift rule. The plot is plain SVG, drawn here.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ownloop.monitoring import evaluate_drift
from ownloop.monitoring._partial import CategoricalPartial, NumericPartial, WindowPartial, grid_of
from ownloop.profile import NumericProfile, ReferenceProfile, categorical_profile, numeric_profile

SIZES = [100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000]
REF_ROWS = 1_000_000
P0 = 0.3
TAIL_SHARE, TAIL_SD = 0.01, 10.0


def _excess(g: float, mu: float) -> float:
    """E[(X - g)+] for X ~ N(mu, 1)."""
    z = g - mu
    return float(stats.norm.pdf(z) - z * stats.norm.sf(z))


def _numeric(
    rng: np.random.Generator, ref: NumericProfile, n: int, parts: list[tuple[float, float]]
) -> WindowPartial:
    """n values from a mixture of N(mu, 1) with weights: ``parts`` is [(weight, mu), ...]."""
    grid = grid_of(ref)
    edges = np.concatenate(([-np.inf], grid, [np.inf]))
    cdf = sum(w * stats.norm.cdf(edges - mu) for w, mu in parts)
    counts = rng.multinomial(n, np.clip(np.diff(cdf), 0, None) / (cdf[-1] - cdf[0]))
    above = n * sum(w * _excess(float(grid[-1]), mu) for w, mu in parts)
    below = n * sum(w * _excess(-float(grid[0]), -mu) for w, mu in parts)
    total = n * sum(w * mu for w, mu in parts)
    part = NumericPartial(n, 0, 0, counts.astype(np.int64), below, above, total)
    return WindowPartial(rows=n, features={"x": part})


def _boolean(rng: np.random.Generator, n: int, share: float) -> WindowPartial:
    k = int(rng.binomial(n, share))
    return WindowPartial(
        rows=n, features={"b": CategoricalPartial(n, 0, {"True": k, "False": n - k})}
    )


def run(windows: int, seed: int = 0) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    x = numeric_profile(rng.normal(0, 1, REF_ROWS))
    b = categorical_profile(pd.Series(rng.random(REF_ROWS) < P0))
    num = ReferenceProfile(rows=REF_ROWS, features={"x": x})
    boo = ReferenceProfile(rows=REF_ROWS, features={"b": b})
    series: dict[str, tuple[Callable[[int], WindowPartial], ReferenceProfile, str]] = {}
    for d in (0.0, 0.05, 0.1, 0.2, 0.5):
        series[f"numeric +{d:g} sd"] = (
            lambda n, d=d: _numeric(rng, x, n, [(1.0, d)]),
            num,
            "drifted",
        )
    for pts in (5, 10):
        series[f"boolean +{pts} points"] = (
            lambda n, pts=pts: _boolean(rng, n, P0 + pts / 100),
            boo,
            "drifted",
        )
    mix = [(1 - TAIL_SHARE, 0.0), (TAIL_SHARE, TAIL_SD)]
    series["1% at +10 sd: tail check"] = (lambda n: _numeric(rng, x, n, mix), num, "tail_drifted")
    series["1% at +10 sd: drift rule"] = (lambda n: _numeric(rng, x, n, mix), num, "drifted")
    out: dict[str, list[float]] = {}
    for name, (draw, profile, field) in series.items():
        out[name] = [
            sum(
                bool(getattr(evaluate_drift(draw(n), profile).features[0], field))
                for _ in range(windows)
            )
            / windows
            for n in SIZES
        ]
    return out


COLOURS = [
    "#607d8b",
    "#90caf9",
    "#42a5f5",
    "#1565c0",
    "#0d2a5c",
    "#ffb74d",
    "#e65100",
    "#2e7d32",
    "#81c784",
]


def svg(rates: dict[str, list[float]], windows: int) -> str:
    w, h, left, top, right, bottom = 760, 420, 60, 30, 230, 50
    pw, ph = w - left - right, h - top - bottom
    lo, hi = np.log10(SIZES[0]), np.log10(SIZES[-1])

    def px(n: float) -> float:
        return left + (np.log10(n) - lo) / (hi - lo) * pw

    def py(r: float) -> float:
        return top + (1 - r) * ph

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' "
        "font-size='11' fill='#333'>",
        f"<rect width='{w}' height='{h}' fill='white'/>",
        f"<text x='{left}' y='18' font-size='13'>Drift detection rate by window size "
        f"({windows} windows per point; alpha 0.05, min_effect 0.05 sd)</text>",
    ]
    for r in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f"<line x1='{left}' x2='{left + pw}' y1='{py(r):.1f}' y2='{py(r):.1f}' stroke='#eee'/>"
            f"<text x='{left - 6}' y='{py(r) + 4:.1f}' text-anchor='end'>{r:.0%}</text>"
        )
    parts.append(
        f"<line x1='{left}' x2='{left + pw}' y1='{py(0.05):.1f}' y2='{py(0.05):.1f}' "
        "stroke='#b00020' stroke-dasharray='4 3'/>"
        f"<text x='{left + pw - 2}' y='{py(0.05) - 4:.1f}' text-anchor='end' fill='#b00020'>alpha</text>"
    )
    for e in range(2, 8):
        x = px(10**e)
        parts.append(
            f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{top}' y2='{top + ph}' stroke='#eee'/>"
            f"<text x='{x:.1f}' y='{top + ph + 16}' text-anchor='middle'>10^{e}</text>"
        )
    parts.append(
        f"<text x='{left + pw / 2}' y='{h - 10}' text-anchor='middle'>window size (values)</text>"
    )
    for i, (name, rs) in enumerate(rates.items()):
        c = COLOURS[i % len(COLOURS)]
        dash = " stroke-dasharray='5 3'" if "drift rule" in name else ""
        pts = " ".join(f"{px(n):.1f},{py(r):.1f}" for n, r in zip(SIZES, rs, strict=True))
        parts.append(f"<polyline points='{pts}' fill='none' stroke='{c}' stroke-width='2'{dash}/>")
        ly = top + 14 + i * 18
        parts.append(
            f"<line x1='{left + pw + 14}' x2='{left + pw + 34}' y1='{ly - 4}' y2='{ly - 4}' "
            f"stroke='{c}' stroke-width='2'{dash}/><text x='{left + pw + 40}' y='{ly}'>{name}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=200)
    ap.add_argument("--svg", type=Path, default=Path("docs/img/drift-power.svg"))
    args = ap.parse_args()
    t = time.perf_counter()
    rates = run(args.windows)
    print(f"detection rate, {args.windows} windows per cell ({time.perf_counter() - t:.0f} s)")
    print("| series | " + " | ".join(f"{n:,}" for n in SIZES) + " |")
    print("|---|" + "---|" * len(SIZES))
    for name, rs in rates.items():
        print(f"| {name} | " + " | ".join(f"{r:.2f}" for r in rs) + " |")
    args.svg.parent.mkdir(parents=True, exist_ok=True)
    args.svg.write_text(svg(rates, args.windows))
    print(f"plot: {args.svg}")


if __name__ == "__main__":
    main()
