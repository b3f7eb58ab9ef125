"""Load: `ownloop serve` at its sustainable rate for minutes: throughput, p99, errors, lost log rows, memory.

    .venv/bin/python bench/bench_load.py                 # about 3.5 minutes
    .venv/bin/python bench/bench_load.py --seconds 600   # longer soak
    .venv/bin/python bench/bench_load.py --workers 1,2   # serve --workers side by side

One real `ownloop serve` process on loopback scores a HistGradientBoosting model fitted on a
20-column DataFrame, prediction logging on. Client processes (one persistent HTTP/1.1 connection
each, single-row requests) first step the concurrency up (1, 2, 4, ...) until throughput stops
growing, p99 degrades or an error appears; the sustainable rate is 90% of the best throughput
before that point. Then the same clients drive the server at that rate for ``--seconds``: each
request has a scheduled send time, and latency counts from that time, so a server falling behind
shows in p99 instead of slowing the clients. Figures printed:

- throughput, p50/p99 latency and errors (any answer other than 200, or a failed connection);
- dropped log rows: predictions answered 200 minus rows in the prediction log once the server
  has shut down (SIGTERM, which flushes the log);
- memory: the server's RSS sampled every 10 s; the first sample after warm-up against the last.

The clients share the machine with the server (loopback only), so the rate is what one machine
sustains for both; compare runs on the same machine.

With ``--workers 1,2`` it instead starts `ownloop serve --workers N` for each N in turn and drives
it closed-loop (back-to-back requests) with each client count of ``--clients`` (default 8 and 32)
for ``--phase-seconds``, then prints req/s and p50/p99 side by side, and the log rows against the
predictions answered once each server has shut down.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _frame_model import TRUSTED, make_frame, make_frame_model  # noqa: E402
from _model import FEATURES  # noqa: E402
from bench_serve import free_port, wait_up  # noqa: E402

MODEL = "hgbdf"
PATH = f"/models/{MODEL}/predict"


@dataclass
class Phase:
    """What the clients saw in one phase."""

    concurrency: int
    seconds: float  # wall time from the first request to the last answer
    latencies: np.ndarray  # from the scheduled send time (queueing included), one per answer
    service: np.ndarray  # from the actual send time
    ok: int
    errors: int
    unsent: int  # scheduled but never sent: the server fell more than half a run behind
    error_samples: list[str]

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, q: float, of: np.ndarray | None = None) -> float:
        values = self.latencies if of is None else of
        return float(np.percentile(values, q)) if len(values) else float("nan")

    def line(self) -> str:
        return (
            f"c={self.concurrency:<3d} {self.rps:8.1f} req/s  p50 {self.pct(50) * 1e3:7.2f} ms  "
            f"p99 {self.pct(99) * 1e3:7.2f} ms  ok {self.ok}  errors {self.errors}"
        )


def _client(
    port: int, body: bytes, seconds: float, interval: float | None, offset: float, out: Any
) -> None:
    """One connection: requests back to back (interval None) or one every ``interval`` s.

    A paced client that falls behind sends late (latency counts from the scheduled time) and
    stops at 1.5x ``seconds`` whatever is left, so a run is bounded in time as well as count.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    service: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    end, hard_end = start + seconds, start + 1.5 * seconds
    k = 0
    unsent = 0
    while True:
        now = time.perf_counter()
        if interval is None:
            due = now
        else:
            due = start + offset + k * interval
            if due > now:
                time.sleep(due - now)
        if due >= end:
            break
        if now >= hard_end:
            unsent = int((end - due) / interval) + 1 if interval else 0
            break
        k += 1
        try:
            sent = time.perf_counter()
            conn.request("POST", PATH, body, headers)
            response = conn.getresponse()
            data = response.read()
            if response.status == 200:
                done = time.perf_counter()
                latencies.append(done - due)
                service.append(done - sent)
            else:
                errors.append(f"{response.status}: {data[:200]!r}")
        except (OSError, http.client.HTTPException) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.close()
    out.send((latencies, service, errors, unsent, time.perf_counter() - start))
    out.close()


def drive(port: int, body: bytes, concurrency: int, seconds: float, rate: float | None) -> Phase:
    """``concurrency`` client processes for ``seconds``; paced at ``rate`` req/s in all if given."""
    ctx = mp.get_context("fork")
    interval = concurrency / rate if rate else None
    pipes, procs = [], []
    for i in range(concurrency):
        receive, send = ctx.Pipe(duplex=False)
        offset = (interval or 0.0) * i / concurrency
        proc = ctx.Process(target=_client, args=(port, body, seconds, interval, offset, send))
        proc.start()
        send.close()
        pipes.append(receive)
        procs.append(proc)
    latencies: list[float] = []
    service: list[float] = []
    errors: list[str] = []
    unsent = 0
    elapsed = 0.0
    for receive, proc in zip(pipes, procs, strict=True):
        got, served, bad, left, took = receive.recv()
        latencies += got
        service += served
        errors += bad
        unsent += left
        elapsed = max(elapsed, took)
        proc.join(timeout=60)
    return Phase(
        concurrency,
        elapsed,
        np.array(latencies),
        np.array(service),
        len(latencies),
        len(errors),
        unsent,
        errors[:3],
    )


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its children (uvicorn may fork workers)."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def register(home: Path) -> bytes:
    """Register the frame model as production; one request body of one row."""
    from ownloop import Config, Workspace

    frame, y = make_frame()
    with Workspace(Config(home=home, user="bench")) as ws:
        ws.registry.add_team("bench", members=["bench"])
        v = ws.registry.register(
            make_frame_model(),
            name=MODEL,
            owner="bench",
            reference=frame.assign(target=y),
            target="target",
            trust=TRUSTED,
        )
        ws.deploy.set_production(MODEL, v.version, force=True, reason="load bench")
    row = {f: float(v) for f, v in zip(FEATURES, frame.iloc[0], strict=True)}
    return json.dumps({"instances": [row]}).encode()


def logged_rows(home: Path) -> int:
    """Rows in the model's prediction log (published segments only, labels excluded)."""
    import pyarrow.parquet as pq

    folder = home / "predictions" / MODEL
    rows = 0
    for path in folder.rglob("*.parquet"):
        if path.name.startswith(".") or "labels" in path.relative_to(folder).parts:
            continue
        rows += pq.read_metadata(path).num_rows
    return rows


def sustainable(port: int, body: bytes, step_seconds: float, max_c: int) -> tuple[int, float, int]:
    """Step the concurrency up until throughput stops growing, p99 degrades or errors appear;
    the concurrency, the rate and how many predictions were answered meanwhile."""
    print("finding the sustainable rate (closed loop, back-to-back requests):", flush=True)
    best: Phase | None = None
    answered = 0
    first_p99: float | None = None
    c = 1
    while c <= max_c:
        phase = drive(port, body, c, step_seconds, None)
        print("  " + phase.line(), flush=True)
        answered += phase.ok
        if phase.errors:
            print(f"  errors at c={c}: {phase.error_samples}", flush=True)
            break
        first_p99 = first_p99 or phase.pct(99)
        if best is not None and (
            phase.rps < best.rps * 1.10 or phase.pct(99) > max(4 * first_p99, 0.05)
        ):
            break
        best = phase
        c *= 2
    if best is None:
        sys.exit("the server failed at concurrency 1: no sustainable rate")
    rate = 0.9 * best.rps
    print(f"sustainable: c={best.concurrency}, {rate:.0f} req/s (90% of {best.rps:.0f})\n")
    return best.concurrency, rate, answered


def start_server(home: Path, work: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    """`ownloop serve --workers N` on ``home``, in its own session, once it answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OWNLOOP_")}
    env.update(OWNLOOP_HOME=str(home), OWNLOOP_USER="bench", OMP_NUM_THREADS="1")
    ownloop = str(Path(sys.executable).parent / "ownloop")
    with (work / f"server-{workers}.log").open("wb") as log:
        proc = subprocess.Popen(
            [ownloop, "serve", "--port", str(port), "--workers", str(workers)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_up(port, proc)
    return proc


def stop_server(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM (every worker flushes its log), then the exit code; killed if it hangs."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def compare_workers(workers: list[int], clients: list[int], seconds: float) -> None:
    """Closed-loop clients against `serve --workers N` for each N; one table of all the runs."""
    print(
        f"{len(FEATURES)} features (HistGradientBoosting on a DataFrame); {os.cpu_count()} CPUs; "
        "single-row requests, one keep-alive connection per client process (closed loop), "
        f"prediction log on; {seconds:.0f}s per cell; clients on the same machine\n",
        flush=True,
    )
    results: dict[tuple[int, int], Phase] = {}
    lost: dict[int, tuple[int, int, int]] = {}
    for n in workers:
        work = Path(tempfile.mkdtemp(prefix="ownloop-workers-"))
        try:
            home = work / "home"
            body = register(home)
            port = free_port()
            proc = start_server(home, work, port, n)
            answered = 0
            try:
                # every worker loads the model and warms up (connections land on either)
                answered += drive(port, body, 2 * n, 3.0, None).ok
                for c in clients:
                    before = os.getloadavg()[0]
                    phase = drive(port, body, c, seconds, None)
                    print(
                        f"workers={n} {phase.line()}  (1-min load average {before:.1f} before, "
                        f"{os.getloadavg()[0]:.1f} after: other work on the machine shows here)",
                        flush=True,
                    )
                    results[(n, c)] = phase
                    answered += phase.ok
            finally:
                code = stop_server(proc)
            lost[n] = (answered, logged_rows(home), code)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print("\nclients " + "".join(f"| workers={n:<2d} req/s   p50 ms   p99 ms " for n in workers))
    for c in clients:
        cells = []
        for n in workers:
            ph = results[(n, c)]
            cells.append(f"|   {ph.rps:12.1f} {ph.pct(50) * 1e3:8.2f} {ph.pct(99) * 1e3:8.2f} ")
        print(f"{c:<7d} " + "".join(cells))
    for n in workers:
        answered, rows, code = lost[n]
        errors = sum(results[(n, c)].errors for c in clients)
        print(
            f"workers={n}: {answered} answered 200, {rows} rows in the log "
            f"({answered - rows} lost), {errors} errors, exit code {code}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workers", help="compare `serve --workers N` for these N (comma-separated), e.g. 1,2"
    )
    parser.add_argument("--clients", default="8,32", help="client counts for --workers")
    parser.add_argument("--phase-seconds", type=float, default=15.0, help="per --workers cell")
    parser.add_argument("--seconds", type=int, default=180, help="length of the run at the rate")
    parser.add_argument("--step-seconds", type=float, default=6.0, help="per concurrency step")
    parser.add_argument("--max-concurrency", type=int, default=32)
    parser.add_argument("--sample-every", type=float, default=10.0, help="RSS sample interval, s")
    args = parser.parse_args()
    if args.workers:
        compare_workers(
            [int(n) for n in args.workers.split(",")],
            [int(c) for c in args.clients.split(",")],
            args.phase_seconds,
        )
        return
    work = Path(tempfile.mkdtemp(prefix="ownloop-load-"))
    home = work / "home"
    try:
        print(
            f"{len(FEATURES)} features (HistGradientBoosting on a DataFrame); {os.cpu_count()} "
            "CPUs; single-row requests over keep-alive connections, prediction log on; the "
            "client processes run on the same machine\n",
            flush=True,
        )
        body = register(home)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OWNLOOP_")}
        env.update(OWNLOOP_HOME=str(home), OWNLOOP_USER="bench", OMP_NUM_THREADS="1")
        ownloop = str(Path(sys.executable).parent / "ownloop")
        log = (work / "server.log").open("wb")
        proc = subprocess.Popen(
            [ownloop, "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_up(port, proc)
            warm = drive(port, body, 1, 2.0, None)  # load the model, warm caches
            c, rate, stepped = sustainable(port, body, args.step_seconds, args.max_concurrency)
            answered = warm.ok + stepped
            print(f"driving {rate:.0f} req/s over {c} connections for {args.seconds}s", flush=True)
            run, samples = _run_sampled(port, body, c, rate, args.seconds, args.sample_every, proc)
            answered += run.ok
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
            log.close()
        rows = logged_rows(home)
        report(run, samples, answered, rows, code, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_sampled(
    port: int, body: bytes, c: int, rate: float, seconds: int, every: float, proc: Any
) -> tuple[Phase, list[tuple[float, int]]]:
    """Drive at ``rate`` while sampling the server's RSS every ``every`` seconds."""
    import threading

    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not done.wait(every):
            samples.append((time.monotonic() - t0, rss_bytes(proc.pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run = drive(port, body, c, seconds, rate)
    finally:
        done.set()
        sampler.join(timeout=5)
    return run, samples


def report(
    run: Phase,
    samples: list[tuple[float, int]],
    answered: int,
    rows: int,
    code: int,
    args: argparse.Namespace,
) -> None:
    print(f"\nrun at the sustainable rate, {args.seconds}s planned, {run.seconds:.0f}s taken:")
    print(
        f"  throughput   {run.rps:.1f} req/s ({run.ok} answered 200; {run.unsent} scheduled "
        "requests never sent because the server fell behind)"
    )
    print(
        f"  latency      p50 {run.pct(50) * 1e3:.2f} ms, p99 {run.pct(99) * 1e3:.2f} ms from the "
        f"scheduled time; p50 {run.pct(50, run.service) * 1e3:.2f} ms, "
        f"p99 {run.pct(99, run.service) * 1e3:.2f} ms from the send"
    )
    print(
        f"  errors       {run.errors} (target 0){'  ' + str(run.error_samples) if run.errors else ''}"
    )
    print(
        f"  log rows     {rows} in the prediction log for {answered} predictions answered 200: "
        f"{answered - rows} dropped (target 0); server exit code {code}"
    )
    if len(samples) >= 2:
        mib = [(t, b / 2**20) for t, b in samples]
        first, last = mib[0], mib[-1]
        print(
            f"  memory       RSS {first[1]:.1f} MiB at {first[0]:.0f}s (after warm-up) -> "
            f"{last[1]:.1f} MiB at {last[0]:.0f}s: {last[1] - first[1]:+.1f} MiB "
            f"({(last[1] / first[1] - 1) * 100:+.1f}%; target flat)"
        )
        print("  RSS samples  " + ", ".join(f"{t:.0f}s {m:.1f}" for t, m in mib))


if __name__ == "__main__":
    main()
