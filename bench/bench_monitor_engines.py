"""Monitor over a log of one-second segments: in one process vs a Dask local cluster of 1 and 2 workers.

The churn model of ``ownloop demo`` serves ``--rate`` predictions a second for ``--seconds``; the
log holds one segment per second. Each engine runs ``monitor --window 24h`` twice in a fresh
process: first with an empty partial cache (every segment read and its partial computed), then
with every partial cached. Prints, side by side: wall times (the local cluster's start apart),
peak memory of the monitoring process and of the largest worker, the cache hits, and whether
every engine's report is identical (equal as JSON, every figure bit for bit).

The log (with ``--labelled`` of its rows labelled, the true churn flag) is written once under
``bench/out/`` and reused by later runs with the same sizes (``--fresh`` logs it again).

Run: .venv/bin/python bench/bench_monitor_engines.py [--seconds 3600] [--rate 2800] [--labelled 0.1]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from ownloop import Config, Workspace, predlog
from ownloop.clock import FrozenClock
from ownloop.demo import log_predictions, make_churn_data, make_model
from ownloop.monitoring import DaskEngine, Engine, InProcessEngine

START = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
RUNS = (
    ("in one process", "local", 0),
    ("Dask, 1 worker", "dask", 1),
    ("Dask, 2 workers", "dask", 2),
)


def _setup(ws: Workspace, seconds: int, rate: int, labelled: float) -> None:
    """Log ``seconds`` one-second segments of ``rate`` rows, scored in chunks so memory stays
    small, and label the first ``labelled`` share of each chunk's rows (the true churn flag)."""
    train = make_churn_data(8000, seed=1)
    ws.registry.add_team("risk", members=[ws.actor.name])
    model = make_model(max_iter=60).fit(train.drop(columns="churned"), train["churned"])
    ws.registry.register(
        model, name="churn", owner="risk", reference=make_churn_data(3000, seed=2), target="churned"
    )
    ws.deploy.set_production("churn", 1, force=True, reason="bench set up")
    root = ws.config.predictions_dir
    chunk = max(1, 200_000 // rate)  # seconds scored at once
    for first in range(0, seconds, chunk):
        n = min(chunk, seconds - first)
        data = make_churn_data(n * rate, seed=3 + first, shift=0.3)
        at = START + timedelta(seconds=first)
        before = set(predlog.list_segments(root, "churn"))
        table = log_predictions(
            ws,
            "churn@1",
            data.drop(columns="churned"),
            at,
            step=timedelta(seconds=1) / rate,
            seed=4,
        )
        for path in set(predlog.list_segments(root, "churn")) - before:
            path.unlink()  # the chunk's one big segment: written again below, one per second
        for s in range(n):
            predlog.write_segment(root, "churn", table.slice(s * rate, rate))
        k = int(n * rate * labelled)
        if k:
            truth = data["churned"].to_numpy()[:k]
            predlog.write_labels(
                root,
                "churn",
                pa.table(
                    {
                        "prediction_id": table.column("prediction_id").slice(0, k),
                        "label": [str(v) for v in truth],
                        "label_value": truth.astype(float),
                        "labeled_at": [at + timedelta(hours=2)] * k,
                        "source": ["bench"] * k,
                        "weight": pa.nulls(k, pa.float64()),
                    },
                    schema=predlog.LABEL_SCHEMA,
                ),
            )
        print(f"  {first + n:,} of {seconds:,} seconds logged", flush=True)


def _peak_mb() -> float:
    """This process's peak resident memory since it started or since :func:`_reset_peak`
    (``VmHWM``; ``ru_maxrss`` would carry the parent's peak across ``exec``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: peak RSS starts again from now


def _one(home: Path, end: datetime, engine_name: str, workers: int, out: Path) -> None:
    """One engine's two runs in this (fresh) process; writes its figures and report to ``out``."""
    with threadpool_limits(1), Workspace(Config(home=home)) as ws:
        ws.clock = FrozenClock(end)
        ws.monitor.clock = ws.clock
        shutil.rmtree(ws.monitor.cache.root, ignore_errors=True)
        began = time.perf_counter()
        engine: Engine = (
            InProcessEngine() if engine_name == "local" else DaskEngine(workers=workers)
        )
        started = time.perf_counter() - began
        times: list[float] = []
        reports: list[Any] = []
        hits: list[int] = []
        peaks: list[float] = []
        workers_peak: list[float] = []
        try:
            for _ in range(2):
                _reset_peak()
                if isinstance(engine, DaskEngine):
                    engine.client.run(_reset_peak)
                before = ws.monitor.cache.hits
                began = time.perf_counter()
                [rep] = ws.monitor.run(
                    "churn", window=timedelta(hours=24), store=False, engine=engine
                )
                times.append(time.perf_counter() - began)
                hits.append(ws.monitor.cache.hits - before)
                reports.append(json.loads(json.dumps(asdict(rep), default=str)))
                peaks.append(_peak_mb())
                if isinstance(engine, DaskEngine):
                    workers_peak.append(max(engine.client.run(_peak_mb).values()))
                else:
                    workers_peak.append(0.0)
        finally:
            if isinstance(engine, DaskEngine):
                engine.close()
        body = {
            "start_s": started,
            "first_s": times[0],
            "cached_s": times[1],
            "hits": hits,
            "rows": reports[0]["rows"],
            "peak_first_mb": peaks[0],
            "peak_cached_mb": peaks[1],
            "worker_first_mb": workers_peak[0],
            "worker_cached_mb": workers_peak[1],
            "same_cached": reports[0] == reports[1],
            "report": reports[0],
        }
        out.write_text(json.dumps(body))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3600)
    parser.add_argument("--rate", type=int, default=2800)
    parser.add_argument("--labelled", type=float, default=0.1, help="share of rows labelled")
    parser.add_argument("--out", type=Path, default=None, help="where the log lives (reused)")
    parser.add_argument("--fresh", action="store_true", help="log again even if the log exists")
    parser.add_argument("--setup-only", action="store_true", help="write the log, time nothing")
    parser.add_argument("--one", nargs=4, metavar=("HOME", "ENGINE", "WORKERS", "OUT"))
    args = parser.parse_args()
    end = START + timedelta(seconds=args.seconds)
    if args.one:
        home, engine, workers, out = args.one
        _one(Path(home), end, engine, int(workers), Path(out))
        return
    name = f"monitor_engines-{args.seconds}x{args.rate}-l{args.labelled:g}"
    folder = args.out or Path(__file__).parent / "out" / name
    home, ready = folder / "home", folder / "home.ready"
    rows = args.seconds * args.rate
    if args.fresh or not ready.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        with threadpool_limits(1), Workspace(Config(home=home)) as ws:
            print(f"setting up: {args.seconds:,} segments of {args.rate} rows ...", flush=True)
            _setup(ws, args.seconds, args.rate, args.labelled)
        ready.write_text(f"{rows}\n")
    if args.setup_only:
        return
    found: dict[str, dict[str, Any]] = {}
    for label, engine, workers in RUNS:
        out = folder / f"{engine}-{workers}.json"
        cmd = [sys.executable, __file__, "--seconds", str(args.seconds)]
        subprocess.run([*cmd, "--one", str(home), engine, str(workers), str(out)], check=True)
        found[label] = json.loads(out.read_text())
        found[label]["cached_per_m"] = found[label]["cached_s"] / (rows / 1e6)
    labelled = int(rows * args.labelled)
    print(
        f"log: {rows:,} rows in {args.seconds:,} one-second segments (churn model), "
        f"{labelled:,} labelled; in {folder}"
    )
    print("monitor --window 24h; each engine in a fresh process, 2 cores, 1 thread a worker")
    print(f"{'':34}" + "".join(f"{label:>18}" for label, _, _ in RUNS))

    def line(name: str, fmt: str, key: str) -> None:
        cells = "".join(f"{format(found[label][key], fmt):>18}" for label, _, _ in RUNS)
        print(f"{name:34}{cells}")

    line("local cluster start (s)", ".2f", "start_s")
    line("first run, empty cache (s)", ".2f", "first_s")
    line("cached run (s)", ".2f", "cached_s")
    line("cached run, s per million rows", ".3f", "cached_per_m")
    line("peak memory, monitor, first (MB)", ".0f", "peak_first_mb")
    line("peak memory, monitor, cached (MB)", ".0f", "peak_cached_mb")
    line("peak memory, a worker, first (MB)", ".0f", "worker_first_mb")
    for label, _, _ in RUNS:
        f = found[label]
        f["hits_text"] = f"{f['hits'][0]:,} / {f['hits'][1]:,}"
    line("cache hits, first / cached run", "", "hits_text")
    line("rows counted", ",", "rows")
    reports = [found[label]["report"] for label, _, _ in RUNS]
    same = all(r == reports[0] for r in reports)
    cached = all(found[label]["same_cached"] for label, _, _ in RUNS)
    print(f"identical report from every engine (as JSON, bit for bit): {same}")
    print(f"identical report from the cached run: {cached}")
    (folder / "report.json").write_text(json.dumps(reports[0], indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
