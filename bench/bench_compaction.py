"""Compaction of an hour of one-second log segments, and the monitor's 1 h window before and after.

The churn model of ``ownloop demo`` serves ``--rate`` predictions a second for an hour; the log
holds one segment per second (3,600 files, as a server flushing once a second writes them).
Prints, side by side: the files a reader lists and the files on disk, the compaction's wall time,
and ``monitor --window 1h`` wall time (first run, then with every partial cached) before and
after compaction, and whether the reports are the same (counts equal, figures within 1e-9).

With ``--bucket`` the log lives in an S3 bucket on a local moto server the bench starts (its own
process, stopped at the end; ``pip install 'moto[server]'``): compaction then publishes each
compacted file as one PUT and holds the model's lease in the store.

Run: .venv/bin/python bench/bench_compaction.py [--seconds 3600] [--rate 100] [--bucket]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from ownloop import Config, Workspace, objectstore, predlog
from ownloop.clock import FrozenClock
from ownloop.compaction import compact, lease_lock
from ownloop.demo import log_predictions, make_churn_data, make_model

START = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)


def _setup(ws: Workspace, seconds: int, rate: int) -> None:
    train = make_churn_data(8000, seed=1)
    ws.registry.add_team("risk", members=[ws.actor.name])
    model = make_model(max_iter=60).fit(train.drop(columns="churned"), train["churned"])
    ws.registry.register(
        model, name="churn", owner="risk", reference=make_churn_data(3000, seed=2), target="churned"
    )
    ws.deploy.set_production("churn", 1, force=True, reason="bench set up")
    rows = seconds * rate
    data = make_churn_data(rows, seed=3, shift=0.3).drop(columns="churned")
    step = timedelta(seconds=1) / rate
    table = log_predictions(ws, "churn@1", data, START, step=step, seed=4)
    root = ws.config.predictions_dir
    for path in predlog.list_segments(root, "churn"):
        path.unlink()  # the one big segment: written again below, one per second
    for s in range(seconds):
        predlog.write_segment(root, "churn", table.slice(s * rate, rate))


def _monitor(ws: Workspace) -> tuple[float, Any]:
    began = time.perf_counter()
    [report] = ws.monitor.run("churn", window=timedelta(hours=1), store=False)
    return time.perf_counter() - began, report


def _same(a: Any, b: Any) -> bool:
    """Equal reports: every count equal, every figure within 1e-9 (sums added in another order)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a if k != "run_id")
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def _files(root: Path) -> tuple[int, int]:
    listed = len(predlog.list_segments(root, "churn"))
    days = [d for d in (root / "churn").iterdir() if d.name.startswith("date=")]
    on_disk = sum(
        1 for d in days for n in objectstore.list_names(d) if n.endswith(".parquet") and n[0] != "."
    )
    return listed, on_disk


@contextlib.contextmanager
def _bucket() -> Iterator[dict[str, str]]:
    """A moto S3 server on a free loopback port with one bucket; the settings that reach it."""
    import boto3  # type: ignore[import-untyped]
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                httpx.get(f"{url}/moto-api/", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        keys = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}
        boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            **{k.lower(): v for k, v in keys.items()},
        ).create_bucket(Bucket="bench")
        yield {
            **keys,
            "AWS_REGION": "us-east-1",
            "OWNLOOP_S3_ENDPOINT_URL": url,
            "OWNLOOP_PREDICTIONS_URL": "s3://bench/log",
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3600)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--bucket", action="store_true", help="the log in a moto S3 bucket")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        home = stack.enter_context(tempfile.TemporaryDirectory())
        env = {k: v for k, v in os.environ.items() if not k.startswith("OWNLOOP_")}
        env["OWNLOOP_HOME"] = home
        if args.bucket:
            env.update(stack.enter_context(_bucket()))
        stack.enter_context(threadpool_limits(1))
        ws = stack.enter_context(Workspace(Config.from_env(env)))
        ws.clock = FrozenClock(START + timedelta(seconds=args.seconds))
        ws.monitor.clock = ws.clock
        print(f"setting up: {args.seconds} segments of {args.rate} rows ...", flush=True)
        _setup(ws, args.seconds, args.rate)
        root = ws.config.predictions_dir
        before_files = _files(root)
        cold_before, rep_before = _monitor(ws)
        warm_before, _ = _monitor(ws)
        began = time.perf_counter()
        lock = lease_lock(ws.store, ws.clock) if args.bucket else None
        [preds, _] = compact(
            root, "churn", older_than=timedelta(0), keep_sources=timedelta(0), lock=lock
        )
        took = time.perf_counter() - began
        after_files = _files(root)
        cold_after, rep_after = _monitor(ws)
        warm_after, _ = _monitor(ws)
        rows = args.seconds * args.rate
        where = "an S3 bucket (moto)" if args.bucket else "a local folder"
        print(f"log: {rows:,} rows in {args.seconds:,} one-second segments (churn model), {where}")
        print(f"{'':34}{'before':>12}{'after':>12}")
        print(f"{'files a reader lists':34}{before_files[0]:>12,}{after_files[0]:>12,}")
        print(f"{'files stored':34}{before_files[1]:>12,}{after_files[1]:>12,}")
        print(f"{'monitor --window 1h, first run':34}{cold_before:>11.2f}s{cold_after:>11.2f}s")
        print(f"{'monitor --window 1h, cached':34}{warm_before:>11.2f}s{warm_after:>11.2f}s")
        print(
            f"compaction: {preds.sources:,} segments into {preds.files} file(s) "
            f"({preds.rows:,} rows) in {took:.2f} s"
        )
        same = _same(asdict(rep_before), asdict(rep_after))
        print(f"same report before and after: {same}")


if __name__ == "__main__":
    main()
