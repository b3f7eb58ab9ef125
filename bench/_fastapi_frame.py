"""Bare FastAPI apps for the DataFrame-fitted model: NumPy rows (the floor) or a DataFrame.

``/predict`` scores a NumPy row with a copy of the model whose ``feature_names_in_`` is removed
(the fastest a hand-written app gets: no per-call name check, no warning); ``/predict_frame``
builds a one-row DataFrame per request, as most hand-written apps for such a model do.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import uvicorn
from fastapi import FastAPI, Request

sys.path.insert(0, str(Path(__file__).parent))
from _frame_model import make_frame_model
from _model import FEATURES

model = make_frame_model()
bare = copy.copy(model)
del bare.feature_names_in_
app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> dict[str, list[list[float]]]:
    rows = (await request.json())["instances"]
    x = np.array([[row[f] for f in FEATURES] for row in rows], dtype=np.float64)
    return {"probabilities": bare.predict_proba(x).tolist()}


@app.post("/predict_frame")
async def predict_frame(request: Request) -> dict[str, list[list[float]]]:
    rows = (await request.json())["instances"]
    frame = pd.DataFrame(rows, columns=FEATURES)
    return {"probabilities": model.predict_proba(frame).tolist()}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
