"""A self-contained HTML report: inline CSS and SVG drawn here, nothing fetched from anywhere."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from ownloop.evaluation._results import FAIL, INCONCLUSIVE, PASS, SKIPPED, CheckResult, EvalResult

__all__ = ["to_html"]

_COLOR = {PASS: "#1a7f37", FAIL: "#cf222e", INCONCLUSIVE: "#9a6700", SKIPPED: "#6e7781"}
_CAND, _BASE = "#0969da", "#8250df"
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#1f2328;padding:0 1rem}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
.badge{display:inline-block;padding:.15rem .6rem;border-radius:1rem;color:#fff;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:13px}td,th{border-bottom:1px solid #d0d7de;padding:.35rem;text-align:left;vertical-align:top}
.small{color:#656d76;font-size:12px}.plots{display:flex;flex-wrap:wrap;gap:1.5rem}
svg text{font:11px system-ui,sans-serif}
"""


def _n(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.4g}"


def _badge(status: str) -> str:
    return f'<span class="badge" style="background:{_COLOR[status]}">{escape(status)}</span>'


def _finite(*values: float | None) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


_Bar = tuple[str, str, float | None, tuple[float, float] | None]


def _interval_row(c: CheckResult) -> str:
    """Small charts of intervals against the bound; a comparison gets two scales: the
    candidate and baseline values, then their change against the margin."""
    if c.candidate is not None:
        values: list[_Bar] = [
            ("candidate", _CAND, c.candidate, c.candidate_interval),
            ("baseline", _BASE, c.baseline, c.baseline_interval),
        ]
        label = "ratio" if c.type == "latency" else "change"  # candidate / baseline latency
        change: list[_Bar] = [(label, _COLOR[c.status], c.estimate, c.interval)]
        return _chart(c.name, values, None) + _chart(c.name, change, c.bound)
    if c.estimate is not None:
        return _chart(
            c.name, [(c.metric or "value", _COLOR[c.status], c.estimate, c.interval)], c.bound
        )
    return ""


def _chart(title: str, bars: list[_Bar], bound: float | None) -> str:
    values = _finite(bound, *(b[2] for b in bars), *(v for b in bars if b[3] for v in b[3]))
    if not values:
        return ""
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.1 or abs(hi) * 0.1 or 0.1
    lo, hi = lo - pad, hi + pad
    width, left, row = 420, 80, 18
    height = row * len(bars) + 26

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (width - left - 10)

    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{escape(title)}">']
    for i, (label, color, est, iv) in enumerate(bars):
        y = 10 + i * row
        parts.append(f'<text x="2" y="{y + 4}">{escape(label)}</text>')
        if iv is not None and all(math.isfinite(v) for v in iv):
            parts.append(
                f'<line x1="{x(iv[0]):.1f}" x2="{x(iv[1]):.1f}" y1="{y}" y2="{y}" stroke="{color}" stroke-width="3"/>'
            )
        if est is not None and math.isfinite(est):
            parts.append(f'<circle cx="{x(est):.1f}" cy="{y}" r="4" fill="{color}"/>')
    if bound is not None:
        bx = x(bound)
        parts.append(
            f'<line x1="{bx:.1f}" x2="{bx:.1f}" y1="2" y2="{height - 16}" stroke="#cf222e" stroke-dasharray="4 3"/>'
            f'<text x="{min(bx + 3, width - 90):.1f}" y="{height - 4}" fill="#cf222e">bound {_n(bound)}</text>'
        )
    # The chart's edges are padded, so they get no labels: the numbers are in the text column.
    parts.append("</svg>")
    return "".join(parts)


def _confusion(title: str, classes: list[str], matrix: list[list[int]]) -> str:
    k, cell = len(classes), 46
    size = 70 + cell * k
    peak = max(max(r) for r in matrix) or 1
    parts = [
        f'<svg width="{max(size, 7 * len(title))}" height="{size + 20}" role="img" aria-label="{escape(title)}">',
        f'<text x="2" y="12" font-weight="600">{escape(title)}</text>',
        '<text x="70" y="28" fill="#656d76">predicted →</text>',
    ]
    for i in range(k):
        parts.append(
            f'<text x="2" y="{56 + i * cell + cell / 2:.0f}">{escape(classes[i][:8])}</text>'
        )
        parts.append(f'<text x="{70 + i * cell + 4}" y="44">{escape(classes[i][:6])}</text>')
        for j in range(k):
            share = matrix[i][j] / peak
            fill = f"rgba(9,105,218,{0.08 + 0.85 * share:.2f})"
            px, py = 70 + j * cell, 50 + i * cell
            parts.append(
                f'<rect x="{px}" y="{py}" width="{cell - 2}" height="{cell - 2}" fill="{fill}"/>'
            )
            color = "#fff" if share > 0.55 else "#1f2328"
            parts.append(
                f'<text x="{px + 4}" y="{py + cell / 2 + 4:.0f}" fill="{color}">{matrix[i][j]:,}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _calibration(series: dict[str, list[dict[str, float]]]) -> str:
    size, m = 300, 36

    def px(v: float) -> float:
        return m + v * (size - 2 * m)

    def py(v: float) -> float:
        return size - m - v * (size - 2 * m)

    parts = [
        f'<svg width="{size}" height="{size}" role="img" aria-label="calibration">',
        '<text x="2" y="12" font-weight="600">calibration (top-label)</text>',
        f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(1)}" y2="{py(1)}" stroke="#d0d7de" stroke-dasharray="4 3"/>',
        f'<rect x="{m}" y="{m}" width="{size - 2 * m}" height="{size - 2 * m}" fill="none" stroke="#d0d7de"/>',
        f'<text x="{m}" y="{size - 8}" fill="#656d76">confidence 0 → 1</text>',
        f'<text x="2" y="{m - 6}" fill="#656d76">observed accuracy</text>',
    ]
    for i, (who, color) in enumerate((("candidate", _CAND), ("baseline", _BASE))):
        points = series.get(who)
        if not points:
            continue
        path = " ".join(f"{px(p['confidence']):.1f},{py(p['accuracy']):.1f}" for p in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for p in points:
            r = 2 + min(5.0, math.log10(1 + p["n"]))
            parts.append(
                f'<circle cx="{px(p["confidence"]):.1f}" cy="{py(p["accuracy"]):.1f}" r="{r:.1f}" fill="{color}"/>'
            )
        parts.append(
            f'<text x="{size - 90}" y="{size - m - 10 - 14 * i}" fill="{color}">{who}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _plots(plots: dict[str, Any]) -> str:
    out = []
    classes = plots.get("classes")
    for who in ("candidate", "baseline"):
        key = f"{who}_confusion"
        if classes and key in plots:
            out.append(_confusion(f"confusion matrix, {who} (rows: actual)", classes, plots[key]))
    cal = {
        w: plots[f"{w}_calibration"]
        for w in ("candidate", "baseline")
        if f"{w}_calibration" in plots
    }
    if cal:
        out.append(_calibration(cal))
    return "".join(out)


def to_html(result: EvalResult) -> str:
    """The whole report as one HTML page."""
    rows = []
    for c in result.checks:
        chart = _interval_row(c)
        rows.append(
            f"<tr><td>{escape(c.name)}<div class='small'>{escape(c.method)}</div></td>"
            f"<td>{_badge(c.status)}</td><td>{escape(c.message)}</td><td>{chart}</td></tr>"
        )
    failing = "".join(
        f"<h2>Failing cases: {escape(c.name)}</h2><pre class='small'>"
        + escape("\n".join(str(r) for r in c.details["failing"]))
        + "</pre>"
        for c in result.checks
        if c.details.get("failing")
    )
    notes = "".join(f"<p class='small'>{escape(n)}</p>" for n in result.notes)
    base = f" vs {escape(result.baseline_ref)}" if result.baseline_ref else ""
    datasets = ", ".join(
        f"{escape(k)} ({result.dataset_rows.get(k, 0):,} rows, sha256 {v[:12]})"
        for k, v in result.dataset_digests.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ownloop gate {escape(result.ref)}</title>
<style>{_CSS}</style></head><body>
<h1>{_badge(result.verdict)} ownloop gate: {escape(result.ref)}{base}</h1>
<p>{escape(result.summary)}</p>
<p class="small">Intervals are two-sided {result.level:.0%}; a bound is judged on the limit at that level;
slices are Holm-adjusted. Suite {escape(result.suite_source)} (sha256 {result.suite_digest[:12]});
datasets {datasets}; {result.seconds:.2f} s.</p>{notes}
<h2>Checks</h2>
<table><tr><th>check</th><th>status</th><th>actual vs bound</th><th>intervals (dashed: bound)</th></tr>
{"".join(rows)}</table>
<h2>Plots ({escape(str(result.plots.get("dataset", "")))})</h2><div class="plots">{_plots(result.plots)}</div>
{failing}
</body></html>
"""
