"""The loop back into the gate: labelled production rows exported as an eval set.

The export holds the predictions of a window that have a label: the logged inputs (named as the
model takes them), the label (named as the model's target, so a suite finds it), what the model
answered, flags for low-confidence and misclassified rows, and the label's sampling weight. Beside
it goes a suite that gates the next candidate on those rows against the version that served them.

>>> done = ws.feedback.export_evalset("churn", Path("evals/prod.parquet"))  # doctest: +SKIP
>>> done.rows, done.misclassified, done.suite_path  # doctest: +SKIP
(1240, 131, PosixPath('evals/prod.yaml'))
"""

from __future__ import annotations

import os
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

from ownloop import predlog
from ownloop._files import create_private
from ownloop.access import Acting, Actor, action
from ownloop.artifacts import fsync_path
from ownloop.clock import Clock
from ownloop.config import Config
from ownloop.errors import AlreadyExistsError, InvalidInputError
from ownloop.evaluation import parse_suite
from ownloop.monitoring import Monitor, select_arms
from ownloop.monitoring._monitor import LOW_CONFIDENCE
from ownloop.profile import ClassificationProfile
from ownloop.registry import ModelVersion, Registry

__all__ = ["FORMATS", "LOW_CONFIDENCE", "NON_INFERIORITY_MARGIN", "EvalsetExport", "Feedback"]

FORMATS = {".parquet": "parquet", ".csv": "csv"}
# The suite's check: the candidate's accuracy on these rows may trail the serving version's by at
# most this much (McNemar, paired on the same rows). Two points: a retrain that fixes the failures
# it was built for should not give back more than that elsewhere on the same traffic.
NON_INFERIORITY_MARGIN = 0.02
# For a regressor the margin is relative: this share of the serving version's MAE on the rows.
REGRESSION_MARGIN_SHARE = 0.05
WEIGHT = "weight"
_SUITE_SUFFIXES = (".yaml", ".yml")
_LOG_COLUMNS = ["prediction_id", "version", "arm", "status"]
_ROW_COLUMNS = [*_LOG_COLUMNS, "ts", "prediction", "prediction_value", "confidence"]


@dataclass(frozen=True)
class EvalsetExport:
    """What an export wrote: where, how many rows of how many predictions, and what they hold."""

    model: str
    path: Path
    suite_path: Path
    format: str
    rows: int  # labelled predictions written, one row each
    predictions: int  # answered predictions in the window (labelled or not)
    start: datetime
    end: datetime
    arms: tuple[str, ...]
    versions: dict[int, int]  # version -> rows it answered
    task: str
    label_column: str
    weight_column: str
    weighted: int  # rows whose label carried a sampling weight (the others weigh 1)
    low_confidence: int | None  # classifiers: rows whose max probability < LOW_CONFIDENCE
    misclassified: int | None  # classifiers: rows whose label differs from the prediction
    mean_abs_error: float | None  # regressors: mean |label - prediction|
    baseline: int  # the version the suite compares a candidate with
    columns: tuple[str, ...] = field(default_factory=tuple)

    @property
    def since(self) -> timedelta:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "path": str(self.path),
            "suite_path": str(self.suite_path),
            "format": self.format,
            "rows": self.rows,
            "predictions": self.predictions,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "arms": list(self.arms),
            "versions": {str(v): n for v, n in self.versions.items()},
            "task": self.task,
            "label_column": self.label_column,
            "weight_column": self.weight_column,
            "weighted": self.weighted,
            "low_confidence": self.low_confidence,
            "misclassified": self.misclassified,
            "mean_abs_error": self.mean_abs_error,
            "baseline": self.baseline,
            "columns": list(self.columns),
        }


@dataclass(frozen=True)
class _Window:
    model: str
    start: datetime
    end: datetime
    version: int | None
    arms: tuple[str, ...]

    def describe(self) -> str:
        what = f"'{self.model}'" + ("" if self.version is None else f" version {self.version}")
        arms = " and ".join(self.arms)
        return (
            f"{what} ({arms} arm{'s' if len(self.arms) > 1 else ''}) from "
            f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC"
        )


@dataclass(frozen=True)
class _Labelled:
    """The answered predictions of a window, and the latest label of each labelled one."""

    predictions: int
    labels: pa.Table  # latest label per prediction id, of the window's predictions only
    label_count: int  # labels stored for the model, any window
    versions: tuple[int, ...] = ()  # the versions that answered the labelled predictions


class Feedback:
    """Export labelled production rows as an eval set, so the next candidate is gated on them."""

    def __init__(
        self,
        registry: Registry,
        monitor: Monitor,
        config: Config,
        clock: Clock,
        actor: Actor | Acting,
    ) -> None:
        self.registry = registry
        self.monitor = monitor
        self.config = config
        self.clock = clock
        self.acting = Acting.of(actor)

    @property
    def actor(self) -> Actor:
        """Who acts now: the request's actor, else the workspace's."""
        return self.acting.actor

    @action("label.read")
    def labelled_count(
        self, model: str, *, since: timedelta = timedelta(days=7), end: datetime | None = None
    ) -> int:
        """How many answered predictions of the window (stable and canary arms) have a label."""
        owner = self.registry.get_model(model).owner
        self.acting.check("label.read", owner, target=f"model:{model}")
        window = self._window(model, since, end, None, None)
        return int(self._labelled(window).labels.num_rows)

    @action("evalset.export")
    def export_evalset(
        self,
        model: str,
        out: str | Path,
        *,
        since: timedelta = timedelta(days=7),
        end: datetime | None = None,
        version: int | None = None,
        arm: str | None = None,
        suite_out: str | Path | None = None,
        force: bool = False,
    ) -> EvalsetExport:
        """Write the labelled predictions of ``[end - since, end)`` to ``out`` and a suite beside it.

        The format follows the suffix (.parquet or .csv); the suite goes to ``suite_out`` (default:
        ``out`` with the suffix .yaml). Neither file is overwritten unless ``force``. A window
        without labelled predictions is an InvalidInputError and writes nothing.

        >>> ws.feedback.export_evalset("churn", "evals/prod.parquet", since=timedelta(days=1))  # doctest: +SKIP
        """
        owner = self.registry.get_model(model).owner
        self.acting.check("evalset.export", owner, target=f"model:{model}")
        out = Path(out)
        suite = Path(suite_out) if suite_out is not None else out.with_suffix(".yaml")
        fmt = _format_of(out)
        _check_suite_path(suite, out)
        for path, option in ((out, "--out"), (suite, "--suite-out")):
            _check_target(path, option, force)
        if version is not None:
            self.registry.get_version(f"{model}@{version}")
        window = self._window(model, since, end, version, arm)
        found = self._labelled(window)
        if found.labels.num_rows == 0:
            raise InvalidInputError(_nothing_labelled(window, found))
        table, done = self._build(window, found, out, suite, fmt)
        staged = [_stage_table(table, out, fmt)]
        try:
            staged.append(_stage_text(_suite_text(done, out, suite, table), suite))
            with self.registry.store.write() as conn:
                self.registry.store.audit(
                    conn,
                    at=self.clock.now(),
                    actor=self.actor.name,
                    action="evalset.export",
                    target=f"model:{model}",
                    model=model,
                    after=_audit_body(done),
                )
        except BaseException:
            for tmp in staged:
                tmp.unlink(missing_ok=True)
            raise
        _publish(staged[0], out, force, "--out", also=staged[1:])
        _publish(staged[1], suite, force, "--suite-out", undo=None if force else out)
        return done

    # -- reading ------------------------------------------------------------------------------

    def _window(
        self,
        model: str,
        since: timedelta,
        end: datetime | None,
        version: int | None,
        arm: str | None,
    ) -> _Window:
        if since <= timedelta(0):
            raise InvalidInputError(f"--since {since} must be positive, e.g. 7d")
        end = end or self.clock.now()
        if end.tzinfo is None:
            raise InvalidInputError(f"end {end.isoformat()} has no time zone; pass an aware time")
        return _Window(model, end - since, end, version, select_arms(arm))

    def _labelled(self, window: _Window) -> _Labelled:
        root = self.config.predictions_dir
        read = predlog.read_log(
            root,
            window.model,
            version=window.version,
            start=window.start,
            end=window.end,
            arm=window.arms[0] if len(window.arms) == 1 else None,
            columns=_LOG_COLUMNS,
        )
        answered = _answered(read.table, window.arms)
        labels = predlog.read_labels(root, window.model)
        if answered.num_rows == 0 or labels.num_rows == 0:
            return _Labelled(answered.num_rows, labels.slice(0, 0), labels.num_rows)
        mine = labels.filter(pc.is_in(labels["prediction_id"], value_set=answered["prediction_id"]))
        hit = pc.is_in(answered["prediction_id"], value_set=mine["prediction_id"])
        versions = pc.unique(answered["version"].filter(hit)).drop_null().to_pylist()
        return _Labelled(answered.num_rows, mine, labels.num_rows, tuple(sorted(versions)))

    def _version_rows(self, window: _Window, v: ModelVersion, ids: pa.Array) -> pa.Table:
        """The logged rows of ``ids`` that version ``v`` answered, its inputs in their logged types."""
        schema = predlog.prediction_schema(v.signature)
        inputs = [f"in.{f.name}" for f in v.signature.features]
        read = predlog.read_log(
            self.config.predictions_dir,
            window.model,
            version=v.version,
            start=window.start,
            end=window.end,
            arm=window.arms[0] if len(window.arms) == 1 else None,
            columns=[*_ROW_COLUMNS, *inputs],
            schema=schema,
        )
        table = _answered(read.table, window.arms).drop_columns(["status"])
        table = table.filter(pc.is_in(table["prediction_id"], value_set=ids))
        return table.rename_columns([c.removeprefix("in.") for c in table.column_names])

    # -- building -----------------------------------------------------------------------------

    def _build(
        self, window: _Window, found: _Labelled, out: Path, suite: Path, fmt: str
    ) -> tuple[pa.Table, EvalsetExport]:
        ids = found.labels["prediction_id"].combine_chunks()
        versions = [
            self.registry.get_version(f"{window.model}@{n}") for n in reversed(found.versions)
        ]
        newest = versions[0]
        tasks = {v.signature.task for v in versions}
        if len(tasks) > 1:
            raise InvalidInputError(
                f"the labelled rows of {window.describe()} were answered by versions of different "
                f"tasks ({', '.join(sorted(tasks))}); export one with --version N"
            )
        parts = [self._version_rows(window, v, ids) for v in versions]
        try:
            rows = pa.concat_tables(parts, promote_options="permissive")
        except pa.ArrowInvalid as exc:
            raise InvalidInputError(
                f"versions {', '.join(str(v.version) for v in versions)} of '{window.model}' log a "
                f"feature with different types ({str(exc).splitlines()[0]}); export one with "
                "--version N"
            ) from exc
        rows = predlog.join_labels(rows, found.labels)
        rows = rows.sort_by([("ts", "ascending"), ("prediction_id", "ascending")])
        features = _feature_order(versions)
        label = newest.signature.target or "label"
        if label in features:
            label = _unique("label", set(features))
        if newest.signature.task == "regression":
            body, flags = _regression_columns(rows)
        else:
            body, flags = _classification_columns(rows, self._classes(newest))
        table = _assemble(rows, features, label, body)
        counts = Counter(rows["version"].to_pylist())
        served = {int(v): counts[v] for v in sorted(counts)}
        weights = rows["weight"]
        done = EvalsetExport(
            model=window.model,
            path=out,
            suite_path=suite,
            format=fmt,
            rows=table.num_rows,
            predictions=found.predictions,
            start=window.start,
            end=window.end,
            arms=window.arms,
            versions=served,
            task=newest.signature.task,
            label_column=label,
            weight_column=_unique(WEIGHT, {*features, label}),
            weighted=len(weights) - weights.null_count,
            low_confidence=flags.get("low_confidence"),
            misclassified=flags.get("misclassified"),
            mean_abs_error=flags.get("mean_abs_error"),
            baseline=max(served, key=lambda v: (served[v], v)),
            columns=tuple(table.column_names),
        )
        return table, done

    def _classes(self, v: ModelVersion) -> tuple[Any, ...]:
        """The classes of a version, from its signature or else its reference profile."""
        if v.signature.classes:
            return tuple(v.signature.classes)
        if v.profile_digest is not None:
            pred = self.registry.load_profile(v.ref).prediction
            if isinstance(pred, ClassificationProfile) and pred.classes:
                return tuple(pred.classes)
        return ()


# -- the window ---------------------------------------------------------------------------------


def _answered(table: pa.Table, arms: Sequence[str]) -> pa.Table:
    """The rows answered (status ok) by ``arms``; a row without an arm is stable."""
    if table.num_rows == 0:
        return table
    arm = pc.fill_null(table["arm"].cast(pa.string()), "stable")
    keep = pc.and_(
        pc.is_in(arm, value_set=pa.array(list(arms), pa.string())),
        pc.equal(table["status"], "ok"),
    )
    return table.filter(pc.fill_null(keep, False))


def _nothing_labelled(window: _Window, found: _Labelled) -> str:
    return (
        f"no labelled predictions of {window.describe()}: the window holds "
        f"{found.predictions:,} answered prediction(s) and the model has {found.label_count:,} "
        f"label(s), none for them; nothing was written. Post labels with "
        f"POST /models/{window.model}/labels or 'ownloop label import FILE', or widen --since"
    )


# -- columns ------------------------------------------------------------------------------------


def _feature_order(versions: Sequence[ModelVersion]) -> list[str]:
    """The inputs of every version, the newest version's first and in its order."""
    names: dict[str, None] = {}
    for v in versions:
        names.update(dict.fromkeys(v.signature.feature_names))
    return list(names)


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``logged_<name>`` (and so on) when a feature or the label already has it."""
    while name in taken:
        name = f"logged_{name}"
    return name


def _as_classes(keys: np.ndarray, classes: Sequence[Any]) -> pa.Array:
    """Canonical label keys as the model's own class values (1 stays an int, "yes" a string)."""
    lookup = {predlog.label_key(c): c for c in classes}
    if classes and all(k in lookup for k in keys if k is not None):
        return pa.array([None if k is None else lookup[k] for k in keys])
    return pa.array(list(keys), pa.string())


def _classification_columns(
    rows: pa.Table, classes: Sequence[Any]
) -> tuple[dict[str, pa.Array], dict[str, Any]]:
    label = predlog.label_keys(rows["label"].to_pylist())
    pred = predlog.label_keys(rows["prediction"].to_pylist())
    wrong = np.asarray([a != b for a, b in zip(label, pred, strict=True)], dtype=bool)
    conf = rows["confidence"].to_numpy(zero_copy_only=False).astype(float)
    low = np.nan_to_num(conf, nan=1.0) < LOW_CONFIDENCE
    body = {
        "label": _as_classes(label, classes),
        "prediction": _as_classes(pred, classes),
        "confidence": pa.array(conf, pa.float64(), from_pandas=True),
        "low_confidence": pa.array(low),
        "misclassified": pa.array(wrong),
    }
    return body, {"low_confidence": int(low.sum()), "misclassified": int(wrong.sum())}


def _regression_columns(rows: pa.Table) -> tuple[dict[str, pa.Array], dict[str, Any]]:
    y = rows["label_value"].to_numpy(zero_copy_only=False).astype(float)
    p = rows["prediction_value"].to_numpy(zero_copy_only=False).astype(float)
    err = np.abs(y - p)
    body = {
        "label": pa.array(y, pa.float64(), from_pandas=True),
        "prediction": pa.array(p, pa.float64(), from_pandas=True),
        "abs_error": pa.array(err, pa.float64(), from_pandas=True),
    }
    finite = err[np.isfinite(err)]
    return body, {"mean_abs_error": float(finite.mean()) if finite.size else None}


def _assemble(
    rows: pa.Table, features: list[str], label: str, body: dict[str, pa.Array]
) -> pa.Table:
    """Features, the label, then what production did; a logged column never takes a feature's name."""
    taken = set(features) | {label}
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    for f in features:
        columns[f] = rows[f]
    columns[label] = body.pop("label")
    weight = pc.fill_null(rows["weight"], 1.0)
    extra: dict[str, pa.Array | pa.ChunkedArray] = {
        **body,
        WEIGHT: weight,
        "version": rows["version"],
        "arm": pc.fill_null(rows["arm"].cast(pa.string()), "stable"),
        "prediction_id": rows["prediction_id"],
        "ts": rows["ts"],
    }
    for name, values in extra.items():
        columns[_unique(name, taken)] = values
    return pa.table(columns)


# -- files --------------------------------------------------------------------------------------


def _format_of(out: Path) -> str:
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise InvalidInputError(
            f"--out {out}: write the eval set as .parquet or .csv (the suffix picks the format)"
        )
    return fmt


def _check_suite_path(suite: Path, out: Path) -> None:
    if suite.suffix.lower() not in _SUITE_SUFFIXES:
        raise InvalidInputError(f"--suite-out {suite}: name the suite file .yaml or .yml")
    if suite.absolute() == out.absolute():
        raise InvalidInputError(f"--suite-out {suite} is the data file itself; pick another name")


def _check_target(path: Path, option: str, force: bool) -> None:
    """Refuse an output path before anything is read: a folder, a missing folder, a file kept."""
    folder = path.absolute().parent
    if not folder.is_dir():
        raise InvalidInputError(
            f"{option} {path}: folder {folder} does not exist; create it (mkdir -p {folder}) "
            "or pass a path in an existing folder"
        )
    if path.is_dir():
        raise InvalidInputError(f"{option} {path} is a folder; pass a file name")
    if path.exists() and not force:
        raise AlreadyExistsError(
            f"{option} {path} already exists; pass --force (force=True) to replace it, "
            "or pick another name"
        )


def _hidden(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")


def _unwritable(path: Path, exc: OSError) -> InvalidInputError:
    return InvalidInputError(
        f"cannot write {path} ({exc.strerror or exc}); pass a path in a folder you can write to"
    )


def _stage_table(table: pa.Table, out: Path, fmt: str) -> Path:
    """Write ``table`` under a hidden name beside ``out`` and flush it to disk."""
    tmp = _hidden(out)
    try:
        create_private(tmp)
        if fmt == "parquet":
            pq.write_table(table, str(tmp))
        else:
            pacsv.write_csv(table, str(tmp))
        fsync_path(tmp)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _unwritable(out, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _stage_text(text: str, out: Path) -> Path:
    tmp = _hidden(out)
    try:
        create_private(tmp)
        tmp.write_text(text, encoding="utf-8")
        fsync_path(tmp)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _unwritable(out, exc) from exc
    return tmp


def _publish(
    tmp: Path,
    target: Path,
    force: bool,
    option: str,
    *,
    also: Sequence[Path] = (),
    undo: Path | None = None,
) -> None:
    """Give ``tmp`` its final name; without ``force`` never replace a file made meanwhile.

    On failure the hidden files (``tmp`` and ``also``) are removed, and ``undo`` (a file this
    export has just published) too, so a failed export leaves nothing behind.
    """
    try:
        if force:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)  # fails if the name exists: no race with another writer
            tmp.unlink()
        fsync_path(target.absolute().parent)
    except BaseException as exc:
        for path in (tmp, *also):
            path.unlink(missing_ok=True)
        if undo is not None:
            undo.unlink(missing_ok=True)
        if isinstance(exc, FileExistsError):
            raise AlreadyExistsError(
                f"{option} {target} appeared while exporting; pass --force to replace it"
            ) from exc
        if isinstance(exc, OSError):
            raise _unwritable(target, exc) from exc
        raise


# -- the suite ----------------------------------------------------------------------------------


def _dataset_path(data: Path, suite: Path) -> str:
    """The data file as the suite names it: relative to the suite's folder when possible."""
    try:
        return os.path.relpath(data.absolute(), suite.absolute().parent)
    except ValueError:  # another drive
        return str(data.absolute())


def _suite_check(done: EvalsetExport) -> dict[str, Any]:
    if done.task == "regression":
        mae = done.mean_abs_error or 0.0
        margin = float(f"{mae * REGRESSION_MARGIN_SHARE:.3g}")
        return {"type": "non_inferiority", "metric": "mae", "margin": margin}
    return {"type": "non_inferiority", "metric": "accuracy", "margin": NON_INFERIORITY_MARGIN}


def _suite_text(done: EvalsetExport, out: Path, suite: Path, table: pa.Table) -> str:
    """A suite that gates a candidate on the exported rows against the version that served them."""
    dataset: dict[str, Any] = {"path": _dataset_path(out, suite), "label": done.label_column}
    features = done.columns[: done.columns.index(done.label_column)]
    if any(table[f].null_count for f in features):
        dataset["nan_policy"] = "keep"  # production answered these rows with the gaps in them
    body = {
        "baseline": done.baseline,
        "datasets": {"production": dataset},
        "checks": [_suite_check(done)],
    }
    served = ", ".join(f"v{v}: {n:,}" for v, n in done.versions.items())
    header = [
        f"Labelled production rows of {done.model}, {done.start:%Y-%m-%d %H:%M} to "
        f"{done.end:%Y-%m-%d %H:%M} UTC",
        f"({' and '.join(done.arms)} arms; rows per version {served}), written by",
        "'ownloop export-evalset'. Gate a candidate on them with",
        f"  ownloop eval {done.model}@N --suite {suite}",
        "baseline: the version that answered most of the rows (--baseline overrides it).",
        f"Column '{done.weight_column}' holds each label's sampling weight (1 when the row was",
        "labelled without 'ownloop sample'); suites do not weight rows yet, so every row counts once.",
    ]
    text = "".join(f"# {line}\n" for line in header) + yaml.safe_dump(body, sort_keys=False)
    parse_suite(text, base=suite.absolute().parent, source=str(suite))  # what eval will read
    return text


def _audit_body(done: EvalsetExport) -> dict[str, Any]:
    return {
        key: value
        for key, value in done.to_dict().items()
        if key not in ("columns", "label_column", "weight_column", "format")
    }
