"""Serving speed, side by side in one run: raw predict_proba, bare FastAPI, MLflow, ownloop.

    .venv/bin/pip install -e '.[bench]'          # fastapi for the floor
    .venv/bin/python bench/bench_serve.py         # creates bench/.venv-mlflow on first run

Two models: gradient boosting fitted on a NumPy array, and HistGradientBoosting fitted on a
20-column DataFrame (how most users fit; the peers are a bare FastAPI app scoring NumPy rows, the
same app building a one-row DataFrame, and MLflow). Single-row requests over persistent
connections (wrk, loopback), sequential (1 connection) and 8 concurrent connections, ownloop with
prediction logging on and off; then ownloop's batch route with 1,000-row requests. Prints p50/p99
latency, throughput and the ratios. Every server is measured in turn within each round, so a noisy
moment hits all alike; figures vary 2-3x between runs on a busy 2-core machine: compare the
ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _frame_model import TRUSTED, make_frame_model  # noqa: E402
from _model import FEATURES, make_data, make_model  # noqa: E402
from _peers import ensure_mlflow_venv  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


@contextmanager
def server(
    cmd: list[str], port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    # output goes to a file: a pipe nobody reads would stall a server that logs every request
    with tempfile.TemporaryFile() as out:
        # one OpenMP thread in every server: a single-row predict gains nothing from more, and
        # spinning OpenMP workers on a busy 2-core machine would measure the machine, not the server
        env = {**(os.environ if env is None else env), "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_up(port, proc)
            time.sleep(0.5)
            yield proc
        except BaseException:
            out.seek(0)
            sys.stderr.write(out.read()[-3000:].decode(errors="replace"))
            raise
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def post(port: int, path: str, body: bytes) -> dict[str, object]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"POST {path} -> {response.status}: {data[:300]!r}")
    result: dict[str, object] = json.loads(data)
    return result


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(port: int, path: str, body: bytes, connections: int, seconds: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = [==[{body.decode()}]==]\n"
        )
        script = f.name
    threads = min(2, connections)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            script,
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script)
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    p50 = re.search(r"50%\s+([\d.]+\w+)", out)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not (p50 and p99 and rps and total):
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    return {
        "p50": _seconds(p50.group(1)),
        "p99": _seconds(p99.group(1)),
        "rps": float(rps.group(1)),
        "requests": float(total.group(1)),
    }


def raw(model: object, rows: np.ndarray, seconds: float) -> dict[str, float]:
    times = []
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        x = rows[i % len(rows)].reshape(1, -1)
        t = time.perf_counter()
        model.predict_proba(x)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - t)
        i += 1
    arr = np.array(times)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p99": float(np.percentile(arr, 99)),
        "rps": 1 / float(arr.mean()),
        "requests": float(len(arr)),
    }


def register_ownloop(home: Path) -> None:
    from ownloop import Config, Workspace

    X, y = make_data()
    reference = pd.DataFrame(X, columns=FEATURES).assign(target=y)
    with Workspace(Config(home=home, user="bench")) as ws:
        ws.registry.add_team("bench", members=["bench"])
        v = ws.registry.register(
            make_model(),
            name="gbc",
            owner="bench",
            reference=reference,
            target="target",
            trust=["sklearn.tree._tree.Tree"],
        )
        ws.deploy.set_production("gbc", v.version, force=True, reason="set up")
        v = ws.registry.register(
            make_frame_model(),
            name="hgbdf",
            owner="bench",
            reference=reference,
            target="target",
            trust=TRUSTED,
        )
        ws.deploy.set_production("hgbdf", v.version, force=True, reason="set up")


def fmt(r: dict[str, float] | None) -> str:
    if r is None:
        return f"{'not measured':>44s}"
    return f"p50 {r['p50'] * 1e3:7.2f} ms  p99 {r['p99'] * 1e3:7.2f} ms  {r['rps']:9.1f} req/s"


class Run(NamedTuple):
    model: str  # "numpy" or "frame": which model the server scores
    name: str
    cmd: list[str]
    env: dict[str, str] | None
    path: str
    body: bytes


def _mlflow(work: Path, save: str, folder: str) -> tuple[list[str], dict[str, str]]:
    mlpython = ensure_mlflow_venv()
    subprocess.run(
        [str(mlpython), str(HERE / save), str(work / folder)], check=True, capture_output=True
    )
    env = {
        **os.environ,
        "PATH": f"{mlpython.parent}:{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"file://{work / 'mlruns'}",
    }
    cmd = [str(mlpython.parent / "mlflow"), "models", "serve", "-m", str(work / folder)]
    return [*cmd, "--env-manager", "local", "-h", "127.0.0.1", "-p", "{port}"], env


def _runs(work: Path, home: Path, args: argparse.Namespace, x0: np.ndarray) -> list[Run]:
    record = {f: float(v) for f, v in zip(FEATURES, x0, strict=True)}
    simple = json.dumps({"instances": [record]}).encode()
    split = json.dumps({"dataframe_split": {"columns": FEATURES, "data": [x0.tolist()]}}).encode()
    v2 = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP64", "shape": [1, len(FEATURES)], "data": x0.tolist()}
            ]
        }
    ).encode()
    ownloop = str(Path(sys.executable).parent / "ownloop")
    oenv = {k: v for k, v in os.environ.items() if not k.startswith("OWNLOOP_")}
    oenv.update(OWNLOOP_HOME=str(home), OWNLOOP_USER="bench")
    on, off = (
        [ownloop, "serve", "--port", "{port}"],
        [ownloop, "serve", "--no-log", "--port", "{port}"],
    )
    runs: list[Run] = []
    if "numpy" in args.models:
        floor = [sys.executable, str(HERE / "_fastapi_floor.py"), "{port}"]
        runs.append(Run("numpy", "bare FastAPI/uvicorn", floor, None, "/predict", simple))
        if not args.skip_mlflow:
            cmd, env = _mlflow(work, "_mlflow_save.py", "mlflow-model")
            runs.append(Run("numpy", "MLflow models serve", cmd, env, "/invocations", split))
        runs.append(
            Run("numpy", "ownloop serve, logging on", on, oenv, "/models/gbc/predict", simple)
        )
        runs.append(
            Run("numpy", "ownloop v2 infer, logging on", on, oenv, "/v2/models/gbc/infer", v2)
        )
        runs.append(
            Run("numpy", "ownloop serve, logging off", off, oenv, "/models/gbc/predict", simple)
        )
    if "frame" in args.models:
        floor = [sys.executable, str(HERE / "_fastapi_frame.py"), "{port}"]
        runs.append(Run("frame", "bare FastAPI/uvicorn", floor, None, "/predict", simple))
        runs.append(
            Run("frame", "FastAPI building a DataFrame", floor, None, "/predict_frame", simple)
        )
        if not args.skip_mlflow:
            cmd, env = _mlflow(work, "_mlflow_save_frame.py", "mlflow-frame-model")
            runs.append(Run("frame", "MLflow models serve", cmd, env, "/invocations", split))
        runs.append(
            Run("frame", "ownloop serve, logging on", on, oenv, "/models/hgbdf/predict", simple)
        )
        runs.append(
            Run("frame", "ownloop serve, logging off", off, oenv, "/models/hgbdf/predict", simple)
        )
    return runs


MODELS = {
    "numpy": "GradientBoostingClassifier(100 trees, depth 3) fitted on a NumPy array",
    "frame": "HistGradientBoostingClassifier(100 iterations) fitted on a 20-column DataFrame",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="median of this many rounds")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--batch-only", action="store_true", help="only the 1,000-row batch route")
    parser.add_argument(
        "--models", default="numpy,frame", help="which models: numpy, frame or both (numpy,frame)"
    )
    parser.add_argument(
        "--clients", default="1,8", help="connection counts to measure (default 1,8)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed (apt-get install wrk)")
    clients = [int(c) for c in args.clients.split(",")]
    X, _ = make_data(200, seed=1)
    expected = {
        "numpy": make_model().predict_proba(X[:1])[0],
        "frame": make_frame_model().predict_proba(pd.DataFrame(X[:1], columns=FEATURES))[0],
    }
    print(
        f"{len(FEATURES)} features; {os.cpu_count()} CPUs; median of {args.rounds} rounds of "
        f"{args.seconds}s; wrk over keep-alive connections, single-row requests\n"
    )
    results: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    if "numpy" in args.models:
        results["numpy"] = {
            "raw predict_proba (in-process)": {1: raw(make_model(), X, args.seconds)}
        }
    work = Path(tempfile.mkdtemp(prefix="ownloop-bench-"))
    try:
        home = work / "ownloop"
        register_ownloop(home)
        runs = [] if args.batch_only else _runs(work, home, args, X[0])
        rounds: dict[tuple[str, str], dict[int, list[dict[str, float]]]] = {}
        # round-robin, so a noisy moment on the machine hits every server alike
        for r in range(args.rounds if runs else 0):
            for run in runs:
                by_c = rounds.setdefault((run.model, run.name), {c: [] for c in clients})
                got = measure(
                    run.cmd, run.env, run.path, run.body, expected[run.model], clients, args.seconds
                )
                for c, figures in got.items():
                    by_c[c].append(figures)
                line = " | ".join(f"c={c} " + fmt(by_c[c][-1]) for c in clients)
                print(f"round {r + 1}: [{run.model}] {run.name:30s} {line}", flush=True)
        for (model, name), by_c in rounds.items():
            results.setdefault(model, {})[name] = {c: median(runs_) for c, runs_ in by_c.items()}
        ownloop = str(Path(sys.executable).parent / "ownloop")
        oenv = {k: v for k, v in os.environ.items() if not k.startswith("OWNLOOP_")}
        oenv.update(OWNLOOP_HOME=str(home), OWNLOOP_USER="bench")
        batch = batch_route(home, oenv, ownloop, X, args.seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for model, by_name in results.items():
        report(model, by_name, clients)
    report_batch(batch)


def measure(
    cmd: list[str],
    env: dict[str, str] | None,
    path: str,
    body: bytes,
    expected: np.ndarray,
    clients: list[int],
    seconds: int,
) -> dict[int, dict[str, float]]:
    """Start one server, check its answer, measure with each number of connections."""
    port = free_port()
    cmd = [c.replace("{port}", str(port)) for c in cmd]
    with server(cmd, port, env) as proc:
        answer = post(port, path, body)
        if "outputs" in answer:  # v2
            answer = {o["name"]: o["data"] for o in answer["outputs"]}  # type: ignore[union-attr, attr-defined]
        got = answer.get("probabilities") or answer.get("predictions")
        np.testing.assert_allclose(np.asarray(got, dtype=float).reshape(-1), expected, rtol=1e-9)
        figures = {}
        for c in clients:
            before = cpu_seconds(proc.pid)
            figures[c] = wrk(port, path, body, c, seconds)
            figures[c]["cpu_ms"] = (cpu_seconds(proc.pid) - before) / figures[c]["requests"] * 1e3
        return figures


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a server's process group so far: less noisy than wall time.

    On a machine shared with other work, throughput swings with the neighbours' load; CPU time
    per request moves much less, so the logging cost is also given as CPU per request.
    """
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) == pid:  # the process group: the server and what it started (mlflow)
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median throughput (its latencies come with it)."""
    ordered = sorted(runs, key=lambda r: r["rps"])
    return ordered[len(ordered) // 2]


def batch_route(
    home: Path, env: dict[str, str], ownloop: str, X: np.ndarray, seconds: int
) -> dict[str, float]:
    from ownloop.predlog import read_window

    rows = np.resize(X, (1000, X.shape[1]))
    body = json.dumps(
        {"instances": [dict(zip(FEATURES, r.tolist(), strict=True)) for r in rows]}
    ).encode()
    port = free_port()
    before = read_window(home / "predictions", "gbc", columns=["prediction_id"]).num_rows
    with server([ownloop, "serve", "--port", str(port)], port, env):
        post(port, "/models/gbc/predict", body)
        r = wrk(port, "/models/gbc/predict", body, 2, seconds)
        time.sleep(1.5)  # let the writer catch up before reading its counters
        metrics = _get(port, "/metrics")
    logged = read_window(home / "predictions", "gbc", columns=["prediction_id"]).num_rows - before
    r["predictions_per_s"] = r["rps"] * 1000
    r["seconds"] = float(seconds)
    r["logged"] = float(logged)
    r["dropped"] = float(
        re.search(r"^ownloop_predlog_dropped_records_total (\S+)", metrics, re.M).group(1)  # type: ignore[union-attr]
    )
    return r


def _get(port: int, path: str) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path)
    text = conn.getresponse().read().decode()
    conn.close()
    return text


def report(model: str, results: dict[str, dict[int, dict[str, float]]], clients: list[int]) -> None:
    print(f"\n{MODELS[model]}\n")
    head = "".join(
        f" {'sequential' if c == 1 else f'{c} concurrent'} p50 | p99 | req/s |" for c in clients
    )
    print("| server |" + head)
    print("|---|" + "---|---|---|" * len(clients))
    for name, by_c in results.items():
        cells = []
        for c in clients:
            r = by_c.get(c)
            cells += (
                ["n/a"] * 3
                if r is None
                else [f"{r['p50'] * 1e3:.2f} ms", f"{r['p99'] * 1e3:.2f} ms", f"{r['rps']:.0f}"]
            )
        print(f"| {name} | " + " | ".join(cells) + " |")
    on, off = results.get("ownloop serve, logging on"), results.get("ownloop serve, logging off")
    if on is None or off is None:
        return
    peers = [
        n
        for n in ("bare FastAPI/uvicorn", "FastAPI building a DataFrame", "MLflow models serve")
        if n in results
    ]
    print("\nratios (throughput):")
    for c in clients:
        label = "sequential" if c == 1 else f"{c} concurrent"
        parts = [
            f"ownloop(log on) / {n} = {on[c]['rps'] / results[n][c]['rps']:.2f}x" for n in peers
        ]
        parts.append(
            f"logging cost = {(1 - on[c]['rps'] / off[c]['rps']) * 100:+.1f}% of throughput"
        )
        print(f"  {label:13s} " + "   ".join(parts))
    print("\nserver CPU per request (user + system, ms; less sensitive to the machine's load):")
    for c in clients:
        cells = [
            f"{n} {r[c]['cpu_ms']:.3f}" for n, r in results.items() if "cpu_ms" in r.get(c, {})
        ]
        cost = (on[c]["cpu_ms"] / off[c]["cpu_ms"] - 1) * 100
        print(
            f"  {c} connections: "
            + ", ".join(cells)
            + f"; logging adds {cost:+.1f}% CPU per request"
        )


def report_batch(batch: dict[str, float]) -> None:
    print(
        f"\nbatch route, 1,000-row requests, 2 connections, logging on: "
        f"{batch['predictions_per_s']:,.0f} predictions/s answered (p50 {batch['p50'] * 1e3:.1f} ms "
        f"per batch); {batch['logged']:,.0f} rows in the log after shutdown "
        f"({batch['logged'] / batch['seconds']:,.0f}/s of the run), "
        f"{batch['dropped']:,.0f} counted as dropped"
    )


if __name__ == "__main__":
    main()
