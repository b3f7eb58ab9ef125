"""Latency checks that machine load cannot decide.

No assertion here depends on how fast or how busy the machine is: the timing loop is checked
with an injected clock; on real clocks a verdict is asserted only where the models differ by
100x in CPU work (a Python loop of known length: a busy machine was seen to inflate one call's CPU
time of a fast model tenfold, enough to hide a 10x gap in a p99 of 30 calls), or where load can
only push the
figure further the asserted way (a model that sleeps uses wall time but almost no CPU time).
"""

from __future__ import annotations

import gc
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_info  # type: ignore[import-untyped]

from ownloop import InvalidInputError, Workspace
from ownloop.evaluation import FAIL, INCONCLUSIVE, PASS, parse_suite, to_junit, to_markdown
from ownloop.evaluation._html import to_html
from ownloop.evaluation._latency import judge_budget, judge_ratio, time_calls

FAST, SLOW = 20_000, 2_000_000  # loop iterations per call: 100x apart in CPU work


class Burner:
    """A regressor whose predict burns a known amount of CPU (a loop), or sleeps (no CPU)."""

    n_features_in_ = 1

    def __init__(self, spins: int = 0, sleep_s: float = 0.0) -> None:
        self.spins = spins
        self.sleep_s = sleep_s

    def fit(self, X: Any, y: Any) -> Burner:
        return self

    def predict(self, X: Any) -> np.ndarray:
        total = 0
        for i in range(self.spins):
            total += i
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return np.zeros(len(X)) + (total % 2)


# -- the timing loop, with an injected clock -------------------------------------------------------


class FakeClock:
    """A clock that only the fake models move: each call costs exactly what it says."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def model(self, name: str, cost_ms: float, first_call_ms: float = 0.0) -> Any:
        seen = []

        def predict(row: pd.DataFrame) -> None:
            self.calls.append(name)
            self.now += (cost_ms + (first_call_ms if not seen else 0.0)) / 1000
            seen.append(gc.isenabled())

        predict.gc_states = seen  # type: ignore[attr-defined]
        return predict


ROWS = pd.DataFrame({"x": np.arange(6.0)})


def test_time_calls_measures_each_call_on_the_given_clock_after_a_warm_up() -> None:
    clock = FakeClock()
    a = clock.model("a", 2.0, first_call_ms=500.0)
    b = clock.model("b", 7.0)
    times = time_calls([a, b], ROWS, clock)
    assert times.shape == (2, 6)
    np.testing.assert_allclose(times[0], 2.0)  # the 500 ms first call is the warm-up, not timed
    np.testing.assert_allclose(times[1], 7.0)


def test_time_calls_interleaves_the_models_abba_on_the_same_rows() -> None:
    clock = FakeClock()
    time_calls([clock.model("a", 1.0), clock.model("b", 1.0)], ROWS, clock)
    assert clock.calls[:2] == ["a", "b"]  # warm-ups
    assert clock.calls[2:] == ["a", "b", "b", "a"] * 3


def test_time_calls_pauses_the_garbage_collector_while_timing_only() -> None:
    clock = FakeClock()
    a = clock.model("a", 1.0)
    assert gc.isenabled()
    time_calls([a], ROWS, clock)
    assert a.gc_states[0] is True  # the warm-up runs as usual
    assert not any(a.gc_states[1:])
    assert gc.isenabled()


def test_time_calls_holds_native_thread_pools_to_one_thread_while_timing() -> None:
    """On a busy machine a calling thread spins at OpenMP barriers, and that counts as CPU time."""
    import sklearn.ensemble  # noqa: F401  # loads scikit-learn's OpenMP runtime

    def pools() -> dict[str, int]:
        return {str(p["internal_api"]): int(p["num_threads"]) for p in threadpool_info()}

    before = pools()
    assert "openmp" in before
    seen: list[dict[str, int]] = []
    time_calls([lambda row: seen.append(pools())], ROWS, FakeClock())
    assert len(seen) == 1 + len(ROWS)
    assert all(set(s.values()) == {1} for s in seen), seen
    assert pools() == before  # restored afterwards


# -- judging, on known times -----------------------------------------------------------------------

BASE = np.full(100, 1.0)


@pytest.mark.parametrize(
    ("candidate", "status"),
    [
        (BASE * 10, FAIL),  # ten times slower
        (BASE / 10, PASS),  # ten times faster
        (BASE, PASS),  # the same
        (np.r_[np.full(99, 1.0), 2.0], INCONCLUSIVE),  # p99 1.01x; resamples with two 2s: 2x
    ],
)
def test_judge_ratio_on_known_times(candidate: np.ndarray, status: str) -> None:
    found = judge_ratio(candidate, BASE, 1.5, 0.95, 1000, 0)
    assert found.status == status, found
    assert found.interval[0] <= found.estimate <= found.interval[1]
    assert found.estimate == pytest.approx(np.quantile(candidate, 0.99))


def test_judge_ratio_pairs_the_rows() -> None:
    """The same rows slow in both (as when one call of each met a busy core): ratio stays 1."""
    rng = np.random.default_rng(1)
    shared = rng.lognormal(0, 1, 200)
    found = judge_ratio(shared * 1.0, shared, 1.2, 0.95, 1000, 0)
    assert found.interval == (1.0, 1.0)
    assert found.status == PASS


def test_judge_ratio_with_a_zero_baseline_is_not_a_pass() -> None:
    assert judge_ratio(BASE, np.zeros(100), 1.5, 0.95, 200, 0).status == FAIL


def test_judge_budget_on_known_times() -> None:
    times = np.linspace(1, 10, 200)
    assert judge_budget(times, 100.0, 0.95).status == PASS
    assert judge_budget(times, 1.0, 0.95).status == FAIL
    found = judge_budget(times, 9.92, 0.95)  # p99 9.91: just under; the upper limit 10 is not
    assert found.status == INCONCLUSIVE
    assert "time more rows" in found.words


# -- a gate on registered models, real clocks --------------------------------------------------------

SUITE = """
baseline: production
bootstrap: {{resamples: 500, seed: 0}}
datasets:
  holdout: {{path: holdout.parquet, label: y}}
checks:
{checks}
"""


@pytest.fixture
def burners(ws: Workspace, team: str, tmp_path: Path) -> Path:
    """burn@1 fast, burn@2 slow (100x the CPU work), burn@3 sleeps 30 ms (no CPU); production = 1."""
    reference = pd.DataFrame({"x": np.linspace(0, 1, 50), "y": np.linspace(0, 1, 50)})
    for model in (Burner(FAST), Burner(SLOW), Burner(sleep_s=0.03)):
        ws.registry.register(model, name="burn", owner=team, reference=reference, target="y")
    ws.deploy.set_production("burn", 1, force=True, reason="set up")
    reference.to_parquet(tmp_path / "holdout.parquet")
    return tmp_path


def _gate(ws: Workspace, folder: Path, ref: str, checks: str, baseline: str | None = None) -> Any:
    path = folder / "latency.yaml"
    path.write_text(SUITE.format(checks=checks))
    result = ws.evaluations.evaluate(ref, path, baseline=baseline, store=False)
    (check,) = result.checks
    return result, check


RATIO = "  - {type: latency, at_most_ratio: 1.5, rows: 30}\n"


def test_ratio_check_fails_a_candidate_a_hundred_times_slower_than_the_baseline(
    ws: Workspace, burners: Path
) -> None:
    result, check = _gate(ws, burners, "burn@2", RATIO)
    assert check.status == FAIL, check.message
    assert check.estimate > 1.5
    assert check.candidate > check.baseline
    assert "CPU time" in check.message
    assert "timed alternately on the same rows" in check.method
    assert "time.thread_time" in check.method
    assert check.details["clock"] == "cpu"
    assert result.verdict == FAIL


def test_ratio_check_passes_a_candidate_a_hundred_times_faster_than_the_baseline(
    ws: Workspace, burners: Path
) -> None:
    _, check = _gate(ws, burners, "burn@1", RATIO, baseline="2")
    assert check.status == PASS, check.message
    assert check.interval[1] <= 1.5
    assert "vs the baseline's" in check.message


def test_absolute_budget_is_judged_on_cpu_time_by_default_and_says_so(
    ws: Workspace, burners: Path
) -> None:
    _, slow = _gate(ws, burners, "burn@2", "  - {type: latency, at_most: 0.05, rows: 20}\n")
    assert slow.status == FAIL, slow.message  # 2,000,000 loop steps take far more than 0.05 ms
    assert "CPU time" in slow.message
    assert slow.details["clock"] == "cpu"
    _, fast = _gate(ws, burners, "burn@1", "  - {type: latency, at_most: 100, rows: 20}\n")
    assert fast.status == PASS, fast.message  # 20,000 loop steps take far less than 100 ms


def test_cpu_time_leaves_out_waiting_and_wall_time_does_not(ws: Workspace, burners: Path) -> None:
    """A model that sleeps 30 ms per call: waiting, as on a busy machine, costs no CPU time."""
    _, cpu = _gate(ws, burners, "burn@3", "  - {type: latency, at_most: 3, rows: 10}\n")
    assert cpu.status == PASS, cpu.message
    _, wall = _gate(
        ws, burners, "burn@3", "  - {type: latency, at_most: 3, rows: 10, clock: wall}\n"
    )
    assert wall.status == FAIL, wall.message
    assert wall.estimate >= 30
    assert "wall time" in wall.message
    assert wall.details["clock"] == "wall"


def test_ratio_check_without_a_baseline_is_refused(ws: Workspace, burners: Path) -> None:
    path = burners / "nobase.yaml"
    path.write_text(
        "datasets:\n  holdout: {path: holdout.parquet, label: y}\n"
        "checks:\n  - {type: latency, at_most_ratio: 1.5, rows: 10}\n"
    )
    with pytest.raises(InvalidInputError, match="at_most_ratio compares with the baseline's"):
        ws.evaluations.evaluate("burn@2", path, store=False)


def test_ratio_check_reads_right_in_every_report(ws: Workspace, burners: Path) -> None:
    result, check = _gate(ws, burners, "burn@2", RATIO)
    md = to_markdown(result)
    row = next(line for line in md.splitlines() if line.startswith("| latency |"))
    assert "❌ FAIL" in row
    assert f"ratio {check.estimate:.4g} [" in row  # not a "Δ": this is a ratio
    assert "| 1.5 |" in row
    failure = ET.fromstring(to_junit(result)).find("./testsuite/testcase/failure")
    assert failure is not None
    assert "CPU time" in failure.get("message", "")
    html = to_html(result)
    assert "ratio" in html and "CPU time" in html
    assert json.loads(json.dumps(result.to_dict()))["checks"][0]["details"]["clock"] == "cpu"


# -- the suite options -----------------------------------------------------------------------------

HOLDOUT = "datasets:\n  d: {path: d.parquet}\nchecks:\n"


def test_an_old_latency_check_still_parses_and_keeps_its_digest() -> None:
    old = parse_suite(HOLDOUT + "  - {type: latency, at_most: 250, rows: 100}\n")
    (check,) = old.checks
    assert (check.at_most, check.at_most_ratio, check.clock) == (250, None, "cpu")
    explicit = parse_suite(HOLDOUT + "  - {type: latency, at_most: 250, rows: 100, clock: cpu}\n")
    assert explicit.digest == old.digest
    wall = parse_suite(HOLDOUT + "  - {type: latency, at_most: 250, rows: 100, clock: wall}\n")
    assert wall.digest != old.digest


@pytest.mark.parametrize(
    ("check", "pattern"),
    [
        ("{type: latency, rows: 10}", "needs exactly one bound: 'at_most: MS'"),
        ("{type: latency, at_most: 5, at_most_ratio: 1.5}", "needs exactly one bound"),
        ("{type: latency, at_least: 5}", "needs exactly one bound"),
        ("{type: latency, at_most_ratio: 0}", "at_most_ratio 0.0 must be > 0"),
        (
            "{type: latency, at_most: 5, clock: cpu_time}",
            "clock 'cpu_time' is not one of cpu, wall",
        ),
        ("{type: latency, at_most: 5, rows: 0}", "rows 0 must be at least 1"),
        ("{type: model_size, at_most: 5, clock: cpu}", "'clock' applies to latency checks only"),
    ],
)
def test_latency_options_are_validated(check: str, pattern: str) -> None:
    with pytest.raises(InvalidInputError, match=pattern):
        parse_suite(HOLDOUT + f"  - {check}\n")
