"""One loaded model version (digest checked), predicted on numpy columns."""

from __future__ import annotations

import copy
import logging
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ownloop import needs, predlog
from ownloop.errors import (
    EnvironmentMismatchError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    NotReadyError,
)
from ownloop.names import VersionRef
from ownloop.registry import ModelVersion, Registry
from ownloop.server._decode import V2_TYPE, Columns
from ownloop.signature import Feature, Signature

__all__ = [
    "Prediction",
    "ServedModel",
    "load_version",
    "public_reason",
    "redact_paths",
    "refused_block",
]

log = logging.getLogger("ownloop.server")


@dataclass
class Prediction:
    """Outputs of one batch: values for the response, arrays for the log and metrics."""

    values: list[Any]
    probabilities: np.ndarray | None
    picked: np.ndarray | None
    confidence: np.ndarray | None
    numeric: np.ndarray | None


@dataclass
class ServedModel:
    name: str
    version: int
    owner: str
    signature: Signature
    model: Any = None
    reason: str | None = None
    unsafe_pickle: bool = False  # registered as a pickle by explicit opt-in: shown in metadata
    schema: pa.Schema = field(init=False)
    classes: np.ndarray | None = field(init=False)
    class_text: list[str] | None = field(init=False)
    _frame: bool = field(init=False)
    _scorer: Any = field(init=False)
    _order: list[Feature] = field(init=False)
    _class_text: np.ndarray = field(init=False)
    _inputs: dict[str, str] = field(init=False)
    _matrix_columns: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.schema = predlog.prediction_schema(self.signature)
        sig = self.signature
        classifier = sig.task == "classification" and sig.classes is not None
        self.classes = np.array(sig.classes, dtype=object) if classifier else None
        self.class_text = [str(c) for c in sig.classes] if classifier and sig.classes else None
        self._class_text = np.array(self.class_text or [], dtype=object)
        self._inputs = {f.name: f"in.{f.name}" for f in sig.features}
        self._matrix_columns = tuple(self._inputs.values())
        self._scorer = self.model
        self._order = _model_order(self.model, sig)
        self._frame = self._needs_frame()

    @property
    def frame_input(self) -> bool:
        """Whether requests reach the model as a DataFrame (else as one NumPy array)."""
        return self._frame

    def _needs_frame(self) -> bool:
        """Decide once whether the model needs a DataFrame; if not, score a NumPy array.

        A plain estimator fitted on a DataFrame only checks the column names it was fitted with;
        when they are the signature's order it is scored through a copy without the names (which
        would otherwise warn on every array), provided both give the same answers on probe rows.
        A model that selects columns by name (a pipeline) or has text inputs keeps the DataFrame.
        """
        features = self.signature.features
        if self.model is None:
            return False
        if any(f.type not in _NUMERIC for f in features):
            return True
        names = getattr(self.model, "feature_names_in_", None)
        if names is None:
            return False
        if [str(n) for n in names] != [f.name for f in features] or not _plain(self.model):
            return True
        bare = _without_names(self.model)
        if bare is None or not self._same_answers(bare):
            return True
        self._scorer = bare
        return False

    def _same_answers(self, bare: Any) -> bool:
        """Both inputs on probe rows: identical outputs and no warning, or keep the DataFrame."""
        x = np.asfortranarray(
            [[0.0] * len(self.signature.features), [1.0] * len(self.signature.features)]
        )
        frame = self._frame_of({f.name: x[:, i] for i, f in enumerate(self.signature.features)})
        method = "predict_proba" if self.classes is not None else "predict"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                want = getattr(self.model, method)(frame)
                got = getattr(bare, method)(x)
            except (Warning, ValueError, TypeError, AttributeError):
                return False
        return bool(np.array_equal(np.asarray(want), np.asarray(got)))

    @property
    def ready(self) -> bool:
        return self.model is not None

    def key(self, arm: str = "stable") -> tuple[str, str, str, str]:
        return (self.name, str(self.version), arm, self.owner)

    def require_ready(self) -> None:
        if self.model is None:
            raise NotReadyError(
                f"model '{self.name}' version {self.version} is not ready: {self.reason}"
            )

    def metadata(self) -> dict[str, Any]:
        """Open Inference Protocol model metadata, from the signature."""
        inputs = [
            {"name": f.name, "datatype": V2_TYPE[f.type], "shape": [-1]}
            for f in self.signature.features
        ]
        outputs: list[dict[str, Any]] = [
            {"name": "predictions", "datatype": self.output_datatype, "shape": [-1]},
            {"name": "prediction_ids", "datatype": "BYTES", "shape": [-1]},
        ]
        if self.classes is not None:
            outputs.insert(
                1, {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(self.classes)]}
            )
        return {
            "name": self.name,
            "versions": [str(self.version)],
            "platform": "ownloop",
            "inputs": inputs,
            "outputs": outputs,
            "parameters": {
                "owner": self.owner,
                "task": self.signature.task,
                "classes": None if self.classes is None else list(self.signature.classes or ()),
                "unsafe_pickle": self.unsafe_pickle,
            },
        }

    @property
    def output_datatype(self) -> str:
        if self.classes is None:
            return "FP64"
        kinds = {type(c) for c in self.classes}
        if kinds <= {int}:
            return "INT64"
        if kinds <= {bool}:
            return "BOOL"
        return "BYTES"

    def _frame_of(self, columns: dict[str, np.ndarray]) -> pd.DataFrame:
        data = {}
        for f in self._order:
            arr = columns[f.name]
            if f.type == "integer" and not np.isnan(arr).any():
                arr = arr.astype(np.int64)
            data[f.name] = arr
        return pd.DataFrame(data, copy=False)

    def _model_input(self, cols: Columns) -> Any:
        if self._frame:
            return self._frame_of(cols.data)
        x = cols.matrix
        if x is None:
            x = np.column_stack([cols.data[f.name] for f in self.signature.features])
        if self._scorer is not self.model:
            # column-major, as a DataFrame hands its values to the model: a linear model then
            # sums in the same order and gives the same bits (a single row needs no copy)
            x = np.asfortranarray(x)
        return x

    def predict(self, cols: Columns) -> Prediction:
        """Run the model; a model that rejects validated input is the caller's 400, not a 500."""
        self.require_ready()
        x = self._model_input(cols)
        try:
            if self.classes is not None:
                proba = np.asarray(self._scorer.predict_proba(x), dtype=np.float64)
                picked = proba.argmax(axis=1)
                return Prediction(
                    self.classes[picked].tolist(), proba, picked, proba.max(axis=1), None
                )
            values = np.asarray(self._scorer.predict(x), dtype=np.float64).reshape(-1)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(
                f"model '{self.name}' version {self.version} could not score the input: {exc}"
            ) from exc
        return Prediction(values.tolist(), None, None, None, values)

    def log_block(
        self,
        cols: Columns,
        out: Prediction | None,
        ids: list[str],
        *,
        ts_us: int,
        request_id: str,
        arm: str,
        latency_s: float,
        cpu_s: float,
    ) -> predlog.Block:
        """The log rows of one request (``out`` None: the model failed), for the writer to build."""
        n = cols.n
        columns: dict[str, Any] = {
            "prediction_id": ids,
            "ts": ts_us,
            "model": self.name,
            "version": self.version,
            "arm": arm,
            "request_id": request_id,
            "status": "ok" if out is not None else "error",
            "latency_s": latency_s / n,
            "cpu_s": cpu_s / n,
        }
        # every column is named (None for null) so the writer can transpose blocks in one pass
        if out is None:  # the model failed: inputs only, outputs null
            columns.update(prediction=None, prediction_value=None, confidence=None, proba=None)
        elif out.probabilities is not None and self.class_text is not None:
            columns["prediction"] = self._class_text[out.picked]
            columns["prediction_value"] = None
            columns["confidence"] = out.confidence
            columns["proba"] = out.probabilities
        else:
            columns["prediction"] = np.asarray(out.numeric).astype(str).astype(object)
            columns["prediction_value"] = out.numeric
            columns["confidence"] = None
            columns["proba"] = None
        if cols.matrix is not None:  # all-number inputs in signature order: kept as one array
            return predlog.Block(self.schema, n, columns, cols.matrix, self._matrix_columns)
        for f in self.signature.features:
            columns[self._inputs[f.name]] = cols.data[f.name]
        return predlog.Block(self.schema, n, columns)


_NUMERIC = ("float", "integer", "boolean")


def _model_order(model: Any, signature: Signature) -> list[Feature]:
    """The features in the order the model was fitted with (else the signature's order)."""
    fitted = getattr(model, "feature_names_in_", None)
    names = [] if fitted is None else [str(n) for n in fitted]
    if sorted(names) != sorted(signature.feature_names):
        return list(signature.features)
    return [signature.feature(n) for n in names]


def _estimators_in(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_estimators_in(v) for v in value)
    return hasattr(value, "fit")


def _plain(model: Any) -> bool:
    """One estimator: no sub-estimator among its parameters, no categorical inputs."""
    get_params = getattr(model, "get_params", None)
    categorical = getattr(model, "is_categorical_", None)
    if get_params is None or (categorical is not None and np.any(categorical)):
        return False
    return not any(_estimators_in(v) for v in get_params(deep=False).values())


def _without_names(model: Any) -> Any:
    """A shallow copy (sharing the fitted state) without ``feature_names_in_``, or None."""
    bare = copy.copy(model)
    try:
        del bare.feature_names_in_
    except AttributeError:  # a read-only property (another library): keep the DataFrame
        return None
    return bare


def load_version(
    registry: Registry, name: str, version: int, *, allow_mismatch: bool = False
) -> ServedModel:
    """``name`` at ``version``, digest checked; one that fails to load is not ready, with why.

    A version whose needs this environment does not meet (a different scikit-learn minor, a
    missing library) is not ready either, unless ``allow_mismatch``: then it loads, and the
    mismatch is logged and audited.
    """
    found = registry.get_version(VersionRef(name, version=version))
    entry = ServedModel(
        found.model, found.version, found.owner, found.signature, unsafe_pickle=found.unsafe_pickle
    )
    try:
        mismatches = needs.require_runnable(found, force=allow_mismatch)
        if any(m.blocking for m in mismatches):
            _allowed_mismatch(registry, found, mismatches)
        entry.model = registry.load(found.ref)
        entry.__post_init__()
    except Exception as exc:  # one model's failure (any kind) must not stop the others
        entry.model = None
        entry.reason = public_reason(found, exc)
        # the full error (paths, traceback) stays in the server's own log
        log.error("model %s is not ready and will not serve: %s", found.ref, exc, exc_info=exc)
    else:
        unsafe = ", an UNSAFE pickle (opted in)" if found.unsafe_pickle else ""
        log.info("loaded %s (owner %s%s)", found.ref, found.owner, unsafe)
    return entry


def _allowed_mismatch(
    registry: Registry, version: ModelVersion, mismatches: list[needs.Mismatch]
) -> None:
    texts = [m.text(version.ref) for m in mismatches if m.blocking]
    log.warning("serving %s despite its needs (allowed): %s", version.ref, "; ".join(texts))
    with registry.store.write() as conn:
        registry.store.audit(
            conn,
            at=registry.clock.now(),
            actor=registry.actor.name,
            action="serve.env_mismatch",
            target=version.ref,
            model=version.model,
            after={"mismatches": [m.to_dict() for m in mismatches]},
        )


_DIGEST = re.compile(r"\b[0-9a-f]{64}\b")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\\/\s'\"]+){2,}[\\/]?")


def public_reason(version: ModelVersion, exc: BaseException) -> str:
    """Why ``version`` is not ready, for HTTP answers: model, version and digests, never a path."""
    what = f"model '{version.model}' version {version.version}"
    recorded = version.artifact_digest
    if isinstance(exc, IntegrityError):
        found = next((d for d in _DIGEST.findall(str(exc)) if d != recorded), None)
        return (
            f"{what}: its artifact was altered on disk (registered sha256 {recorded}, found "
            f"{'sha256 ' + found if found else 'a different digest'}); it will not be loaded. "
            "Restore the artifact from backup or register the model again"
        )
    if isinstance(exc, EnvironmentMismatchError):
        texts = [m.text(version.ref) for m in exc.mismatches if m.blocking]
        return (
            f"{what} cannot run in this server's environment: {'; '.join(texts)}; or start the "
            "server with --allow-env-mismatch (logged and audited)"
        )
    if isinstance(exc, NotFoundError):
        return (
            f"{what}: its artifact (sha256 {recorded}) is missing from the artifacts folder; "
            "restore it from backup"
        )
    detail = redact_paths(str(exc).splitlines()[0] if str(exc) else "")
    return (
        f"{what} (sha256 {recorded}) could not be loaded: {type(exc).__name__}: {detail}; "
        "the server log has the details"
    )


def redact_paths(text: str) -> str:
    """``text`` with every file-system path replaced by ``<path>`` (for answers over HTTP)."""
    return _PATH.sub("<path>", text)


def refused_block(
    entry: ServedModel,
    ids: list[str],
    *,
    ts_us: int,
    request_id: str,
    latency_s: float,
    cpu_s: float,
    arm: str = "stable",
) -> predlog.Block:
    """The one log row of a refused request: who and when, no inputs and no outputs."""
    columns: dict[str, Any] = dict.fromkeys(entry.schema.names)
    columns.update(
        prediction_id=ids,
        ts=ts_us,
        model=entry.name,
        version=entry.version,
        arm=arm,
        request_id=request_id,
        status="refused",
        latency_s=latency_s,
        cpu_s=cpu_s,
    )
    return predlog.Block(entry.schema, len(ids), columns)
