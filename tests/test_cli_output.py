"""What the CLI prints: user text literally (never as terminal markup), errors as one line,
output paths that cannot be written as errors naming them, progress bars only on a terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result
from sklearn.linear_model import LogisticRegression

from ownloop import Config, Workspace
from ownloop.cli import cli
from ownloop.demo import log_predictions, make_churn_data
from tests.conftest import env_for

OWNLOOP = str(Path(sys.executable).parent / "ownloop")
BAR = "judging checks"  # a progress task of every eval: on a bar, never in the report
SUITE = """
bootstrap: {{resamples: 200, seed: 1}}
min_slice_rows: 50
datasets:
  holdout: {{path: {data}, label: churned}}
slices:
  - column: plan
checks:
  - metric: accuracy
    at_least: 0.4
"""


def invoke(config: Config, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env_for(config))


@pytest.fixture
def churn(ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame) -> str:
    ws.registry.register(
        churn_model, name="churn", owner=team, reference=churn_data, target="churned"
    )
    return "churn@1"


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    holdout = make_churn_data(600, seed=5)
    holdout.to_parquet(tmp_path / "holdout.parquet")
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(data=tmp_path / "holdout.parquet"), encoding="utf-8")
    return path


# -- user text is printed literally --------------------------------------------------------------


def test_slice_names_in_brackets_are_printed_literally(
    config: Config, churn: str, suite: Path
) -> None:
    r = invoke(config, "eval", churn, "--suite", str(suite), "--no-store")
    assert r.exit_code == 0, r.output
    plans = sorted(make_churn_data(600, seed=5)["plan"].unique())
    for plan in plans:  # the slice label "[plan=basic]" looks like a markup tag
        assert f"accuracy >= 0.4 [plan={plan}]" in r.output
    assert "PASS: churn@1" in r.output


@pytest.fixture
def odd(ws: Workspace, team: str) -> str:
    """A model whose feature names and classes look like markup; an hour of logged predictions."""
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"[/bad]": rng.normal(size=400), ":warning: [red]x": rng.normal(size=400)})
    y = np.where(X["[/bad]"] > 0, "[/yes]", "[no]")
    frame = X.assign(y=y)
    ws.registry.register(
        LogisticRegression().fit(X, y), name="odd", owner=team, reference=frame, target="y"
    )
    start = datetime.now(UTC) - timedelta(minutes=30)
    log_predictions(ws, "odd@1", X + 3.0, start, step=timedelta(seconds=1))
    return "odd"


def test_feature_and_class_names_like_markup_are_printed_literally(
    config: Config, odd: str
) -> None:
    shown = invoke(config, "show", f"{odd}@1")
    assert shown.exit_code == 0, shown.output
    for text in ("[/bad]", ":warning: [red]x", "['[/yes]', '[no]']"):
        assert text in shown.output
    drift = invoke(config, "drift", odd, "--since", "2h")
    assert drift.exit_code == 0, drift.output
    assert "[/bad]" in drift.output
    assert ":warning: [red]x" in drift.output
    monitor = invoke(config, "monitor", odd, "--window", "2h")
    assert monitor.exit_code == 0, monitor.output
    assert "[/bad]" in monitor.output  # named among the drifted features


def test_label_file_ids_like_markup_are_printed_literally(
    config: Config, odd: str, tmp_path: Path
) -> None:
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"prediction_id": ["[/bold]", "[red]x[/red]"], "label": ["[no]", "[no]"]}).to_csv(
        labels, index=False
    )
    r = invoke(config, "label", "import", str(labels), "--model", odd)
    assert r.exit_code == 0, r.output
    assert "unknown: [/bold]" in r.output
    assert "unknown: [red]x[/red]" in r.output


def test_error_messages_with_brackets_are_printed_literally(config: Config, odd: str) -> None:
    r = invoke(config, "monitor", odd, "--threshold", "[/bad]")
    assert r.exit_code == 2  # an input error, as `ownloop monitor` documents
    assert "error: --threshold '[/bad]' must look like FEATURE=0.2" in r.output
    assert "Traceback" not in r.output


# -- output paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--html", "--junit", "--markdown", "--json"])
def test_eval_report_path_under_a_file_is_an_error_and_stores_nothing(
    config: Config, churn: str, suite: Path, tmp_path: Path, ws: Workspace, option: str
) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("not a folder")
    target = blocker / "report.out"
    r = invoke(config, "eval", churn, "--suite", str(suite), option, str(target))
    assert r.exit_code == 2, r.output
    assert r.output.startswith(f"error: {option} {target}: cannot create its folder")
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert ws.registry.get_version(churn).gate_status == "not_evaluated"


def test_eval_reports_into_missing_folders_are_written(
    config: Config, churn: str, suite: Path, tmp_path: Path
) -> None:
    target = tmp_path / "new" / "deeper" / "eval.json"
    r = invoke(config, "eval", churn, "--suite", str(suite), "--json", str(target))
    assert r.exit_code == 0, r.output
    assert json.loads(target.read_text())["verdict"] == "passed"


def test_drift_html_path_under_a_file_is_an_error(config: Config, odd: str, tmp_path: Path) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("not a folder")
    r = invoke(config, "drift", odd, "--since", "2h", "--html", str(blocker / "d.html"))
    assert r.exit_code == 1, r.output
    assert r.output.startswith(f"error: --html {blocker / 'd.html'}: cannot create its folder")
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_drift_html_into_a_missing_folder_is_written(
    config: Config, odd: str, tmp_path: Path
) -> None:
    target = tmp_path / "new" / "drift.html"
    r = invoke(config, "drift", odd, "--since", "2h", "--html", str(target))
    assert r.exit_code == 0, r.output
    assert target.read_text().startswith("<!doctype html>")


def test_sample_out_path_under_a_file_is_an_error(config: Config, odd: str, tmp_path: Path) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("not a folder")
    r = invoke(config, "sample", odd, "--out", str(blocker / "review.csv"), "--since", "2h")
    assert r.exit_code == 1, r.output
    assert r.output.startswith("error: --out ")


# -- progress -----------------------------------------------------------------------------------------


def test_captured_output_has_no_progress_bar(config: Config, churn: str, suite: Path) -> None:
    r = invoke(config, "eval", churn, "--suite", str(suite), "--no-store")
    assert r.exit_code == 0, r.output
    assert BAR not in r.output


def _run_with_stderr(args: list[str], env: dict[str, str], on_terminal: bool) -> tuple[int, str]:
    """Run ownloop with stderr on a pseudo-terminal (or a pipe); return exit code and stderr."""
    if not on_terminal:
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        return proc.returncode, proc.stderr
    leader, follower = pty.openpty()
    chunks: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(leader, chunks), daemon=True)
    reader.start()
    try:
        proc = subprocess.run(
            args, env=env, stdout=subprocess.PIPE, stderr=follower, timeout=300, check=False
        )
    finally:
        os.close(follower)
        reader.join(timeout=30)
        os.close(leader)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


def _drain(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # the other end closed
            return
        if not data:
            return
        into.append(data)


@pytest.mark.slow
@pytest.mark.parametrize("on_terminal", [True, False], ids=["terminal", "piped"])
def test_eval_draws_a_progress_bar_only_on_a_terminal(
    config: Config, churn: str, suite: Path, on_terminal: bool
) -> None:
    env = env_for(config)
    env.pop("OWNLOOP_NO_PROGRESS", None)
    code, err = _run_with_stderr(
        [OWNLOOP, "eval", churn, "--suite", str(suite), "--no-store"], env, on_terminal
    )
    assert code == 0, err
    assert (BAR in err) is on_terminal, err[-2000:]
