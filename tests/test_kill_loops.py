"""Kill loops: a real ownloop process repeating one write is SIGKILLed at random observable
moments (a temp file appearing, or just after a random acknowledgement); afterwards the store is
intact, every acknowledged write is there and nothing is torn or half-visible.

``OWNLOOP_KILL_LOOPS=N`` sets the kills per operation (6 by default).
"""

from __future__ import annotations

import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from ownloop import Config, Workspace
from ownloop.deploy import ACTIVE_STATES
from ownloop.predlog import new_ids, read_labels, read_log, write_segment
from ownloop.store import tables
from tests import _kill_child as child

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("OWNLOOP_KILL_LOOPS", "6"))
CHILD = Path(__file__).with_name("_kill_child.py")
MODEL = child.MODEL


class Forker:
    """A process that imported ownloop once and forks a child per write loop (``--fork``)."""

    def __init__(self, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OWNLOOP_")}
        env.update(PYTHONPATH=str(CHILD.parent.parent), OMP_NUM_THREADS="1")
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), "--fork"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        self.acks: list[str] = []
        self.events: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("ack "):
                self.acks.append(line[4:].rstrip("\n"))
            else:
                self.events.put(line.rstrip("\n"))

    def _event(self, timeout: float = 120) -> str:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"the fork server said nothing for {timeout} s")

    def start(self, operation: str, home: Path) -> int:
        self.acks = []
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{operation} {home}\n")
        self.proc.stdin.flush()
        kind, pid = self._event().split()
        assert kind == "pid"
        return int(pid)

    def exited(self) -> str | None:
        """The child's exit line when it ended by itself, else None."""
        try:
            return self.events.get_nowait()
        except queue.Empty:
            return None

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        kind, gone, status = self._event().split()
        assert (kind, int(gone)) == ("exit", pid)
        assert os.WIFSIGNALED(int(status)) and os.WTERMSIG(int(status)) == signal.SIGKILL

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=60)
            self.reader.join(timeout=60)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            self.log.close()


@pytest.fixture(scope="module")
def forker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forker]:
    f = Forker(tmp_path_factory.mktemp("forker") / "stderr.log")
    yield f
    f.close()


def _temp_under(folder: Path, prefix: str) -> Callable[[], bool]:
    def seen() -> bool:
        return any(p.name.startswith(prefix) for p in folder.rglob(f"{prefix}*"))

    return seen


def _kill(
    forker: Forker, operation: str, home: Path, rng: random.Random, temp: Callable[[], bool] | None
) -> tuple[str, list[str]]:
    """Start a write loop and SIGKILL it at a random observable moment; the moment, the acks."""
    pid = forker.start(operation, home)
    # the moment: just after a random ack, or when a temp file appears (after at least one ack,
    # so the child is past its start-up); then a small random delay either way
    acks_before = rng.randint(1, 6)
    on_temp = temp is not None and rng.random() < 0.6
    deadline = time.monotonic() + 120
    moment = ""
    while not moment:
        ended = forker.exited()
        if ended is not None:
            pytest.fail(f"the write loop ended by itself ({ended}): {forker.log.name}")
        if time.monotonic() > deadline:
            pytest.fail(f"no kill moment within 120 s ({len(forker.acks)} acks)")
        if len(forker.acks) >= acks_before:
            if not on_temp:
                moment = "ack"
            elif temp is not None and temp():
                moment = "file appeared"
            elif len(forker.acks) >= acks_before + 40:
                moment = "ack (no temp file seen in 40 writes)"
        time.sleep(0.0005)
    time.sleep(rng.uniform(0, 0.02 if moment.startswith("ack") else 0.005))
    forker.kill(pid)
    return moment, list(forker.acks)


def _integrity(home: Path) -> None:
    with sqlite3.connect(home / "ownloop.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


def _parquet_whole(home: Path) -> int:
    """Every published Parquet file under the log reads whole; how many there are."""
    files = [
        p
        for p in (home / "predictions").rglob("*.parquet")
        if not p.name.startswith(".")  # hidden temp names are invisible to every reader
    ]
    for path in files:
        pq.read_table(path)
    return len(files)


def _artifacts_verify(ws: Workspace) -> int:
    with ws.store.read() as conn:
        rows = conn.execute(sa.select(tables.versions)).all()
    for row in rows:
        ws.artifacts.verify(row.artifact_digest)
        if row.profile_digest:
            ws.artifacts.verify(row.profile_digest)
    return len(rows)


def _audit_count(ws: Workspace, action: str) -> int:
    return sum(e.action == action for e in ws.registry.audit_log(model=MODEL, limit=100_000))


# -- what each operation must leave behind -----------------------------------------------------


def _check_register(ws: Workspace, acks: list[str]) -> None:
    versions = [v.version for v in ws.registry.list_versions(MODEL)]
    assert versions == list(range(1, len(versions) + 1))
    assert {int(a) for a in acks} <= set(versions)
    assert _audit_count(ws, "version.register") == len(versions)


def _check_alias(ws: Workspace, acks: list[str]) -> None:
    history = ws.registry.alias_history(MODEL, "champion")
    # every move has its history row and its audit row, committed with it; never one alone
    assert _audit_count(ws, "alias.set") == len(history) >= len(acks)
    if acks:
        assert ws.registry.get_version(f"{MODEL}@champion").version == history[-1].version
        # the last acknowledged move, or at most one more that committed before the kill
        assert len(history) - len(acks) <= KILLS


def _check_deploy(ws: Workspace, acks: list[str]) -> None:
    with ws.store.read() as conn:
        live = conn.execute(
            sa.select(sa.func.count())
            .select_from(tables.aliases)
            .where(tables.aliases.c.alias == "production")
        ).scalar_one()
    assert live == 1, "exactly one production version"
    active = [r for r in ws.deploy.rollouts(MODEL, limit=10_000) if r.state in ACTIVE_STATES]
    assert len(active) <= 1, "at most one active rollout"
    for a in acks:
        rollout_id = int(a.split()[0])
        assert ws.deploy.rollout(rollout_id).state.value == "promoted"
    if active and acks:
        # killed between deploy and promote: the last acknowledged target is still live
        assert ws.registry.get_version(f"{MODEL}@production").version == int(acks[-1].split()[1])
    assert _audit_count(ws, "deploy.promote") >= len(acks)


def _check_label(ws: Workspace, acks: list[str]) -> None:
    labels = dict(
        zip(
            *(
                read_labels(ws.config.predictions_dir, MODEL)[c].to_pylist()
                for c in ("prediction_id", "label")
            ),
            strict=True,
        )
    )
    latest: dict[str, str] = {}
    in_flight: set[str] = set()  # the id each killed loop was labelling next
    for a in acks:
        pid, value, following = a.split()
        latest[pid] = value
        in_flight.discard(pid)
        in_flight.add(following)
    for pid, value in latest.items():
        assert pid in labels, f"acknowledged label for {pid} is missing"
        # the acknowledged label, unless a later write of the same id landed before its kill
        assert labels[pid] == value or pid in in_flight, (pid, labels[pid], value)
    assert _audit_count(ws, "label.write") >= len(acks)


def _check_flush(ws: Workspace, acks: list[str]) -> None:
    logged = np.sort(
        read_log(ws.config.predictions_dir, MODEL)
        .table["prediction_id"]
        .to_numpy(zero_copy_only=False)
    )
    for a in acks:
        first, last, n = a.split()
        # one flush's ids are consecutive: all of them between its first and its last
        found = np.searchsorted(logged, last, "right") - np.searchsorted(logged, first, "left")
        assert found == int(n), f"{int(n) - found} of {n} acknowledged rows are missing"


CHECKS: dict[str, Callable[[Workspace, list[str]], None]] = {
    "register": _check_register,
    "alias": _check_alias,
    "deploy": _check_deploy,
    "label": _check_label,
    "flush": _check_flush,
}


def _new_segment(folder: Path) -> Callable[[], bool]:
    """True when a segment has appeared under its final name since the previous call (a write
    that is not atomic would be caught half-written here)."""
    before: set[Path] | None = None

    def seen() -> bool:
        nonlocal before
        now = {p for p in folder.rglob("*.parquet") if not p.name.startswith(".")}
        appeared = before is not None and bool(now - before)
        before = now
        return appeared

    return seen


def _temps(operation: str, home: Path) -> Callable[[], bool] | None:
    """The file that marks a write half-way, for operations that stage one."""
    log = home / "predictions" / MODEL
    if operation == "flush":
        temp, new = _temp_under(log, ".tmp-"), _new_segment(log)
        return lambda: temp() or new()
    return {
        "register": _temp_under(home / "artifacts", ".tmp-"),
        "label": _temp_under(log / "labels", ".pending-"),
    }.get(operation)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A workspace with model ``m`` (versions 1 and 2, production at 1) and 40 logged predictions."""
    home = tmp_path / "home"
    data = child.frame(0)
    with Workspace(Config(home=home, user="killer")) as ws:
        ws.registry.add_team("risk", members=["killer"])
        for c in (1.0, 0.5):
            ws.registry.register(
                child.fitted(data, c), name=MODEL, owner="risk", reference=data, target="y"
            )
        ws.deploy.set_production(MODEL, 1, force=True, reason="kill loop set-up")
        write_segment(ws.config.predictions_dir, MODEL, child.predictions(new_ids(40), ws))
    return home


@pytest.mark.parametrize("operation", list(CHECKS))
def test_killed_at_random_moments_loses_no_acknowledged_write(
    operation: str, home: Path, forker: Forker
) -> None:
    rng = random.Random(f"{operation}-{time.time_ns()}")
    moments: Counter[str] = Counter()
    acked: list[str] = []
    for _ in range(KILLS):
        moment, acks = _kill(forker, operation, home, rng, _temps(operation, home))
        moments[moment] += 1
        acked += acks
        _integrity(home)
        _parquet_whole(home)
        with Workspace(Config(home=home, user="checker")) as ws:
            _artifacts_verify(ws)
            CHECKS[operation](ws, acked)
    print(f"{operation}: {KILLS} kills at {dict(moments)}; {len(acked)} writes acknowledged")
    assert sum(moments.values()) == KILLS


def test_a_torn_file_would_be_caught(tmp_path: Path) -> None:
    """The Parquet check fails on a file cut short, so a non-atomic write cannot pass unseen."""
    folder = tmp_path / "predictions" / MODEL / "day=2026-11-30"
    folder.mkdir(parents=True)
    whole = folder / "a.parquet"
    pq.write_table(pa.table({"x": list(range(1000))}), whole)
    data = whole.read_bytes()
    (folder / "b.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(pa.ArrowInvalid):
        _parquet_whole(tmp_path)
