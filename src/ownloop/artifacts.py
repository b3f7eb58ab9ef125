"""Content-addressed files: ``<home>/artifacts/sha256/<ab>/<digest>``, verified on every read."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ownloop.errors import IntegrityError, InvalidInputError, NotFoundError

__all__ = ["Artifact", "ArtifactStore", "fsync_path", "sha256_bytes", "sha256_file"]

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Artifact:
    digest: str
    size: int


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entry to disk (a folder after a rename in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ArtifactStore:
    """Write-once files named by their sha256. A file whose bytes do not match is never returned."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise InvalidInputError(
                f"'{digest}' is not a sha256 digest (64 lowercase hex characters)"
            )
        return self.root / "sha256" / digest[:2] / digest

    def put_bytes(self, data: bytes) -> Artifact:
        digest = sha256_bytes(data)
        target = self.path(digest)
        if not self._intact(target, digest):
            self._atomic_write(target, [data])
        return Artifact(digest, len(data))

    def put_file(self, source: Path) -> Artifact:
        """Copy ``source`` in, hashing as it streams; the final name appears only when complete."""
        staging = self.root / "tmp"
        staging.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=staging)
        h, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            target = self.path(h.hexdigest())
            if self._intact(target, h.hexdigest()):
                Path(tmp).unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, target)
                fsync_path(target.parent)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Artifact(h.hexdigest(), size)

    def _intact(self, target: Path, digest: str) -> bool:
        return target.exists() and sha256_file(target) == digest

    def _atomic_write(self, target: Path, chunks: list[bytes]) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_path(target.parent)

    def read(self, digest: str) -> bytes:
        """The artifact's bytes, after checking they still hash to ``digest``."""
        target = self.path(digest)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(
                f"artifact {digest[:12]} is missing from {self.root}; "
                "restore the artifacts folder from backup"
            ) from None
        actual = sha256_bytes(data)
        if actual != digest:
            raise IntegrityError(
                f"artifact {target} was altered on disk: expected sha256 {digest}, found {actual}; "
                "it will not be loaded. Restore it from backup or register the model again"
            )
        return data

    def verify(self, digest: str) -> None:
        self.read(digest)
