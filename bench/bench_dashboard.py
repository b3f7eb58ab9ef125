"""Dashboard page loads over a store with 30 days of 5-minute windows for 20 models.

    .venv/bin/python bench/bench_dashboard.py                       # SQLite in a temp folder
    .venv/bin/python bench/bench_dashboard.py --db-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/bench_dashboard.py --models 2 --days 2   # a quick look

The store: every model is registered through the real services (a logistic regression on
``--features`` numeric features) and put in production; one real monitor run over one 5-minute
window of its logged predictions (labels for half of them) gives the result rows the monitor
stores for a window (system figures, estimated and realised accuracy, confidence, dataset and
prediction drift, a drift row with its histogram bins per feature, ...). Those rows are then
copied, with their values jittered, into every 5-minute window of ``--days`` days for every
model by bulk SQL insert: monitoring 172,800 windows for real would take days, and the pages
read only the stored rows.

Then a real ``ownloop serve`` process, and the Models page and one Model page (default range,
and ``range=30d``) loaded ``--repeat`` times each over HTTP: p50/p95/max in ms, beside the
store's size. The target is a model page under 300 ms. The service reads behind the model page
are timed in-process too, so a slow page can be traced to the query that costs the time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_serve import free_port, wait_up  # noqa: E402

from ownloop import Config, Workspace, record_labels  # noqa: E402
from ownloop.demo import log_predictions  # noqa: E402
from ownloop.store import tables as t  # noqa: E402

WINDOW = timedelta(minutes=5)


def _model(features: int, seed: int) -> tuple[Any, pd.DataFrame]:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        rng.normal(size=(2000, features)), columns=[f"f{i:02d}" for i in range(features)]
    )
    y = (X.iloc[:, : min(3, features)].sum(axis=1) + rng.normal(size=len(X)) > 0).astype(int)
    return LogisticRegression(max_iter=200).fit(X, y), X.assign(y=y)


def _register(ws: Workspace, models: int, features: int) -> list[str]:
    ws.registry.add_team("risk", email="risk@example.com")
    ws.registry.add_team("growth", email="growth@example.com")
    names = []
    for m in range(models):
        model, data = _model(features, seed=m)
        name = f"model{m:02d}"
        ws.registry.register(
            model, name=name, owner="risk" if m % 2 == 0 else "growth", reference=data, target="y"
        )
        ws.deploy.set_production(name, 1, force=True, reason="bench")
        names.append(name)
    return names


def _template(ws: Workspace, name: str, features: int, end: datetime) -> tuple[Any, list[Any]]:
    """One real monitor run of ``name`` over the window ending at ``end``: its run row and result
    rows, as the monitor stored them."""
    _, data = _model(features, seed=10_000)
    frame = data.head(600)
    step = WINDOW / (len(frame) + 1)
    logged = log_predictions(
        ws, f"{name}@1", frame.drop(columns="y"), end - WINDOW + step, step=step
    )
    ids = logged.column("prediction_id").to_pylist()
    rows = [
        {"prediction_id": i, "label": int(y)}
        for i, y in zip(ids[::2], frame["y"][::2], strict=True)
    ]
    record_labels(name, rows, source="bench", workspace=ws)
    ws.monitor.run(name, window=WINDOW, end=end)
    with ws.store.read() as conn:
        run = conn.execute(sa.select(t.monitor_runs).where(t.monitor_runs.c.model == name)).one()
        results = conn.execute(
            sa.select(t.monitor_results).where(t.monitor_results.c.run_id == run.id)
        ).all()
    with ws.store.write() as conn:
        conn.execute(t.monitor_results.delete().where(t.monitor_results.c.run_id == run.id))
        conn.execute(t.monitor_runs.delete().where(t.monitor_runs.c.id == run.id))
    return run, results


def _raw(value: Any, sqlite: bool) -> Any:
    """``value`` as the database driver takes it: JSON as text, times as SQLite stores them."""
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, datetime) and sqlite:
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _fill(
    ws: Workspace, names: list[str], run: Any, results: list[Any], ends: list[datetime]
) -> int:
    """Copies of ``run`` and ``results`` into every window of every model; the rows written.

    The first day of the first model is written from Python (plain DBAPI ``executemany``, each
    JSON value serialised once, values jittered per window); every further day, then every
    further model, is copied from it by ``INSERT ... SELECT`` with shifted times and ids, since
    per-row Python would take hours at this size. So each day repeats the first day's values."""
    sqlite = ws.store.dialect == "sqlite"
    day = min(len(ends), 288)
    written = _first_day(ws, names[0], run, results, ends[-day:])
    per_run = len(results)
    run_cols = [c.name for c in t.monitor_runs.columns]
    res_cols = [c.name for c in t.monitor_results.columns]
    days = -(-len(ends) // day)
    with ws.store.write() as conn:
        for d in range(1, days):
            shift = {"window_start", "window_end", "started_at", "finished_at"}
            conn.execute(_copy("monitor_runs", run_cols, sqlite, shift, d, f"id <= {day}",
                               id_step=d * day))  # fmt: skip
            conn.execute(_copy("monitor_results", res_cols, sqlite, {"window_end"}, d,
                               f"run_id <= {day}", id_step=d * day * per_run,
                               run_step=d * day))  # fmt: skip
        # the oldest copied day may reach past the asked span: drop what is older
        oldest = _raw(ends[0] - WINDOW, sqlite)
        conn.execute(
            sa.text("DELETE FROM monitor_results WHERE run_id IN "
                    "(SELECT id FROM monitor_runs WHERE window_start < :o)"), {"o": oldest}
        )  # fmt: skip
        conn.execute(sa.text("DELETE FROM monitor_runs WHERE window_start < :o"), {"o": oldest})
        first = conn.execute(sa.text("SELECT max(id) FROM monitor_runs")).scalar_one()
        last_res = conn.execute(sa.text("SELECT max(id) FROM monitor_results")).scalar_one()
        for m, name in enumerate(names[1:], start=1):
            conn.execute(_copy("monitor_runs", run_cols, sqlite, set(), 0,
                               f"model = '{names[0]}'", id_step=m * first, model=name))  # fmt: skip
            conn.execute(_copy("monitor_results", res_cols, sqlite, set(), 0,
                               f"model = '{names[0]}'", id_step=m * last_res,
                               run_step=m * first, model=name))  # fmt: skip
        if not sqlite:  # the copies took ids by hand: move the sequences on
            for table in ("monitor_runs", "monitor_results"):
                conn.execute(
                    sa.text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
    return written


def _copy(
    table: str,
    cols: list[str],
    sqlite: bool,
    shifted: set[str],
    days: int,
    where: str,
    *,
    id_step: int,
    run_step: int = 0,
    model: str | None = None,
) -> sa.TextClause:
    """``INSERT ... SELECT`` copying ``table``'s rows matching ``where``: ids moved on by
    ``id_step``, run ids by ``run_step``, the ``shifted`` times ``days`` days back, ``model``
    renamed."""
    out = []
    for c in cols:
        if c == "id":
            out.append(f"id + {id_step}")
        elif c == "run_id":
            out.append(f"run_id + {run_step}")
        elif c == "model" and model is not None:
            out.append(f"'{model}'")
        elif c in shifted and sqlite:
            out.append(f"strftime('%Y-%m-%d %H:%M:%S', {c}, '-{days} days') || substr({c}, 20)")
        elif c in shifted:
            out.append(f"{c} - interval '{days} days'")
        else:
            out.append(c)
    return sa.text(
        f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(out)} FROM {table} "
        f"WHERE {where}"
    )


def _first_day(ws: Workspace, name: str, run: Any, results: list[Any], ends: list[datetime]) -> int:
    sqlite = ws.store.dialect == "sqlite"
    mark = "?" if sqlite else "%s"
    rng = np.random.default_rng(0)
    run_keys = list(run._mapping.keys())
    res_keys = list(results[0]._mapping.keys())
    run_tpl = {k: _raw(v, sqlite) for k, v in run._mapping.items()}
    res_tpl = [{k: _raw(v, sqlite) for k, v in r._mapping.items()} for r in results]
    runs: list[tuple[Any, ...]] = []
    rows: list[tuple[Any, ...]] = []
    result_id = 0
    for run_id, end in enumerate(ends, start=1):
        start, stop = _raw(end - WINDOW, sqlite), _raw(end, sqlite)
        r = {**run_tpl, "id": run_id, "model": name, "window_start": start,
             "window_end": stop, "started_at": stop, "finished_at": stop}  # fmt: skip
        runs.append(tuple(r[k] for k in run_keys))
        jitter = 1.0 + 0.05 * float(rng.standard_normal())
        for tpl in res_tpl:
            result_id += 1
            row = {**tpl, "id": result_id, "run_id": run_id, "model": name, "window_end": stop}
            for key in ("value", "lower", "upper"):
                if isinstance(row[key], float):
                    row[key] = row[key] * jitter
            rows.append(tuple(row[k] for k in res_keys))
    raw = ws.store.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.executemany(
            f"INSERT INTO monitor_runs ({', '.join(run_keys)}) "
            f"VALUES ({', '.join([mark] * len(run_keys))})",
            runs,
        )
        cur.executemany(
            f"INSERT INTO monitor_results ({', '.join(res_keys)}) "
            f"VALUES ({', '.join([mark] * len(res_keys))})",
            rows,
        )
        raw.commit()
    finally:
        raw.close()
    return len(runs) + len(rows)


def _store_size(config: Config) -> str:
    if config.db_url.startswith("sqlite"):
        db = config.home / "ownloop.db"
        size = sum(p.stat().st_size for p in db.parent.glob("ownloop.db*"))
        return f"SQLite file {size / 2**20:,.0f} MiB"
    engine = sa.create_engine(config.db_url)
    with engine.connect() as conn:
        size = conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one()
    engine.dispose()
    return f"PostgreSQL database {size / 2**20:,.0f} MiB"


def _counts(ws: Workspace) -> tuple[int, int]:
    with ws.store.read() as conn:
        runs = conn.execute(sa.select(sa.func.count()).select_from(t.monitor_runs)).scalar_one()
        res = conn.execute(sa.select(sa.func.count()).select_from(t.monitor_results)).scalar_one()
    return int(runs), int(res)


def _figures(ms: list[float]) -> str:
    a = np.asarray(ms)
    return f"p50 {np.percentile(a, 50):7.1f} ms  p95 {np.percentile(a, 95):7.1f} ms  max {a.max():7.1f} ms"


def _time(fn: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def _pages(
    base: str, model: str, repeat: int, say: Callable[[str], None]
) -> dict[str, list[float]]:
    pages = {
        "Models page  /": "/",
        f"Model page   /ui/models/{model}": f"/ui/models/{model}",
        f"Model page   /ui/models/{model}?range=30d": f"/ui/models/{model}?range=30d",
        f"Monitor runs /ui/runs?model={model}": f"/ui/runs?model={model}",
    }
    timings = {}
    with httpx.Client(base_url=base, timeout=120) as client:
        for label, path in pages.items():
            first = client.get(path)
            if first.status_code != 200:
                say(f"  {label}: HTTP {first.status_code}: {first.text[:200]!r}")
                continue
            ms = _time(lambda p=path: client.get(p).raise_for_status(), repeat)  # type: ignore[misc]
            timings[label] = ms
            say(f"  {label:<44} {_figures(ms)}  ({len(first.content) / 1024:,.0f} KiB)")
    return timings


def _services(
    ws: Workspace, model: str, feature: str, repeat: int, say: Callable[[str], None]
) -> None:
    """The reads behind a model page, timed one by one, then the chart drawing and the whole
    page function (no HTTP), so a slow page can be traced to what costs the time."""
    from ownloop.ui._model_page import SERIES_KEYS, _charts_of, model_page
    from ownloop.ui._view import View

    now = ws.clock.now()
    monitor = ws.monitor
    calls: dict[str, Callable[[], Any]] = {
        "registry.get_model": lambda: ws.registry.get_model(model),
        "registry.list_versions": lambda: ws.registry.list_versions(model),
        "deploy.status": lambda: ws.deploy.status(model),
        "deploy.rollback_checks": lambda: ws.deploy.rollback_checks(model, limit=1),
        "alerts.list(model=)": lambda: ws.alerts.list(model=model, limit=50),
        "monitor.latest_results": lambda: monitor.latest_results(model),
        "monitor.runs(model, limit=50)": lambda: monitor.runs(model, limit=50),
    }
    for days in (1, 30):
        since = now - timedelta(days=days)
        calls[f"monitor.series(page's 8 keys, {days}d)"] = lambda s=since: monitor.series(
            model, SERIES_KEYS, since=s
        )
        stored = monitor.series(model, SERIES_KEYS, since=since)
        calls[f"drawing the page's charts ({days}d)"] = lambda st=stored: _charts_of(st)
        calls[f"monitor.feature_history({days}d)"] = lambda s=since: monitor.feature_history(
            model, feature, since=s
        )
        view = View(ws=ws, actor=ws.actor, query={"range": f"{days}d"}, csrf="", now=now)
        calls[f"model_page() in-process ({days}d)"] = lambda v=view: model_page(v, model)
    for label, fn in calls.items():
        ms = _time(fn, repeat)
        say(f"  {label:<44} {_figures(ms)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--features", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=20, help="loads of each page")
    ap.add_argument("--db-url", default=None, help="a PostgreSQL URL (default: SQLite in --home)")
    ap.add_argument("--home", type=Path, default=None, help="keep the store here (default: temp)")
    args = ap.parse_args()
    say = print
    home = args.home or Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    config = Config(home=home / "home", db_url_override=args.db_url, user="bench")
    last = datetime.now(UTC).replace(second=0, microsecond=0)
    last -= timedelta(minutes=last.minute % 5)
    n = int(args.days * 24 * 12)
    ends = [last - WINDOW * (n - 1 - i) for i in range(n)]
    try:
        start = time.perf_counter()
        with Workspace(config) as ws:
            names = _register(ws, args.models, args.features)
            run, results = _template(ws, names[0], args.features, ends[-1])
            say(
                f"one real monitor run stored {len(results)} result rows for a window of "
                f"{args.features} features ({sum(r.bins is not None for r in results)} with bins)"
            )
            filling = time.perf_counter()
            written = _fill(ws, names, run, results, ends)
            filled = time.perf_counter() - filling
            runs, rows = _counts(ws)
        say(
            f"store: {args.models} models x {n:,} windows of 5 min ({args.days:g} days) = {runs:,} "
            f"runs, {rows:,} result rows; {_store_size(config)}; {written:,} rows written from "
            f"Python, the rest copied by SQL, in {filled:.0f} s (all set-up {time.perf_counter() - start:.0f} s)"
        )
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OWNLOOP_")}
        env.update(
            OWNLOOP_HOME=str(config.home), OWNLOOP_DB_URL=config.db_url, OWNLOOP_USER="bench"
        )
        ownloop = str(Path(sys.executable).parent / "ownloop")
        proc = subprocess.Popen(
            [ownloop, "serve", "--port", str(port)], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_up(port, proc)
            say(
                f"pages over HTTP from a real 'ownloop serve' ({args.repeat} loads each, after one warm-up):"
            )
            timings = _pages(f"http://127.0.0.1:{port}", names[0], args.repeat, say)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        model_p50 = [
            float(np.percentile(ms, 50)) for k, ms in timings.items() if k.startswith("Model page")
        ]
        if model_p50:
            verdict = "meets" if max(model_p50) < 300 else "MISSES"
            say(
                f"target: a model page under 300 ms: {verdict} it (worst p50 {max(model_p50):.0f} ms)"
            )
        say("the reads behind the model page, in-process (same store):")
        with Workspace(config) as ws:
            _services(ws, names[0], "f00", args.repeat, say)
    finally:
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
