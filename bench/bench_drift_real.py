"""Drift rules on public data nobody here made, with known truth injected: false alarm and
detection rates per window size.

    .venv/bin/python bench/bench_drift_real.py [--quick] [--sizes 300,1000,5000]
        [--datasets car_loan,titanic] [--seed 0] [--nannyml-wheel PATH] [--skip-nannyml]

Data: the sets bundled in NannyML's wheel (synthetic car loan, work from home, US census MA
employment, credit card class, car price, California housing, Titanic), read straight from the
wheel file (nannyml is never installed; the wheel is downloaded once into ``bench/.cache`` with
``pip download``), and scikit-learn's bundled sets (breast cancer, diabetes, wine, digits; the
``fetch_*`` sets only when already in scikit-learn's cache, as this script never downloads them).
Only each set's reference period is used, so rows are exchangeable and "no drift" is the truth.

Per data set and split (seeded): the rows are shuffled and halved; the first half is the
reference, windows are drawn from the other half (without replacement, or bootstrapped when the
window is larger than the held-out pool: those rows are marked ``boot``, since duplicated rows
break the tests' independence assumption). Each window is judged as it is and with one known
change injected:

- ``none``: nothing changed (false alarms: per feature, per window, dataset verdict);
- ``loc+0.1``, ``loc+0.2``, ``loc+0.5``: one numeric column moved by that many reference sd;
- ``tail+10``, ``tail+20``: 1% of that column's rows moved by +10 or +20 sd (a unit bug upstream);
- ``cat+10pt``: 10 points of share moved into one category of a categorical column;
- ``bin+10pt``: a binary column copied as bool, int and string columns, 10 points of share moved
  into its rarer value in all three copies at once (do they get the same verdict?).

A second experiment compares small references (200 to 2,000 rows) with 5,000-row windows
bootstrapped from the reference rows themselves (``self``), from an independent held-out set of
the same size (``pool``), or drawn fresh from the rest of the set (``fresh``: the test's
assumption holds).

"Flagged" means any check on the feature says drifted (``drifted`` or any ``*_drifted`` field of
the result frame, on any check row but the prediction checks); "dist" columns count the
distribution verdict (``drifted``) alone. Only the public batch API is used
(``ownloop.monitoring.drift``, ``DriftChunks.to_frame``, ``report.dataset_drift``), and fields are
read defensively, so the same script measures the rules before and after they change.

Rates are percentages of windows (or feature-windows); with n windows a rate p has binomial sd
sqrt(p(1-p)/n): at most 5 points with 100 windows, 2.2 points with 500. Windows of one split share
their reference, so the spread between splits is somewhat larger than that.
"""

from __future__ import annotations

import argparse
import io
import math
import platform
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import ownloop
from ownloop import monitoring

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
NANNYML = "nannyml==0.13.1"
WHEEL_DATA = "nannyml/datasets/data/"
SELF_REF_SIZES = (200, 500, 1000, 2000)
SELF_WINDOW = 5000
LOCATIONS = (0.1, 0.2, 0.5)
TAILS = (10.0, 20.0)
TAIL_SHARE = 0.01
SHARE_MOVE = 0.10


# -- data sets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One data set: where its features come from and which columns get the known changes."""

    name: str
    source: str
    load: Callable[[], pd.DataFrame]
    numeric: str  # moved by sd / contaminated in the tail
    categorical: str | None = None  # 10 points of share moved into one category
    binary: str | None = None  # copied as bool, int and string


@dataclass(frozen=True)
class Data:
    spec: Spec
    columns: dict[str, np.ndarray]  # float, int, bool or object (str, None where missing)

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values())))


class Wheel:
    """NannyML's bundled data files, read from its wheel (downloaded once into the cache)."""

    def __init__(self, path: Path | None, cache: Path) -> None:
        self._given = path
        self._cache = cache
        self._zip: zipfile.ZipFile | None = None

    def open(self) -> zipfile.ZipFile:
        if self._zip is None:
            self._zip = zipfile.ZipFile(self._find())
        return self._zip

    def _find(self) -> Path:
        if self._given is not None:
            if not self._given.is_file():
                sys.exit(f"--nannyml-wheel {self._given}: no such file")
            return self._given
        version = NANNYML.split("==")[1]
        found = sorted(self._cache.glob(f"nannyml-{version}-*.whl"))
        if found:
            return found[-1]
        self._cache.mkdir(parents=True, exist_ok=True)
        print(
            f"downloading the {NANNYML} wheel (data only, not installed) into {self._cache}",
            file=sys.stderr,
        )
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            NANNYML,
            "--no-deps",
            "-d",
            str(self._cache),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        found = sorted(self._cache.glob(f"nannyml-{version}-*.whl"))
        if done.returncode != 0 or not found:
            sys.exit(
                f"could not download {NANNYML} into {self._cache} (offline?):\n"
                f"{(done.stderr or done.stdout).strip()[-800:]}\n\n"
                "NannyML's data sets come from its wheel. On a machine with network access run\n"
                f"    pip download {NANNYML} --no-deps -d bench/.cache\n"
                f"and copy the .whl file into {self._cache}, or pass --nannyml-wheel PATH; "
                "or run with --skip-nannyml for the scikit-learn sets only."
            )
        return found[-1]

    def read(self, name: str) -> pd.DataFrame:
        raw = self.open().read(WHEEL_DATA + name)
        if name.endswith(".pq"):
            return pd.read_parquet(io.BytesIO(raw))
        return pd.read_csv(io.BytesIO(raw))


def _nannyml(wheel: Wheel, file: str, columns: Sequence[str]) -> Callable[[], pd.DataFrame]:
    return lambda: wheel.read(file)[list(columns)]


def _sklearn(loader: str, columns: Sequence[str], **kw: Any) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from sklearn import datasets

        frame: pd.DataFrame = getattr(datasets, loader)(as_frame=True, **kw).frame
        return frame[list(columns)]

    return load


def specs(wheel: Wheel | None) -> list[Spec]:
    out: list[Spec] = []
    if wheel is not None:
        out += [
            Spec(
                "car_loan",
                "NannyML synthetic car loan, reference period",
                _nannyml(
                    wheel,
                    "synthetic_car_loan_reference.csv",
                    [
                        "car_value",
                        "salary_range",
                        "debt_to_income_ratio",
                        "loan_length",
                        "repaid_loan_on_prev_car",
                        "size_of_downpayment",
                        "driver_tenure",
                    ],
                ),
                numeric="car_value",
                categorical="salary_range",
                binary="repaid_loan_on_prev_car",
            ),
            Spec(
                "work_from_home",
                "NannyML synthetic work-from-home sample, reference period",
                _nannyml(
                    wheel,
                    "synthetic_sample_reference.csv",
                    [
                        "distance_from_office",
                        "salary_range",
                        "gas_price_per_litre",
                        "public_transportation_cost",
                        "wfh_prev_workday",
                        "workday",
                        "tenure",
                    ],
                ),
                numeric="distance_from_office",
                categorical="workday",
                binary="wfh_prev_workday",
            ),
            Spec(
                "employment_MA",
                "NannyML US census MA employment (2015 reference), 9 of 16 features",
                _nannyml(
                    wheel,
                    "employment_MA_reference.pq",
                    ["AGEP", "SCHL", "MAR", "RELP", "DIS", "CIT", "MIG", "SEX", "RAC1P"],
                ),
                numeric="AGEP",
                categorical="MAR",
                binary="SEX",
            ),
            Spec(
                "card_class",
                "NannyML synthetic credit card class (multiclass), reference period",
                _nannyml(
                    wheel,
                    "mc_reference.csv",
                    [
                        "acq_channel",
                        "app_behavioral_score",
                        "requested_credit_limit",
                        "app_channel",
                        "credit_bureau_score",
                        "stated_income",
                        "is_customer",
                    ],
                ),
                numeric="app_behavioral_score",
                categorical="acq_channel",
                binary="is_customer",
            ),
            Spec(
                "car_price",
                "NannyML synthetic car price (regression), reference period",
                _nannyml(
                    wheel,
                    "regression_synthetic_reference.csv",
                    [
                        "car_age",
                        "km_driven",
                        "price_new",
                        "accident_count",
                        "door_count",
                        "fuel",
                        "transmission",
                    ],
                ),
                numeric="km_driven",
                categorical="fuel",
                binary="transmission",
            ),
            Spec(
                "ca_housing_nml",
                "NannyML California housing, reference period",
                _nannyml(
                    wheel,
                    "california_housing_reference.csv",
                    [
                        "MedInc",
                        "HouseAge",
                        "AveRooms",
                        "AveBedrms",
                        "Population",
                        "AveOccup",
                        "Latitude",
                        "Longitude",
                    ],
                ),
                numeric="MedInc",
            ),
            Spec(
                "titanic",
                "NannyML Titanic, reference part",
                _nannyml(
                    wheel,
                    "titanic_reference.csv",
                    ["Pclass", "Sex", "Age", "SibSp", "Parch", "Fare", "Embarked"],
                ),
                numeric="Age",
                categorical="Embarked",
                binary="Sex",
            ),
        ]
    out += [
        Spec(
            "breast_cancer",
            "scikit-learn load_breast_cancer, 6 of 30 features",
            _sklearn(
                "load_breast_cancer",
                [
                    "mean radius",
                    "mean texture",
                    "mean smoothness",
                    "mean concavity",
                    "mean symmetry",
                    "worst area",
                ],
            ),
            numeric="mean radius",
        ),
        Spec(
            "diabetes",
            "scikit-learn load_diabetes (unscaled)",
            _sklearn("load_diabetes", ["age", "sex", "bmi", "bp", "s1", "s5"], scaled=False),
            numeric="bmi",
            binary="sex",
        ),
        Spec(
            "wine",
            "scikit-learn load_wine, 6 of 13 features",
            _sklearn(
                "load_wine",
                ["alcohol", "malic_acid", "flavanoids", "color_intensity", "hue", "proline"],
            ),
            numeric="alcohol",
        ),
        Spec(
            "digits",
            "scikit-learn load_digits, 6 of 64 pixels (integers 0-16)",
            _sklearn(
                "load_digits",
                ["pixel_2_4", "pixel_3_2", "pixel_3_4", "pixel_4_3", "pixel_5_2", "pixel_5_3"],
            ),
            numeric="pixel_5_2",
        ),
        Spec(
            "ca_housing",
            "scikit-learn fetch_california_housing (only when cached)",
            _sklearn(
                "fetch_california_housing",
                [
                    "MedInc",
                    "HouseAge",
                    "AveRooms",
                    "AveBedrms",
                    "Population",
                    "AveOccup",
                    "Latitude",
                    "Longitude",
                ],
                download_if_missing=False,
            ),
            numeric="MedInc",
        ),
        Spec(
            "covtype",
            "scikit-learn fetch_covtype, 6 of 54 features (only when cached)",
            _sklearn(
                "fetch_covtype",
                [
                    "Elevation",
                    "Aspect",
                    "Slope",
                    "Horizontal_Distance_To_Hydrology",
                    "Hillshade_9am",
                    "Wilderness_Area_0",
                ],
                download_if_missing=False,
            ),
            numeric="Elevation",
        ),
    ]
    return out


def _array(s: pd.Series) -> np.ndarray:
    """The column as numpy: numbers and booleans as they are, anything else as str or None."""
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
        return s.to_numpy()
    return np.asarray([None if pd.isna(v) else str(v) for v in s], dtype=object)


def load(spec: Spec) -> Data | str:
    """The data set, or why it is not available."""
    try:
        frame = spec.load()
    except OSError as exc:  # fetch_* with download_if_missing=False
        return f"not in scikit-learn's cache ({exc}); skipped, as this bench never downloads"
    return Data(spec, {str(c): _array(frame[c]) for c in frame.columns})


# -- injected changes ------------------------------------------------------------------------


def _pick(rng: np.random.Generator, eligible: np.ndarray, m: int) -> np.ndarray:
    """A mask choosing ``m`` eligible cells at random in each row of the (windows, rows) array."""
    keys = rng.random(eligible.shape)
    keys[~eligible] = 2.0
    order = np.argsort(keys, axis=1)[:, :m]
    chosen = np.zeros(eligible.shape, dtype=bool)
    np.put_along_axis(chosen, order, True, axis=1)
    out: np.ndarray = chosen & eligible
    return out


def _finite(values: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.isfinite(values.astype(float))
    return out


def locate(k: float) -> Callable[[np.ndarray, float, np.random.Generator], np.ndarray]:
    return lambda v, sd, rng: v.astype(float) + k * sd


def tail(k: float) -> Callable[[np.ndarray, float, np.random.Generator], np.ndarray]:
    def move(v: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
        out = v.astype(float)
        m = max(1, round(TAIL_SHARE * v.shape[1]))
        out[_pick(rng, _finite(out), m)] += k * sd
        return out

    return move


def share_move(values: np.ndarray, target: Any, rng: np.random.Generator) -> np.ndarray:
    """Move 10 points of share (of each window's rows) into ``target`` from the other values."""
    present = pd.notna(values)
    eligible = present & (values != target)
    m = round(SHARE_MOVE * values.shape[1])
    out = values.copy()
    out[_pick(rng, eligible, m)] = target
    return out


# -- running the rules -----------------------------------------------------------------------


# the frame API's name today; the others in case it is renamed
DRIFT: Callable[..., Any] = next(
    getattr(monitoring, n)
    for n in ("drift", "detect_drift", "estimate_drift")
    if hasattr(monitoring, n)
)


@dataclass
class Call:
    """One drift call: the reference, and blocks of ``per`` windows of ``size`` rows each."""

    reference: dict[str, np.ndarray]
    size: int
    per: int
    blocks: list[tuple[str, dict[str, np.ndarray]]] = field(default_factory=list)


def _frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(v, copy=False) for c, v in columns.items()})


def run(call: Call, targets: Sequence[str]) -> list[dict[str, Any]]:
    """Judge every window; one record per window (block name, flags, the targets' verdicts)."""
    names = list(call.reference)
    current = {c: np.concatenate([b[c] for _, b in call.blocks]) for c in names}
    res = DRIFT(_frame(call.reference), _frame(current), columns=names, chunk_size=call.size)
    frame = res.to_frame()
    if "chunk" not in frame:
        frame = pd.concat(
            [c.to_frame().assign(chunk=i) for i, c in enumerate(res)], ignore_index=True
        )
    if "check" in frame:
        frame = frame[frame["check"] != "prediction"]
    flags = [c for c in frame.columns if c == "drifted" or str(c).endswith("_drifted")]
    frame = frame.assign(
        _dist=frame["drifted"].eq(True),
        _judged=frame["drifted"].notna(),
        _any=frame[flags].eq(True).any(axis=1),
    )
    per_feature = frame.groupby(["chunk", "feature"])[["_dist", "_judged", "_any"]].any()
    by_chunk = per_feature.groupby(level="chunk")
    judged = by_chunk["_judged"].sum()
    dist = by_chunk["_dist"].sum()
    anyf = by_chunk["_any"].sum()
    pairs = by_chunk.size()
    target_dist = per_feature["_dist"].unstack("feature")
    target_any = per_feature["_any"].unstack("feature")
    target_judged = per_feature["_judged"].unstack("feature")
    out = []
    for i, chunk in enumerate(res):
        report = getattr(chunk, "report", None)
        verdict = getattr(report, "dataset_drift", None)
        rec: dict[str, Any] = {
            "block": call.blocks[i // call.per][0],
            "features": int(pairs.get(i, 0)),
            "judged": int(judged.get(i, 0)),
            "flag_dist": int(dist.get(i, 0)),
            "flag_any": int(anyf.get(i, 0)),
            "dataset_judged": verdict is not None,
            "dataset": bool(verdict),
        }
        for t in targets:
            ok = i in target_judged.index and bool(target_judged.at[i, t])
            rec[f"{t}:judged"] = ok
            rec[f"{t}:dist"] = ok and bool(target_dist.at[i, t])
            rec[f"{t}:any"] = i in target_any.index and bool(target_any.at[i, t])
        out.append(rec)
    return out


def _take(columns: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {c: v[rows] for c, v in columns.items()}


def _sd(values: np.ndarray) -> float:
    v = values.astype(float)
    return float(np.nanstd(v[np.isfinite(v)], ddof=1))


def _binary(values: np.ndarray) -> tuple[np.ndarray, str, str] | None:
    """The rarer value as a boolean mask, with both values' text; None unless exactly two values."""
    if pd.isna(values).any():
        return None
    uniq, counts = np.unique(values.astype(str), return_counts=True)
    if uniq.size != 2:
        return None
    rare, common = (uniq[0], uniq[1]) if counts[0] <= counts[1] else (uniq[1], uniq[0])
    return values.astype(str) == rare, str(rare), str(common)


def copies(
    base: dict[str, np.ndarray], binary: str, mask: np.ndarray, text: tuple[str, str]
) -> dict[str, np.ndarray]:
    """The features with the binary column replaced by bool, int and string copies of ``mask``."""
    out = {c: v for c, v in base.items() if c != binary}
    out[f"{binary}[bool]"] = mask.astype(bool)
    out[f"{binary}[int]"] = mask.astype(np.int64)
    out[f"{binary}[str]"] = np.where(mask, text[0], text[1]).astype(object)
    return out


def windows(rng: np.random.Generator, pool: int, size: int, count: int) -> np.ndarray:
    """(count, size) row positions into a pool: without replacement when it fits, else bootstrapped."""
    if size <= pool:
        return np.stack([rng.choice(pool, size, replace=False) for _ in range(count)])
    return rng.integers(0, pool, size=(count, size))


def shifted_blocks(
    data: Data,
    ref: dict[str, np.ndarray],
    cur: dict[str, np.ndarray],
    shape: tuple[int, int],
    rng: np.random.Generator,
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """The windows as they are, then once per injected change (one column changed each time)."""
    spec = data.spec
    blocks = [("none", cur)]
    num = cur[spec.numeric].reshape(shape)
    sd = _sd(ref[spec.numeric])
    moves = [(f"loc+{k:g}", locate(k)) for k in LOCATIONS] + [
        (f"tail+{k:g}", tail(k)) for k in TAILS
    ]
    for name, move in moves:
        blocks.append((name, {**cur, spec.numeric: move(num, sd, rng).ravel()}))
    if spec.categorical is not None:
        values = ref[spec.categorical]
        kept = values[pd.notna(values)]
        uniq, counts = np.unique(kept.astype(str), return_counts=True)
        order = np.argsort(-counts)
        target = uniq[order[1]] if uniq.size > 1 else uniq[0]
        cat = cur[spec.categorical].reshape(shape)
        target_value = next(v for v in kept if str(v) == target)
        blocks.append(
            ("cat+10pt", {**cur, spec.categorical: share_move(cat, target_value, rng).ravel()})
        )
    return blocks


def per_split(per: int, size: int) -> int:
    """Windows per split: ``per`` up to 1,000 rows, fewer for larger windows (they cost more)."""
    return max(1, min(per, round(per * math.sqrt(1000 / size))))


def run_dataset(data: Data, sizes: Sequence[int], splits: int, per: int, seed: int) -> pd.DataFrame:
    """Every window size and split of one data set: one record per judged window."""
    spec = data.spec
    rng = np.random.default_rng([seed, sum(map(ord, spec.name))])
    binary = _binary(data.columns[spec.binary]) if spec.binary else None
    records: list[dict[str, Any]] = []
    n = data.rows
    for split in range(splits):
        perm = rng.permutation(n)
        ref_rows, pool_rows = perm[: n // 2], perm[n // 2 :]
        ref = _take(data.columns, ref_rows)
        for size in sizes:
            count = per_split(per, size)
            idx = pool_rows[windows(rng, pool_rows.size, size, count)]
            cur = _take(data.columns, idx.ravel())
            call = Call(ref, size, count, shifted_blocks(data, ref, cur, idx.shape, rng))
            targets = [spec.numeric] + ([spec.categorical] if spec.categorical else [])
            recs = run(call, targets)
            if binary is not None and spec.binary is not None:
                mask, rare, common = binary
                cur_mask = mask[idx]
                moved = share_move(cur_mask, True, rng)
                b_ref = copies(ref, spec.binary, mask[ref_rows], (rare, common))
                blocks = [
                    (name, copies(cur, spec.binary, m.ravel(), (rare, common)))
                    for name, m in (("bin:none", cur_mask), ("bin+10pt", moved))
                ]
                names = [f"{spec.binary}[{t}]" for t in ("bool", "int", "str")]
                recs += run(Call(b_ref, size, count, blocks), names)
            for r in recs:
                r.update(
                    {
                        "set": spec.name,
                        "size": size,
                        "split": split,
                        "pool": int(pool_rows.size),
                        "boot": size > pool_rows.size,
                    }
                )
            records += recs
    return pd.DataFrame.from_records(records)


def run_small_reference(
    data: Data, ref_sizes: Sequence[int], reps: int, per: int, seed: int
) -> pd.DataFrame:
    """Small references against 5,000-row windows bootstrapped from themselves, from an equally
    small held-out set, or drawn fresh from the rest of the data."""
    spec = data.spec
    rng = np.random.default_rng([seed, 1, sum(map(ord, spec.name))])
    records: list[dict[str, Any]] = []
    for n in ref_sizes:
        for rep in range(reps):
            perm = rng.permutation(data.rows)
            ref_rows, held, rest = perm[:n], perm[n : 2 * n], perm[2 * n :]
            ref = _take(data.columns, ref_rows)
            blocks = [
                (
                    "self",
                    _take(data.columns, ref_rows[rng.integers(0, n, (per, SELF_WINDOW))].ravel()),
                ),
                ("pool", _take(data.columns, held[rng.integers(0, n, (per, SELF_WINDOW))].ravel())),
                (
                    "fresh",
                    _take(data.columns, rest[windows(rng, rest.size, SELF_WINDOW, per)].ravel()),
                ),
            ]
            for r in run(Call(ref, SELF_WINDOW, per, blocks), []):
                r.update({"set": spec.name, "reference": n, "split": rep})
                records.append(r)
    return pd.DataFrame.from_records(records)


# -- tables ----------------------------------------------------------------------------------


def pct(hits: float, total: float) -> str:
    return "-" if total == 0 else f"{100 * hits / total:.1f}"


def table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    body = [[str(x) for x in r] for r in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)
    ]
    line = "  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))
    out = [title, line, "-" * len(line)]
    out += ["  ".join(x.rjust(w) for x, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(out)


def _rate(g: pd.DataFrame, col: str, judged: str | None = None) -> str:
    if col not in g:
        return "-"
    if judged is not None and judged in g:
        sub = g[g[judged]]
        return pct(sub[col].sum(), len(sub))
    return pct(g[col].sum(), len(g))


def _nulls(g: pd.DataFrame) -> list[str]:
    return [
        pct(g["flag_dist"].sum(), g["judged"].sum()),
        pct(g["flag_any"].sum(), g["features"].sum()),
        pct((g["flag_dist"] > 0).sum(), len(g)),
        pct((g["flag_any"] > 0).sum(), len(g)),
        pct(g["dataset"].sum(), g["dataset_judged"].sum()),
    ]


NULL_HEADER = ["feat dist", "feat any", "win dist", "win any", "dataset"]


def dataset_tables(df: pd.DataFrame, spec: Spec) -> str:
    null = df[df["block"] == "none"]
    rows = []
    for (size, boot), g in null.groupby(["size", "boot"]):
        rows.append([size, int(g["pool"].iloc[0]), "boot" if boot else "", len(g), *_nulls(g)])
    out = [
        table(
            "no drift: % flagged (feature-windows, then windows)",
            ["window", "pool", "", "windows", *NULL_HEADER],
            rows,
        )
    ]
    num, cat = spec.numeric, spec.categorical
    cols = [f"loc+{k:g}" for k in LOCATIONS] + [f"tail+{k:g}" for k in TAILS]
    header = ["window", "", "windows", *[c.replace("loc", "sd") for c in cols], "tail+20 dist"]
    header += ["cat+10pt"] if cat else []
    b = spec.binary
    bin_names = [f"{b}[{t}]" for t in ("bool", "int", "str")] if b else []
    if bin_names and f"{b}[bool]:any" in df:
        header += ["bin bool", "int", "str", "agree", "bin none max"]
    rows = []
    for (size, boot), g in df.groupby(["size", "boot"]):
        row: list[Any] = [size, "boot" if boot else "", int((g["block"] == "none").sum())]
        row += [_rate(g[g["block"] == c], f"{num}:any") for c in cols]
        row.append(_rate(g[g["block"] == "tail+20"], f"{num}:dist"))
        if cat:
            row.append(_rate(g[g["block"] == "cat+10pt"], f"{cat}:any"))
        if len(header) > len(row):
            moved = g[g["block"] == "bin+10pt"]
            calm = g[g["block"] == "bin:none"]
            row += [_rate(moved, f"{n}:any") for n in bin_names]
            same = moved[[f"{n}:any" for n in bin_names]].nunique(axis=1).eq(1)
            row.append(pct(same.sum(), len(moved)))
            row.append(
                max(
                    (_rate(calm, f"{n}:any") for n in bin_names),
                    key=lambda s: -1.0 if s == "-" else float(s),
                )
            )
        rows.append(row)
    title = (
        f"injected change: % of windows where the changed column is flagged (column {num!r}"
        + (f"; categorical {cat!r}" if cat else "")
        + (f"; binary {b!r} as bool/int/str copies" if b else "")
        + ")"
    )
    out.append(table(title, header, rows))
    return "\n\n".join(out)


def summary(df: pd.DataFrame, sets: Sequence[Spec]) -> str:
    """Pooled over data sets, per window size: windows within the held-out pool, then bootstrapped."""
    by_name = {s.name: s for s in sets}
    lines = []
    for boot in (False, True):
        part = df[df["boot"] == boot]
        if part.empty:
            continue
        rows = []
        for size, g in part.groupby("size"):
            null = g[g["block"] == "none"]
            row: list[Any] = [size, null["set"].nunique(), len(null), *_nulls(null)]
            for block in [f"loc+{k:g}" for k in LOCATIONS] + [f"tail+{k:g}" for k in TAILS]:
                hits = total = 0
                for name, h in g[g["block"] == block].groupby("set"):
                    col = f"{by_name[str(name)].numeric}:any"
                    hits += int(h[col].sum())
                    total += len(h)
                row.append(pct(hits, total))
            hits = total = 0
            for name, h in g[g["block"] == "cat+10pt"].groupby("set"):
                col = f"{by_name[str(name)].categorical}:any"
                hits += int(h[col].sum())
                total += len(h)
            row.append(pct(hits, total))
            for t in ("bool", "int", "str"):
                hits = total = 0
                for name, h in g[g["block"] == "bin+10pt"].groupby("set"):
                    col = f"{by_name[str(name)].binary}[{t}]:any"
                    hits += int(h[col].sum())
                    total += len(h)
                row.append(pct(hits, total))
            rows.append(row)
        which = (
            "windows LARGER than the held-out pool (bootstrapped: duplicated rows)"
            if boot
            else "windows drawn without replacement from the held-out half"
        )
        header = [
            "window",
            "sets",
            "windows",
            *NULL_HEADER,
            "sd+0.1",
            "sd+0.2",
            "sd+0.5",
            "tail+10",
            "tail+20",
            "cat+10pt",
            "bin bool",
            "int",
            "str",
        ]
        lines.append(table(f"all data sets pooled, {which}", header, rows))
    return "\n\n".join(lines)


def small_reference_table(df: pd.DataFrame) -> str:
    rows = []
    for (name, n), g in [
        *df.groupby(["set", "reference"]),
        *(((("all sets"), n), g) for n, g in df.groupby("reference")),
    ]:
        row: list[Any] = [name, n]
        for block in ("self", "pool", "fresh"):
            h = g[g["block"] == block]
            row += [
                len(h),
                pct(h["flag_any"].sum(), h["features"].sum()),
                pct((h["flag_any"] > 0).sum(), len(h)),
                pct(h["dataset"].sum(), h["dataset_judged"].sum()),
            ]
        rows.append(row)
    header = ["set", "ref rows"]
    for block in ("self", "pool", "fresh"):
        header += [f"{block} n", "feat", "win any", "dataset"]
    return table(
        f"small reference, {SELF_WINDOW:,}-row windows, no drift: % flagged. self = bootstrapped from "
        "the reference rows; pool = bootstrapped from a held-out set as small as the reference; "
        "fresh = new rows (the tests' assumption)",
        header,
        rows,
    )


LEGEND = """\
Columns (all figures are % of windows, or of feature-windows; a rate p from n windows has sd
sqrt(p(1-p)/n), at most 50/sqrt(n) points):
  window: rows per window; pool: held-out rows the windows are drawn from; boot: the window is
    larger than the pool, so it is bootstrapped (duplicated rows: the tests' independence fails)
  no drift: feat dist = feature-windows whose distribution verdict is drifted; feat any = any check
    on the feature drifted (missing-value drift included); win dist / win any = windows with at
    least one such feature; dataset = windows with a dataset drift verdict
  injected: windows in which the changed column is flagged by any check; sd+k = every value moved
    by k reference sd; tail+k = 1% of its rows moved by k sd (tail+20 dist: the distribution
    verdict alone); cat+10pt = 10 points of share moved into the second most common category;
    bin bool/int/str = a binary column's rarer value gains 10 points, in bool, int 0/1 and string
    copies at once; agree = windows where the three copies got the same verdict; bin none max = the
    highest false alarm rate of the three copies with nothing moved"""


# -- main ------------------------------------------------------------------------------------


def _code_version() -> str:
    src = Path(ownloop.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(src), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head = "unknown commit"
    return f"ownloop {getattr(ownloop, '__version__', '?')} from {src} ({head})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a short run: fewer sizes, splits and windows"
    )
    parser.add_argument(
        "--sizes", help="window sizes, comma-separated (default 100,300,999,1000,5000,20000)"
    )
    parser.add_argument(
        "--splits", type=int, help="random reference/held-out splits per data set (default 20)"
    )
    parser.add_argument(
        "--windows",
        type=int,
        help="windows per split for windows up to 1,000 rows, fewer for larger ones (default 5)",
    )
    parser.add_argument("--datasets", help="only these data sets, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nannyml-wheel", type=Path, help="a downloaded nannyml-0.13.1 wheel")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where the wheel is kept")
    parser.add_argument("--skip-nannyml", action="store_true", help="scikit-learn sets only")
    parser.add_argument("--skip-small-reference", action="store_true")
    args = parser.parse_args()
    quick = args.quick
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([300, 999, 1000, 5000] if quick else [100, 300, 999, 1000, 5000, 20000])
    )
    splits = args.splits or (6 if quick else 20)
    per = args.windows or (3 if quick else 5)
    small_reps, small_per = (10, 2) if quick else (25, 2)
    started, cpu = time.perf_counter(), time.process_time()
    wheel = None if args.skip_nannyml else Wheel(args.nannyml_wheel, args.cache)
    if wheel is not None:
        wheel.open()  # fail (offline, no cached wheel) before anything runs
    chosen = set(args.datasets.split(",")) if args.datasets else None
    print("Drift rules on public data sets with known truth injected (bench/bench_drift_real.py)")
    print(_code_version())
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}; "
        f"seed {args.seed}; window sizes {sizes}; {splits} splits x "
        f"{', '.join(str(per_split(per, s)) for s in sizes)} windows (by size)"
        + (" (--quick)" if quick else "")
    )
    print(LEGEND)
    known = [s.name for s in specs(wheel)]
    if chosen is not None and chosen - set(known):
        sys.exit(f"unknown data sets {sorted(chosen - set(known))}; known: {', '.join(known)}")
    loaded: list[Data] = []
    for spec in specs(wheel):
        if chosen is not None and spec.name not in chosen:
            continue
        data = load(spec)
        if isinstance(data, str):
            print(f"  {spec.name}: {data}")
            continue
        loaded.append(data)
        print(
            f"  {spec.name}: {spec.source}; {data.rows:,} rows, {len(data.columns)} features ({', '.join(data.columns)})"
        )
    results = []
    for data in loaded:
        t = time.perf_counter()
        df = run_dataset(data, sizes, splits, per, args.seed)
        results.append(df)
        print(f"{data.spec.name}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
        print(
            f"\n== {data.spec.name} ({data.rows:,} rows; reference {data.rows // 2:,} rows, held-out pool {data.rows - data.rows // 2:,})\n"
        )
        print(dataset_tables(df, data.spec))
    if results:
        print("\n== summary\n")
        print(summary(pd.concat(results, ignore_index=True), [d.spec for d in loaded]))
    big = [d for d in loaded if d.rows >= 2 * max(SELF_REF_SIZES) + SELF_WINDOW]
    if big and not args.skip_small_reference:
        t = time.perf_counter()
        small = pd.concat(
            [run_small_reference(d, SELF_REF_SIZES, small_reps, small_per, args.seed) for d in big],
            ignore_index=True,
        )
        print(f"small reference: {time.perf_counter() - t:.1f} s", file=sys.stderr)
        print("\n== small reference\n")
        print(small_reference_table(small))
    print(
        f"\nruntime {time.perf_counter() - started:.0f} s wall, "
        f"{time.process_time() - cpu:.0f} s CPU (this process)"
    )


if __name__ == "__main__":
    main()
