"""The MLflow venv both bench scripts use: its own pins, never ownloop's.

Created on first use as ``bench/.venv-mlflow`` with MLflow, the same scikit-learn as ownloop's
venv (so models load the same way on both sides) and ownloop itself (editable) for the gate
bench's MLflow half.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MLFLOW_VENV = HERE / ".venv-mlflow"


def ensure_mlflow_venv() -> Path:
    """The venv's python, creating or completing the venv when needed."""
    import sklearn

    python = MLFLOW_VENV / "bin" / "python"
    if not python.exists():
        print(
            f"creating {MLFLOW_VENV} (mlflow, scikit-learn=={sklearn.__version__}) ...", flush=True
        )
        subprocess.run([sys.executable, "-m", "venv", str(MLFLOW_VENV)], check=True)
    has = subprocess.run(
        [str(python), "-c", "import mlflow, ownloop"], capture_output=True, check=False
    )
    if has.returncode != 0:
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "mlflow",
                f"scikit-learn=={sklearn.__version__}",
                "-e",
                str(HERE.parent),
            ],
            check=True,
        )
    return python
