"""Drift over Parquet files streamed: 1M and 10M rows per side, side by side in one run.

    .venv/bin/python bench/bench_drift_scale.py [--sizes 1000000,10000000] [--batch-rows 65536]

Data: bench_drift.py's shape and truth (20 numeric + 5 categorical columns; drift in x0, x1, x2,
x3, c0, c1; a trivial shift in x10-x12), generated once per size in chunks of ``CHUNK_ROWS`` rows
(one row group each) under bench/out/drift-scale/<rows>/{reference,current}.parquet.

Each run is a fresh process: ``ownloop.drift("reference.parquet", "current.parquet")``, which
streams both files in record batches (the reference twice: once for its exact counts and a
sample that places the quantile cuts, once to count it into them; the current once). Printed per
size: wall seconds, rows per second (rows of both sides over the wall time), the process's peak
resident memory (VmHWM, interpreter and libraries included), and the flagged columns against the
truth. The in-memory DataFrame path at 1M (files read into pandas first, the read not timed, the
peak memory the process's) is printed for reference. Timings vary 2-3x on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_drift import CATEGORICAL, NUMERIC, TRUTH, _column  # noqa: E402

OUT = HERE / "out" / "drift-scale"
CHUNK_ROWS = 500_000


def _data(rows: int) -> Path:
    """The reference and current files of ``rows`` rows each, written chunk by chunk once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = OUT / str(rows)
    if (folder / "done").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    cats = np.array(["a", "b", "c", "d", "e"])
    base_p = np.array([0.1, 0.25, 0.25, 0.2, 0.2])
    for name, seed, drifted in (("reference", 1, False), ("current", 2, True)):
        writer: pq.ParquetWriter | None = None
        for k, start in enumerate(range(0, rows, CHUNK_ROWS)):
            n = min(CHUNK_ROWS, rows - start)
            rng = np.random.default_rng([seed, k])
            cols: dict[str, Any] = {}
            for i in range(20):
                shift = (
                    {0: 0.2, 1: 0.2, 3: 0.15, 10: 0.02, 11: 0.02, 12: 0.02}.get(i, 0.0)
                    if drifted
                    else 0.0
                )
                cols[f"x{i}"] = _column(rng, i, n, shift, 1.25 if drifted and i == 2 else 1.0)
            for j in range(5):
                p, values = base_p, cats
                if drifted and j == 0:
                    p = np.array([0.2, *(base_p[1:] * 0.8 / 0.9)])
                if drifted and j == 1:
                    values = np.array([*cats, "new"])
                    p = np.array([*(base_p * 0.92), 0.08])
                cols[f"c{j}"] = rng.choice(values, n, p=p / p.sum())
            table = pa.table(cols)
            if writer is None:
                writer = pq.ParquetWriter(folder / f"{name}.parquet.tmp", table.schema)
            writer.write_table(table)
        assert writer is not None
        writer.close()
        (folder / f"{name}.parquet.tmp").replace(folder / f"{name}.parquet")
    (folder / "done").write_text("ok")
    return folder


def _hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(kind: str, rows: int, batch_rows: int) -> dict[str, Any]:
    import ownloop

    folder = OUT / str(rows)
    ref, cur = folder / "reference.parquet", folder / "current.parquet"
    if kind == "stream":
        from ownloop.monitoring._stream import drift_stream

        t = time.perf_counter()
        res = drift_stream(ref, cur, batch_rows=batch_rows)
        seconds = time.perf_counter() - t
    else:
        import pandas as pd

        ref_df, cur_df = pd.read_parquet(ref), pd.read_parquet(cur)
        t = time.perf_counter()
        res = ownloop.drift(ref_df, cur_df)
        seconds = time.perf_counter() - t
    return {
        "kind": kind,
        "rows": rows,
        "seconds": seconds,
        "peak_mb": _hwm_mb(),
        "flagged": sorted(res[0].report.drifted_features),
    }


def _run(kind: str, rows: int, batch_rows: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", kind, "--rows", str(rows)]
    cmd += ["--batch-rows", str(batch_rows)]
    env = {**os.environ, "OWNLOOP_NO_PROGRESS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{kind} at {rows:,} rows failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _score(flagged: list[str]) -> str:
    hit = [c for c in flagged if c in TRUTH]
    false = [c for c in flagged if c not in TRUTH]
    return f"{len(hit)}/{len(TRUTH)} true, {len(false)} false" + (
        f" ({', '.join(false)})" if false else ""
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--batch-rows", type=int, default=65_536)
    ap.add_argument("--worker", choices=["stream", "frames"])
    ap.add_argument("--rows", type=int)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.rows, args.batch_rows)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    for rows in sizes:
        t = time.perf_counter()
        fresh = not (OUT / str(rows) / "done").exists()
        _data(rows)
        if fresh:
            print(f"generated {rows:,} rows per side in {time.perf_counter() - t:.0f} s")
    print(f"load before: {Path('/proc/loadavg').read_text().strip()}")
    results = [_run("stream", rows, args.batch_rows) for rows in sizes]
    frames = _run("frames", sizes[0], args.batch_rows)
    print(f"load after: {Path('/proc/loadavg').read_text().strip()}")
    print(
        f"\nownloop.drift over Parquet, streamed (batch {args.batch_rows:,} rows), "
        f"{len(NUMERIC)} numeric + {len(CATEGORICAL)} categorical columns"
    )
    head = f"{'':34}" + "".join(f"{r['rows']:>20,}" for r in results)
    print(head + "  rows per side")
    lines = [
        ("wall seconds", [f"{r['seconds']:.1f}" for r in results]),
        ("rows/s (both sides)", [f"{2 * r['rows'] / r['seconds']:,.0f}" for r in results]),
        ("peak RSS, MB (VmHWM)", [f"{r['peak_mb']:,.0f}" for r in results]),
        ("flagged vs truth", [_score(r["flagged"]) for r in results]),
    ]
    for name, cells in lines:
        print(f"{name:34}" + "".join(f"{c:>20}" for c in cells))
    if len(results) > 1:
        ratio = results[-1]["seconds"] / results[0]["seconds"]
        rows_ratio = results[-1]["rows"] / results[0]["rows"]
        print(f"time ratio {ratio:.1f}x for {rows_ratio:.0f}x the rows")
    print(
        f"\nin memory, ownloop.drift(ref_df, cur_df) at {frames['rows']:,} rows (read not timed): "
        f"{frames['seconds']:.1f} s, peak RSS {frames['peak_mb']:,.0f} MB, "
        f"{_score(frames['flagged'])}"
    )


if __name__ == "__main__":
    main()
