"""Reading tabular data files (Parquet, CSV) with errors that name the file and the fix."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ownloop.artifacts import sha256_file
from ownloop.errors import InvalidInputError, NotFoundError

__all__ = ["frame_digest", "read_frame"]

_PARQUET = (".parquet", ".pq", ".parq")
_CSV = (".csv", ".csv.gz", ".tsv")


def read_frame(path: str | Path) -> pd.DataFrame:
    """Read a Parquet or CSV file into a DataFrame."""
    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"data file {p} does not exist")
    if p.is_dir():
        raise InvalidInputError(f"{p} is a folder; pass a Parquet or CSV file")
    if p.stat().st_size == 0:
        raise InvalidInputError(f"data file {p} is empty")
    name = p.name.lower()
    try:
        if name.endswith(_PARQUET):
            frame: pd.DataFrame = pq.read_table(p).to_pandas()
            return frame
        if name.endswith(_CSV):
            return pd.read_csv(p, sep="\t" if name.endswith(".tsv") else ",")
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise InvalidInputError(f"cannot read {p} as Parquet: {exc}") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read {p} as CSV: {exc}") from exc
    raise InvalidInputError(f"{p}: unknown data format; use .parquet or .csv")


def frame_digest(frame: pd.DataFrame) -> str:
    """A stable sha256 of a DataFrame's column names, types and values."""
    h = hashlib.sha256()
    h.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    return sha256_file(Path(path))
