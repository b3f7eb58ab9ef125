"""``ownloop rollback``: check the rollback target on today's data, then act on the verdict."""

from __future__ import annotations

from typing import Any

import click

from ownloop.cli._app import cli, console, echo_json, esc, workspace
from ownloop.deploy import RollbackCheck, RollbackRefusedError, RollbackVerdict
from ownloop.deploy._rollback import ROLLBACK_ROWS

_COLOURS = {"SAFE": "green", "INSUFFICIENT": "yellow", "WORSE": "red"}


def _band(e: dict[str, Any] | None) -> str:
    if e is None:
        return "none"
    if e["status"] != "ok" or e["value"] is None:
        return f"no figure ({e['status']}: {e['note'] or 'too few rows'})"
    return f"{e['value']:.3f} [{e['lower']:.3f}, {e['upper']:.3f}] on {e['n']:,} rows"


def _by(by: str | None) -> str:
    return "of the model's reliance (importance)" if by == "importance" else "of the features"


def _print_figures(c: RollbackCheck) -> None:
    console.print(f"  window: {esc(c.window)}")
    if c.drift_share is not None:
        verdict = "DATASET DRIFT" if c.dataset_drift else "no dataset drift"
        console.print(
            f"  drift against {esc(c.model)}@{c.target}'s own reference: {verdict}, "
            f"{c.drift_share:.0%} {_by(c.drift_share_by)} drifted "
            f"(threshold {c.drift_threshold:.0%})"
        )
        for f in c.top_drifted:
            effect = "-" if f["effect_sd"] is None else f"{f['effect_sd']:.2f} sd"
            console.print(f"    {esc(f['feature'])}: moved {effect}")
    ref = "" if c.reference_accuracy is None else f" (reference {c.reference_accuracy:.3f})"
    console.print(f"  estimated accuracy of {esc(c.model)}@{c.target}: {_band(c.estimate)}{ref}")
    console.print(
        f"  estimated accuracy of {esc(c.model)}@{c.current}: {_band(c.current_estimate)}"
    )
    p = c.paired
    if p is None:
        console.print(f"  realised: {c.labelled_rows:,} labelled row(s) in the window, too few")
    else:
        lo, hi = p.interval
        console.print(
            f"  realised {p.metric} on the same {p.n:,} labelled rows: @{c.target} {p.target:.3f} "
            f"[{p.target_interval[0]:.3f}, {p.target_interval[1]:.3f}], @{c.current} "
            f"{p.current:.3f} [{p.current_interval[0]:.3f}, {p.current_interval[1]:.3f}], "
            f"difference {p.difference:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        )
    for note in c.notes:
        console.print(f"  note: {esc(note)}")


def _print(c: RollbackCheck) -> None:
    console.print(
        f"[bold]{esc(c.model)}[/]: rollback check of {esc(c.model)}@{c.target} "
        f"(production is {esc(c.model)}@{c.current})"
    )
    _print_figures(c)
    colour = _COLOURS[str(c.verdict)]
    console.print(f"  verdict: [{colour}]{c.verdict}[/]")
    for r in c.reasons:
        console.print(f"    - {esc(r)}")
    if c.acted:
        forced = " (forced, audited)" if c.forced else ""
        console.print(
            f"  rolled back: production {esc(c.model)}@{c.current} -> @{c.target}{forced} "
            f"(check {c.check_id})"
        )
    elif c.check_id is not None:
        console.print(f"  check {c.check_id} stored; nothing changed")
    console.print(f"  next: {esc(c.next_step)}")
    took = ", ".join(f"{k} {v:.2f} s" for k, v in c.timings.items())
    console.print(f"  took {sum(c.timings.values()):.2f} s ({took})")


@cli.command("rollback")
@click.argument("model")
@click.option(
    "--to",
    "to",
    type=int,
    default=None,
    help="Version to roll back to (default: the previous production version).",
)
@click.option("--check-only", is_flag=True, help="Check and store the verdict; change nothing.")
@click.option(
    "--force", is_flag=True, help="Roll back even when the target does WORSE (needs --reason)."
)
@click.option("--reason", default=None, help="Why (kept in the audit log).")
@click.option(
    "--rows",
    type=int,
    default=ROLLBACK_ROWS,
    show_default=True,
    help="The window: the current version's last logged rows.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the check as JSON.")
def rollback_cmd(
    model: str,
    to: int | None,
    check_only: bool,
    force: bool,
    reason: str | None,
    rows: int,
    as_json: bool,
) -> None:
    """Check the rollback target on today's data, then roll back unless it does worse.

    Exit 0 when production moved, or when --check-only found the target SAFE; 1 otherwise.
    """
    ws = workspace()
    try:
        check = ws.deploy.rollback(
            model, to=to, force=force, check_only=check_only, reason=reason, rows=rows
        )
    except RollbackRefusedError as exc:
        (echo_json if as_json else _print)(exc.check)
        raise
    (echo_json if as_json else _print)(check)
    if not check.acted and check.verdict is not RollbackVerdict.SAFE:
        click.get_current_context().exit(1)
