"""Identifier-like columns, judged by what can change rather than by their distribution.

A column whose values are mostly distinct (user ids, order numbers, emails; see
``ownloop.profile.IDENTIFIER_MIN_RATIO``) has no distribution worth comparing: an increasing id
moves out of the reference's range in every window, and chi-square over 100,000 categories seen
once each says nothing. Two things can change, and both are tested against the reference with its
size (two-proportion z-tests):

- the share of **unseen values**: current values not among the profile's stored categories,
  against the share the reference predicts. The profile keeps the ``MAX_CATEGORIES`` most common
  values; each is expected to recur at its count less one (a deleted estimate, which for a value
  seen once is Good-Turing's: the values seen once predict the share of new ones), so the expected
  share is ``(other + stored values) / non-missing``: 1 for an all-unique reference, near 0 for a
  few hundred customers seen hundreds of times each. Material from ``UNSEEN_DELTA``; two-sided
  (a window that suddenly repeats the reference's values is as suspect as one full of new ones).
- the share of the **most common value**, against the reference's top share: every row holding
  one id (a default, a stuck client) is the classic failure. One-sided, the p-value multiplied by
  the number of distinct values in the window (any of them could be the top one), material from
  ``TOP_DELTA``.

The feature's p-value is the smaller of the two, doubled (Bonferroni over the two checks, using
only the material ones when any is), and joins the other features' p-values for adjustment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats

from ownloop.monitoring._drift import (
    DriftSettings,
    FeatureDrift,
    _missing,
    _pct,
    _unjudgeable,
)
from ownloop.monitoring._partial import CategoricalPartial
from ownloop.profile import FeatureProfile, NumericProfile

__all__ = [
    "IDENTIFIER_METHOD",
    "TOP_DELTA",
    "UNSEEN_DELTA",
    "IdentifierReference",
    "identifier_drift",
    "identifier_verdict",
]

IDENTIFIER_METHOD = "identifier"
# Materiality. The expected unseen share is biased low by up to 0.06 when the stored values are
# the top of many rare ones (their counts are selected high), so a move under 0.1 is not flagged.
UNSEEN_DELTA = 0.1
TOP_DELTA = 0.05


@dataclass(frozen=True)
class IdentifierReference:
    """What the profile says about an identifier column: its non-missing values, the stored most
    common ones with counts, the values pooled as ``other`` and the top value's count."""

    n: int
    stored: Mapping[str, int]
    other: int
    top: int

    @classmethod
    def of(cls, ref: FeatureProfile) -> IdentifierReference:
        if isinstance(ref, NumericProfile):
            # every value distinct and none stored: all new values are expected, top share 1/n
            return cls(ref.finite, {}, ref.finite, 1 if ref.finite else 0)
        top = max(ref.categories.values()) if ref.categories else 0
        return cls(ref.finite, ref.categories, ref.other, top)

    @property
    def expected_unseen(self) -> float:
        """The chance a new draw is not among the stored values (see the module docstring)."""
        if self.n <= 0:
            return 0.0
        return min(1.0, (self.other + len(self.stored)) / self.n)

    @property
    def top_share(self) -> float:
        return self.top / self.n if self.n > 0 else 0.0


def _z_p(x: float, n: int, y: float, m: int, *, one_sided: bool) -> float:
    """P-value of the two-proportion z-test of share ``x`` (of ``n``) against ``y`` (of ``m``)."""
    pooled = (x * n + y * m) / (n + m)
    se = float(np.sqrt(pooled * (1 - pooled) * (1 / n + 1 / m)))
    if se == 0.0:
        return 1.0 if x == y or (one_sided and x < y) else 0.0
    z = (x - y) / se
    return float(stats.norm.sf(z)) if one_sided else float(2 * stats.norm.sf(abs(z)))


def identifier_drift(
    name: str, ref: FeatureProfile, part: CategoricalPartial, s: DriftSettings
) -> FeatureDrift:
    """An identifier column's unseen-value and top-value checks (verdict after adjustment)."""
    kind = ref.kind
    bad = ref.nulls + (ref.nonfinite if isinstance(ref, NumericProfile) else 0)
    idr = IdentifierReference.of(ref)
    n_vals = int(sum(part.counts.values()))
    miss = _missing(part.nulls, part.n, bad, ref.count, s)
    args = (n_vals, idr.n, miss, 0)
    unjudged = _unjudgeable(name, kind, part.n, idr.n, n_vals, s.min_rows, args)
    if unjudged is not None:
        return replace(unjudged, extra={"identifier": True})
    unseen = sum(c for k, c in part.counts.items() if k not in idr.stored)
    obs_u, exp_u = unseen / n_vals, idr.expected_unseen
    p_u = _z_p(obs_u, n_vals, exp_u, idr.n, one_sided=False)
    top_key, top = max(part.counts.items(), key=lambda kv: kv[1])
    obs_t, ref_t = top / n_vals, idr.top_share
    p_t = min(1.0, len(part.counts) * _z_p(obs_t, n_vals, ref_t, idr.n, one_sided=True))
    material_u = abs(obs_u - exp_u) >= UNSEEN_DELTA
    material_t = obs_t - ref_t >= TOP_DELTA
    ps = [p for p, m in ((p_u, material_u), (p_t, material_t)) if m] or [p_u, p_t]
    p = min(1.0, 2 * min(ps))
    by_top = material_t and (not material_u or p_t <= p_u)
    score, threshold = (obs_t - ref_t, TOP_DELTA) if by_top else (obs_u - exp_u, UNSEEN_DELTA)
    extra: dict[str, Any] = {
        "identifier": True,
        "unseen_share": obs_u,
        "expected_unseen_share": exp_u,
        "unseen_p": p_u,
        "top_value": top_key,
        "top_share": obs_t,
        "reference_top_share": ref_t,
        "top_p": p_t,
        "material": material_u or material_t,
        "by": "top" if by_top else "unseen",
        "bins": {
            "labels": ["unseen values", "most common value"],
            "reference": [round(exp_u, 5), round(ref_t, 5)],
            "current": [round(obs_u, 5), round(obs_t, 5)],
        },
    }
    return FeatureDrift(
        feature=name,
        kind=kind,
        status="ok",
        method=IDENTIFIER_METHOD,
        score=score,
        threshold=threshold,
        p_value=p,
        p_adjusted=None,
        drifted=None,
        n=n_vals,
        reference_n=idr.n,
        missing_share=miss[0],
        reference_missing_share=miss[1],
        missing_drifted=miss[2],
        missing_p=miss[3],
        nonfinite=0,
        detail="",
        extra=extra,
    )


def identifier_verdict(f: FeatureDrift, p_adj: float, s: DriftSettings) -> FeatureDrift:
    """Drifted when a check moved materially and the adjusted p-value is below ``alpha``."""
    e = f.extra
    drifted = bool(e["material"]) and p_adj < s.alpha
    how = {"bh": "Benjamini-Hochberg", "holm": "Holm", "none": "unadjusted"}[s.correction]
    detail = (
        f"identifier-like: unseen values {e['unseen_share']:.1%} (expected "
        f"{e['expected_unseen_share']:.1%}, material from +-{UNSEEN_DELTA:.0%}); most common "
        f"value {e['top_value']!r} {e['top_share']:.1%} of values (reference "
        f"{_pct(e['reference_top_share'])}, material from +{TOP_DELTA:.0%}); "
        f"p={f.p_value:.3g} ({how} {p_adj:.3g})"
    )
    if e["material"] and not drifted:
        detail += f": not significant at {s.alpha}, so no drift"
    elif not e["material"]:
        detail += ": no material move"
    return replace(f, p_adjusted=float(p_adj), drifted=drifted, detail=detail)
