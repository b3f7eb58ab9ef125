"""Compaction of a prediction log in an S3 bucket, against the real local S3 server of
tests/test_object_storage.py (moto's, its own process): one object per compacted file, a store
lease per model across hosts, readers that see every row once whatever is killed or runs twice.

Without moto the tests skip, unless OWNLOOP_TEST_REQUIRE_S3=1 (CI) makes that a failure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ownloop import Config, Workspace, objectstore, predlog
from ownloop.compaction import CompactionBusyError, CompactionLoop, compact, lease_lock
from ownloop.errors import ConflictError, InvalidInputError, StoreUnavailableError
from ownloop.store.lease import Lease
from tests.conftest import env_for
from tests.servers import running
from tests.test_compaction import (
    T0,
    ZERO,
    _answers,
    _close,
    _visible_ids,
    _write,
    logged,
)
from tests.test_object_storage import (
    KEYS,
    _client,
    _keys,
    _settings,
    moto_server,
    s3_config,
    s3_endpoint,
    s3_env,
)

__all__ = ["logged", "s3_config", "s3_endpoint", "s3_env"]  # fixtures used from other modules

KILLS = int(os.environ.get("OWNLOOP_KILL_LOOPS", "8"))


@pytest.fixture
def config(s3_config: Config) -> Config:
    """The workspace of this module's tests keeps its log in a fresh bucket."""
    return s3_config


def _lock(ws: Workspace) -> Any:
    return lease_lock(ws.store, ws.clock)


def _objects(env: dict[str, str], model: str = "m") -> list[str]:
    """The names of the prediction objects of ``model`` (not its labels)."""
    return [k.rsplit("/", 1)[1] for k in _keys(env, f"log/{model}/date=")]


def _check(root: Path, ids: list[str]) -> None:
    """Every row exactly once, every listed object reads in full."""
    for path in predlog.list_segments(root, "m"):
        objectstore.read_table(path)
    seen = _visible_ids(root)
    assert set(seen) == set(ids), "rows lost"
    assert max(seen.values()) == 1, "rows seen twice"


# -- the protocol on a bucket ------------------------------------------------------------------


def test_a_bucket_is_compacted_into_one_object_with_every_row_once(
    ws: Workspace, s3_env: dict[str, str]
) -> None:
    root = ws.config.predictions_dir
    ids = _write(root, 60, 20, T0, seed=31)
    before = predlog.read_log(root, "m").table.sort_by("prediction_id")
    [preds, labels] = compact(root, "m", older_than=ZERO, keep_sources=ZERO, lock=_lock(ws))
    assert (preds.sources, preds.files, preds.rows, preds.removed) == (60, 1, 1200, 60)
    assert labels.files == 0
    [name] = _objects(s3_env)
    assert predlog.is_compacted(name)
    assert not [k for k in _keys(s3_env, "log/") if "/." in k]  # no temp object, ever
    after = predlog.read_log(root, "m").table.sort_by("prediction_id")
    assert after.equals(before)
    assert _visible_ids(root) == Counter(ids)


def test_sources_in_a_bucket_are_kept_for_readers_then_deleted(
    ws: Workspace, s3_env: dict[str, str]
) -> None:
    root = ws.config.predictions_dir
    ids = _write(root, 20, 5, T0, seed=32)
    [preds, _] = compact(root, "m", older_than=ZERO, lock=_lock(ws))
    assert (preds.files, preds.removed) == (1, 0)
    assert len(_objects(s3_env)) == 21  # the sources are still there for reads under way ...
    assert _visible_ids(root) == Counter(ids)  # ... but no reader sees their rows twice
    assert len(predlog.list_segments(root, "m")) == 1
    [later, _] = compact(root, "m", older_than=ZERO, now=time.time() + 601, lock=_lock(ws))
    assert (later.removed, later.files) == (20, 0)
    assert len(_objects(s3_env)) == 1 and _visible_ids(root) == Counter(ids)


def test_a_bucket_needs_a_lock_that_reaches_other_hosts(ws: Workspace) -> None:
    root = ws.config.predictions_dir
    _write(root, 3, 5, T0, seed=33)
    with pytest.raises(InvalidInputError, match=r"in object storage.*lease_lock"):
        compact(root, "m", older_than=ZERO)


def test_monitor_labels_and_id_lookups_answer_the_same_after_compacting_a_bucket(
    logged: Workspace, s3_env: dict[str, str]
) -> None:
    ws = logged
    root = ws.config.predictions_dir
    every = predlog.read_log(root, "churn", columns=["prediction_id"]).table
    ids = every["prediction_id"].to_pylist()[::11]
    before = _answers(ws, ids)
    results = compact(root, "churn", older_than=ZERO, keep_sources=ZERO, lock=_lock(ws))
    assert [r.files for r in results] == [1, 1]
    assert len(_objects(s3_env, "churn")) == 1
    assert len(_keys(s3_env, "log/churn/labels/")) == 1
    after = _answers(ws, ids)
    _close(before, after)
    _close(before, _answers(ws, ids))  # from the cache


def test_readers_during_compaction_of_a_bucket_see_every_row_once(ws: Workspace) -> None:
    root = ws.config.predictions_dir
    ids = _write(root, 120, 10, T0, seed=34)
    expected = Counter(ids)
    failures: list[str] = []
    reads = 0
    done = threading.Event()

    def compactor() -> None:
        try:
            compact(root, "m", older_than=ZERO, max_rows=300, lock=_lock(ws))
        finally:
            done.set()

    thread = threading.Thread(target=compactor)
    thread.start()
    try:
        while not done.is_set() or reads < 3:
            try:
                seen = _visible_ids(root)
            except (OSError, AssertionError) as exc:
                failures.append(repr(exc))
            else:
                if seen != expected:
                    failures.append(f"{sum(seen.values())} rows, {len(seen)} distinct")
            reads += 1
    finally:
        thread.join(timeout=300)
    assert not failures, failures[:3]
    assert len(predlog.list_segments(root, "m")) == 4


def test_serve_compacts_a_bucket_in_the_background(
    s3_config: Config, s3_env: dict[str, str]
) -> None:
    # no longer refused with a bucket (the age floor of 60 s is lowered here, as in the folder test)
    Config.from_env({**env_for(s3_config), **_settings(s3_env), "OWNLOOP_COMPACT_EVERY_S": "60"})
    config = dataclasses.replace(s3_config, compact_every_s=0.2, compact_older_than_s=0.0)
    with Workspace(config) as ws:
        root = ws.config.predictions_dir
        ids = _write(root, 12, 5, T0, seed=39)
        with running(ws):
            deadline = time.monotonic() + 120  # a hang guard only
            while len(predlog.list_segments(root, "m")) > 1 and time.monotonic() < deadline:
                time.sleep(0.05)
        assert len(predlog.list_segments(root, "m")) == 1
        assert _visible_ids(root) == Counter(ids)
        loop = CompactionLoop(
            root, every_s=3600, older_than=ZERO, hold=lambda: True, lock=_lock(ws)
        )
        assert [r.files for r in loop.run_once()] == [0, 0]


def test_cli_compacts_a_bucket_and_names_who_holds_the_lease(
    ws: Workspace, s3_env: dict[str, str]
) -> None:
    root = ws.config.predictions_dir
    ids = _write(root, 10, 5, T0, seed=41)
    env = {**env_for(ws.config), **_settings(s3_env)}
    env["PYTHONPATH"] = str(Path(__file__).parent.parent / "src")
    args = [sys.executable, "-m", "ownloop", "compact", "m", "--older-than", "0s"]
    other = Lease(ws.store, ws.clock, "predlog.compaction/m", ttl_s=60, holder="host-b:7:x")
    assert other.acquire()
    busy = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert busy.returncode == 1 and "Traceback" not in busy.stderr
    assert "'m' is being compacted by host-b:7:x" in busy.stderr
    other.release()
    done = subprocess.run(
        [*args, "--keep-sources", "0s", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [(r["kind"], r["sources"], r["files"], r["removed"]) for r in out] == [
        ("predictions", 10, 1, 10),
        ("labels", 0, 0, 0),
    ]
    assert len(_objects(s3_env)) == 1 and _visible_ids(root) == Counter(ids)


# -- two compactors ----------------------------------------------------------------------------


def test_a_model_compacted_elsewhere_is_refused_or_left_alone(
    ws: Workspace, s3_env: dict[str, str]
) -> None:
    root = ws.config.predictions_dir
    ids = _write(root, 10, 5, T0, seed=35)
    other = Lease(ws.store, ws.clock, "predlog.compaction/m", ttl_s=60, holder="host-b:7:x")
    assert other.acquire()
    with pytest.raises(CompactionBusyError, match=r"'m' is being compacted by host-b:7:x"):
        compact(root, "m", older_than=ZERO, keep_sources=ZERO, lock=_lock(ws))
    [preds, _] = compact(root, older_than=ZERO, keep_sources=ZERO, lock=_lock(ws))  # every model
    assert preds.files == 0 and preds.busy is not None and "host-b:7:x" in preds.busy
    assert len(_objects(s3_env)) == 10 and _visible_ids(root) == Counter(ids)
    other.release()
    [preds, _] = compact(root, "m", older_than=ZERO, keep_sources=ZERO, lock=_lock(ws))
    assert preds.files == 1 and _visible_ids(root) == Counter(ids)


def test_two_compactions_at_once_merge_each_segment_once(
    ws: Workspace, s3_env: dict[str, str]
) -> None:
    root = ws.config.predictions_dir
    ids = _write(root, 60, 10, T0, seed=36)
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def run() -> None:
        start.wait()
        try:
            [preds, _] = compact(root, "m", older_than=ZERO, keep_sources=ZERO, lock=_lock(ws))
        except CompactionBusyError:
            outcomes.append("busy")
        else:
            outcomes.append(f"{preds.files} files")

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    # one ran; the other found the lease held, or came after and found nothing left to merge
    assert sorted(outcomes) in (["1 files", "busy"], ["0 files", "1 files"])
    assert len(_objects(s3_env)) == 1 and _visible_ids(root) == Counter(ids)


def test_a_run_that_lost_its_lease_stops_before_changing_the_log(ws: Workspace) -> None:
    lock = lease_lock(ws.store, ws.clock, ttl_s=0.05)
    with lock("m") as check:
        check()  # still ours
        time.sleep(0.2)
        thief = Lease(ws.store, ws.clock, "predlog.compaction/m", ttl_s=60)
        assert thief.acquire()  # ours ran out: another host takes it
        with pytest.raises(ConflictError, match="lost its lease"):
            check()
    held = thief.current()
    assert held is not None and held.holder == thief.holder


def _compacted(root: Path, day: Path, names: list[str], stamp: int) -> str:
    """Publish by hand a compacted object of ``names`` (as a run would), named at ``stamp``."""
    table = pa.concat_tables(objectstore.read_table(day / n) for n in names)
    table = table.replace_schema_metadata({predlog.REPLACES_KEY: json.dumps(names)})
    name = predlog.compacted_name(stamp, None)
    objectstore.put_bytes(day / name, objectstore.table_bytes(table))
    return name


def test_two_files_claiming_one_segment_are_read_once_and_the_later_is_removed(
    ws: Workspace, s3_env: dict[str, str]
) -> None:
    """What two runs could leave if a lease ran out mid-run: the earlier-named file wins."""
    root = ws.config.predictions_dir
    ids = _write(root, 6, 5, T0, seed=37)
    [day] = [p for p in (root / "m").iterdir()]
    s = sorted(n for n in _objects(s3_env))
    first = _compacted(root, day, s[0:4], stamp=1)
    second = _compacted(root, day, s[2:6], stamp=2)  # claims s[2], s[3] again
    winners, losers = predlog.claims_in(day, _objects(s3_env))
    assert (list(winners), losers) == ([first], [second])
    assert _visible_ids(root) == Counter(ids)  # first + s[4], s[5]: each row once
    assert {p.name for p in predlog.list_segments(root, "m")} == {first, s[4], s[5]}
    [preds, _] = compact(root, "m", older_than=ZERO, keep_sources=ZERO, lock=_lock(ws))
    # the ignored file and the winner's sources are removed, s[4] and s[5] merged
    assert (preds.cleaned, preds.removed, preds.files) == (1, 6, 1)
    assert second not in _objects(s3_env) and first in _objects(s3_env)
    assert _visible_ids(root) == Counter(ids)


# -- kills, and a bucket that refuses --------------------------------------------------------

CHILD = """
import sys
from datetime import timedelta
from ownloop import Config, Workspace
from ownloop.compaction import compact, lease_lock
ws = Workspace(Config.from_env())
print("ready", flush=True)
sys.stdin.readline()
compact(ws.config.predictions_dir, "m", older_than=timedelta(0), keep_sources=timedelta(0),
        max_rows=400, lock=lease_lock(ws.store, ws.clock, ttl_s=1.0))
print("done", flush=True)
"""


def _wait_for_the_lease(ws: Workspace) -> None:
    """A killed run's lease runs out after its ttl (the store's clock decides)."""
    lease = Lease(ws.store, ws.clock, "predlog.compaction/m", ttl_s=1)
    deadline = time.monotonic() + 30
    while (held := lease.current()) is not None and held.expires_at >= ws.clock.now():
        assert time.monotonic() < deadline
        time.sleep(0.1)


@pytest.mark.slow
def test_a_compaction_of_a_bucket_killed_at_any_moment_leaves_every_row_once(
    ws: Workspace, s3_env: dict[str, str]
) -> None:
    root = ws.config.predictions_dir
    rng = random.Random(16)
    env = {**env_for(ws.config), **_settings(s3_env)}
    env.update(PYTHONPATH=str(Path(__file__).parent.parent / "src"), OMP_NUM_THREADS="1")
    ids: list[str] = []
    moments: Counter[str] = Counter()
    for round_ in range(KILLS):
        ids += _write(root, 40, 10, T0 + timedelta(minutes=round_), seed=40 + round_)
        sources = set(_objects(s3_env))
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdin is not None
            assert child.stdout.readline().strip() == "ready"
            # kill as the compacted object appears, as the first source goes, or at random
            when = rng.choice(["published", "deleting", "random"])
            delay = rng.uniform(0, 1.0)
            child.stdin.write("go\n")
            child.stdin.flush()
            started = time.monotonic()
            while child.poll() is None and time.monotonic() - started < 120:
                listed = set(_objects(s3_env))
                seen = {
                    "published": any(predlog.is_compacted(n) for n in listed - sources),
                    "deleting": not sources <= listed,
                    "random": time.monotonic() > started + delay,
                }
                if seen[when]:
                    child.send_signal(signal.SIGKILL)
                    moments[when] += 1
                    break
                time.sleep(0.005)
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=60)
            assert child.stdout is not None and child.stdin is not None
            child.stdout.close()
            child.stdin.close()
        _check(root, ids)
        _wait_for_the_lease(ws)
        compact(root, "m", older_than=ZERO, keep_sources=ZERO, max_rows=400, lock=_lock(ws))
        _check(root, ids)
        assert all(predlog.is_compacted(n) for n in _objects(s3_env))
    assert sum(moments.values()) >= KILLS // 2, moments  # most rounds were cut, not finished
    assert moments["published"] + moments["deleting"] >= 1, moments


def _iam(url: str, keys: dict[str, str]) -> Any:
    import boto3

    return boto3.client(
        "iam",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
    )


def _user(iam: Any, name: str, actions: list[str], deny: str | None = None) -> dict[str, str]:
    """An IAM user allowed only ``actions`` (and denied reading the objects ``deny``); its keys."""
    iam.create_user(UserName=name)
    statements: list[dict[str, Any]] = [{"Effect": "Allow", "Action": actions, "Resource": "*"}]
    if deny is not None:
        statements.append({"Effect": "Deny", "Action": ["s3:GetObject"], "Resource": deny})
    policy = {"Version": "2012-10-17", "Statement": statements}
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    made = iam.create_access_key(UserName=name)["AccessKey"]
    return {
        "AWS_ACCESS_KEY_ID": made["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": made["SecretAccessKey"],
    }


@pytest.fixture
def strict_s3(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A server that checks IAM policies (after the 3 requests that make an admin): its URL and
    the admin's keys."""
    with moto_server(tmp_path / "moto.log", INITIAL_NO_AUTH_ACTION_COUNT="3") as url:
        yield url, _user(_iam(url, KEYS), "admin", ["*"])


def _strict_config(tmp_path: Path, db_url: str, url: str, keys: dict[str, str]) -> Config:
    env = {**keys, "AWS_REGION": "us-east-1", "OWNLOOP_S3_ENDPOINT_URL": url, "BUCKET": "logs"}
    return Config.from_env(
        {**_settings(env), "OWNLOOP_HOME": str(tmp_path / "home"), "OWNLOOP_DB_URL": db_url}
    )


def test_a_bucket_that_refuses_writes_or_deletes_leaves_the_log_intact(
    strict_s3: tuple[str, dict[str, str]], tmp_path: Path, db_url: str
) -> None:
    url, admin = strict_s3
    _client({**admin, "OWNLOOP_S3_ENDPOINT_URL": url}).create_bucket(Bucket="logs")
    iam = _iam(url, admin)
    readers = _user(iam, "reader", ["s3:GetObject", "s3:ListBucket"])
    no_delete = _user(iam, "writer", ["s3:GetObject", "s3:ListBucket", "s3:PutObject"])
    with Workspace(_strict_config(tmp_path, db_url, url, admin)) as ws:
        root = ws.config.predictions_dir
        ids = _write(root, 8, 5, T0, seed=38)
        names = sorted(p.name for p in predlog.list_segments(root, "m"))
        lock = _lock(ws)
        for keys in (readers, no_delete):
            cfg = _strict_config(tmp_path, db_url, url, keys)
            with pytest.raises(StoreUnavailableError, match=r"cannot reach s3://logs/log/m/.*AWS_"):
                compact(cfg.predictions_dir, "m", older_than=ZERO, keep_sources=ZERO, lock=lock)
            _check(root, ids)  # as the admin sees it
        # the writer published its file but could not delete the sources: readers skip them
        listed = sorted(p.name for p in predlog.list_segments(root, "m"))
        assert len(listed) == 1 and predlog.is_compacted(listed[0])
        # a reader that may list but not read the footer is told so, never shown the rows twice
        predlog._REPLACED.clear()  # as in a fresh process: no footer known yet
        blind = _user(
            iam, "blind", ["s3:GetObject", "s3:ListBucket"], deny="arn:aws:s3:::logs/*-m*"
        )
        lister = _strict_config(tmp_path, db_url, url, blind)
        with pytest.raises(StoreUnavailableError, match=r"cannot reach s3://logs/log/m/.*-m"):
            predlog.list_segments(lister.predictions_dir, "m")
        [preds, _] = compact(root, "m", older_than=ZERO, keep_sources=ZERO, lock=lock)
        assert preds.removed == len(names)
        _check(root, ids)


def test_a_bucket_that_goes_away_mid_run_stops_the_run_clearly(tmp_path: Path, db_url: str) -> None:
    failed: list[BaseException] = []
    with ExitStack() as stack:
        with moto_server(tmp_path / "moto.log") as url:
            env = {**KEYS, "AWS_REGION": "us-east-1", "OWNLOOP_S3_ENDPOINT_URL": url}
            _client(env).create_bucket(Bucket="logs")
            settings = _settings({**env, "BUCKET": "logs"})
            home = {"OWNLOOP_HOME": str(tmp_path / "home"), "OWNLOOP_DB_URL": db_url}
            ws = stack.enter_context(Workspace(Config.from_env({**settings, **home})))
            root = ws.config.predictions_dir
            _write(root, 150, 5, T0, seed=60)

            def run() -> None:
                try:
                    compact(root, "m", older_than=ZERO, lock=_lock(ws))
                except BaseException as exc:  # handed to the test's thread
                    failed.append(exc)

            thread = threading.Thread(target=run)
            thread.start()
            time.sleep(0.3)
        thread.join(timeout=300)  # the server is gone now
        held = Lease(ws.store, ws.clock, "predlog.compaction/m", ttl_s=1).current()
        assert held is not None and held.expires_at < ws.clock.now()  # let go on the way out
    [error] = failed
    assert isinstance(error, StoreUnavailableError), repr(error)
    assert "cannot reach s3://logs/log/m" in str(error) and "OWNLOOP_S3_ENDPOINT_URL" in str(error)
