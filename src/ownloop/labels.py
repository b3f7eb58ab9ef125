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
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ownloop import predlog
from ownloop.datasets import read_frame
from ownloop.errors import InvalidInputError, NotFoundError
from ownloop.names import validate_name
from ownloop.profile import ClassificationProfile
from ownloop.registry import Registry

__all__ = [
    "LabelReport",
    "frame_rows",
    "id_time",
    "label_rows",
    "labels_table",
    "record_label_batches",
    "record_labels",
]

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
        return str(value), float(value)
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


def frame_rows(frame: pd.DataFrame, *, where: str = "the label frame") -> list[dict[str, Any]]:
    """Rows ``{"prediction_id", "label"[, "weight"]}`` of a frame (a missing weight is None)."""
    missing = [c for c in ("prediction_id", "label") if c not in frame.columns]
    if missing:
        raise InvalidInputError(
            f"{where} lacks column {', '.join(missing)}; it needs prediction_id and label "
            "(and optionally weight, model)"
        )
    cols = [c for c in ("prediction_id", "label", "weight") if c in frame.columns]
    rows = [
        {str(k): v for k, v in r.items()}
        for r in frame[cols].astype({"prediction_id": str}).to_dict("records")
    ]
    for row in rows:
        if "weight" in row and row["weight"] != row["weight"]:  # NaN: no weight
            row["weight"] = None
        if isinstance(row["label"], np.generic):
            row["label"] = row["label"].item()
    return rows


def label_rows(
    data: pd.DataFrame | Sequence[Mapping[str, Any]] | str | Path,
) -> list[Mapping[str, Any]]:
    """Label rows from a DataFrame, a list of dicts, or a CSV/Parquet path."""
    if isinstance(data, str | Path):
        return list(frame_rows(read_frame(data), where=str(data)))
    if isinstance(data, pd.DataFrame):
        return list(frame_rows(data))
    if isinstance(data, list | tuple):
        return list(data)
    raise InvalidInputError(
        "labels must be a DataFrame, a list of {'prediction_id': ..., 'label': ...} dicts, "
        f"or a CSV/Parquet path, not {type(data).__name__}"
    )


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


def _logged_versions(root: Path, model: str, ids: pa.Array) -> np.ndarray:
    """The version that made each prediction id (-1 where the id is not in the log)."""
    out = np.full(len(ids), -1, dtype=np.int64)
    times = [id_time(i) for i in ids.to_pylist()]
    valid = [t for t in times if t is not None]
    if not valid:
        return out
    start = min(valid).replace(hour=0, minute=0, second=0, microsecond=0)
    end = max(valid) + timedelta(days=1)
    logged = predlog.read_window(
        root, model, start=start, end=end, columns=["prediction_id", "version"]
    )
    index = pc.index_in(ids, value_set=logged["prediction_id"].combine_chunks())
    found = np.asarray(index.to_numpy(zero_copy_only=False), dtype=float)
    hit = np.isfinite(found)
    versions = logged["version"].to_numpy(zero_copy_only=False)
    out[hit] = np.nan_to_num(versions[found[hit].astype(np.int64)].astype(float), nan=0).astype(
        np.int64
    )
    return out


@dataclass(frozen=True)
class _Allowed:
    """What a version accepts as a label: its classes (by value) or any finite number."""

    task: str
    classes: dict[str, str]  # class key -> the class as text

    def describe(self) -> str:
        if self.task != "classification":
            return "a finite number (the model is a regressor)"
        return "one of the classes " + ", ".join(repr(c) for c in self.classes.values())

    def check(self, text: str, value: float | None) -> str | None:
        """The label as it is stored (the class's own text), or None when not allowed."""
        if self.task != "classification":
            return text if value is not None and math.isfinite(value) else None
        return self.classes.get(predlog.label_key(text))


def _allowed(registry: Registry, model: str, version: int) -> _Allowed | None:
    try:
        v = registry.get_version(f"{model}@{version}")
    except NotFoundError:
        return None
    sig = v.signature
    classes: Sequence[Any] | None = sig.classes
    if sig.task == "classification" and not classes and v.profile_digest is not None:
        pred = registry.load_profile(v.ref).prediction
        classes = pred.classes if isinstance(pred, ClassificationProfile) else None
    if sig.task != "classification":
        return _Allowed(sig.task, {})
    if not classes:
        return None  # a classifier whose classes were never recorded: nothing to check against
    return _Allowed(sig.task, {predlog.label_key(c): predlog.label_key(c) for c in classes})


def _model_allowed(allowed: Mapping[int, _Allowed | None]) -> _Allowed | None:
    """The model-wide rule when every version agrees (for ids not in the log)."""
    rules = list(allowed.values())
    if not rules or any(r is None for r in rules) or any(r != rules[0] for r in rules):
        return None
    return rules[0]


def _checked(registry: Registry, model: str, table: pa.Table, versions: np.ndarray) -> pa.Table:
    """``table`` with labels in their class's text; InvalidInputError naming every bad one."""
    rules: dict[int, _Allowed | None] = {
        int(v): _allowed(registry, model, int(v)) for v in np.unique(versions) if v >= 0
    }
    if not (versions >= 0).all():
        for mv in registry.list_versions(model):
            rules.setdefault(mv.version, _allowed(registry, model, mv.version))
    fallback = _model_allowed(rules)
    texts = table["label"].to_pylist()
    values = table["label_value"].to_pylist()
    ids = table["prediction_id"].to_pylist()
    stored: list[str] = []
    bad: list[tuple[str, str, _Allowed, int | None]] = []
    for pid, text, value, v in zip(ids, texts, values, versions.tolist(), strict=True):
        rule = rules.get(v) if v >= 0 else fallback
        if rule is None:
            stored.append(text)
            continue
        checked = rule.check(text, value)
        if checked is None:
            bad.append((pid, text, rule, v if v >= 0 else None))
        stored.append(text if checked is None else checked)
    if bad:
        raise InvalidInputError(_bad_labels(model, bad))
    return table.set_column(
        table.schema.get_field_index("label"), "label", pa.array(stored, pa.string())
    )


def _bad_labels(model: str, bad: Sequence[tuple[str, str, _Allowed, int | None]]) -> str:
    shown = "; ".join(
        f"{text!r} for prediction {pid}"
        + (f" (made by {model}@{v})" if v is not None else "")
        + f": must be {rule.describe()}"
        for pid, text, rule, v in bad[:5]
    )
    more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
    return (
        f"{len(bad)} label(s) of '{model}' are not allowed, nothing was stored: {shown}{more}; "
        "fix them and send the batch again"
    )


def _audit_body(
    received: int, stored: int, replaced_ids: Sequence[str], unknown: Sequence[str]
) -> dict[str, Any]:
    return {
        "received": received,
        "stored": stored,
        "replaced": len(replaced_ids),
        "replaced_ids": list(replaced_ids[:_SHOWN]),
        "unknown": len(unknown),
        "unknown_ids": list(unknown[:_SHOWN]),
    }


@dataclass(frozen=True)
class _Prepared:
    """One model's checked labels: the rows to store, the ids they relabel, the unknown ids."""

    model: str
    received: int
    table: pa.Table
    replaced_ids: list[str]
    unknown: list[str]

    def report(self) -> LabelReport:
        return LabelReport(
            self.model, self.received, self.table.num_rows, len(self.replaced_ids), self.unknown
        )


def _prepare(registry: Registry, root: Path, model: str, table: pa.Table) -> _Prepared:
    validate_name("model", model)
    owner = registry.get_model(model).owner
    registry.acting.check("label.write", owner, target=f"model:{model}")
    received = table.num_rows
    ids = table["prediction_id"].combine_chunks()
    versions = _logged_versions(root, model, ids) if received else np.zeros(0, dtype=np.int64)
    table = _checked(registry, model, table, versions)
    known = versions >= 0
    unknown = [pid for pid, ok in zip(ids.to_pylist(), known, strict=True) if not ok]
    table = table.filter(pa.array(known))
    kept = table["prediction_id"].to_pylist()
    seen = predlog.labelled_ids(root, model, kept)
    replaced_ids: list[str] = []
    for pid in kept:
        if pid in seen:
            replaced_ids.append(pid)
        seen.add(pid)
    return _Prepared(model, received, table, replaced_ids, unknown)


def record_labels(registry: Registry, root: Path, model: str, table: pa.Table) -> LabelReport:
    """Store labels for logged predictions of ``model``; unknown ids are reported, not stored.

    Each label must be one of the classes of the version that made its prediction (compared by
    value: 1, 1.0 and "1" are one class) or, for a regressor, a finite number; otherwise
    InvalidInputError names the bad labels and the allowed values, and nothing is stored.
    A later label for the same prediction id wins (within the batch and over earlier batches).
    The label files become visible only after the batch's audit row committed.
    """
    return record_label_batches(registry, root, [(model, table)])[0]


def record_label_batches(
    registry: Registry, root: Path, batches: Sequence[tuple[str, pa.Table]]
) -> list[LabelReport]:
    """:func:`record_labels` for several models at once: every batch is checked before any is
    stored, and all audit rows commit in one transaction before any label becomes visible."""
    prepared = [_prepare(registry, root, model, table) for model, table in batches]
    now = registry.clock.now()
    staged: list[predlog.StagedLabels] = []
    try:
        for p in prepared:
            if p.table.num_rows:
                staged.append(predlog.stage_labels(root, p.model, p.table))
        with registry.store.write() as conn:
            for p in prepared:
                registry.store.audit(
                    conn,
                    at=now,
                    actor=registry.actor.name,
                    action="label.write",
                    target=f"model:{p.model}",
                    model=p.model,
                    after=_audit_body(p.received, p.table.num_rows, p.replaced_ids, p.unknown),
                )
    except BaseException:
        for s in staged:
            s.discard()
        raise
    for s in staged:
        s.publish()
    return [p.report() for p in prepared]
