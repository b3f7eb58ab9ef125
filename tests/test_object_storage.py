"""The prediction log, labels and artifacts in an S3 bucket, against a real local S3 server.

The server is moto's (``moto[server]``), started by these tests on 127.0.0.1 on a free port and
stopped in teardown; every test gets a bucket of its own. Without moto the tests skip, unless
OWNLOOP_TEST_REQUIRE_S3=1 (CI) makes that a failure.
"""

from __future__ import annotations

import gc
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pytest

from ownloop import Config, Workspace, objectstore, predlog
from ownloop.errors import IntegrityError, InvalidInputError, NotFoundError, StoreUnavailableError
from tests.conftest import env_for
from tests.servers import free_port, start_process
from tests.test_server_live import rows, two_versions

try:
    import boto3
    import moto.server  # noqa: F401
except ImportError:  # pragma: no cover - the dev extra installs it
    if os.environ.get("OWNLOOP_TEST_REQUIRE_S3") == "1":
        raise
    pytest.skip(
        "moto[server] is not installed (pip install -e '.[dev]'); "
        "set OWNLOOP_TEST_REQUIRE_S3=1 to make this a failure",
        allow_module_level=True,
    )

KEYS = {"AWS_ACCESS_KEY_ID": "ownloop-test", "AWS_SECRET_ACCESS_KEY": "ownloop-test-secret"}


@contextmanager
def moto_server(log: Path, **env: str) -> Iterator[str]:
    """A real S3 server (``moto_server``, its own process) on a free loopback port, yielded once
    it answers, stopped on the way out whatever happened."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=5)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log.read_text()}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One S3 server for this module's tests (each test makes a bucket of its own)."""
    with moto_server(tmp_path_factory.mktemp("s3") / "moto.log") as url:
        yield url


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The S3 settings of a fresh bucket (also set in this process's environment)."""
    env = {
        **KEYS,
        "AWS_REGION": "us-east-1",
        "OWNLOOP_S3_ENDPOINT_URL": s3_endpoint,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    bucket = f"ownloop-{secrets.token_hex(6)}"
    _client(env).create_bucket(Bucket=bucket)
    env["BUCKET"] = bucket
    return env


def _client(env: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env["OWNLOOP_S3_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def _keys(env: dict[str, str], prefix: str) -> list[str]:
    """The objects under ``prefix`` (not the empty markers pyarrow leaves for "folders")."""
    listed = _client(env).list_objects_v2(Bucket=env["BUCKET"], Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []) if not o["Key"].endswith("/"))


def _settings(env: dict[str, str]) -> dict[str, str]:
    bucket = env["BUCKET"]
    return {
        **{k: v for k, v in env.items() if k != "BUCKET"},
        "OWNLOOP_PREDICTIONS_URL": f"s3://{bucket}/log",
        "OWNLOOP_ARTIFACTS_URL": f"s3://{bucket}/artifacts",
    }


@pytest.fixture
def s3_config(tmp_path: Path, db_url: str, s3_env: dict[str, str]) -> Config:
    settings = _settings(s3_env)
    return Config.from_env(
        {
            **settings,
            "OWNLOOP_HOME": str(tmp_path / "home"),
            "OWNLOOP_DB_URL": db_url,
            "OWNLOOP_USER": "tester",
        }
    )


def _table(ids: list[str], at: datetime) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "prediction_id": ids,
            "ts": pa.array([at] * n, predlog.TS),
            "model": ["churn"] * n,
            "version": pa.array([1] * n, pa.int32()),
            "arm": ["stable"] * n,
            "request_id": [f"r{i}" for i in range(n)],
            "status": ["ok"] * n,
            "latency_s": [0.01] * n,
            "cpu_s": [0.01] * n,
            "prediction": ["1"] * n,
            "prediction_value": [1.0] * n,
            "confidence": [0.9] * n,
            "proba": pa.array([[0.1, 0.9]] * n, pa.list_(pa.float64())),
        }
    )


# -- settings and bad input --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://bucket/prefix", "is not an s3:// URL"),
        ("s3://Bad_Bucket/prefix", "names no valid bucket"),
        ("s3://ab/prefix", "names no valid bucket"),
        ("s3://bucket/a/../b", "empty or relative part"),
        ("s3://bucket/a//b", "empty or relative part"),
        ("s3://bucket/p?versionId=1", "parts an s3:// URL may not have"),
        ("s3://key:secret@bucket/p", "parts an s3:// URL may not have"),
    ],
)
def test_a_malformed_url_is_refused_naming_the_setting(url: str, says: str) -> None:
    for setting in ("OWNLOOP_PREDICTIONS_URL", "OWNLOOP_ARTIFACTS_URL"):
        with pytest.raises(InvalidInputError, match=says) as caught:
            Config.from_env({"OWNLOOP_HOME": "/tmp/x", setting: url})
        assert setting in str(caught.value) and "s3://bucket/prefix" in str(caught.value)


def test_unset_urls_keep_the_folders_under_home(tmp_path: Path) -> None:
    config = Config.from_env({"OWNLOOP_HOME": str(tmp_path)})
    assert config.predictions_dir == tmp_path / "predictions"
    assert config.artifacts_dir == tmp_path / "artifacts"
    assert not objectstore.is_object(config.predictions_dir)
    assert not objectstore.is_object(config.artifacts_dir)


def test_the_secret_key_never_shows_in_the_config(s3_config: Config) -> None:
    assert KEYS["AWS_SECRET_ACCESS_KEY"] not in repr(s3_config)
    assert KEYS["AWS_SECRET_ACCESS_KEY"] not in str(s3_config.predictions_dir)
    assert KEYS["AWS_SECRET_ACCESS_KEY"] not in os.fspath(s3_config.predictions_dir)


def test_a_missing_bucket_or_endpoint_is_a_clear_error_at_startup(
    s3_config: Config, s3_env: dict[str, str], tmp_path: Path
) -> None:
    missing = Config.from_env(
        {
            **_settings(s3_env),
            "OWNLOOP_HOME": str(tmp_path / "a"),
            "OWNLOOP_PREDICTIONS_URL": "s3://no-such-bucket-here/log",
        }
    )
    with pytest.raises(StoreUnavailableError, match="bucket 'no-such-bucket-here' does not exist"):
        Workspace(missing)
    nobody = Config.from_env(
        {
            **_settings(s3_env),
            "OWNLOOP_HOME": str(tmp_path / "b"),
            "OWNLOOP_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens
        }
    )
    with pytest.raises(StoreUnavailableError, match=r"OWNLOOP_PREDICTIONS_URL=.*cannot be used"):
        Workspace(nobody)
    with pytest.raises(InvalidInputError, match="OWNLOOP_S3_ENDPOINT_URL='ftp://x'"):
        Config.from_env({**_settings(s3_env), "OWNLOOP_S3_ENDPOINT_URL": "ftp://x"}).predictions_dir  # noqa: B018


def test_wrong_credentials_are_a_clear_error_at_startup(tmp_path: Path) -> None:
    # this server checks credentials after its first request (the one that makes the bucket)
    with moto_server(tmp_path / "moto.log", INITIAL_NO_AUTH_ACTION_COUNT="1") as url:
        env = {**KEYS, "AWS_REGION": "us-east-1", "OWNLOOP_S3_ENDPOINT_URL": url, "BUCKET": "logs"}
        _client(env).create_bucket(Bucket="logs")
        config = Config.from_env(
            {
                **_settings(env),
                "OWNLOOP_HOME": str(tmp_path / "home"),
                "AWS_ACCESS_KEY_ID": "not-a-key",
                "AWS_SECRET_ACCESS_KEY": "not-a-secret",
            }
        )
        with pytest.raises(StoreUnavailableError) as caught:
            Workspace(config)
    said = str(caught.value)
    assert "OWNLOOP_PREDICTIONS_URL=s3://logs/log cannot be used" in said
    assert "ACCESS_DENIED" in said and "AWS_ACCESS_KEY_ID" in said
    assert "not-a-secret" not in said


@pytest.mark.slow
def test_serve_with_a_missing_bucket_says_which_setting_and_exits(
    s3_config: Config, s3_env: dict[str, str]
) -> None:
    env = {
        **env_for(s3_config),
        **_settings(s3_env),
        "OWNLOOP_ARTIFACTS_URL": "s3://no-such-bucket-here/artifacts",
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ownloop"), "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    out = (done.stdout + done.stderr).decode()
    assert done.returncode != 0
    assert "OWNLOOP_ARTIFACTS_URL" in out and "does not exist" in out
    assert "Traceback" not in out


# -- writes are whole or absent ---------------------------------------------------------------


def test_a_write_that_fails_midway_leaves_no_object(
    s3_config: Config, s3_env: dict[str, str]
) -> None:
    target = s3_config.predictions_dir / "churn" / "date=2026-01-01" / "x.parquet"

    def broken() -> Iterator[bytes]:
        yield b"PAR1" + b"x" * 1000
        raise OSError("the connection dropped")

    with pytest.raises(OSError, match="the connection dropped") as caught:
        objectstore._upload(target, broken())
    # drop the traceback, which holds the failed call's stream: pyarrow completes the upload
    # of an open stream it collects, so this is the moment a part would appear
    del caught
    gc.collect()
    assert not target.exists()
    assert _keys(s3_env, "log/") == []
    assert predlog.list_segments(s3_config.predictions_dir, "churn") == []


def test_segments_in_the_bucket_list_and_read_like_files(
    s3_config: Config, s3_env: dict[str, str]
) -> None:
    root = s3_config.predictions_dir
    day = datetime(2026, 3, 1, 12, tzinfo=UTC)
    ids = predlog.new_ids(30)
    written = predlog.write_segment(root, "churn", _table(ids[:10], day))
    written += predlog.write_segment(root, "churn", _table(ids[10:], day + timedelta(days=1)))
    assert len(written) == 2 and all(objectstore.is_object(p) for p in written)
    keys = _keys(s3_env, "log/")
    assert len(keys) == 2 and all("/.tmp-" not in k for k in keys)
    assert predlog.list_segments(root, "churn") == written
    assert predlog.list_segments(root, "churn", start=day + timedelta(days=1)) == written[1:]
    table = predlog.read_window(root, "churn")
    assert sorted(table["prediction_id"].to_pylist()) == sorted(ids)
    # a segment path survives a trip to another process (a monitor's worker) and reads the same
    import pickle

    again = pickle.loads(pickle.dumps(written[0]))
    assert again == written[0] and again.stat().st_size == written[0].stat().st_size
    assert objectstore.read_table(again).num_rows == 10


# -- artifacts ---------------------------------------------------------------------------------


def test_artifacts_in_the_bucket_are_verified_before_loading(
    s3_config: Config, s3_env: dict[str, str], churn_model: Any, churn_data: pd.DataFrame
) -> None:
    with Workspace(s3_config) as ws:
        ws.registry.add_team("risk", members=["tester"])
        v = ws.registry.register(
            churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
        )
        keys = _keys(s3_env, "artifacts/")
        digest = v.artifact_digest
        key = f"artifacts/sha256/{digest[:2]}/{digest}"
        assert key in keys and all(k.startswith("artifacts/sha256/") for k in keys)
        assert not (s3_config.home / "artifacts").exists()  # nothing on the local disk
        loaded = ws.registry.load("churn@1")
        X = churn_data.drop(columns="churned").head(20)
        assert list(loaded.predict(X)) == list(churn_model.predict(X))  # type: ignore[attr-defined]

        # one byte changed in the bucket: refused, never loaded
        body = _client(s3_env).get_object(Bucket=s3_env["BUCKET"], Key=key)["Body"].read()
        tampered = body[:-1] + bytes([body[-1] ^ 1])
        _client(s3_env).put_object(Bucket=s3_env["BUCKET"], Key=key, Body=tampered)
        with pytest.raises(IntegrityError, match="altered in the bucket"):
            ws.registry.load("churn@1")
        _client(s3_env).delete_object(Bucket=s3_env["BUCKET"], Key=key)
        with pytest.raises(NotFoundError, match="is missing"):
            ws.registry.load("churn@1")
        # the object restored from a backup copy: loaded again
        _client(s3_env).put_object(Bucket=s3_env["BUCKET"], Key=key, Body=body)
        assert list(ws.registry.load("churn@1").predict(X)) == list(loaded.predict(X))


# -- two serve processes, one bucket -----------------------------------------------------------


@pytest.mark.slow
def test_two_serve_processes_write_one_bucket_and_a_monitor_reads_it(
    s3_config: Config,
    s3_env: dict[str, str],
    churn_model: Any,
    churn_data: pd.DataFrame,
    tmp_path: Path,
) -> None:
    with Workspace(s3_config) as ws:
        two_versions(ws, churn_model, churn_data)
    env = {**env_for(s3_config), **_settings(s3_env), "OWNLOOP_PREDLOG_FLUSH_S": "0.05"}
    start = datetime.now(UTC) - timedelta(minutes=1)
    answered: list[str] = []
    with ExitStack() as stack:
        ports = [free_port(), free_port()]
        procs = [
            stack.enter_context(start_process(env, port, log=tmp_path / f"serve-{port}.log"))
            for port in ports
        ]
        for i in range(60):
            port = ports[i % 2]
            r = httpx.post(
                f"http://127.0.0.1:{port}/models/churn/predict",
                json={"instances": rows(churn_data, 2, i)},
                timeout=60,
            )
            assert r.status_code == 200, r.text
            answered.extend(r.json()["prediction_ids"])
        # labels for some answers, posted to the other process than the one that answered
        truth = [{"prediction_id": p, "label": 1} for p in answered[:20]]
        r = httpx.post(f"http://127.0.0.1:{ports[1]}/models/churn/labels", json=truth, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["stored"] == 20
        for proc in procs:  # a clean stop flushes what is still buffered
            proc.terminate()
            proc.wait(timeout=120)
    assert len(answered) == 120
    with Workspace(s3_config) as ws:
        files = predlog.list_segments(ws.config.predictions_dir, "churn")
        assert files and all(objectstore.is_object(f) for f in files)
        logged = Counter(
            predlog.read_segments(files, columns=["prediction_id"])
            .table["prediction_id"]
            .to_pylist()
        )
        assert logged == Counter(answered)  # every answer exactly once
        reports = ws.monitor.window_reports(
            "churn", start, datetime.now(UTC) + timedelta(minutes=1)
        )
        assert sum(r.rows for r in reports) == 120
        # the monitor's per-segment cache is on the local disk, and a second run agrees
        cached = list((s3_config.home / "monitoring" / "partials" / "churn").rglob("*.partial"))
        assert cached
        again = ws.monitor.window_reports("churn", start, datetime.now(UTC) + timedelta(minutes=1))
        assert [(r.version, r.rows) for r in again] == [(r.version, r.rows) for r in reports]
        labels = predlog.read_labels(ws.config.predictions_dir, "churn")
        assert sorted(labels["prediction_id"].to_pylist()) == sorted(answered[:20])
        found = predlog.labelled_ids(ws.config.predictions_dir, "churn", answered[:40])
        assert found == set(answered[:20])
    assert not (s3_config.home / "predictions").exists()  # nothing on the local disk
