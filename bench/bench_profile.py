"""Reference profile speed: 1,000,000 rows x 25 columns (20 numeric, 5 categorical).

Prints the wall time of the profile alone and of a whole `register` (model predictions on every
reference row included). Run: .venv/bin/python bench/bench_profile.py [rows]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OrdinalEncoder

from ownloop import Config, Workspace
from ownloop.profile import compute_profile
from ownloop.signature import infer_signature


def make_data(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols: dict[str, object] = {f"num_{i}": rng.normal(i, 1 + i / 10, n) for i in range(20)}
    for j in range(5):
        cols[f"cat_{j}"] = rng.choice([f"v{k}" for k in range(5 + 10 * j)], n)
    df = pd.DataFrame(cols)
    df["label"] = (df["num_0"] + rng.normal(0, 1, n) > 0).astype(int)
    return df


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    t0 = time.perf_counter()
    df = make_data(n)
    print(f"data: {n:,} rows x 25 columns, generated in {time.perf_counter() - t0:.1f} s")
    cats = [f"cat_{j}" for j in range(5)]
    model = make_pipeline(
        make_column_transformer((OrdinalEncoder(), cats), remainder="passthrough"),
        HistGradientBoostingClassifier(max_iter=20),
    ).fit(df.drop(columns="label").head(50_000), df["label"].head(50_000))
    sig = infer_signature(model, df, "label")
    t0 = time.perf_counter()
    profile = compute_profile(model, df, sig)
    t_profile = time.perf_counter() - t0
    t0 = time.perf_counter()
    X = df[sig.feature_names]
    model.predict_proba(X)
    t_predict = time.perf_counter() - t0
    print(
        f"profile (features + model outputs): {t_profile:.2f} s "
        f"(the model's predict_proba alone, timed separately: {t_predict:.2f} s), {len(profile.to_bytes()) / 1e3:.0f} kB"
    )
    with tempfile.TemporaryDirectory() as home, Workspace(Config(home=Path(home))) as ws:
        ws.registry.add_team("bench")
        t0 = time.perf_counter()
        ws.registry.register(model, name="bench", owner="bench", reference=df, target="label")
        print(
            f"register with reference (skops save + verify, digest, profile, store): "
            f"{time.perf_counter() - t0:.2f} s"
        )


if __name__ == "__main__":
    main()
