"""Label ingestion: check ids against the prediction log, keep the last label per id, audit it.

>>> report = record_labels(ws.registry, ws.config.predictions_dir, "churn", rows)  # doctest: +SKIP
>>> report.stored, report.replaced, report.unknown  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ownloop import predlog
from ownloop.access import authorize
from ownloop.errors import InvalidInputError
from ownloop.names import validate_name
from ownloop.registry import Registry

__all__ = ["LabelReport", "id_time", "labels_table", "record_labels"]

_SHOWN = 50


@dataclass(frozen=True)
class LabelReport:
    """What happened to a batch of labels: stored, replacing an earlier label, or unknown id."""

    model: str
    received: int
    stored: int
    replaced: int
    unknown: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "received": self.received,
            "stored": self.stored,
            "replaced": self.replaced,
            "unknown_count": len(self.unknown),
            "unknown": self.unknown[:_SHOWN],
        }


def id_time(prediction_id: str) -> datetime | None:
    """When an id was made (its leading millisecond field), or None if it is not an ownloop id."""
    if len(prediction_id) != 32:
        return None
    try:
        ms = int(prediction_id[:11], 16)
    except ValueError:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _label_text(value: Any, where: str) -> tuple[str, float | None]:
    if isinstance(value, bool):
        return str(int(value)), float(value)
    if isinstance(value, int):
        return str(value), float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"{where}: label {value} is not a finite number")
        return (str(int(value)) if value.is_integer() else str(value)), value
    if isinstance(value, str) and value:
        try:
            number = float(value)
        except ValueError:
            return value, None
        return value, number if math.isfinite(number) else None
    raise InvalidInputError(f"{where}: label must be a class name or a number, not {value!r}")


def labels_table(rows: Sequence[Mapping[str, Any]], *, at: datetime, source: str) -> pa.Table:
    """Turn ``[{"prediction_id": ..., "label": ..., "weight": ...}]`` into a label table."""
    ids: list[str] = []
    texts: list[str] = []
    values: list[float | None] = []
    weights: list[float | None] = []
    for i, row in enumerate(rows):
        where = f"label row {i}"
        if not isinstance(row, Mapping):
            raise InvalidInputError(f"{where} must be an object with prediction_id and label")
        extra = set(row) - {"prediction_id", "label", "weight"}
        if extra:
            raise InvalidInputError(
                f"{where} has unknown field {', '.join(sorted(extra))}; use prediction_id, label, weight"
            )
        pid = row.get("prediction_id")
        if not isinstance(pid, str) or not pid:
            raise InvalidInputError(f"{where}: prediction_id must be a non-empty string")
        if "label" not in row or row["label"] is None:
            raise InvalidInputError(f"{where}: label is missing")
        text, number = _label_text(row["label"], where)
        weight = row.get("weight")
        if weight is not None and (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
            or weight <= 0
        ):
            raise InvalidInputError(f"{where}: weight must be a positive number, not {weight!r}")
        ids.append(pid)
        texts.append(text)
        values.append(number)
        weights.append(None if weight is None else float(weight))
    n = len(ids)
    return pa.table(
        {
            "prediction_id": ids,
            "label": texts,
            "label_value": values,
            "labeled_at": pa.array([at] * n, predlog.TS),
            "source": [source] * n,
            "weight": pa.array(weights, pa.float64()),
        },
        schema=predlog.LABEL_SCHEMA,
    )


def _known(root: Path, model: str, ids: pa.Array) -> np.ndarray:
    times = [id_time(i) for i in ids.to_pylist()]
    valid = [t for t in times if t is not None]
    if not valid:
        return np.zeros(len(ids), dtype=bool)
    start = min(valid).replace(hour=0, minute=0, second=0, microsecond=0)
    end = max(valid) + timedelta(days=1)
    logged = predlog.read_window(root, model, start=start, end=end, columns=["prediction_id"])
    found = pc.is_in(ids, value_set=logged["prediction_id"].combine_chunks())
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


def record_labels(registry: Registry, root: Path, model: str, table: pa.Table) -> LabelReport:
    """Store labels for logged predictions of ``model``; unknown ids are reported, not stored.

    A later label for the same prediction id wins (within the batch and over earlier batches);
    the batch and the ids it relabelled are written to the audit log.
    """
    validate_name("model", model)
    owner = registry.get_model(model).owner
    authorize(registry.actor, "label.write", owner)
    received = table.num_rows
    ids = table["prediction_id"].combine_chunks()
    known = _known(root, model, ids) if received else np.zeros(0, dtype=bool)
    unknown = [pid for pid, ok in zip(ids.to_pylist(), known, strict=True) if not ok]
    table = table.filter(pa.array(known))
    kept = table["prediction_id"].to_pylist()
    seen = predlog.labelled_ids(root, model, kept)
    replaced_ids: list[str] = []
    for pid in kept:
        if pid in seen:
            replaced_ids.append(pid)
        seen.add(pid)
    now = registry.clock.now()
    with registry.store.write() as conn:
        if table.num_rows:
            predlog.write_labels(root, model, table)
        registry.store.audit(
            conn,
            at=now,
            actor=registry.actor.name,
            action="label.write",
            target=f"model:{model}",
            model=model,
            after={
                "received": received,
                "stored": table.num_rows,
                "replaced": len(replaced_ids),
                "replaced_ids": replaced_ids[:_SHOWN],
                "unknown": len(unknown),
                "unknown_ids": unknown[:_SHOWN],
            },
        )
    return LabelReport(model, received, table.num_rows, len(replaced_ids), unknown)
