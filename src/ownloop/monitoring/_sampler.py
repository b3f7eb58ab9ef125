"""A labelling queue for humans: uniform rows plus an oversampled low-confidence stratum.

Stratified sampling without replacement: stratum ``low`` holds the rows whose max probability is
below the threshold, ``rest`` the others. Each picked row carries its weight, the inverse of its
inclusion probability (rows in its stratum / rows picked from it), so a quality estimate from the
labelled sample (weighted by these weights) is unbiased for the whole window.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ownloop._files import create_private, private_folder
from ownloop.errors import InvalidInputError

__all__ = ["ReviewSample", "sample_rows", "write_sample"]


@dataclass(frozen=True)
class ReviewSample:
    table: pa.Table
    window_rows: int
    low_rows: int
    picked_low: int
    picked_rest: int
    threshold: float


def sample_rows(
    window: pa.Table,
    n: int,
    *,
    low_confidence: float = 0.6,
    low_share: float = 0.5,
    seed: int | None = None,
) -> ReviewSample:
    """Pick ``n`` rows: up to ``low_share`` of them from the low-confidence stratum, the rest uniformly."""
    if n < 1:
        raise InvalidInputError(f"sample size {n} must be at least 1")
    if not 0 <= low_share <= 1:
        raise InvalidInputError(f"low-confidence share {low_share} must lie between 0 and 1")
    ok = window
    if "status" in window.column_names:
        ok = window.filter(pc.fill_null(pc.equal(window.column("status"), "ok"), False))
    total = ok.num_rows
    conf = (
        ok.column("confidence").to_numpy(zero_copy_only=False).astype(float)
        if "confidence" in ok.column_names
        else np.full(total, np.nan)
    )
    low = np.flatnonzero(conf < low_confidence)
    rest = np.setdiff1d(np.arange(total), low)
    rng = np.random.default_rng(seed)
    k_low = min(low.size, round(n * low_share))
    k_rest = min(rest.size, n - k_low)
    k_low = min(low.size, n - k_rest)  # top up from the low stratum when the rest is short
    pick_low = rng.choice(low, k_low, replace=False) if k_low else np.zeros(0, dtype=np.int64)
    pick_rest = rng.choice(rest, k_rest, replace=False) if k_rest else np.zeros(0, dtype=np.int64)
    idx = np.concatenate((pick_low, pick_rest)).astype(np.int64)
    weights = np.concatenate(
        (np.full(k_low, low.size / max(k_low, 1)), np.full(k_rest, rest.size / max(k_rest, 1)))
    )
    strata = ["low_confidence"] * k_low + ["uniform"] * k_rest
    keep = [
        c
        for c in ("prediction_id", "ts", "model", "version", "prediction", "confidence")
        if c in ok.column_names
    ]
    picked = ok.select(keep).take(pa.array(idx))
    for c in ok.column_names:
        if c.startswith("in."):
            picked = picked.append_column(c[3:], ok.column(c).take(pa.array(idx)))
    picked = picked.append_column("stratum", pa.array(strata, pa.string()))
    picked = picked.append_column("weight", pa.array(weights, pa.float64()))
    picked = picked.append_column("label", pa.nulls(idx.size, pa.string()))
    return ReviewSample(picked, total, int(low.size), k_low, k_rest, low_confidence)


def write_sample(sample: ReviewSample, out: Path) -> Path:
    """Write the queue as CSV or Parquet (by the file's suffix)."""
    name = out.name.lower()
    if not name.endswith((".parquet", ".pq", ".csv")):
        raise InvalidInputError(f"{out}: write the review queue as .csv or .parquet")
    private_folder(out.parent)
    if not out.exists():
        create_private(out)  # 0600, as every file ownloop writes; the writer keeps the mode
    if name.endswith((".parquet", ".pq")):
        pq.write_table(sample.table, out)
    elif name.endswith(".csv"):
        pacsv.write_csv(sample.table, out)
    else:
        raise InvalidInputError(f"{out}: write the review queue as .csv or .parquet")
    return out
