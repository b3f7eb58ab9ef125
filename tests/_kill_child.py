"""A real ownloop process that repeats one write and prints ``ack <id>`` after each returns.

    python tests/_kill_child.py OPERATION HOME
    python tests/_kill_child.py --fork         # reads "OPERATION HOME" lines from stdin

With ``--fork`` the process imports ownloop once and forks a fresh child for each line (it prints
``pid <n>``, and ``exit <n> <status>`` once the child is gone), so a test can kill many processes
without paying the imports each time; each child is a whole process with its own store
connection, killed by its pid.

The kill-loop tests SIGKILL it at a random moment and then check that every acknowledged write
is still there and nothing is half-written. OPERATION is one of: register, alias, deploy, label,
flush. The workspace in HOME was set up by the test (team ``risk``, model ``m`` with versions 1
and 2, production at 1, and a logged segment of predictions to label).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ownloop import Config, Workspace
from ownloop.labels import labels_table, record_labels
from ownloop.predlog import BASE_SCHEMA, PredictionLogger, new_ids, read_log

MODEL = "m"


def ack(text: object) -> None:
    sys.stdout.write(f"ack {text}\n")
    sys.stdout.flush()


def frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    return X.assign(y=(X["a"] + 0.3 * X["b"] > 0).astype(int))


def fitted(data: pd.DataFrame, c: float) -> object:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c).fit(data[["a", "b"]], data["y"])


def predictions(ids: list[str], ws: Workspace) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            **{f.name: pa.nulls(n, f.type) for f in BASE_SCHEMA},
            "prediction_id": ids,
            "ts": pa.array([ws.clock.now()] * n, BASE_SCHEMA.field("ts").type),
            "model": [MODEL] * n,
            "version": pa.array([1] * n, pa.int32()),
        },
        schema=BASE_SCHEMA,
    )


def register(ws: Workspace) -> None:
    data = frame(0)
    for i in itertools.count():
        # a new artifact every time (another C), so each register stages and renames a file
        v = ws.registry.register(
            fitted(data, 1.0 + i * 0.001 + np.random.default_rng().random()),
            name=MODEL,
            reference=data,
            target="y",
        )
        ack(v.version)


def alias(ws: Workspace) -> None:
    for i in itertools.count():
        number = 1 + i % 2
        ws.registry.set_alias(MODEL, "champion", number)
        ack(f"{i} {number}")


def deploy(ws: Workspace) -> None:
    from ownloop.errors import ConflictError

    with contextlib.suppress(ConflictError):  # a rollout a kill left half-way is finished first
        ws.deploy.promote(MODEL, reason="kill loop: finish the rollout left by a kill")
    while True:
        live = ws.registry.get_version(f"{MODEL}@production").version
        target = 2 if live == 1 else 1
        rollout = ws.deploy.deploy(
            f"{MODEL}@{target}", strategy="canary", force=True, reason="kill loop"
        )
        ws.deploy.promote(MODEL, reason="kill loop")
        ack(f"{rollout.id} {target}")


def label(ws: Workspace) -> None:
    root = ws.config.predictions_dir
    ids = read_log(root, MODEL).table["prediction_id"].to_pylist()
    for i in itertools.count():
        pid, value = ids[i % len(ids)], (i // len(ids)) % 2
        table = labels_table(
            [{"prediction_id": pid, "label": value}], at=ws.clock.now(), source="kill"
        )
        record_labels(ws.registry, root, MODEL, table)
        ack(f"{pid} {value} {ids[(i + 1) % len(ids)]}")  # and the id written next


def flush(ws: Workspace) -> None:
    logger = PredictionLogger(ws.config.predictions_dir, flush_interval_s=3600)
    rng = np.random.default_rng()
    while True:
        # segments of varied size, so a kill can land while one is being written
        ids = new_ids(int(rng.integers(100, 30_000)))
        logger.submit(MODEL, predictions(ids, ws))
        logger.flush()
        ack(f"{ids[0]} {ids[-1]} {len(ids)}")


OPERATIONS = {
    "register": register,
    "alias": alias,
    "deploy": deploy,
    "label": label,
    "flush": flush,
}


def run(operation: str, home: Path) -> None:
    with Workspace(Config(home=home, user="killer")) as ws:
        OPERATIONS[operation](ws)


def fork_server() -> None:
    """Fork one child per command line; report its pid and, once it is gone, its status."""
    for line in sys.stdin:
        operation, home = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                run(operation, Path(home))
            except BaseException:
                traceback.print_exc()
                sys.stderr.flush()
                os._exit(1)
            os._exit(0)
        sys.stdout.write(f"pid {pid}\n")
        sys.stdout.flush()
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(f"exit {pid} {status}\n")
        sys.stdout.flush()


def main() -> None:
    if sys.argv[1] == "--fork":
        fork_server()
    else:
        run(sys.argv[1], Path(sys.argv[2]))


if __name__ == "__main__":
    main()
