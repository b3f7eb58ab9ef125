"""The whole loop on bundled, simulated data: ``ownloop demo``.

The data is generated here (seeded), so the demo needs no download and its numbers are known.
"""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # via scikit-learn

from ownloop import predlog
from ownloop.config import Config
from ownloop.errors import InvalidInputError
from ownloop.profile import predict_frame
from ownloop.workspace import Workspace

__all__ = ["DemoResult", "log_predictions", "make_churn_data", "run_demo"]

PLANS = np.array(["basic", "pro", "enterprise"])
REGIONS = np.array(["north", "south", "east", "west"])
MARKER = ".ownloop-demo"


def make_churn_data(n: int, seed: int = 0, *, shift: float = 0.0) -> pd.DataFrame:
    """Simulated customers with a known churn mechanism; ``shift`` moves the population (drift)."""
    rng = np.random.default_rng(seed)
    age = rng.normal(42 + 6 * shift, 12, n).clip(18, 90).round()
    tenure = rng.gamma(2.0, 14 / (1 + shift), n).round(1)
    charges = rng.normal(70 + 15 * shift, 20, n).clip(10, None).round(2)
    calls = rng.poisson(1.5 + shift, n)
    plan = rng.choice(PLANS, n, p=[0.5, 0.35, 0.15])
    region = rng.choice(REGIONS, n)
    logit = (
        -1.2
        + 0.9 * (calls - 1.5) / 1.2
        - 0.05 * (tenure - 28)
        + 0.02 * (charges - 70)
        - 0.6 * (plan == "enterprise")
        + 0.3 * (plan == "basic")
    )
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(
        {
            "age": age,
            "tenure_months": tenure,
            "monthly_charges": charges,
            "support_calls": calls,
            "plan": plan,
            "region": region,
            "churned": churned,
        }
    )


def make_model(**params: Any) -> Any:
    """A scikit-learn pipeline users would write: one-hot categoricals, gradient boosting."""
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    encode = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), ["plan", "region"]), remainder="passthrough"
    )
    return make_pipeline(encode, HistGradientBoostingClassifier(random_state=0, **params))


@dataclass
class DemoResult:
    home: Path
    versions: dict[str, int] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def prepare_home(home: Path) -> None:
    """Start from an empty demo folder; never delete a folder the demo did not create."""
    if home.exists() and any(home.iterdir()):
        if not (home / MARKER).exists():
            raise InvalidInputError(
                f"{home} exists and is not an ownloop demo folder; pass --home with a new path"
            )
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("created by `ownloop demo`; safe to delete\n")


def run_demo(home: Path, say: Callable[[str], None] = print) -> DemoResult:
    """Run every step of the loop that exists, in a fresh workspace at ``home``."""
    prepare_home(home)
    result = DemoResult(home=home)
    config = Config.from_env().with_home(home)
    config = Config(home=config.home, db_url_override=None, user=config.user)
    # The demo's data are small: one native thread fits and scores them about as fast as several
    # on a quiet machine, and on a busy one threads spinning at OpenMP barriers made fitting 15x
    # slower. make_model() first loads scikit-learn's OpenMP runtime, so the limit applies to it.
    make_model()
    with threadpool_limits(limits=1), Workspace(config) as ws:
        _step_register(ws, home, result, say)
        _step_eval(ws, home, result, say)
        _step_serve(ws, home, result, say)
        _step_monitor(ws, home, result, say)
    return result


def _step_register(
    ws: Workspace, home: Path, result: DemoResult, say: Callable[[str], None]
) -> None:
    from sklearn.metrics import accuracy_score

    say("1. a team owns every model: creating team 'risk'")
    ws.registry.add_team(
        "risk",
        email="risk@example.com",
        webhook_url="http://127.0.0.1:9000/hook",
        members=[ws.actor.name] if ws.actor.name.replace("-", "").isalnum() else [],
    )
    data_dir = home / "data"
    data_dir.mkdir(exist_ok=True)
    train, valid = make_churn_data(8000, seed=1), make_churn_data(3000, seed=2)
    train.to_parquet(data_dir / "train.parquet")
    valid.to_parquet(data_dir / "valid.parquet")
    X, y = train.drop(columns="churned"), train["churned"]
    for params in (
        {"max_iter": 60, "learning_rate": 0.1},
        {"max_iter": 150, "learning_rate": 0.05},
    ):
        model = make_model(**params).fit(X, y)
        acc = accuracy_score(valid["churned"], model.predict(valid.drop(columns="churned")))
        # The reference is held-out data, never the rows the model was fitted on: on those its
        # probabilities are over-confident, and a label-free estimate calibrated there runs high.
        v = ws.registry.register(
            model,
            name="churn",
            owner="risk",
            reference=valid,
            target="churned",
            metrics={"valid_accuracy": round(float(acc), 4)},
            description=f"HistGradientBoosting {params}",
        )
        say(
            f"2. registered {v.ref} (fitted on {len(train):,} rows): {len(v.signature.features)} "
            f"features, sha256 {v.artifact_digest[:12]}, held-out accuracy {acc:.3f}; its "
            f"reference profile is the {len(valid):,} held-out rows"
        )
        result.versions[f"v{v.version}"] = v.version
    ws.deploy.set_production("churn", 1, force=True, reason="set up")
    ws.registry.set_alias("churn", "candidate", 2)
    say("3. aliases: churn@production -> 1, churn@candidate -> 2")
    loaded = ws.registry.load("churn@production")
    sample = valid.drop(columns="churned").head(3)
    say(
        f"4. loaded churn@production after checking its digest; churn probability of 3 customers: "
        f"{np.round(loaded.predict_proba(sample)[:, 1], 3).tolist()}"
    )
    result.steps.append("register")


DEMO_SUITE = """\
# The gate a churn candidate must pass before it may ship (format: docs/eval-suite.md).
# Every bound is judged on the 95% confidence limit, not on the point value.
level: 0.95
baseline: production
min_slice_rows: 200
bootstrap: {resamples: 1000, seed: 0}
datasets:
  holdout: {path: ../data/valid.parquet, label: churned}
slices:
  - column: plan
checks:
  - metric: accuracy
    at_least: 0.70
  - metric: roc_auc
    at_least: 0.70
  - type: non_inferiority
    metric: roc_auc
    margin: 0.01
  - type: non_inferiority
    metric: accuracy
    margin: 0.01
    slices: false
  - metric: ece
    at_most: 0.05
    slices: false
  - type: invariance
    name: region does not decide churn
    feature: region
    values: [north, south, east, west]
    at_most: 0.10
  - type: directional
    name: more support calls never lower the churn risk
    feature: support_calls
    delta: 1
    at_most: 0.10
  - type: latency           # CPU time, timed alternately with production: load cannot decide it
    name: latency within 1.5x production
    at_most_ratio: 1.5
    rows: 100
  - type: model_size
    at_most: 5
"""


def _step_eval(ws: Workspace, home: Path, result: DemoResult, say: Callable[[str], None]) -> None:
    from ownloop.evaluation import to_html, to_json, to_junit, to_markdown, write_report

    suite = home / "evals" / "churn.yaml"
    suite.parent.mkdir(exist_ok=True)
    suite.write_text(DEMO_SUITE)
    gate = ws.evaluations.evaluate("churn@2", suite, baseline="production")
    reports = home / "reports"
    for name, render in (
        ("eval.xml", to_junit),
        ("eval.md", to_markdown),
        ("eval.html", to_html),
        ("eval.json", to_json),
    ):
        write_report(reports / name, render(gate))
    counts = gate.counts()
    say(
        f"5. eval gate for churn@2 against {gate.baseline_ref} on {gate.dataset_rows['holdout']:,} "
        f"held-out rows ({len(gate.checks)} checks incl. slices, {gate.seconds:.1f} s): {gate.verdict} "
        f"({counts['PASS']} passed, {counts['FAIL']} failed, {counts['INCONCLUSIVE']} inconclusive, "
        f"{counts['SKIPPED']} slices too small)"
    )
    for check in gate.checks:
        shown = check.slice is None and check.type in ("non_inferiority", "latency")
        if check.status != "PASS" or shown:
            say(f"   {check.status:<12} {check.name}: {check.message}")
    say(f"   gate status of churn@2 is now '{gate.gate_status}'; reports in {reports}")
    result.steps.append("eval")


def log_predictions(
    ws: Workspace,
    ref: str,
    frame: pd.DataFrame,
    start: datetime,
    *,
    step: timedelta = timedelta(seconds=1),
    seed: int = 0,
) -> pa.Table:
    """Score ``frame`` with ``ref`` and append the rows to the prediction log, one every ``step``.

    Simulated serving figures (latency, CPU) come from a seeded generator, so the demo's log looks
    like a server wrote it.
    """
    version = ws.registry.get_version(ref)
    model = ws.registry.load(ref)
    sig = version.signature
    X = frame[sig.feature_names]
    n = len(frame)
    value: Any
    conf: Any
    proba: Any
    predicted, probabilities = predict_frame(model, X, sig)
    if probabilities is not None:
        pred = [str(p) for p in predicted]
        value, conf, proba = [None] * n, probabilities.max(axis=1), list(probabilities)
    else:
        value = np.asarray(predicted, dtype=float)
        pred, conf, proba = [str(v) for v in value], [None] * n, [None] * n
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {
        "prediction_id": predlog.new_ids(n),
        "ts": [start + step * i for i in range(n)],
        "model": [version.model] * n,
        "version": [version.version] * n,
        "arm": ["stable"] * n,
        "request_id": [f"sim-{seed}-{i}" for i in range(n)],
        "status": ["ok"] * n,
        "latency_s": rng.lognormal(np.log(0.004), 0.4, n),
        "cpu_s": rng.lognormal(np.log(0.002), 0.3, n),
        "prediction": pred,
        "prediction_value": value,
        "confidence": conf,
        "proba": proba,
    }
    for f in sig.features:
        col = X[f.name]
        data[f"in.{f.name}"] = col.astype(str).tolist() if f.type == "string" else col.to_numpy()
    table = pa.table(data, schema=predlog.prediction_schema(sig))
    predlog.write_segment(ws.config.predictions_dir, version.model, table)
    return table


def _step_monitor(
    ws: Workspace, home: Path, result: DemoResult, say: Callable[[str], None]
) -> None:
    """Log a day of predictions, the last hours drifted, and let the monitor find the drift."""
    # An hour back from the current hour's start, so the windows never take in the rows the
    # serve step has just logged.
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    start = end - timedelta(hours=6)
    hours = [make_churn_data(1500, seed=100 + h, shift=0.0 if h < 4 else 0.8) for h in range(6)]
    # A unit bug upstream: in the third hour one source sends monthly charges in cents for 2% of
    # the rows. The distribution barely moves; the tail check finds it on its own.
    bug = np.random.default_rng(11).choice(1500, size=30, replace=False)
    hours[2].loc[bug, "monthly_charges"] *= 100
    rng = np.random.default_rng(7)
    for h, frame in enumerate(hours):
        logged = log_predictions(
            ws,
            "churn@production",
            frame.drop(columns="churned"),
            start + timedelta(hours=h),
            step=timedelta(seconds=2.4),
            seed=h,
        )
        labelled = np.flatnonzero(rng.random(len(frame)) < 0.3)  # labels for 30% of the rows
        _log_labels(
            ws,
            logged.column("prediction_id").take(labelled),
            frame["churned"].to_numpy()[labelled],
            end,
        )
    say(
        f"8. simulated the past 6 hours of traffic: {sum(len(f) for f in hours):,} predictions of "
        "churn@production scored and written to the prediction log (the last 2 hours drifted; in "
        "the third, 2% of monthly charges arrived in cents); labels arrived for 30% of them"
    )
    reports = []
    for h in range(6):
        reports += ws.monitor.run(
            "churn", window=timedelta(hours=1), end=start + timedelta(hours=h + 1)
        )
    agree = []
    for rep in reports:
        line, agrees = _window_line(rep)
        say(line)
        if agrees is not None:
            agree.append(agrees)
    say(
        "   the estimate uses no labels (CBPE: the model's probabilities, calibrated on the held-out "
        "reference); its band is where the realised accuracy should fall once labels arrive: "
        f"it agrees with the realised figure in {sum(agree)} of {len(agree)} labelled windows"
    )
    say(
        "   a feature drifts when its two-sample test is significant and it moved at least "
        "0.05 sd (one rule and one unit for every size and type); values beyond the reference's "
        "0.5%-99.5% range are a separate check"
    )
    found = [r for r in reports if r.drift is not None and r.drift.dataset_drift]
    last = reports[-1].drift
    if last is not None and last.weighted_share is not None:
        say(
            f"   the dataset verdict weighs each feature by the model's reliance on it: in the last "
            f"window {len(last.drifted_features)} of {last.tested} drifted features carry "
            f"{last.weighted_share:.0%} of it; importance by {last.importance_method}"
        )
    since = math.ceil((datetime.now(UTC) - (end - timedelta(hours=2))) / timedelta(hours=1))
    say(
        f"9. monitor stored {len(reports)} windows; dataset drift found in {len(found)} (see them with 'ownloop drift churn --since {since}h --html drift.html')"
    )
    result.steps.append("monitor")


def _window_line(rep: Any) -> tuple[str, bool | None]:
    """One window's drift and accuracy, and whether estimate and realised figure agree."""
    assert rep.drift is not None
    drifted = ", ".join(
        f"{f.feature} {f.effect:.2f} sd" if f.effect is not None else f.feature
        for f in rep.drift.features
        if f.drifted
    )
    head = f"   window to {rep.end:%H:%M}: {rep.rows:,} rows, " + (
        f"drift in {drifted}" if drifted else "no drift"
    )
    tails = [f for f in rep.drift.features if f.tail_drifted and not f.drifted]
    if tails:
        head += "; values beyond the reference's range: " + ", ".join(
            f"{f.feature} {f.tail_share:.1%} (reference {f.tail_reference_share:.1%})"
            for f in tails
            if f.tail_share is not None and f.tail_reference_share is not None
        )
    est, real = rep.estimate("accuracy"), rep.realised_figure("accuracy")
    if est is None or est.value is None or est.lower is None or est.upper is None:
        return head, None
    text = f"{head}; accuracy estimated {est.value:.3f} (band {est.lower:.3f}-{est.upper:.3f})"
    if real is None or real.value is None or real.lower is None or real.upper is None:
        return text, None
    agrees = est.lower <= real.value <= est.upper or real.lower <= est.value <= real.upper
    return (
        f"{text}, realised {real.value:.3f} (95% CI {real.lower:.3f}-{real.upper:.3f}, "
        f"{real.n_labelled} labels): {'agrees' if agrees else 'DISAGREES'}",
        agrees,
    )


def _log_labels(ws: Workspace, ids: pa.Array, labels: np.ndarray, at: datetime) -> None:
    n = len(ids)
    table = pa.table(
        {
            "prediction_id": ids,
            "label": [str(v) for v in labels],
            "label_value": labels.astype(float),
            "labeled_at": [at] * n,
            "source": ["demo"] * n,
            "weight": pa.nulls(n, pa.float64()),
        },
        schema=predlog.LABEL_SCHEMA,
    )
    predlog.write_labels(ws.config.predictions_dir, "churn", table)


def _one_native_thread(run: Callable[[], None]) -> Callable[[], None]:
    """``run`` with native thread pools held to one thread (the limit is per calling thread)."""

    def limited() -> None:
        with threadpool_limits(limits=1):
            run()

    return limited


def _post(conn: Any, path: str, body: Any) -> tuple[int, Any]:
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def _step_serve(ws: Workspace, home: Path, result: DemoResult, say: Callable[[str], None]) -> None:
    """Start the real server on a free loopback port, predict, send a bad request, post labels."""
    import http.client

    import uvicorn

    from ownloop.predlog import join_labels, read_labels, read_window
    from ownloop.server import uvicorn_config

    config = uvicorn_config(ws, "127.0.0.1", 0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=_one_native_thread(server.run), name="ownloop-demo-server", daemon=True
    )
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise InvalidInputError("the demo server did not start; see the messages above")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    say(
        f"6. serving churn@production on http://127.0.0.1:{port} (Open Inference Protocol v2 + JSON)"
    )
    traffic = make_churn_data(400, seed=3)
    features = traffic.drop(columns="churned")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    ids: list[str] = []
    try:
        for start in range(0, 200, 2):  # small requests, as an app would send them
            rows = features.iloc[start : start + 2].to_dict("records")
            ids += _post(conn, "/models/churn/predict", {"instances": rows})[1]["prediction_ids"]
        split = json.loads(features.iloc[200:].to_json(orient="split", index=False))
        ids += _post(conn, "/models/churn/predict", {"dataframe_split": split})[1]["prediction_ids"]
        bad = {"instances": [{**features.iloc[0].to_dict(), "age": "forty"}]}
        status, error = _post(conn, "/models/churn/predict", bad)
        say(f"   a bad request is refused with {status}: {error['error']}")
        truth = [
            {"prediction_id": i, "label": int(y)}
            for i, y in zip(ids, traffic["churned"], strict=True)
        ]
        report = _post(conn, "/models/churn/labels", truth[:250])[1]
    finally:
        conn.close()
        server.should_exit = True
        thread.join()
    root = ws.config.predictions_dir
    logged = read_window(
        root, "churn", columns=["prediction_id", "prediction", "confidence", "status"]
    )
    refused = logged["status"].to_pylist().count("refused")
    joined = join_labels(logged, read_labels(root, "churn"))
    labelled = [r for r in joined.to_pylist() if r["label"] is not None]
    accuracy = float(np.mean([r["prediction"] == r["label"] for r in labelled]))
    say(
        f"7. {len(ids)} predictions answered; {logged.num_rows} rows logged to {root} "
        f"({logged.num_rows - refused} predictions, {refused} refused request); "
        f"{report['stored']} labels joined by prediction id, realised accuracy {accuracy:.3f} "
        f"on n={len(labelled)}"
    )
    result.counts.update(predictions=len(ids), logged=logged.num_rows, labels=report["stored"])
    result.steps.append("serve")
