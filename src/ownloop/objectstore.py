"""The prediction log and the artifacts on S3-compatible object storage, through ``pyarrow.fs``.

``OWNLOOP_PREDICTIONS_URL=s3://bucket/prefix`` (and ``OWNLOOP_ARTIFACTS_URL``) make
:class:`ownloop.config.Config` hand out an :class:`ObjectPath` instead of a folder under the home.
An ``ObjectPath`` is a :class:`pathlib.Path` whose reads (``iterdir``, ``stat``, ``exists``,
``read_bytes``, ``open``) go to the bucket, so the code that lists and reads the log is the same
for a folder and a bucket. Writes go through :func:`put_bytes`: the whole object in one request,
so a reader sees the old state or the complete object, never a part (object storage has no
rename; a PUT that fails publishes nothing). A local folder stays the fast path: nothing here is
used unless a URL is set.

Credentials and the endpoint come from the usual environment: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``) and
``OWNLOOP_S3_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL`` for a server other than AWS.

>>> path = open_location("OWNLOOP_PREDICTIONS_URL", "s3://logs/ownloop", env)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import re
import stat as stat_module
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path, PosixPath
from typing import IO, Any, ClassVar
from urllib.parse import urlencode, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ownloop.errors import InvalidInputError, StoreUnavailableError

__all__ = [
    "ObjectPath",
    "is_object",
    "list_names",
    "open_location",
    "parquet_file",
    "put_bytes",
    "put_file",
    "read_metadata",
    "read_schema",
    "read_table",
    "unavailable",
]

# S3 bucket names: 3 to 63 lowercase letters, digits, '.' and '-', starting and ending alnum
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class ObjectPath(PosixPath):
    """A key (or key prefix) in a bucket, read through a ``pyarrow.fs.FileSystem``.

    Built by :func:`open_location`; every path derived from it (``/``, ``parent``) keeps its
    file system. ``str()`` gives ``s3://bucket/key``.
    """

    fs: ClassVar[pafs.FileSystem]
    scheme: ClassVar[str] = "s3"

    @property
    def key(self) -> str:
        """``bucket/key`` as pyarrow names it."""
        return "/".join(self.parts[1:])

    def __str__(self) -> str:
        return f"{self.scheme}://{self.key}"

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __fspath__(self) -> str:
        """A URI pyarrow resolves to the same bucket and endpoint (``pq.read_table(path)``), with
        the credentials of the environment; ownloop itself reads through :func:`read_table`."""
        return _uri(self.fs, self.key)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable for worker processes
        return (_rebuild, (self.fs, self.scheme, self.key))

    def _info(self) -> pafs.FileInfo:
        listed: pafs.FileInfo | None = self.__dict__.get("_listed")
        if listed is not None:  # from the listing that found it: objects are written once
            return listed
        try:
            return self.fs.get_file_info(self.key)
        except OSError as exc:
            raise _unavailable(self, exc) from exc

    def resolve(self, strict: bool = False) -> ObjectPath:
        return self  # no links in a bucket

    def is_symlink(self) -> bool:
        return False

    def exists(self, *, follow_symlinks: bool = True) -> bool:
        return bool(self._info().type != pafs.FileType.NotFound)

    def is_dir(self) -> bool:
        # a prefix is a folder when objects exist under it; pyarrow asks the bucket
        return bool(self._info().type == pafs.FileType.Directory)

    def is_file(self) -> bool:
        return bool(self._info().type == pafs.FileType.File)

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        info = self._info()
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(2, "no such object", str(self))
        mode = stat_module.S_IFDIR if info.type == pafs.FileType.Directory else stat_module.S_IFREG
        mtime_ns = info.mtime_ns or 0
        size = info.size or 0
        return os.stat_result(
            (mode | 0o600, 0, 0, 1, 0, 0, size, mtime_ns / 1e9, mtime_ns / 1e9, mtime_ns / 1e9),
            {"st_mtime_ns": mtime_ns, "st_atime_ns": mtime_ns, "st_ctime_ns": mtime_ns},
        )

    def iterdir(self) -> Generator[ObjectPath, None, None]:
        """The objects and "folders" (common prefixes) directly under this prefix; what the
        listing said of each (kind, size, time) answers ``is_dir``/``stat`` without a request."""
        for info in _listing(self):
            child = self / info.base_name
            child.__dict__["_listed"] = info
            yield child

    def read_bytes(self) -> bytes:
        try:
            with self.fs.open_input_stream(self.key) as f:
                data: bytes = f.readall()
        except FileNotFoundError:
            raise
        except OSError as exc:
            if self._info().type == pafs.FileType.NotFound:
                raise FileNotFoundError(2, "no such object", str(self)) from None
            raise _unavailable(self, exc) from exc
        return data

    def write_bytes(self, data: Any) -> int:
        put_bytes(self, bytes(data))
        return len(data)

    def open(  # type: ignore[override]
        self, mode: str = "rb", *args: Any, **kwargs: Any
    ) -> IO[bytes]:
        if mode not in ("r", "rb"):
            raise InvalidInputError(f"{self} opens for reading only; write with put_bytes")
        return self.fs.open_input_file(self.key)  # type: ignore[no-any-return]

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise
        except OSError as exc:
            if self._info().type == pafs.FileType.NotFound:
                if missing_ok:
                    return
                raise FileNotFoundError(2, "no such object", str(self)) from None
            raise _unavailable(self, exc) from exc

    def mkdir(self, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        return None  # a bucket has no folders: a key's prefix exists once an object is under it


def _uri(fs: pafs.FileSystem, key: str) -> str:
    if not isinstance(fs, pafs.S3FileSystem):
        raise TypeError(f"{key} is in a file system pyarrow cannot name with a URI")
    options = fs.__reduce__()[1][0]  # the options it was made with (its pickled form)
    query = {"region": fs.region, "scheme": options.get("scheme") or "https"}
    if options.get("endpoint_override"):
        query["endpoint_override"] = options["endpoint_override"]
    return f"s3://{key}?{urlencode(query)}"


def _rebuild(fs: pafs.FileSystem, scheme: str, key: str) -> ObjectPath:
    return _bind(fs, scheme)("/" + key)


def _bind(fs: pafs.FileSystem, scheme: str) -> type[ObjectPath]:
    return type("ObjectPath", (ObjectPath,), {"fs": fs, "scheme": scheme})


def is_object(path: Path) -> bool:
    """Whether ``path`` lives in object storage (else it is a local file or folder)."""
    return isinstance(path, ObjectPath)


def _unavailable(path: Path, exc: BaseException) -> StoreUnavailableError:
    return StoreUnavailableError(
        f"cannot reach {path}: {exc}; check the endpoint (OWNLOOP_S3_ENDPOINT_URL), the "
        "credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and that the bucket exists"
    )


def unavailable(path: Path, exc: BaseException) -> StoreUnavailableError:
    """The error for ``path`` when the bucket did not answer or refused (naming what to check)."""
    return _unavailable(path, exc)


def list_names(folder: Path) -> list[str]:
    """The names directly in ``folder`` (a local folder or a key prefix), sorted."""
    if not isinstance(folder, ObjectPath):
        return sorted(os.listdir(folder))
    return [info.base_name for info in _listing(folder)]


def _listing(folder: ObjectPath) -> list[pafs.FileInfo]:
    selector = pafs.FileSelector(folder.key, allow_not_found=True, recursive=False)
    try:
        infos = folder.fs.get_file_info(selector)
    except OSError as exc:
        raise _unavailable(folder, exc) from exc
    return sorted((i for i in infos if i.base_name), key=lambda i: str(i.base_name))


def put_bytes(path: Path, data: bytes | pa.Buffer) -> None:
    """Publish ``data`` as the object ``path`` in one piece.

    The bytes are in memory before the request starts; pyarrow sends them when the stream is
    closed, so a failure before that publishes nothing, and a failure while sending leaves no
    object (deleted again if the server kept a part, which a single PUT never does).
    """
    _upload(path, iter([data]))


def put_file(path: Path, source: Path, chunk: int = 8 << 20) -> None:
    """Publish the local file ``source`` as the object ``path``, streamed in chunks.

    A large file goes up in parts that S3 shows only when the upload completes; if sending
    fails, the object is deleted again, and a reader that saw it in between finds it incomplete
    (artifacts are verified against their digest before they are used).
    """

    def chunks() -> Iterator[bytes]:
        with source.open("rb") as f:
            while block := f.read(chunk):
                yield block

    _upload(path, chunks())


def _upload(path: Path, chunks: Iterator[bytes | pa.Buffer]) -> None:
    if not isinstance(path, ObjectPath):
        raise InvalidInputError(f"{path} is not in object storage")
    try:
        stream = path.fs.open_output_stream(path.key, metadata={})
    except OSError as exc:
        raise _unavailable(path, exc) from exc
    try:
        for block in chunks:
            stream.write(block)
    except BaseException:
        # pyarrow completes an upload when the stream is closed, even by the garbage collector:
        # close it now, then delete what it published, so no part stays under the final name
        with contextlib.suppress(OSError):
            stream.close()
        path.unlink(missing_ok=True)
        raise
    try:
        stream.close()
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise _unavailable(path, exc) from exc


def table_bytes(table: pa.Table, **options: Any) -> pa.Buffer:
    """``table`` as a whole Parquet file in memory (to publish with :func:`put_bytes`)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    return sink.getvalue()


def parquet_file(path: Path) -> pq.ParquetFile:
    """A Parquet file opened for reading (its footer read; row groups on demand)."""
    if isinstance(path, ObjectPath):
        return pq.ParquetFile(path.fs.open_input_file(path.key))
    return pq.ParquetFile(str(path))


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    """The whole Parquet file ``path`` (or some ``columns`` of it)."""
    if isinstance(path, ObjectPath):
        return pq.read_table(path.key, columns=columns, filesystem=path.fs)
    return pq.read_table(path, columns=columns)


def read_schema(path: Path) -> pa.Schema:
    if isinstance(path, ObjectPath):
        return parquet_file(path).schema_arrow
    return pq.read_schema(path)


def read_metadata(path: Path) -> pq.FileMetaData:
    if isinstance(path, ObjectPath):
        return parquet_file(path).metadata
    return pq.read_metadata(str(path))


# -- configuration ---------------------------------------------------------------------------


def _endpoint(env: Mapping[str, str]) -> tuple[str | None, str]:
    for name in ("OWNLOOP_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        raw = env.get(name)
        if not raw:
            continue
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidInputError(
                f"{name}={raw!r} is not an endpoint URL; use http://host:port or https://host"
            )
        return parts.netloc, parts.scheme
    return None, "https"


def file_system(env: Mapping[str, str]) -> pafs.S3FileSystem:
    """An S3 file system with the credentials, region and endpoint of ``env``."""
    endpoint, scheme = _endpoint(env)
    options: dict[str, Any] = {
        "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        "scheme": scheme,
        "connect_timeout": 10,
        "request_timeout": 60,
        "allow_bucket_creation": False,
        "allow_bucket_deletion": False,
    }
    if endpoint is not None:
        options["endpoint_override"] = endpoint
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        options.update(
            access_key=key, secret_key=secret, session_token=env.get("AWS_SESSION_TOKEN") or None
        )
    return pafs.S3FileSystem(**options)


def parse_url(setting: str, url: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/prefix``; a clear error naming ``setting`` if not."""
    parts = urlsplit(url)
    hint = f"set {setting} to s3://bucket/prefix, or unset it to keep the files under OWNLOOP_HOME"
    if parts.scheme != "s3":
        raise InvalidInputError(f"{setting}={url!r} is not an s3:// URL; {hint}")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise InvalidInputError(f"{setting}={url!r} has parts an s3:// URL may not have; {hint}")
    if not _BUCKET.fullmatch(parts.netloc):
        raise InvalidInputError(
            f"{setting}={url!r} names no valid bucket ('{parts.netloc}': 3 to 63 lowercase "
            f"letters, digits, '.' or '-'); {hint}"
        )
    prefix = parts.path.strip("/")
    if any(p in ("", ".", "..") for p in prefix.split("/")) and prefix:
        raise InvalidInputError(f"{setting}={url!r} has an empty or relative part; {hint}")
    return parts.netloc, prefix


def open_location(setting: str, url: str, env: Mapping[str, str]) -> ObjectPath:
    """The bucket prefix ``url`` as an :class:`ObjectPath` (not yet contacted: see :func:`check`)."""
    bucket, prefix = parse_url(setting, url)
    return _bind(file_system(env), "s3")("/" + "/".join(p for p in (bucket, prefix) if p))


def check(setting: str, path: ObjectPath) -> None:
    """Reach the bucket once: a clear error naming ``setting`` if it is missing or refused."""
    bucket = path.parts[1]
    try:
        info = path.fs.get_file_info(bucket)
    except OSError as exc:
        raise StoreUnavailableError(
            f"{setting}={path} cannot be used: {str(exc).strip()}; check the credentials "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION) and the endpoint "
            "(OWNLOOP_S3_ENDPOINT_URL)"
        ) from None
    if info.type == pafs.FileType.NotFound:
        raise StoreUnavailableError(
            f"{setting}={path}: bucket '{bucket}' does not exist; create it (ownloop never "
            "creates buckets) or point the setting at an existing one"
        )
