from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ownloop.artifacts import ArtifactStore, sha256_bytes
from ownloop.errors import IntegrityError, InvalidInputError, NotFoundError


def test_content_addressed_layout(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    art = store.put_bytes(b"model bytes")
    assert art.digest == sha256_bytes(b"model bytes")
    assert store.path(art.digest) == tmp_path / "sha256" / art.digest[:2] / art.digest
    assert store.read(art.digest) == b"model bytes"


def test_put_file_streams_and_leaves_no_temp_files(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * (3 * (1 << 20) + 7))
    store = ArtifactStore(tmp_path / "a")
    art = store.put_file(src)
    assert art.size == src.stat().st_size
    assert store.read(art.digest) == src.read_bytes()
    assert not [p for p in (tmp_path / "a").rglob(".tmp-*")]


def test_same_content_is_stored_once(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    assert store.put_bytes(b"a").digest == store.put_bytes(b"a").digest
    assert len(list((tmp_path / "sha256").rglob("*"))) == 2  # one folder, one file


def test_altered_file_is_refused_naming_both_digests(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    art = store.put_bytes(b"original")
    store.path(art.digest).write_bytes(b"tampered")
    with pytest.raises(
        IntegrityError, match=f"expected sha256 {art.digest}, found {sha256_bytes(b'tampered')}"
    ):
        store.read(art.digest)


def test_rewriting_repairs_a_damaged_file(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    art = store.put_bytes(b"original")
    store.path(art.digest).write_bytes(b"tampered")
    store.put_bytes(b"original")
    assert store.read(art.digest) == b"original"


def test_missing_artifact(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="missing"):
        ArtifactStore(tmp_path).read("a" * 64)


@pytest.mark.parametrize("digest", ["../../etc/passwd", "A" * 64, "abc"])
def test_paths_are_built_only_from_digests(tmp_path: Path, digest: str) -> None:
    with pytest.raises(InvalidInputError, match="not a sha256 digest"):
        ArtifactStore(tmp_path).path(digest)


def test_staged_copies_left_by_a_killed_process_are_swept_after_a_day(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    staging = tmp_path / "artifacts" / "tmp"
    staging.mkdir(parents=True)
    old, fresh = staging / ".tmp-old", staging / ".tmp-fresh"
    old.write_bytes(b"left by a SIGKILL two days ago")
    fresh.write_bytes(b"another register is copying this one now")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    staged = store.stage_bytes(b"model")
    assert not old.exists() and fresh.exists()
    assert store.commit(staged).digest == store.put_bytes(b"model").digest
    assert sorted(p.name for p in staging.iterdir()) == [".tmp-fresh"]
