"""A self-contained HTML drift report: one table and one inline SVG plot per feature (no CDN)."""

from __future__ import annotations

from html import escape
from typing import Any

from ownloop.monitoring._drift import FeatureDrift

__all__ = ["render_drift_html"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{padding:.3rem .6rem;border-bottom:1px solid #ddd;text-align:left}
.drift{color:#b00020;font-weight:600}.ok{color:#1b5e20}.none{color:#777}
.feature{display:inline-block;margin:0 1.5rem 1.5rem 0;vertical-align:top}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem}
"""


def _svg(bins: dict[str, Any], width: int = 360, height: int = 140) -> str:
    labels = bins.get("labels", [])
    ref, cur = bins.get("reference", []), bins.get("current", [])
    k = len(labels)
    if k == 0:
        return "<p class='none'>no bins</p>"
    top = max([*ref, *cur, 1e-9])
    bw = width / k
    parts = [
        f"<svg width='{width}' height='{height + 44}' role='img' font-size='10' fill='#555'>",
        f"<text x='{width - 2}' y='10' text-anchor='end'>max share {top:.1%}</text>",
        "<g transform='translate(0,14)'>",
    ]
    for i in range(k):
        for j, (vals, colour) in enumerate(((ref, "#90a4ae"), (cur, "#e65100"))):
            h = height * (vals[i] / top) if i < len(vals) else 0
            x = i * bw + j * bw / 2
            parts.append(
                f"<rect x='{x:.1f}' y='{height - h:.1f}' width='{bw / 2 - 1:.1f}' height='{h:.1f}' "
                f"fill='{colour}'><title>{escape(str(labels[i]))}: {vals[i]:.3%}</title></rect>"
            )
    parts.append(f"<line x1='0' y1='{height}' x2='{width}' y2='{height}' stroke='#999'/>")
    # Axis labels: every bin when they fit, else the two ends and the middle.
    shown = range(k) if k <= 8 else sorted({0, k // 2, k - 1})
    room = max(int(bw / 6), 4) if k <= 8 else 14
    for i in shown:
        text = str(labels[i])
        text = text if len(text) <= room else text[: room - 1] + "…"
        anchor = "start" if (k > 8 and i == 0) else "end" if (k > 8 and i == k - 1) else "middle"
        x = 0 if anchor == "start" else width if anchor == "end" else (i + 0.5) * bw
        parts.append(
            f"<text x='{x:.1f}' y='{height + 14}' text-anchor='{anchor}'>{escape(text)}</text>"
        )
    parts.append("</g></svg>")
    return "".join(parts)


def _verdict(f: FeatureDrift) -> str:
    if f.drifted is None:
        return f"<span class='none'>{escape(f.status)}</span>"
    return "<span class='drift'>drifted</span>" if f.drifted else "<span class='ok'>no drift</span>"


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.4g}"


def render_drift_html(
    title: str, summary: str, features: tuple[FeatureDrift, ...], notes: list[str]
) -> str:
    """The report as one HTML string."""
    rows = "".join(
        f"<tr><td>{escape(f.feature)}</td><td>{escape(f.kind)}</td><td>{_verdict(f)}</td>"
        f"<td>{escape(f.method or '')}</td><td>{_num(f.score)}</td><td>{_num(f.threshold)}</td>"
        f"<td>{_num(f.p_adjusted if f.p_adjusted is not None else f.p_value)}</td><td>{f.n}</td>"
        f"<td>{'' if f.missing_share is None else f'{f.missing_share:.1%}'}</td>"
        f"<td>{escape(f.detail)}</td></tr>"
        for f in features
    )
    plots = "".join(
        f"<div class='feature'><h3>{escape(f.feature)} {_verdict(f)}</h3>{_svg(f.extra.get('bins', {}))}</div>"
        for f in features
    )
    note_html = "".join(f"<li>{escape(n)}</li>" for n in notes)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1><p><b>{escape(summary)}</b></p>"
        f"<ul>{note_html}</ul><table><tr><th>feature</th><th>type</th><th>verdict</th><th>method</th>"
        f"<th>effect (sd) or score</th><th>threshold</th><th>p (adjusted)</th><th>n</th><th>missing</th><th>detail</th></tr>"
        f"{rows}</table><p class='legend'><span style='background:#90a4ae'></span>reference"
        f"<span style='background:#e65100'></span>current</p>{plots}</body></html>"
    )
