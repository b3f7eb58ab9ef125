"""What a model version needs to run, recorded at registration and checked before it goes live.

A model trained under one scikit-learn minor version can predict differently (or fail to load)
under another, and a model whose classes come from a library the serving side lacks cannot run
at all. Registration records the versions it can tell: the artifact's own record where there is
one (a skops file keeps the scikit-learn version each estimator was fitted with), else the
environment that registered it. Deploy and serve compare the record with the environment that
will run the model.

>>> mismatches = needs.check_runnable(version.needs)  # doctest: +SKIP
>>> needs.require_runnable(version)  # EnvironmentMismatchError on one that can change predictions  # doctest: +SKIP
"""

from __future__ import annotations

import json
import platform
import sys
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Protocol

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ownloop.errors import EnvironmentMismatchError, InvalidInputError, NotFoundError

__all__ = [
    "FORMAT_LIBRARIES",
    "RUNTIME_LIBRARIES",
    "Mismatch",
    "check_runnable",
    "current_environment",
    "parse_requirements",
    "read_requirements",
    "record",
    "require_runnable",
    "requirement_name",
]

RUNTIME_LIBRARIES = ("scikit-learn", "numpy", "scipy", "pandas")
FORMAT_LIBRARIES = {"skops": "skops", "onnx": "onnxruntime", "joblib": "joblib"}
# Module roots that never name a library a model needs from the serving side.
_NOT_LIBRARIES = frozenset({"builtins", "ownloop", "numpy", "scipy", "pandas", "__main__"})


class _Versioned(Protocol):
    @property
    def ref(self) -> str: ...

    @property
    def needs(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class Mismatch:
    """One difference between what a version needs and what an environment has.

    ``blocking`` mismatches can change predictions (or stop the model loading) and are refused
    unless forced; the others are reported.
    """

    library: str
    needed: str  # the version it was trained with, or a requirement specifier
    found: str | None  # the version installed here, None when missing
    reason: str  # different minor version | missing | requirement not met | different version
    blocking: bool
    fix: str

    def text(self, ref: str) -> str:
        """The difference in words, naming both sides and the fix."""
        if self.reason == "requirement not met":
            has = "does not have it" if self.found is None else f"has {self.found}"
            return f"{ref} requires '{self.needed}'; this environment {has}: {self.fix}"
        if self.found is None and self.needed == "importable":  # a module, not a package
            return (
                f"{ref} needs module '{self.library}' (its model's classes come from it); this "
                f"environment cannot import it: {self.fix}"
            )
        if self.found is None:
            return (
                f"{ref} needs {self.library} (trained with {self.needed}); this environment "
                f"does not have it: {self.fix}"
            )
        text = f"{ref} was trained with {self.library} {self.needed}; this environment has {self.found}"
        return f"{text}: {self.fix}" if self.blocking else f"{text} ({self.fix})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "library": self.library,
            "needed": self.needed,
            "found": self.found,
            "reason": self.reason,
            "blocking": self.blocking,
            "fix": self.fix,
        }


# -- recording ---------------------------------------------------------------------------


def read_requirements(path: str | Path) -> list[str]:
    """The requirement specifiers of a pip requirements file, normalised; a bad line is refused."""
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except FileNotFoundError as exc:
        raise NotFoundError(f"requirements file {p} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"requirements file {p} cannot be read: {exc}") from exc
    return parse_requirements(lines, f"requirements file {p}")


def parse_requirements(lines: Sequence[str], source: str) -> list[str]:
    """Requirement specifiers from requirements-file lines; ``source`` names them in errors."""
    out: list[str] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise InvalidInputError(
                f"{source}, line {number}: '{raw.strip()}' is a pip option; only "
                "requirement specifiers like 'xgboost>=2.0' are recorded: list them in one file"
            )
        try:
            out.append(str(Requirement(line)))
        except InvalidRequirement as exc:
            raise InvalidInputError(
                f"{source}, line {number}: '{raw.strip()}' is not a requirement "
                f"specifier ({str(exc).splitlines()[0]}); write it like 'xgboost>=2.0' or "
                "'lightgbm==4.3.0'"
            ) from exc
    return out


def record(
    model: Any,
    fmt: str,
    *,
    artifact: Path | None = None,
    requirements: Sequence[str] = (),
) -> dict[str, Any]:
    """What ``model`` (stored as ``fmt``, its file at ``artifact``) needs: stored as ``versions.needs``."""
    schema = _skops_schema(artifact) if fmt == "skops" and artifact is not None else None
    roots = set(_object_roots(model))
    from_file: dict[str, str] = {}
    if schema is not None:
        roots |= {m.split(".", 1)[0] for m in _schema_values(schema, "__module__")}
        sklearn = [json.loads(v) for v in _schema_values(schema, "_sklearn_version")]
        if sklearn:
            from_file["scikit-learn"] = str(sklearn[0])
        if isinstance(schema.get("_skops_version"), str):
            from_file["skops"] = schema["_skops_version"]
    model_libs, modules = _libraries_of(roots)
    libraries: dict[str, dict[str, Any]] = {}
    for name in (*RUNTIME_LIBRARIES, FORMAT_LIBRARIES.get(fmt), *model_libs):
        if name is None or name in libraries:
            continue
        role = "format" if name == FORMAT_LIBRARIES.get(fmt) else "runtime"
        if name in model_libs:
            role = "model"
        version = from_file.get(name) or _installed(name)
        source = "artifact" if name in from_file else "environment at registration"
        libraries[name] = {"version": version, "role": role, "source": source}
    return {
        "python": platform.python_version(),
        "libraries": libraries,
        "modules": sorted(modules),
        "requirements": list(requirements),
    }


def requirement_name(spec: str) -> str:
    """The distribution a stored requirement specifier names (as a Mismatch names it)."""
    return Requirement(spec).name


def _skops_schema(path: Path) -> dict[str, Any] | None:
    try:
        with zipfile.ZipFile(path) as zf:
            data = json.loads(zf.read("schema.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    return data if isinstance(data, dict) else None


def _schema_values(node: Any, key: str) -> Iterator[str]:
    """Every value of ``key`` in a skops schema (``_sklearn_version`` holds a JSON node)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key and isinstance(v, str):
                yield v
            elif k == key and isinstance(v, dict) and isinstance(v.get("content"), str):
                yield v["content"]
            else:
                yield from _schema_values(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from _schema_values(v, key)


def _object_roots(model: Any) -> Iterator[str]:
    """Module roots of the model's type and of the estimators among its parameters."""
    yield type(model).__module__.split(".", 1)[0]
    get_params = getattr(model, "get_params", None)
    if get_params is None:
        return
    try:
        params = get_params(deep=True)
    except (TypeError, AttributeError):
        return
    for value in params.values():
        if hasattr(value, "fit") or hasattr(value, "predict") or hasattr(value, "transform"):
            yield type(value).__module__.split(".", 1)[0]


def _libraries_of(roots: set[str]) -> tuple[list[str], set[str]]:
    """Distributions providing ``roots``, and the roots no installed distribution provides."""
    libs: list[str] = []
    modules: set[str] = set()
    for root in sorted(roots):
        if root in _NOT_LIBRARIES or root in sys.stdlib_module_names:
            continue
        dists = _distributions().get(root)
        if dists:
            libs.extend(str(canonicalize_name(d)) for d in dists)
        else:
            modules.add(root)
    return list(dict.fromkeys(libs)), modules


@cache
def _distributions() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def current_environment(names: Sequence[str]) -> dict[str, str | None]:
    """Installed versions of ``names`` here (None for a missing one), and ``python``."""
    env: dict[str, str | None] = {n: _installed(n) for n in names}
    env["python"] = platform.python_version()
    return env


# -- checking ----------------------------------------------------------------------------


def check_runnable(
    version_needs: Mapping[str, Any] | None,
    *,
    environment: Mapping[str, str | None] | None = None,
) -> list[Mismatch]:
    """Every difference between ``version_needs`` and ``environment`` (this one by default).

    ``environment`` maps distribution names (and ``python``, and module roots in ``modules``)
    to installed versions; a name it lacks, or maps to None, is missing.
    """
    if not version_needs:
        return []
    env = _environment(version_needs, environment)
    out: list[Mismatch] = []
    for name, info in dict(version_needs.get("libraries", {})).items():
        found = env.get(str(canonicalize_name(name)))
        mismatch = _library(name, info.get("version"), found, info.get("role", "runtime"))
        if mismatch is not None:
            out.append(mismatch)
    for module in version_needs.get("modules", []):
        if env.get(f"module:{module}") is None:
            fix = f"make module '{module}' importable (install the package that provides it)"
            out.append(Mismatch(module, "importable", None, "missing", True, fix))
    for spec in version_needs.get("requirements", []):
        mismatch = _requirement(Requirement(spec), env)
        if mismatch is not None:
            out.append(mismatch)
    python, here = version_needs.get("python"), env.get("python")
    if python and here and _release(python)[:2] != _release(here)[:2]:
        fix = "reported, not refused: use the same Python where predictions must match exactly"
        out.append(Mismatch("python", python, here, "different version", False, fix))
    return out


def require_runnable(
    version: _Versioned,
    *,
    force: bool = False,
    environment: Mapping[str, str | None] | None = None,
) -> list[Mismatch]:
    """The mismatches of ``version`` here; EnvironmentMismatchError for one that can change predictions.

    With ``force`` nothing is refused: the caller audits the returned mismatches. A version
    registered before needs were recorded has none (its ``needs`` is None).
    """
    found = check_runnable(version.needs, environment=environment)
    blocking = [m for m in found if m.blocking]
    if blocking and not force:
        raise EnvironmentMismatchError(
            "; ".join(m.text(version.ref) for m in blocking)
            + ", or deploy with --force --reason TEXT (audited)",
            mismatches=tuple(found),
        )
    return found


def _environment(
    version_needs: Mapping[str, Any], environment: Mapping[str, str | None] | None
) -> dict[str, str | None]:
    if environment is not None:
        env = {
            k if k == "python" or k.startswith("module:") else str(canonicalize_name(k)): v
            for k, v in environment.items()
        }
        return env
    names = [str(canonicalize_name(n)) for n in version_needs.get("libraries", {})]
    names += [
        str(canonicalize_name(Requirement(r).name)) for r in version_needs.get("requirements", [])
    ]
    env = current_environment(names)
    for module in version_needs.get("modules", []):
        env[f"module:{module}"] = "importable" if find_spec(module) is not None else None
    return env


def _library(name: str, needed: str | None, found: str | None, role: str) -> Mismatch | None:
    if needed is None:  # not installed at registration either: nothing to compare
        return None
    if found is None:
        return Mismatch(name, needed, None, "missing", True, f"pip install '{name}=={needed}'")
    if found == needed:
        return None
    same_minor = _release(needed)[:2] == _release(found)[:2]
    if role == "model" and not same_minor:
        minor = ".".join(str(p) for p in _release(needed)[:2])
        fix = f"install {name}=={needed} (pip install '{name}~={minor}.0')"
        return Mismatch(name, needed, found, "different minor version", True, fix)
    level = "patch level" if same_minor else "version"
    note = f"a different {level}: reported, not refused"
    return Mismatch(name, needed, found, f"different {level}", False, note)


def _requirement(req: Requirement, env: Mapping[str, str | None]) -> Mismatch | None:
    if req.marker is not None and not req.marker.evaluate():
        return None
    found = env.get(str(canonicalize_name(req.name)))
    fix = f"pip install '{req}'"
    if found is None:
        return Mismatch(req.name, str(req), None, "requirement not met", True, fix)
    if req.specifier and not req.specifier.contains(found, prereleases=True):
        return Mismatch(req.name, str(req), found, "requirement not met", True, fix)
    return None


def _release(text: str) -> tuple[int, ...]:
    try:
        return Version(text).release
    except InvalidVersion:
        return (0,)
