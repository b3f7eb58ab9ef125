"""The Python HTTP floor: a bare FastAPI app, JSON body to a numpy row, predict_proba."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI, Request

sys.path.insert(0, str(Path(__file__).parent))
from _model import FEATURES, make_model

model = make_model()
app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> dict[str, list[list[float]]]:
    body = await request.json()
    rows = body["instances"]
    x = np.array([[row[f] for f in FEATURES] for row in rows], dtype=np.float64)
    return {"probabilities": model.predict_proba(x).tolist()}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
