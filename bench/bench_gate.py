"""Gate speed: 6 checks, 1,000 bootstrap resamples, paired against a baseline, 100,000 rows.

    .venv/bin/python bench/bench_gate.py [--rows 100000] [--resamples 1000] [--no-peers]

Prints ownloop's wall time and, side by side in the same run, MLflow's evaluate + validate on
the same two models and rows. MLflow runs in its own venv so its pins never touch ownloop's;
bench/_peers.py creates it on first use (bench/.venv-mlflow: mlflow, scikit-learn, ownloop).

When it cannot be set up the MLflow half is skipped with the reason printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ownloop import Config, Workspace
from ownloop.demo import make_churn_data, make_model

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _peers import MLFLOW_VENV, ensure_mlflow_venv  # noqa: E402

MLFLOW_PY = MLFLOW_VENV / "bin" / "python"
MARGIN = 0.01
SUITE = """\
level: 0.95
baseline: production
bootstrap: {{resamples: {resamples}, seed: 0}}
datasets:
  holdout: {{path: holdout.parquet, label: churned}}
checks:
  - metric: accuracy        # Wilson
    at_least: 0.70
  - metric: roc_auc         # bootstrap
    at_least: 0.75
  - metric: log_loss        # bootstrap
    at_most: 0.55
  - metric: f1              # bootstrap
    at_least: 0.40
  - type: non_inferiority   # McNemar, paired
    metric: accuracy
    margin: {margin}
  - type: non_inferiority   # paired bootstrap
    metric: roc_auc
    margin: {margin}
"""


def _setup(folder: Path, rows: int, resamples: int) -> Workspace:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    ws = Workspace(Config(home=folder / "home", user="bench"))
    ws.registry.add_team("risk")
    train = make_churn_data(20_000, seed=1)
    X, y = train.drop(columns="churned"), train["churned"]
    for params in (
        {"max_iter": 60, "learning_rate": 0.1},
        {"max_iter": 150, "learning_rate": 0.05},
    ):
        ws.registry.register(
            make_model(**params).fit(X, y),
            name="churn",
            owner="risk",
            reference=train.head(5000),
            target="churned",
        )
    ws.deploy.set_production("churn", 1, force=True, reason="set up")
    make_churn_data(rows, seed=2).to_parquet(folder / "holdout.parquet")
    (folder / "suite.yaml").write_text(SUITE.format(resamples=resamples, margin=MARGIN))
    return ws


def _ownloop(ws: Workspace, folder: Path) -> dict[str, float | str]:
    data = __import__("pandas").read_parquet(folder / "holdout.parquet")
    X = data.drop(columns="churned")
    cand, base = ws.registry.load("churn@2"), ws.registry.load("churn@1")
    start = time.perf_counter()
    cand.predict_proba(X)
    base.predict_proba(X)
    predict = time.perf_counter() - start
    ws.evaluations.evaluate("churn@2", folder / "suite.yaml", store=False)  # warm caches
    start, cpu = time.perf_counter(), time.process_time()
    result = ws.evaluations.evaluate("churn@2", folder / "suite.yaml")
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    for c in result.checks:
        print(f"    {c.status:<12} {c.name}: {c.message}")
    return {"total": total, "cpu": cpu, "predict": predict, "verdict": result.verdict}


def _mlflow(folder: Path, ws: Workspace, resamples: int) -> dict[str, float] | str:
    try:
        ensure_mlflow_venv()
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"could not set up {MLFLOW_PY.parent.parent}: {exc}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OWNLOOP_")}
    env.update(
        OWNLOOP_HOME=str(ws.config.home),
        MLFLOW_TRACKING_URI=f"sqlite:///{folder / 'mlflow.db'}",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
        PATH=f"{MLFLOW_PY.parent}{os.pathsep}{env.get('PATH', '')}",
    )
    proc = subprocess.run(
        [str(MLFLOW_PY), str(HERE / "_mlflow_gate.py"), str(folder), str(MARGIN), str(resamples)],
        env=env,
        cwd=folder,  # MLflow writes its artifacts (mlruns/) beside its database
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"MLflow run failed: {tail}"
    out: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args()
    folder = HERE / "out" / "gate"
    print(
        f"setting up: two churn models, {args.rows:,} held-out rows, 6 checks, {args.resamples:,} resamples"
    )
    ws = _setup(folder, args.rows, args.resamples)
    print("ownloop eval churn@2 --baseline production:")
    own = _ownloop(ws, folder)
    peer = "skipped (--no-peers)" if args.no_peers else _mlflow(folder, ws, args.resamples)
    ws.close()
    _report(own, peer, args.resamples)


def _row(label: str, wall: float, cpu: float | None, note: str = "") -> None:
    cpu_text = f"{cpu:>10.2f}" if cpu is not None else f"{'':>10}"
    print(f"{label:<46}{wall:>10.2f}{cpu_text}   {note}")


def _report(own: dict[str, float | str], peer: dict[str, float] | str, resamples: int) -> None:
    total, cpu, predict = float(own["total"]), float(own["cpu"]), float(own["predict"])
    print(f"\n{'':<46}{'wall s':>10}{'cpu s':>10}")
    _row(
        "ownloop gate, 6 checks, 95% intervals",
        total,
        cpu,
        f"verdict {own['verdict']}; target < 3 s",
    )
    _row("  model predictions inside it (timed apart)", predict, None)
    _row("  the rest: statistics, store, I/O", total - predict, None)
    if isinstance(peer, str):
        print(f"MLflow: {peer}")
        return
    _row(
        "MLflow evaluate x2 + validate, point values",
        peer["point"],
        peer["point_cpu"],
        f"mlflow {peer['version']}",
    )
    _row(
        "MLflow, one bootstrap resample (evaluate x2)",
        peer["per_resample"],
        None,
        f"x {resamples:,} resamples: ~{peer['per_resample'] * resamples / 60:.0f} min",
    )
    print(
        f"MLflow point values / ownloop with intervals: wall {peer['point'] / total:.1f}x, "
        f"cpu {peer['point_cpu'] / cpu:.1f}x (on a shared machine cpu is the steadier figure)"
    )


if __name__ == "__main__":
    main()
