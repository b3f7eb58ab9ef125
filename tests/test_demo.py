"""`ownloop demo` end to end, as a user runs it, checked from the store it leaves behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from ownloop import Config, InvalidInputError, Workspace, predlog
from ownloop.datasets import frame_digest
from ownloop.demo import MARKER, make_churn_data, prepare_home
from ownloop.deploy import State
from ownloop.predlog import read_labels, read_window
from ownloop.store import tables as t

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("demo") / "ownloop-demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OWNLOOP_")}
    result = subprocess.run(
        [sys.executable, "-m", "ownloop", "demo", "--home", str(home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "done." in result.stdout
    return home, result.stdout


def test_demo_registers_owned_versions_with_profiles(demo: tuple[Path, str]) -> None:
    home, _ = demo
    with Workspace(Config(home=home)) as ws:
        [model] = ws.registry.list_models()
        assert (model.name, model.owner) == ("churn", "risk")
        assert model.aliases["production"] == 3
        team = ws.registry.get_team("risk")
        assert team.email and team.webhook_url
        held_out = frame_digest(make_churn_data(3000, seed=2))
        versions = ws.registry.list_versions("churn")
        assert len(versions) == 3
        for v in versions:
            assert v.signature.task == "classification"
            # the reference is the held-out data, not the 8,000 rows the model was fitted on
            assert v.data_digest == held_out
            assert ws.registry.load_profile(v.ref).row_count == 3000
            assert v.metrics["valid_accuracy"] > 0.7
        assert hasattr(ws.registry.load("churn@production"), "predict_proba")
        assert {"team.create", "model.create", "version.register", "deploy.direct"} <= {
            e.action for e in ws.registry.audit_log(limit=1000)
        }


def test_demo_deploys_v1_through_its_first_release_gate(demo: tuple[Path, str]) -> None:
    """No --force: v1's gate (absolute bounds, no production to compare with) passed first."""
    home, out = demo
    with Workspace(Config(home=home)) as ws:
        gate = ws.evaluations.latest("churn@1")
        assert gate is not None and gate.verdict == "passed" and gate.baseline is None
        first = ws.deploy.rollouts("churn")[-1]
        assert (first.candidate, first.stable, first.state) == (1, None, State.PROMOTED)
        assert first.gate_evaluation_id == gate.id
        moves = [
            e
            for e in ws.registry.audit_log(model="churn", limit=1000)
            if e.action == "deploy.direct"
        ]
        [move] = moves
        assert move.after is not None and move.after["version"] == 1
        assert "forced" not in move.after["evidence"]
    assert "ownloop deploy churn@1: gate passed" in out


def test_demo_evaluates_the_candidate_and_stores_the_verdict(demo: tuple[Path, str]) -> None:
    home, out = demo
    with Workspace(Config(home=home)) as ws:
        stored = ws.evaluations.latest("churn@2")
        assert stored is not None
        assert stored.baseline == "churn@1 (production)"
        assert ws.registry.get_version("churn@2").gate_status == stored.verdict
        with ws.store.read() as conn:
            rows = conn.execute(
                sa.select(t.evaluations.c.model, t.evaluations.c.version).order_by(
                    t.evaluations.c.id
                )
            ).all()
        assert [tuple(r) for r in rows] == [("churn", 1), ("churn", 2), ("churn", 3)]
    assert (home / "evals" / "churn.yaml").exists()
    assert {p.name for p in (home / "reports").iterdir()} == {
        "eval.xml",
        "eval.md",
        "eval.html",
        "eval.json",
    }
    assert "eval gate for churn@2 against churn@1 (production)" in out
    assert stored is not None
    (latency,) = [c for c in stored.result.checks if c.type == "latency"]
    assert latency.bound == 2.0  # against the baseline, not an absolute wall-time budget
    assert latency.details["clock"] == "cpu"
    assert "timed alternately on the same rows" in latency.method
    assert "CPU time" in latency.message
    assert any(
        line.strip().startswith(f"{latency.status}") and "latency" in line
        for line in out.splitlines()
    )


def test_demo_serves_logs_and_labels(demo: tuple[Path, str]) -> None:
    home, out = demo
    root = home / "predictions"
    with Workspace(Config(home=home)) as ws:
        rollout = ws.deploy.rollouts("churn")[0]
    # the serve step's traffic: before v3's rollout started, and not simulated
    logged = read_window(root, "churn", end=rollout.started_at)
    answered = logged.filter(pc.invert(pc.starts_with(logged["request_id"], "sim-")))
    # the demo's one bad request is logged as one refused row, so error rates count it
    counts = {c["values"]: c["counts"] for c in answered["status"].value_counts().to_pylist()}
    assert counts == {"ok": 400, "refused": 1}
    served = answered.filter(pc.equal(answered["status"], "ok"))
    assert set(served["version"].to_pylist()) == {1}
    served_ids = set(served["prediction_id"].to_pylist())
    labels = read_labels(root, "churn")
    assert len(served_ids & set(labels["prediction_id"].to_pylist())) == 250
    assert any("refused with 400" in line and "feature 'age'" in line for line in out.splitlines())
    with Workspace(Config(home=home)) as ws:
        actions = [a.action for a in ws.registry.audit_log(model="churn", limit=1000)]
    assert "label.write" in actions


def test_demo_serves_with_tokens_and_audits_each_caller(demo: tuple[Path, str]) -> None:
    """The demo's server requires tokens: the churn service's labels are audited under its token,
    and the same labels sent with no token (401) or team growth's token (403) are refused; the
    403 is in the audit log too. Only the hashes of the tokens are stored."""
    home, out = demo
    with Workspace(Config(home=home)) as ws:
        entries = ws.registry.audit_log(limit=10_000)
        listed = {t.name: t for t in ws.tokens.list()}
        with ws.store.engine.connect() as conn:
            stored = conn.execute(sa.select(t.api_tokens.c.secret_hash)).scalars().all()
    assert {n: (x.team, x.role) for n, x in listed.items()} == {
        "churn-app": ("risk", "owner"),
        "upsell-app": ("growth", "owner"),
        "demo-dashboard": ("risk", "owner"),
    }
    assert all(h.startswith("scrypt$") for h in stored) and len(stored) == 3
    label_actors = {e.actor for e in entries if e.action == "label.write"}
    assert label_actors == {"token:churn-app@risk"}
    denied = [e for e in entries if e.action == "access.denied"]
    assert [e.actor for e in denied] == ["token:upsell-app@growth"]
    assert denied[0].after["action"] == "label.write"
    line = next(x for x in out.splitlines() if "labels with no token" in x)
    assert "labels with no token: 401" in line and "'upsell-app': 403" in line


def test_demo_acknowledges_an_alert_from_the_dashboard_page(demo: tuple[Path, str]) -> None:
    """The demo signs in to the dashboard with a token and acknowledges an alert with the page's
    own form: the store has the alert acknowledged by that token and the sign-in audited; the
    same form with a forged CSRF token was refused first."""
    import re

    home, out = demo
    line = next(x for x in out.splitlines() if "'Acknowledge' on alert #" in x)
    found = re.search(r"alert #(\d+) .*forged CSRF token: (\d+).*own form: (\d+)", line)
    assert found is not None, line
    alert_id, forged, status = (int(g) for g in found.groups())
    assert (forged, status) == (403, 303)
    with Workspace(Config(home=home)) as ws:
        alert = ws.alerts.get(alert_id)
        entries = ws.registry.audit_log(limit=10_000)
    assert alert.state == "acknowledged" and alert.acked_by == "token:demo-dashboard@risk"
    assert [e.actor for e in entries if e.action == "ui.login"] == ["token:demo-dashboard@risk"]
    acks = [e for e in entries if e.action == "alert.ack" and e.target == f"alert:{alert_id}"]
    assert [e.actor for e in acks] == ["token:demo-dashboard@risk"]
    assert "churn's page draws 6 time charts" in out


def test_demo_monitor_step_finds_the_drifted_windows(demo: tuple[Path, str]) -> None:
    home, _ = demo
    with Workspace(Config(home=home)) as ws:
        runs = sorted(ws.monitor.runs("churn"), key=lambda r: r.window_end)
        assert [r.summary["dataset_drift"] for r in runs] == [False] * 4 + [True] * 2
        assert all(r.rows == 1500 for r in runs)
        assert "tenure_months" in runs[-1].summary["drifted"]
        realised = ws.monitor.results("churn", kind="realised_performance")
        accuracy = [r for r in realised if r.name == "accuracy"]
        assert len(accuracy) == 6
        assert all(r.value is not None and 0.6 < r.value < 0.95 for r in accuracy)
        estimated = [
            r
            for r in ws.monitor.results("churn", kind="estimated_performance")
            if r.name == "accuracy"
        ]
        assert len(estimated) == 6
        assert {"monitor.run"} <= {e.action for e in ws.registry.audit_log(limit=1000)}


def test_demo_finds_the_unit_bug_apart_from_drift(demo: tuple[Path, str]) -> None:
    """2% of monthly charges in cents in the third hour: a tail finding, not dataset drift."""
    home, out = demo
    with Workspace(Config(home=home)) as ws:
        runs = sorted(ws.monitor.runs("churn"), key=lambda r: r.window_end)
        tails = {
            (r.run_id, r.name): r.alert for r in ws.monitor.results("churn", kind="tail_share")
        }
        charges = [tails.get((run.id, "monthly_charges")) for run in runs]
        assert charges[:4] == [False, False, True, False]
        assert runs[2].summary["dataset_drift"] is False
        assert not any(tails.get((runs[2].id, f)) for f in ("age", "tenure_months"))
        drift = {(r.run_id, r.name): r for r in ws.monitor.results("churn", kind="feature_drift")}
        moved = drift[(runs[-1].id, "tenure_months")]
        assert moved.alert is True and moved.value is not None and moved.value > 0.2  # sd moved
        weighted = [
            r
            for r in ws.monitor.results("churn", kind="dataset_drift")
            if r.name == "weighted_share"
        ]
        assert len(weighted) == 6 and weighted[-1].alert is True
        profile = ws.registry.load_profile("churn@production")
        assert profile.importance is not None and sum(profile.importance.values()) == pytest.approx(
            1
        )
    assert "values beyond the reference's range: monthly_charges" in out
    assert "carry" in out and "importance by permutation" in out


def test_demo_label_free_estimate_agrees_with_the_realised_accuracy(demo: tuple[Path, str]) -> None:
    """With a held-out reference, CBPE's estimate and the realised accuracy agree in every window."""
    home, out = demo
    with Workspace(Config(home=home)) as ws:
        results = ws.monitor.results("churn")
    by_window: dict[Any, dict[str, Any]] = {}
    for r in results:
        if r.name == "accuracy" and r.kind in ("estimated_performance", "realised_performance"):
            by_window.setdefault(r.window_end, {})[r.kind] = r
    assert len(by_window) == 6
    for end, pair in by_window.items():
        est, real = pair["estimated_performance"], pair["realised_performance"]
        assert real.n is not None and real.n > 300, end  # labels exist for this window
        assert None not in (est.value, est.lower, est.upper, real.value, real.lower, real.upper)
        inside_band = est.lower <= real.value <= est.upper
        inside_interval = real.lower <= est.value <= real.upper
        assert inside_band or inside_interval, (end, est, real)
    assert "agrees with the realised figure in 6 of 6 labelled windows" in out
    assert "DISAGREES" not in out


def test_demo_blocks_the_regression_at_its_gate(demo: tuple[Path, str]) -> None:
    """v2 is really worse (trained on labels that lost churn events): gate failed, deploy refused."""
    home, out = demo
    with Workspace(Config(home=home)) as ws:
        gate = ws.evaluations.latest("churn@2")
        assert gate is not None and gate.verdict == "failed"
        assert ws.registry.get_version("churn@2").gate_status == "failed"
        failed = {c["name"] for c in gate.report["checks"] if c["status"] == "failed"}
        assert "accuracy non-inferiority" in failed  # worse than production on the same rows
        # refused before anything was written: no rollout of v2, production never moved to it
        assert [r.candidate for r in ws.deploy.rollouts("churn")] == [3, 1]
        history = [e.after for e in ws.registry.audit_log(model="churn", limit=1000)]
        assert all(not (isinstance(a, dict) and a.get("version") == 2) for a in history)
    refusal = f"ownloop deploy churn@2: refused: churn@2's gate is FAILED (evaluation {gate.id} "
    assert refusal in out


def test_demo_rolls_v3_out_through_shadow_and_canary_steps(demo: tuple[Path, str]) -> None:
    home, out = demo
    with Workspace(Config(home=home)) as ws:
        rollout = ws.deploy.rollouts("churn")[0]
        assert (rollout.candidate, rollout.stable, rollout.state) == (3, 1, State.PROMOTED)
        gate = ws.evaluations.latest("churn@3")
        assert gate is not None and rollout.gate_evaluation_id == gate.id
        events = ws.deploy.events(rollout.id)
        assert [(e.from_state, e.to_state, e.step, e.weight) for e in events] == [
            (None, State.PENDING, -1, 0.0),
            (State.PENDING, State.SHADOWING, -1, 0.0),
            (State.SHADOWING, State.CANARY, 0, 25.0),
            (State.CANARY, State.CANARY, 1, 50.0),
            (State.CANARY, State.PROMOTED, 2, 100.0),
        ]
        # every move after the start was taken by the analysis, with its evidence
        for event, arm in zip(events[2:], ("shadow", "canary", "canary"), strict=True):
            assert event.evidence is not None and event.evidence["outcome"] == "PASS"
            assert event.evidence["arm"] == arm
            assert min(event.evidence["n_stable"], event.evidence["n_candidate"]) >= 200
            assert not [g for g in event.evidence["guardrails"] if g["outcome"] == "FAIL"]
        assert ws.registry.get_model("churn").aliases["production"] == 3
        assert ws.deploy.route("churn").stable == 3 and ws.deploy.route("churn").candidate is None
        actions = [e.action for e in ws.registry.audit_log(model="churn", limit=1000)]
        assert {"deploy.start", "deploy.step", "deploy.promote"} <= set(actions)
    assert "canary vs stable" in out and "ownloop status churn (during the canary)" in out
    assert "churn@3 is production now, promoted by the analysis" in out


def test_demo_logs_every_arm_of_the_rollout(demo: tuple[Path, str]) -> None:
    home, _ = demo
    with Workspace(Config(home=home)) as ws:
        rollout = ws.deploy.rollouts("churn")[0]
    assert rollout.finished_at is not None
    logged = read_window(
        home / "predictions", "churn", start=rollout.started_at, end=rollout.finished_at
    )
    arms = {(r["arm"], r["version"]) for r in logged.select(["arm", "version"]).to_pylist()}
    assert arms == {("stable", 1), ("shadow", 3), ("canary", 3)}
    shadow = logged.filter(pc.equal(logged["arm"], "shadow"))
    stable_requests = set(
        logged.filter(pc.equal(logged["arm"], "stable"))["request_id"].to_pylist()
    )
    # a shadow row mirrors a request stable answered, under the same request id
    assert set(shadow["request_id"].to_pylist()) <= stable_requests


def test_demo_rollback_check_after_the_drift_is_insufficient(demo: tuple[Path, str]) -> None:
    home, out = demo
    with Workspace(Config(home=home)) as ws:
        with ws.store.read() as conn:
            rows = conn.execute(sa.select(t.rollback_checks)).all()
        assert ws.registry.get_model("churn").aliases["production"] == 3  # check only: unchanged
    [check] = rows
    assert (check.current_version, check.target_version) == (3, 1)
    assert (check.verdict, check.acted) == ("INSUFFICIENT", False)
    report = check.report
    # judged on the rows since the drift began: they drifted against v1's reference, and v1's
    # realised accuracy on them fell below its reference accuracy (the drift hurts it too)
    assert report["rows"] == 3000 and report["dataset_drift"] is True
    assert any("below its reference accuracy" in r for r in report["reasons"])
    assert report["paired"] is not None and report["labelled_rows"] >= 500
    assert "retrain on recent data" in report["next_step"]
    assert "verdict: INSUFFICIENT" in out and "retrain on recent data" in out


DRIFT_RULES = {"dataset_drift", "top_feature_drift", "prediction_drift"}


def test_demo_routes_the_drift_alert_to_the_owner_webhook(demo: tuple[Path, str]) -> None:
    """The drift opens alerts for team risk from the monitor's stored windows; the outbox delivers
    them to the team's webhook (the demo's loopback receiver); the team acknowledges the drift."""
    home, out = demo
    with Workspace(Config(home=home)) as ws:
        hook = ws.registry.get_team("risk").webhook_url
        with ws.store.read() as conn:
            alerts = conn.execute(sa.select(t.alerts).order_by(t.alerts.c.id)).all()
            notes = conn.execute(sa.select(t.alert_notifications)).all()
            tries = conn.execute(sa.select(t.alert_deliveries)).all()
            drifted = {
                r.id
                for r in conn.execute(sa.select(t.monitor_runs))
                if r.summary["dataset_drift"] is True
            }
    assert hook is not None and hook.startswith("http://127.0.0.1:")
    drift = [a for a in alerts if a.rule in DRIFT_RULES]
    assert {a.rule for a in drift} == DRIFT_RULES
    assert {(a.model, a.version, a.team) for a in drift} == {("churn", 3, "risk")}
    [acked] = [a for a in drift if a.rule == "dataset_drift"]
    assert acked.state == "acknowledged" and acked.acked_by is not None
    # opened from the real figures of the drifted windows, not rows put there for the demo
    assert set(acked.details["run_ids"]) <= drifted and len(acked.details["run_ids"]) == 2
    assert "retrain on recent data" in acked.next_step
    assert "ownloop export-evalset churn" in acked.next_step
    # the webhook route delivered, at the first attempt; mail is refused (no SMTP configured)
    mine = [n for n in notes if n.alert_id == acked.id]
    [webhook] = [n for n in mine if n.channel == "webhook"]
    assert (webhook.target, webhook.state, webhook.attempts) == (hook, "delivered", 1)
    [attempt] = [d for d in tries if d.notification_id == webhook.id]
    assert (attempt.outcome, attempt.status_code) == ("delivered", 200)
    [mail] = [n for n in mine if n.channel == "email"]
    assert mail.state == "refused"
    # the deploy event of churn@2's failed gate was resolved by hand, with its note
    [gate] = [a for a in alerts if a.rule == "gate_failed"]
    assert (gate.version, gate.state) == (2, "resolved") and "never shipped" in gate.resolve_note
    assert "private addresses are allowed for this local demo only" in out
    assert "OWNLOOP_ALLOW_PRIVATE_WEBHOOKS=1" in out and "no OWNLOOP_SMTP_URL" in out


def test_demo_webhook_receives_an_alertmanager_body(demo: tuple[Path, str]) -> None:
    home, out = demo
    with Workspace(Config(home=home)) as ws:
        [acked] = [a for a in ws.alerts.list(model="churn") if a.rule == "dataset_drift"]
        delivered = sum(
            n.state == "delivered" and n.channel == "webhook"
            for a in ws.alerts.list(model="churn")
            for n in ws.outbox.notifications(a.id)
        )
    bodies = [json.loads(p.read_text()) for p in sorted((home / "received").glob("*.json"))]
    # every delivered webhook notification arrived once, in the body of its group, no more
    entries = [(a["fingerprint"], b["status"]) for b in bodies for a in b["alerts"]]
    assert len(entries) == delivered and len(set(entries)) == delivered
    [body] = [
        b
        for b in bodies
        if b["status"] == "firing" and acked.fingerprint in {a["fingerprint"] for a in b["alerts"]}
    ]
    assert (body["version"], body["receiver"]) == ("4", "risk")
    assert body["groupLabels"] == {"model": "churn"}
    # the drift rules that opened together arrive as one group
    assert {a["labels"]["alertname"] for a in body["alerts"]} >= {"dataset_drift"}
    assert all(a["labels"]["model"] == "churn" for a in body["alerts"])
    [alert] = [a for a in body["alerts"] if a["fingerprint"] == acked.fingerprint]
    assert alert["labels"] == {
        "alertname": "dataset_drift",
        "model": "churn",
        "version": "3",
        "team": "risk",
        "severity": "warning",
    }
    assert alert["annotations"]["summary"] == acked.summary
    assert alert["annotations"]["next_step"] == acked.next_step
    assert body["commonLabels"].items() <= alert["labels"].items()
    assert body["groupKey"] in out.replace('\\"', '"')
    assert f"'ownloop ack {acked.id}': acknowledged" in out


def test_demo_exports_the_labelled_rows(demo: tuple[Path, str]) -> None:
    """The export holds exactly the answered, labelled predictions of the stable and canary arms."""
    home, out = demo
    [path] = (home / "evals").glob("prod-*.parquet")
    exported = pq.read_table(path)
    logged = read_window(home / "predictions", "churn")
    answered = logged.filter(
        pc.and_(
            pc.equal(logged["status"], "ok"),
            pc.is_in(logged["arm"], pa.array(["stable", "canary"])),
        )
    )
    labelled = set(answered["prediction_id"].to_pylist()) & set(
        read_labels(home / "predictions", "churn")["prediction_id"].to_pylist()
    )
    assert exported.num_rows == len(labelled) > 4000
    assert set(exported["prediction_id"].to_pylist()) == labelled
    flags = exported.select(["misclassified", "low_confidence"]).to_pandas().sum()
    with Workspace(Config(home=home)) as ws:
        [audit] = [e for e in ws.registry.audit_log(limit=1000) if e.action == "evalset.export"]
    assert audit.after is not None and audit.after["rows"] == exported.num_rows
    assert path.with_suffix(".yaml").exists()
    assert f"wrote {exported.num_rows:,} labelled rows of churn to {path}" in out
    assert f"{int(flags['misclassified']):,} misclassified" in out
    assert f"{int(flags['low_confidence']):,} low_confidence" in out
    assert f"ownloop eval churn@N --suite {path.with_suffix('.yaml')}" in out


def test_demo_scorecard_matches_its_rollouts(demo: tuple[Path, str]) -> None:
    home, out = demo
    with Workspace(Config(home=home)) as ws:
        rollouts = ws.deploy.rollouts("churn")
        key = ws.scorecard.card(team="risk").team("risk").key
        resolved = [a for a in ws.alerts.list(model="churn") if a.state == "resolved"]
    promoted = [r for r in rollouts if r.state == State.PROMOTED]
    aborted = [r for r in rollouts if r.state == State.ABORTED]
    assert key.deployment_frequency.count == len(promoted) == 2
    # changes are promotions and aborted rollouts; churn@2, refused at its gate, is neither
    rate = key.change_failure_rate
    assert (rate.changes, rate.failed) == (len(promoted) + len(aborted), len(aborted))
    assert key.lead_time.count == 2
    assert key.time_to_restore.count == len(resolved) == 1
    assert "Four key metrics" in out and f"{rate.failed}/{rate.changes}" in out


def test_demo_refuses_to_wipe_a_folder_it_did_not_create(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(InvalidInputError, match="not an ownloop demo folder"):
        prepare_home(tmp_path)
    assert (tmp_path / "precious.txt").exists()


def test_demo_reruns_in_its_own_folder(tmp_path: Path) -> None:
    prepare_home(tmp_path / "d")
    (tmp_path / "d" / "old.txt").write_text("from the last run")
    prepare_home(tmp_path / "d")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [MARKER]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("OWNLOOP_TEST_REQUIRE_BROWSER"):
            pytest.fail(
                "chromium is required here (OWNLOOP_TEST_REQUIRE_BROWSER) but not installed"
            )
        pytest.skip(
            "browser tests skipped: Debian's chromium is not installed (apt-get install chromium)"
        )
    return found


def _render(chromium: str, page: Path, tmp: Path) -> tuple[str, bytes]:
    """The DOM after a headless Chromium rendered ``page``, and a screenshot of it."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'profile'}",
        "--window-size=1280,1600",
    ]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    shot = tmp / f"{page.stem}.png"
    subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return dom, shot.read_bytes()


@pytest.mark.browser
def test_reports_render_in_a_real_browser(demo: tuple[Path, str], tmp_path: Path) -> None:
    chromium = _chromium()
    home, _ = demo
    env = {k: v for k, v in os.environ.items() if not k.startswith("OWNLOOP_")}
    drift_page = tmp_path / "drift.html"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ownloop",
            "drift",
            "churn",
            "--since",
            "12h",
            "--html",
            str(drift_page),
        ],
        env={**env, "OWNLOOP_HOME": str(home)},
        check=True,
        capture_output=True,
        timeout=120,
    )
    # the window holds rows of v1 (served before the rollout) and v3: one report per version
    for page, must in (
        (
            home / "reports" / "eval.html",
            ["ownloop gate: churn@2", "non-inferiority", "confusion matrix"],
        ),
        (drift_page.with_name("drift-v3.html"), ["drift of churn@3", "tenure_months", "max share"]),
    ):
        dom, png = _render(chromium, page, tmp_path)
        assert dom.count("<svg") >= 3, page.name
        for text in must:
            assert text in dom, (page.name, text)
        assert "<script" not in dom and "http://" not in dom and "https://" not in dom
        assert png.startswith(b"\x89PNG") and len(png) > 50_000  # a drawn page, not a blank one


def test_demo_keeps_serving_the_dashboard_with_a_printed_sign_in_token(
    demo: tuple[Path, str], tmp_path: Path
) -> None:
    """What '--keep-serving' runs after the demo: a server on the demo's store, its address and
    a token printed once; signed in with it, the dashboard lists the demo's model."""
    import re
    import signal
    import time

    import httpx

    home, _ = demo
    env = {k: v for k, v in os.environ.items() if not k.startswith("OWNLOOP_")}
    log = tmp_path / "serving.log"
    code = (
        "from pathlib import Path; from ownloop.demo import serve_dashboard; "
        f"serve_dashboard(Path({str(home)!r}), 0)"
    )
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 120  # a hang guard, not a timing
        pattern = re.compile(
            r"dashboard: (http://127\.0\.0\.1:\d+)/.*?\n\s+sign in.*?\n\s+(olt_\S+)"
        )
        while not (found := pattern.search(log.read_text(errors="replace"))):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        url, secret = found.group(1), found.group(2)
        with httpx.Client(base_url=url, headers={"Origin": url}, timeout=60) as browser:
            assert browser.get("/").status_code == 303  # tokens are on: sign in first
            login = browser.get("/ui/login")
            csrf = re.findall(r'name="csrf" value="([^"]*)"', login.text)[0]
            signed = browser.post("/ui/login", data={"token": secret, "csrf": csrf})
            assert signed.status_code == 303
            page = browser.get("/")
            assert page.status_code == 200, page.text
            assert "token:demo-dashboard@risk" in page.text
            assert 'href="/ui/models/churn"' in page.text
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=60)


def test_demo_compacts_the_log_and_the_monitor_reads_the_same(demo: tuple[Path, str]) -> None:
    """Step 17 from the files it left: compacted files only, every logged id once, and the
    stored windows' rows and drift verdicts read again from the compacted log."""
    home, out = demo
    assert "17. 'ownloop compact' merged" in out and "the same rows, drift" in out
    with Workspace(Config(home=home)) as ws:
        root = ws.config.predictions_dir
        segments = predlog.list_segments(root, "churn")
        assert segments and all("-m" in p.name for p in segments)  # nothing left uncompacted
        files = [p for p in root.joinpath("churn").rglob("*.parquet") if "labels" not in p.parts]
        assert len(files) == len(segments)  # the merged sources are gone
        log = predlog.read_log(root, "churn", columns=["prediction_id"]).table
        ids = log.column("prediction_id").to_pylist()
        assert len(ids) == len(set(ids)) >= 6 * 1500
        runs = sorted(ws.monitor.runs("churn"), key=lambda r: r.window_end)
        again = [
            rep
            for r in runs
            for rep in ws.monitor.window_reports(
                "churn", r.window_start, r.window_end, version=r.version
            )
        ]
        assert [r.rows for r in again] == [r.rows for r in runs]
        assert [sorted(r.drift.drifted_features) if r.drift else [] for r in again] == [
            sorted(r.summary["drifted"]) for r in runs
        ]
