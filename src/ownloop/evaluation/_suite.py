"""The suite file: datasets, checks, slices and settings, parsed with line numbers in errors.

See docs/eval-suite.md for the format with a complete example.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ownloop.errors import InvalidInputError, NotFoundError
from ownloop.evaluation._metrics import metric_def

__all__ = [
    "CHECK_TYPES",
    "CheckSpec",
    "DatasetSpec",
    "SliceSpec",
    "Suite",
    "load_suite",
    "parse_suite",
]

CHECK_TYPES = (
    "metric",
    "non_inferiority",
    "superiority",
    "pass_rate",
    "invariance",
    "directional",
    "latency",
    "model_size",
)
NAN_POLICIES = ("error", "drop", "keep")
_LINE = "__line__"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    path: Path
    label: str | None
    nan_policy: str = "error"


@dataclass(frozen=True)
class SliceSpec:
    """Slice by every value of a category column, or by numeric ranges [edge_i, edge_i+1)."""

    column: str
    edges: tuple[float, ...] | None = None


@dataclass(frozen=True)
class CheckSpec:
    type: str
    name: str
    dataset: str | None = None
    metric: str | None = None
    at_least: float | None = None
    at_most: float | None = None
    margin: float = 0.0
    baseline: str | None = None
    feature: str | None = None
    values: tuple[Any, ...] = ()
    delta: float | None = None
    direction: str = "increase"
    tolerance: float = 0.0
    rows: int = 200
    sliced: bool = True
    cases: tuple[dict[str, Any], ...] = ()
    line: int | None = None

    def where(self) -> str:
        at = f" (line {self.line})" if self.line else ""
        return f"check '{self.name}'{at}: "


@dataclass(frozen=True)
class Suite:
    datasets: dict[str, DatasetSpec]
    checks: tuple[CheckSpec, ...]
    slices: tuple[SliceSpec, ...] = ()
    level: float = 0.95
    min_rows: int = 30
    min_slice_rows: int = 100
    resamples: int = 1000
    seed: int = 0
    baseline: str | None = None
    positive_label: Any = None
    source: str = "(default suite)"
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """sha256 of the suite's normalised content (comments and layout do not change it)."""
        body = asdict(replace(self, source="", extras={}))
        for c in body["checks"]:
            c.pop("line", None)
        for d in body["datasets"].values():
            d["path"] = Path(d["path"]).name
        text = json.dumps(body, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, base: str | Path = ".", source: str = "(dict)"
    ) -> Suite:
        """A suite from a mapping shaped like the YAML file (dataset paths relative to ``base``)."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(
                f"suite must be a mapping with 'datasets' and 'checks', not {type(data).__name__}"
            )
        return _Parser(source, Path(base)).suite(dict(data))


class _Loader(yaml.SafeLoader):
    """A safe loader that remembers the line each mapping starts on."""


def _mapping_with_line(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping[_LINE] = node.start_mark.line + 1
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; relative dataset paths are relative to the file."""
    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"suite file {p} does not exist")
    if p.is_dir():
        raise InvalidInputError(f"suite {p} is a folder; pass the YAML file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read suite file {p}: {exc}") from exc
    return parse_suite(text, base=p.parent, source=str(p))


def parse_suite(text: str, *, base: Path = Path("."), source: str = "(suite)") -> Suite:
    """Parse suite YAML text; every error names the line and what to write instead."""
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InvalidInputError(
            f"suite {source} is not valid YAML at{line}: {exc.problem or exc}"
        ) from exc
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"suite {source} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidInputError(f"suite {source} must be a mapping with 'datasets' and 'checks'")
    return _Parser(source, base).suite(raw)


class _Parser:
    def __init__(self, source: str, base: Path) -> None:
        self.source = source
        self.base = base

    def fail(self, where: Mapping[str, Any] | None, message: str) -> InvalidInputError:
        line = f" line {where[_LINE]}" if where and _LINE in where else ""
        return InvalidInputError(f"suite {self.source}{line}: {message}")

    def suite(self, raw: dict[str, Any]) -> Suite:
        known = {
            "version", "level", "min_rows", "min_slice_rows", "bootstrap", "baseline",
            "positive_label", "datasets", "checks", "slices", _LINE,
        }  # fmt: skip
        unknown = sorted(set(map(str, raw)) - known)
        if unknown:
            raise self.fail(
                raw,
                f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known - {_LINE}))}",
            )
        level = self.number(raw, "level", 0.95)
        if not 0.5 <= level < 1:
            raise self.fail(raw, f"level {level} must be between 0.5 and 1 (e.g. 0.95)")
        boot = raw.get("bootstrap") or {}
        if not isinstance(boot, dict):
            raise self.fail(raw, "bootstrap must be a mapping like {resamples: 1000, seed: 0}")
        resamples = int(self.number(boot, "resamples", 1000))
        if not 100 <= resamples <= 100_000:
            raise self.fail(boot, f"bootstrap resamples {resamples} must be between 100 and 100000")
        datasets = self.datasets(raw)
        checks = self.checks(raw, datasets)
        return Suite(
            datasets=datasets,
            checks=checks,
            slices=self.slices(raw),
            level=level,
            min_rows=int(self.number(raw, "min_rows", 30)),
            min_slice_rows=int(self.number(raw, "min_slice_rows", 100)),
            resamples=resamples,
            seed=int(self.number(boot, "seed", 0)),
            baseline=self.text(raw, "baseline"),
            positive_label=raw.get("positive_label"),
            source=self.source,
        )

    def number(self, raw: Mapping[str, Any], key: str, default: float) -> float:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise self.fail(raw, f"'{key}' must be a number, not {value!r}")
        return float(value)

    def text(self, raw: Mapping[str, Any], key: str) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise self.fail(raw, f"'{key}' must be text, not {value!r}")
        return str(value)

    def datasets(self, raw: dict[str, Any]) -> dict[str, DatasetSpec]:
        items = raw.get("datasets")
        if not isinstance(items, dict) or not set(items) - {_LINE}:
            raise self.fail(
                raw, "'datasets' must name at least one dataset: {holdout: {path: ..., label: ...}}"
            )
        out = {}
        for name, spec in items.items():
            if name == _LINE:
                continue
            if isinstance(spec, str):
                spec = {"path": spec}
            if not isinstance(spec, dict) or "path" not in spec:
                raise self.fail(
                    items, f"dataset '{name}' needs a path: {{path: data.parquet, label: y}}"
                )
            policy = spec.get("nan_policy", "error")
            if policy not in NAN_POLICIES:
                raise self.fail(
                    spec,
                    f"dataset '{name}': nan_policy '{policy}' is not one of {', '.join(NAN_POLICIES)}",
                )
            path = Path(str(spec["path"]))
            out[str(name)] = DatasetSpec(
                str(name),
                path if path.is_absolute() else self.base / path,
                self.text(spec, "label"),
                policy,
            )
        return out

    def slices(self, raw: dict[str, Any]) -> tuple[SliceSpec, ...]:
        items = raw.get("slices") or []
        if not isinstance(items, list):
            raise self.fail(
                raw,
                "'slices' must be a list like [{column: plan}, {column: age, bins: [18, 40, 65]}]",
            )
        out = []
        for item in items:
            if isinstance(item, str):
                item = {"column": item}
            if not isinstance(item, dict) or "column" not in item:
                raise self.fail(raw, f"slice {item!r} needs a column: {{column: plan}}")
            bins = item.get("bins")
            edges = None
            if bins is not None:
                try:
                    edges = tuple(float(b) for b in bins)
                except (TypeError, ValueError):
                    raise self.fail(
                        item, f"slice bins {bins!r} must be a list of numbers (.inf allowed)"
                    ) from None
                if len(edges) < 2 or any(
                    b >= a for a, b in zip(edges[1:], edges[:-1], strict=False)
                ):
                    raise self.fail(
                        item, f"slice bins {bins!r} must be at least two increasing numbers"
                    )
            out.append(SliceSpec(str(item["column"]), edges))
        return tuple(out)

    def checks(
        self, raw: dict[str, Any], datasets: dict[str, DatasetSpec]
    ) -> tuple[CheckSpec, ...]:
        items = raw.get("checks")
        if not isinstance(items, list) or not items:
            raise self.fail(raw, "'checks' must be a non-empty list of checks")
        out: list[CheckSpec] = []
        for i, item in enumerate(items, 1):
            if not isinstance(item, dict):
                raise self.fail(raw, f"check {i} must be a mapping, not {item!r}")
            out.append(self.check(i, item, datasets))
        names = [c.name for c in out]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise self.fail(
                raw, f"two checks share the name {', '.join(dupes)}; give each a 'name'"
            )
        return tuple(out)

    def check(self, i: int, item: dict[str, Any], datasets: dict[str, DatasetSpec]) -> CheckSpec:
        kind = str(item.get("type") or ("metric" if "metric" in item else ""))
        if kind not in CHECK_TYPES:
            raise self.fail(
                item, f"check {i}: type '{kind}' is not one of {', '.join(CHECK_TYPES)}"
            )
        metric = self.text(item, "metric")
        if metric is not None:
            metric = metric_def(metric, where=f"suite {self.source} line {item.get(_LINE)}: ").name
        name = self.text(item, "name") or _default_name(kind, metric, item)
        dataset = self.text(item, "dataset")
        if dataset is None and kind not in ("model_size",) and "cases" not in item:
            dataset = next(iter(datasets))
        if dataset is not None and dataset not in datasets:
            raise self.fail(
                item,
                f"check '{name}' uses dataset '{dataset}', which the suite does not define (defined: {', '.join(datasets)})",
            )
        spec = CheckSpec(
            type=kind,
            name=name,
            dataset=dataset,
            metric=metric,
            at_least=self.optional_number(item, "at_least"),
            at_most=self.optional_number(item, "at_most"),
            margin=self.number(item, "margin", 0.0),
            baseline=self.text(item, "baseline"),
            feature=self.text(item, "feature"),
            values=tuple(item.get("values") or ()),
            delta=self.optional_number(item, "delta"),
            direction=str(item.get("direction", "increase")),
            tolerance=self.number(item, "tolerance", 0.0),
            rows=int(self.number(item, "rows", 200)),
            sliced=bool(item.get("slices", True)),
            cases=tuple(self.cases(item)),
            line=item.get(_LINE),
        )
        self.require(spec, item)
        return spec

    def optional_number(self, raw: Mapping[str, Any], key: str) -> float | None:
        return None if raw.get(key) is None else self.number(raw, key, 0.0)

    def cases(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        cases = item.get("cases") or []
        if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
            raise self.fail(
                item, "'cases' must be a list of mappings of feature values plus 'expected'"
            )
        return [{k: v for k, v in c.items() if k != _LINE} for c in cases]

    def require(self, c: CheckSpec, item: dict[str, Any]) -> None:
        """Each check type's required fields, with the fix in the message."""
        needs: dict[str, list[str]] = {
            "metric": ["metric"],
            "non_inferiority": ["metric"],
            "superiority": ["metric"],
            "invariance": ["feature"],
            "directional": ["feature", "delta"],
        }
        for key in needs.get(c.type, []):
            if getattr(c, key) is None:
                raise self.fail(item, f"check '{c.name}' of type {c.type} needs '{key}'")
        if c.type in ("metric", "pass_rate", "latency", "model_size") and (c.at_least is None) == (
            c.at_most is None
        ):
            raise self.fail(
                item, f"check '{c.name}' needs exactly one bound: 'at_least: X' or 'at_most: X'"
            )
        if c.type in ("invariance", "directional") and (
            c.at_most is None or c.at_least is not None
        ):
            raise self.fail(
                item,
                f"check '{c.name}' needs 'at_most: SHARE', the largest share of rows allowed to change",
            )
        if c.type in ("latency", "model_size") and c.at_most is None:
            raise self.fail(item, f"check '{c.name}' is a budget: use 'at_most: X'")
        if c.type == "invariance" and len(c.values) < 2 and c.delta is None:
            raise self.fail(
                item, f"check '{c.name}' needs 'values: [a, b, ...]' (two or more) or 'delta: X'"
            )
        if c.type == "directional" and c.direction not in ("increase", "decrease"):
            raise self.fail(item, f"check '{c.name}': direction must be increase or decrease")
        if c.margin < 0:
            raise self.fail(item, f"check '{c.name}': margin {c.margin} must be >= 0")
        if c.type == "pass_rate" and not c.cases and c.dataset is None:
            raise self.fail(item, f"check '{c.name}' needs 'cases' or a 'dataset' of cases")


def _default_name(kind: str, metric: str | None, item: dict[str, Any]) -> str:
    if kind == "metric":
        op, val = (
            (">=", item.get("at_least")) if "at_least" in item else ("<=", item.get("at_most"))
        )
        return f"{metric} {op} {val}"
    if kind in ("non_inferiority", "superiority"):
        return f"{metric} {kind.replace('_', '-')}"
    if kind in ("invariance", "directional"):
        return f"{kind} {item.get('feature')}"
    return kind.replace("_", " ")
