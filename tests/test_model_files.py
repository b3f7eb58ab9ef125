"""Model files are sniffed from their header, streamed into the store, and capped in size."""

from __future__ import annotations

import dataclasses
import struct
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

from ownloop import Config, InvalidInputError, Workspace
from ownloop.cli import cli
from ownloop.errors import PayloadTooLargeError, StoreUnavailableError
from ownloop.formats import check_archive, sniff_format
from tests.conftest import env_for

LIMIT = 256 * 1024


@pytest.fixture
def small(config: Config) -> Iterator[Workspace]:
    """A workspace whose model limit (OWNLOOP_MAX_MODEL_BYTES) is 256 KiB."""
    with Workspace(dataclasses.replace(config, max_model_bytes=LIMIT)) as ws:
        ws.registry.add_team("risk")
        yield ws


def _skops(tmp_path: Path) -> Path:
    X = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) % 3})
    sio.dump(LogisticRegression().fit(X, np.arange(20) % 2), tmp_path / "m.skops")
    return tmp_path / "m.skops"


def _bomb(tmp_path: Path, inflated: int) -> Path:
    """A skops-looking zip whose one extra member inflates to ``inflated`` bytes of zeros."""
    real = _skops(tmp_path)
    out = tmp_path / "bomb.skops"
    with zipfile.ZipFile(real) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        with dst.open("zeros.npy", "w") as member:
            chunk = bytes(1 << 20)
            for _ in range(inflated >> 20):
                member.write(chunk)
    return out


def _understated(path: Path, member: str, claimed: int) -> None:
    """Rewrite a zip so its headers claim ``member`` inflates to only ``claimed`` bytes."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(sig)
        while at != -1:
            name_len = struct.unpack_from("<H", data, at + (26 if sig == b"PK\x03\x04" else 28))[0]
            start = at + (30 if sig == b"PK\x03\x04" else 46)
            if bytes(data[start : start + name_len]) == name:
                struct.pack_into("<I", data, at + offset, claimed)
            at = data.find(sig, at + 4)
    path.write_bytes(bytes(data))


def test_archive_that_inflates_past_the_limit_is_refused_from_its_directory(
    small: Workspace, tmp_path: Path
) -> None:
    bomb = _bomb(tmp_path, 32 << 20)
    assert bomb.stat().st_size < LIMIT  # small on disk, 32 MiB inflated
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLargeError, match="inflates to more than 262,144 bytes"):
            small.registry.register(name="m", path=bomb, owner="risk")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"peak traced memory refusing a 32 MiB archive: {peak:,} bytes")
    assert peak < 8 << 20, f"peak {peak:,} bytes while refusing a 32 MiB archive"
    assert small.registry.list_models() == []


def test_archive_whose_directory_understates_its_size_is_refused_while_reading(
    tmp_path: Path,
) -> None:
    bomb = _bomb(tmp_path, 4 << 20)
    _understated(bomb, "zeros.npy", 1000)
    assert sum(i.file_size for i in zipfile.ZipFile(bomb).infolist()) < LIMIT
    with pytest.raises(InvalidInputError, match="damaged zip archive|inflates to more than"):
        check_archive(bomb, LIMIT)


def test_file_larger_than_the_limit_is_refused_while_streaming(
    small: Workspace, tmp_path: Path
) -> None:
    big = tmp_path / "big.skops"
    with big.open("wb") as f:  # a zip header, then a sparse hole: large on paper, nothing on disk
        f.write(b"PK\x03\x04")
        f.truncate(64 << 20)
    with pytest.raises(PayloadTooLargeError, match="larger than 262,144 bytes"):
        small.registry.register(name="m", path=big, owner="risk")
    assert list((small.config.artifacts_dir / "tmp").iterdir()) == []  # no staged copy left


def test_large_non_model_file_is_refused_from_its_header(small: Workspace, tmp_path: Path) -> None:
    junk = tmp_path / "data.bin"
    with junk.open("wb") as f:  # 8 GiB sparse file: reading it whole would exhaust memory
        f.write(b"not a model at all")
        f.truncate(8 << 30)
    with pytest.raises(InvalidInputError, match="not a model file ownloop can read"):
        small.registry.register(name="m", path=junk, owner="risk")
    assert not (small.config.artifacts_dir / "tmp").exists() or not any(
        (small.config.artifacts_dir / "tmp").iterdir()
    )


def test_a_model_under_the_limit_registers_and_hashes_what_it_streamed(
    small: Workspace, tmp_path: Path
) -> None:
    path = _skops(tmp_path)
    v = small.registry.register(name="m", path=path, owner="risk")
    assert v.artifact_size == path.stat().st_size
    assert small.artifacts.path(v.artifact_digest).read_bytes() == path.read_bytes()
    assert list((small.config.artifacts_dir / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("header", "name", "fmt"),
    [
        (b"PK\x03\x04rest", "m.skops", "zip"),
        (b"\x08\x07\x12\x08skl2onnx", "m.bin", "onnx"),
        (b"\x80\x04\x95rest", "m.pkl", "pickle"),
        (b"\x80\x05\x95rest", "m.joblib", "joblib"),
        (b"(lp0\nI1\n", "old.pkl", "pickle"),
    ],
)
def test_format_is_named_from_the_header(header: bytes, name: str, fmt: str) -> None:
    assert sniff_format(header, name) == fmt


def test_max_model_bytes_comes_from_the_environment(tmp_path: Path) -> None:
    env = {"OWNLOOP_HOME": str(tmp_path)}
    assert Config.from_env(env).max_model_bytes == 2 << 30
    assert Config.from_env({**env, "OWNLOOP_MAX_MODEL_BYTES": "4096"}).max_model_bytes == 4096
    with pytest.raises(InvalidInputError, match="OWNLOOP_MAX_MODEL_BYTES"):
        Config.from_env({**env, "OWNLOOP_MAX_MODEL_BYTES": "lots"})


# -- unwritable places are clear errors, not tracebacks --------------------------------------


def test_unwritable_artifacts_folder_is_a_clear_error(ws: Workspace, tmp_path: Path) -> None:
    ws.registry.add_team("risk")
    ws.config.artifacts_dir.parent.mkdir(parents=True, exist_ok=True)
    ws.config.artifacts_dir.write_text("a file where the artifacts folder should be")
    with pytest.raises(StoreUnavailableError, match=f"artifacts folder {ws.config.artifacts_dir}"):
        ws.registry.register(name="m", path=_skops(tmp_path), owner="risk")
    assert ws.registry.list_models() == []


def test_cli_unwritable_artifacts_folder_is_an_error_line(
    config: Config, ws: Workspace, tmp_path: Path
) -> None:
    ws.registry.add_team("risk")
    config.artifacts_dir.write_text("not a folder")
    r = CliRunner().invoke(
        cli, ["register", "m", str(_skops(tmp_path)), "--owner", "risk"], env=env_for(config)
    )
    assert r.exit_code == 1
    assert r.stderr.startswith("error: cannot write to the artifacts folder")
    assert "OWNLOOP_HOME" in r.stderr and "Traceback" not in r.output


@pytest.mark.parametrize("where", ["db-folder-is-a-file", "home-is-a-file"])
def test_cli_unreachable_sqlite_path_or_home_is_an_error_line(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    env = {"OWNLOOP_HOME": str(tmp_path / "home")}
    if where == "db-folder-is-a-file":
        env["OWNLOOP_DB_URL"] = f"sqlite:///{blocker / 'sub' / 'ownloop.db'}"
    else:
        env["OWNLOOP_HOME"] = str(blocker)
    r = CliRunner().invoke(cli, ["models"], env=env)
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith("error: ") and str(blocker) in r.stderr
    assert "OWNLOOP_" in r.stderr and "Traceback" not in r.output


def test_sqlite_folder_that_cannot_be_opened_is_store_unavailable(tmp_path: Path) -> None:
    from ownloop.store import Store

    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(StoreUnavailableError, match=f"{blocker}.*OWNLOOP_DB_URL"):
        Store(f"sqlite:///{blocker / 'db' / 'ownloop.db'}")
