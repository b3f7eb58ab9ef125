"""Content-addressed files: ``<home>/artifacts/sha256/<ab>/<digest>``, verified on every read.

With ``OWNLOOP_ARTIFACTS_URL=s3://bucket/prefix`` the same names are objects in the bucket
(``prefix/sha256/<ab>/<digest>``): staged in a local private folder, published with one upload,
and verified against the digest when read, exactly as files are.

Paths are built from the digest only, never from a name a client sent. Files are 0600 (mkstemp),
folders 0700, and a link that leads out of the artifacts folder is refused.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ownloop import objectstore
from ownloop._files import inside, private_folder
from ownloop.errors import (
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    StoreUnavailableError,
)

__all__ = ["Artifact", "ArtifactStore", "Staged", "fsync_path", "sha256_bytes", "sha256_file"]

_DIGEST = re.compile(r"[0-9a-f]{64}")  # always fullmatch: "$" accepts a trailing newline
_CHUNK = 1 << 20
STALE_STAGED_S = 24 * 3600


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


@dataclass(frozen=True)
class Staged:
    """A complete, hashed copy under a temporary name, waiting for :meth:`ArtifactStore.commit`."""

    path: Path
    digest: str
    size: int

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


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
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise InvalidInputError(
                f"'{digest}' is not a sha256 digest (64 lowercase hex characters)"
            )
        return inside(self.root, self.root / "sha256" / digest[:2] / digest)

    def put_bytes(self, data: bytes) -> Artifact:
        digest = sha256_bytes(data)
        target = self.path(digest)
        with self._writing():
            if not self._intact(target, digest):
                self._atomic_write(target, [data])
        return Artifact(digest, len(data))

    def put_file(self, source: Path, max_bytes: int | None = None) -> Artifact:
        """Copy ``source`` in, hashing as it streams; the final name appears only when complete."""
        return self.commit(self.stage_file(source, max_bytes))

    def stage_file(self, source: Path, max_bytes: int | None = None) -> Staged:
        """Stream ``source`` into a temporary file here, hashing in chunks; nothing is final yet.

        ``max_bytes`` is enforced while copying, so a file that grows (or a device that never
        ends) is cut off rather than read whole.
        """
        with self._writing():
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self._staging())
        h, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                while chunk := src.read(_CHUNK):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise PayloadTooLargeError(
                            f"{source} is larger than {max_bytes:,} bytes, the limit "
                            "(OWNLOOP_MAX_MODEL_BYTES); raise the limit if the file is right"
                        )
                    h.update(chunk)
                    with self._writing():
                        out.write(chunk)
                with self._writing():
                    out.flush()
                    os.fsync(out.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Staged(Path(tmp), h.hexdigest(), size)

    def stage_bytes(self, data: bytes) -> Staged:
        """Bytes held in memory, staged like a file (see :meth:`stage_file`)."""
        with self._writing():
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self._staging())
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return Staged(Path(tmp), sha256_bytes(data), len(data))

    def _staging(self) -> Path:
        """The staging folder, swept of copies a killed process left behind (older than a day).

        Artifacts in object storage are staged in a private folder of the local temp folder.
        """
        if objectstore.is_object(self.root):
            staging = private_folder(Path(tempfile.gettempdir()) / f"ownloop-{os.getuid()}-staging")
        else:
            staging = private_folder(inside(self.root, self.root / "tmp"))
        cutoff = time.time() - STALE_STAGED_S
        for old in staging.glob(".tmp-*"):
            try:
                if old.stat().st_mtime < cutoff:
                    old.unlink()
            except FileNotFoundError:  # another process swept it first
                continue
        return staging

    def commit(self, staged: Staged) -> Artifact:
        """Give a staged file its final, content-addressed name (or drop it if that exists intact)."""
        target = self.path(staged.digest)
        try:
            with self._writing():
                if self._intact(target, staged.digest):
                    staged.path.unlink()
                elif objectstore.is_object(target):
                    objectstore.put_file(target, staged.path)
                    staged.path.unlink()
                else:
                    private_folder(target.parent)
                    os.replace(staged.path, target)
                    fsync_path(target.parent)
        except BaseException:
            staged.path.unlink(missing_ok=True)
            raise
        return Artifact(staged.digest, staged.size)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise StoreUnavailableError(
                f"cannot write to the artifacts folder {self.root}: {exc.strerror or exc}; "
                + (
                    "check OWNLOOP_ARTIFACTS_URL, the credentials and that the bucket is writable"
                    if objectstore.is_object(self.root)
                    else "make it a writable folder, or point OWNLOOP_HOME at one"
                )
            ) from exc

    def _intact(self, target: Path, digest: str) -> bool:
        return target.is_file() and sha256_file(target) == digest

    def _atomic_write(self, target: Path, chunks: list[bytes]) -> None:
        if objectstore.is_object(target):
            objectstore.put_bytes(target, b"".join(chunks))
            return
        private_folder(target.parent)
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
                f"artifact {target} was altered "
                f"{'in the bucket' if objectstore.is_object(target) else 'on disk'}: expected sha256 {digest}, found {actual}; "
                "it will not be loaded. Restore it from backup or register the model again"
            )
        return data

    def verify(self, digest: str) -> None:
        self.read(digest)
