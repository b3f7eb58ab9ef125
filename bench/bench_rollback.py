"""Rollback check speed: 100,000 logged rows of the current version replayed through the target.

The churn model of ``ownloop demo`` (6 features, gradient boosting): v1 is the target, v2 is
production and logged the window (100 log segments of 1,000 rows each, as a server flushing once a
second writes them; 10% of rows labelled). Prints the check's wall time with its breakdown (read,
replay, drift, estimate: the estimate includes the paired realised figures), the median of
``--repeat`` runs, and the report a user sees. Target: under 3 s.

No peer tool checks a rollback target on today's data (Argo Rollouts, Flagger and KServe roll
back to the previous revision as it is), so there is nothing to run side by side.

Run: .venv/bin/python bench/bench_rollback.py [--rows 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from ownloop import Config, Workspace
from ownloop.demo import log_predictions, make_churn_data, make_model
from ownloop.predlog import LABEL_SCHEMA, write_labels

SEGMENT = 1_000
START = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)


def _setup(ws: Workspace, rows: int) -> None:
    train, reference = make_churn_data(8000, seed=1), make_churn_data(3000, seed=2)
    X, y = train.drop(columns="churned"), train["churned"]
    ws.registry.add_team("risk", members=[ws.actor.name])
    for i, params in enumerate(({"max_iter": 60}, {"max_iter": 150, "learning_rate": 0.05}), 1):
        model = make_model(**params).fit(X, y)
        ws.registry.register(
            model, name="churn", owner="risk", reference=reference, target="churned"
        )
        ws.deploy.set_production("churn", i, force=True, reason="bench set up")
    data = make_churn_data(rows, seed=3, shift=0.5)
    for k, at in enumerate(range(0, rows, SEGMENT)):
        chunk = data.iloc[at : at + SEGMENT]
        logged = log_predictions(
            ws,
            "churn@2",
            chunk.drop(columns="churned"),
            START + timedelta(seconds=at),
            seed=k,
        )
        labelled = len(chunk) // 10
        truth = [str(v) for v in chunk["churned"].iloc[:labelled]]
        write_labels(
            ws.config.predictions_dir,
            "churn",
            pa.table(
                {
                    "prediction_id": logged.column("prediction_id").slice(0, labelled),
                    "label": truth,
                    "label_value": [float(v) for v in truth],
                    "labeled_at": [START + timedelta(days=1)] * labelled,
                    "source": ["bench"] * labelled,
                    "weight": [None] * labelled,
                },
                schema=LABEL_SCHEMA,
            ),
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(limits=1):
        config = Config(home=Path(tmp) / "home", db_url_override=None, user="bench")
        with Workspace(config) as ws:
            t0 = time.perf_counter()
            _setup(ws, args.rows)
            print(
                f"set up: 2 versions, {args.rows:,} logged rows in {time.perf_counter() - t0:.1f} s"
            )
            runs = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                check = ws.deploy.check_rollback("churn", rows=args.rows)
                runs.append((time.perf_counter() - t0, check))
    total = [r for r, _ in runs]
    best = sorted(runs, key=lambda r: r[0])[len(runs) // 2][1]
    parts = ", ".join(f"{k} {v:.2f} s" for k, v in best.timings.items())
    print(
        f"rollback check on {best.rows:,} rows: median {statistics.median(total):.2f} s over "
        f"{len(total)} runs (min {min(total):.2f}, max {max(total):.2f}); median run: {parts}"
    )
    print(f"target < 3 s: {'met' if statistics.median(total) < 3 else 'NOT met'}")
    print(f"verdict {best.verdict}: " + " | ".join(best.reasons))
    if best.paired is not None:
        p = best.paired
        print(
            f"paired on {p.n:,} labelled rows: target {p.target:.3f}, current {p.current:.3f}, "
            f"difference {p.difference:+.3f} [{p.interval[0]:+.3f}, {p.interval[1]:+.3f}]"
        )
    print(
        "note: single native thread (threadpoolctl limits=1); the machine's other load is not controlled"
    )


if __name__ == "__main__":
    main()
