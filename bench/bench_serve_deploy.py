"""Serving during a rollout, side by side in one run: plain vs canary (routing by key) vs shadow.

    .venv/bin/python bench/bench_serve_deploy.py            # needs wrk (apt-get install wrk)

The HistGradientBoosting model fitted on a 20-column DataFrame (bench/_frame_model.py) is served
as version 1; version 2 is the same model fitted with another seed. Three routings of one model:

- plain: version 1 answers everything;
- canary: 50% to version 2 by a hash of the ``x-customer`` header (a new key per request, so both
  arms and the routing are exercised on every request);
- shadow: version 1 answers, version 2 scores every request off the request path.

Every request carries the same random ``x-customer`` header in all three, so the only difference
is the routing. Single-row requests, 8 concurrent keep-alive connections (wrk), prediction log on.
Each routing gets a fresh ``ownloop serve`` process, measured in turn within each round (a noisy
moment hits all alike); each figure shown is its median over the rounds. Targets: canary
routing costs < 5% of throughput; shadow adds < 5% to the p50 answered to clients.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _frame_model import TRUSTED, make_frame  # noqa: E402
from _model import FEATURES, make_data  # noqa: E402
from bench_serve import _get, _seconds, cpu_seconds, free_port, post, server  # noqa: E402

MODEL = "hgbdf"
ROUTINGS = ("plain", "canary", "shadow")

# a new routing key on every request: the canary hashes it, plain and shadow carry it unused
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]
counter = 0
request = function()
  counter = counter + 1
  wrk.headers["x-customer"] = "customer-" .. math.random(1, 1000000000) .. "-" .. counter
  return wrk.format()
end
"""


def register(home: Path) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from ownloop import Config, Workspace

    frame, y = make_frame()
    reference = frame.assign(target=y)
    with Workspace(Config(home=home, user="bench")) as ws:
        ws.registry.add_team("bench", members=["bench"])
        for seed in (0, 1):
            model = HistGradientBoostingClassifier(max_iter=100, random_state=seed)
            rows = frame.sample(frac=0.8, random_state=seed).index
            ws.registry.register(
                model.fit(frame.loc[rows], y[rows]),
                name=MODEL,
                owner="bench",
                reference=reference,
                target="target",
                trust=TRUSTED,
            )
        ws.deploy.set_production(MODEL, 1, force=True, reason="bench")


def set_routing(home: Path, routing: str) -> None:
    from ownloop import Config, Workspace

    arms: dict[str, dict[str, Any]] = {
        "plain": {},
        "canary": {
            "candidate": 2,
            "candidate_arm": "canary",
            "weight": 50.0,
            "routing_key": "header:x-customer",
            "rollout_id": 1,
        },
        "shadow": {"candidate": 2, "candidate_arm": "shadow", "rollout_id": 1},
    }
    with Workspace(Config(home=home, user="bench")) as ws, ws.store.write() as conn:
        row = ws.registry.require_model_row(conn, MODEL)
        ws.deploy.write_route(conn, row, ws.clock.now(), stable=1, **arms[routing])


def wrk(port: int, body: bytes, connections: int, seconds: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA.format(body=body.decode()))
        script = f.name
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                script,
                f"http://127.0.0.1:{port}/models/{MODEL}/predict",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script)
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    found = {
        k: re.search(p, out)
        for k, p in {
            "p50": r"50%\s+([\d.]+\w+)",
            "p99": r"99%\s+([\d.]+\w+)",
            "rps": r"Requests/sec:\s+([\d.]+)",
            "requests": r"(\d+) requests in",
        }.items()
    }
    if not all(found.values()):
        raise RuntimeError(f"cannot read wrk output:\n{out}")
    return {
        "p50": _seconds(found["p50"].group(1)),  # type: ignore[union-attr]
        "p99": _seconds(found["p99"].group(1)),  # type: ignore[union-attr]
        "rps": float(found["rps"].group(1)),  # type: ignore[union-attr]
        "requests": float(found["requests"].group(1)),  # type: ignore[union-attr]
    }


def measure(home: Path, routing: str, body: bytes, seconds: int) -> dict[str, float]:
    """One fresh server with ``routing``: check it answers, measure at 8 connections."""
    set_routing(home, routing)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OWNLOOP_")}
    env.update(OWNLOOP_HOME=str(home), OWNLOOP_USER="bench")
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "ownloop"), "serve", "--port", str(port)]
    with server(cmd, port, env) as proc:
        listed = json.loads(_get(port, "/models"))["models"][0]
        want = None if routing == "plain" else routing
        got = listed["candidate"]["arm"] if listed["candidate"] else None
        if got != want or listed["problem"]:
            raise RuntimeError(f"server does not route {routing}: {listed}")
        post(port, f"/models/{MODEL}/predict", body)
        before = cpu_seconds(proc.pid)
        figures = wrk(port, body, 8, seconds)
        metrics = _get(port, "/metrics")
        # CPU per answered request, shadow scoring included: steadier than wall time on a
        # machine shared with other work
        figures["cpu_ms"] = (cpu_seconds(proc.pid) - before) / figures["requests"] * 1e3
    figures["shadow_rows"] = _counter(metrics, "ownloop_requests_total", 'arm="shadow"')
    figures["shadow_dropped"] = _counter(metrics, "ownloop_shadow_dropped_total", "")
    return figures


def propagation(home: Path, changes: int = 10) -> list[float]:
    """Seconds from a routing change's commit until two running servers both route by it."""
    from contextlib import ExitStack

    from ownloop import Config, Workspace

    env = {k: v for k, v in os.environ.items() if not k.startswith("OWNLOOP_")}
    env.update(OWNLOOP_HOME=str(home), OWNLOOP_USER="bench")
    ownloop = str(Path(sys.executable).parent / "ownloop")
    seen: list[float] = []
    with ExitStack() as stack, Workspace(Config(home=home, user="bench")) as ws:
        ports = [free_port(), free_port()]
        for port in ports:
            stack.enter_context(server([ownloop, "serve", "--port", str(port)], port, env))
        for i in range(changes):
            with ws.store.write() as conn:
                row = ws.registry.require_model_row(conn, MODEL)
                ws.deploy.write_route(conn, row, ws.clock.now(), stable=1 + i % 2)
            start = time.perf_counter()
            want = ws.deploy.generations()[MODEL]
            pending = set(ports)
            while pending:
                pending = {p for p in pending if _generation(p) < want}
                time.sleep(0.005)
            seen.append(time.perf_counter() - start)
    return seen


def _generation(port: int) -> int:
    return int(json.loads(_get(port, "/models"))["models"][0]["generation"])


def _counter(text: str, name: str, label: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds (a round's noise moves its figures unevenly)."""
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def report(results: dict[str, dict[str, float]]) -> None:
    print("\n| routing | p50 | p99 | req/s | CPU/request | shadow scored | shadow dropped |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['p50'] * 1e3:.2f} ms | {r['p99'] * 1e3:.2f} ms | {r['rps']:.0f} | "
            f"{r['cpu_ms']:.3f} ms | {r['shadow_rows']:.0f} | {r['shadow_dropped']:.0f} |"
        )
    plain, canary, shadow = (results[n] for n in ROUTINGS)
    cost = (1 - canary["rps"] / plain["rps"]) * 100
    added = (shadow["p50"] / plain["p50"] - 1) * 100
    print(
        f"\ncanary routing costs {cost:+.1f}% of throughput (target < 5%); "
        f"shadow adds {added:+.1f}% to the p50 (target < 5%), "
        f"{(1 - shadow['rps'] / plain['rps']) * 100:+.1f}% of throughput; server CPU per "
        f"request: canary {(canary['cpu_ms'] / plain['cpu_ms'] - 1) * 100:+.1f}%, "
        f"shadow {(shadow['cpu_ms'] / plain['cpu_ms'] - 1) * 100:+.1f}% (both arms scored)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="median of this many rounds")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed (apt-get install wrk)")
    X, _ = make_data(200, seed=1)
    body = json.dumps(
        {"instances": [{f: float(v) for f, v in zip(FEATURES, X[0], strict=True)}]}
    ).encode()
    print(
        f"{len(FEATURES)} features; {os.cpu_count()} CPUs; 8 connections; median of "
        f"{args.rounds} rounds of {args.seconds}s; single-row requests, prediction log on\n"
    )
    work = Path(tempfile.mkdtemp(prefix="ownloop-bench-deploy-"))
    rounds: dict[str, list[dict[str, float]]] = {r: [] for r in ROUTINGS}
    try:
        home = work / "ownloop"
        register(home)
        for i in range(args.rounds):
            for routing in ROUTINGS:
                r = measure(home, routing, body, args.seconds)
                rounds[routing].append(r)
                print(
                    f"round {i + 1}: {routing:7s} p50 {r['p50'] * 1e3:6.2f} ms  "
                    f"p99 {r['p99'] * 1e3:6.2f} ms  {r['rps']:8.1f} req/s  "
                    f"CPU {r['cpu_ms']:.3f} ms/request",
                    flush=True,
                )
        seen = propagation(home)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report({name: medians(runs) for name, runs in rounds.items()})
    print(
        f"a routing change reached both of two running servers in median "
        f"{statistics.median(seen) * 1e3:.0f} ms, at most {max(seen) * 1e3:.0f} ms "
        f"({len(seen)} changes, OWNLOOP_RELOAD_POLL_S 0.5; target < 2 s)"
    )


if __name__ == "__main__":
    main()
