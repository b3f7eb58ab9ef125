"""One of several real processes registering, moving aliases, deploying and labelling at once.

    python tests/_race_child.py PROCESSES ROUNDS     (OWNLOOP_HOME / OWNLOOP_DB_URL name the store)

It imports ownloop once, then forks PROCESSES children that run at the same moment, each with its
own store connection (opened after the fork) and its own random sequence.

Each write either succeeds or fails with a clear error; each child prints one JSON line: how
many of each write succeeded, and each refusal's class and message. The test decides which
refusals are acceptable.
"""

from __future__ import annotations

import json
import os
import random
import sys
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

from ownloop import Workspace
from ownloop.errors import OwnloopError
from ownloop.labels import labels_table, record_labels
from ownloop.predlog import read_log
from tests._kill_child import fitted, frame

MODEL = "race"


def race(seed: int, rounds: int) -> None:
    rng = random.Random(seed)
    data = frame(seed)
    done: Counter[str] = Counter()
    refused: list[tuple[str, str, str]] = []
    with Workspace() as ws:
        root = ws.config.predictions_dir
        ids = read_log(root, MODEL).table["prediction_id"].to_pylist()

        def register() -> None:
            ws.registry.register(
                fitted(data, rng.uniform(0.5, 2)), name=MODEL, reference=data, target="y"
            )

        def alias() -> None:
            latest = ws.registry.get_model(MODEL).latest_version
            ws.registry.set_alias(MODEL, "champion", rng.randint(1, latest))

        def deploy() -> None:
            latest = ws.registry.get_model(MODEL).latest_version
            ws.deploy.deploy(
                f"{MODEL}@{rng.randint(1, latest)}",
                strategy="canary",
                force=True,
                reason="race",
            )

        def promote() -> None:
            ws.deploy.promote(MODEL, reason="race")

        def label() -> None:
            rows = [
                {"prediction_id": pid, "label": rng.randint(0, 1)} for pid in rng.sample(ids, 5)
            ]
            table = labels_table(rows, at=ws.clock.now(), source=f"race-{seed}")
            record_labels(ws.registry, root, MODEL, table)

        ops: dict[str, Callable[[], None]] = {
            "register": register,
            "alias": alias,
            "deploy": deploy,
            "promote": promote,
            "label": label,
        }
        for _ in range(rounds):
            for name in rng.sample(list(ops), len(ops)):
                try:
                    ops[name]()
                except OwnloopError as exc:
                    refused.append((name, type(exc).__name__, str(exc)))
                else:
                    done[name] += 1
    summary: dict[str, Any] = {"done": dict(done), "refused": refused}
    sys.stdout.write(json.dumps(summary) + "\n")
    sys.stdout.flush()


def main() -> None:
    processes, rounds = int(sys.argv[1]), int(sys.argv[2])
    children = []
    for seed in range(processes):
        pid = os.fork()
        if pid == 0:
            try:
                race(seed, rounds)
            except BaseException:
                traceback.print_exc()
                sys.stderr.flush()
                os._exit(1)
            os._exit(0)
        children.append(pid)
    failed = [pid for pid in children if os.waitpid(pid, 0)[1] != 0]
    sys.exit(f"{len(failed)} of {processes} processes failed" if failed else 0)


if __name__ == "__main__":
    main()
