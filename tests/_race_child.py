"""One of several real processes registering, moving aliases, deploying and labelling at once.

    python tests/_race_child.py SEED ROUNDS     (OWNLOOP_HOME / OWNLOOP_DB_URL name the store)

Each write either succeeds or fails with a clear error; the last stdout line is a JSON summary:
how many of each write succeeded, and each refusal's class and message. The test decides which
refusals are acceptable.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

from ownloop import Workspace
from ownloop.errors import OwnloopError
from ownloop.labels import labels_table, record_labels
from ownloop.predlog import read_log
from tests._kill_child import fitted, frame

MODEL = "race"


def main() -> None:
    seed, rounds = int(sys.argv[1]), int(sys.argv[2])
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


if __name__ == "__main__":
    main()
