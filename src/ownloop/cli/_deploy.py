"""``ownloop deploy``, ``status``, ``promote``, ``abort``, ``pause``, ``resume``, ``rollouts``,
``policy``: rollouts started and followed from the command line."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import click

from ownloop.cli._app import cli, console, echo_json, esc, table, when, workspace
from ownloop.cli._monitor import DURATION
from ownloop.deploy import (
    DeployStatus,
    Plan,
    Rollout,
    RolloutEvent,
    Route,
    State,
    StepAnalysis,
    Strategy,
    merge_plan,
    placed,
    position,
    span,
)

_STRATEGIES = click.Choice([s.value for s in Strategy])
_ON_INCONCLUSIVE = click.Choice(["abort", "pause"])


def _json(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)


def _plan_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--strategy", type=_STRATEGIES, help="direct, canary or shadow (then canary)."
        ),
        click.option("--steps", help="Canary shares in percent, ending at 100: 5,25,50,100."),
        click.option("--min-samples", type=int, help="Rows per arm before a step is judged."),
        click.option(
            "--max-wait", type=DURATION, help="How long a step may stay INCONCLUSIVE (30m)."
        ),
        click.option(
            "--routing-key", help="Sticky canary by header:NAME or feature:NAME (else random)."
        ),
        click.option(
            "--on-inconclusive", type=_ON_INCONCLUSIVE, help="After the max wait: abort or pause."
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


@cli.command()
@click.argument("ref", metavar="MODEL@VERSION")
@_plan_options
@click.option("--force", is_flag=True, help="Skip the gate check (audited; needs --reason).")
@click.option("--reason", help="Why; required with --force.")
@click.option("--wait", is_flag=True, help="Follow the rollout: exit 0 promoted, 1 aborted.")
@click.option("--timeout", type=DURATION, default="2h", show_default=True, help="With --wait.")
@click.option(
    "--stalled-after",
    type=DURATION,
    default="60s",
    show_default=True,
    help="With --wait: say so when nothing advanced the rollout for this long.",
)
def deploy(
    ref: str,
    strategy: str | None,
    steps: str | None,
    min_samples: int | None,
    max_wait: timedelta | None,
    routing_key: str | None,
    on_inconclusive: str | None,
    force: bool,
    reason: str | None,
    wait: bool,
    timeout: timedelta,
    stalled_after: timedelta,
) -> None:
    """Roll MODEL@VERSION out; its gate must have passed. Unset options come from the policy."""
    ws = workspace()
    rollout = ws.deploy.deploy(
        ref,
        strategy=strategy,
        steps=steps,
        min_samples=min_samples,
        max_wait_s=_seconds(max_wait),
        routing_key=routing_key,
        on_inconclusive=on_inconclusive,
        force=force,
        reason=reason,
    )
    if rollout.state == State.PROMOTED:
        console.print(f"{rollout.ref} is production now (rollout #{rollout.id})", markup=False)
        return
    console.print(
        f"rollout #{rollout.id}: {rollout.ref} over v{rollout.stable}, {_plan_words(rollout.plan)}; "
        "pending until the next tick of a running 'ownloop serve'",
        markup=False,
    )
    if wait:
        _follow(rollout, timeout, stalled_after)


def _follow(rollout: Rollout, timeout: timedelta, stalled_after: timedelta) -> None:
    ws = workspace()
    ctx = click.get_current_context()

    def stalled(idle: float) -> None:
        console.print(
            f"nothing advanced rollout #{rollout.id} for {idle:.0f} s: a running 'ownloop serve' "
            "advances rollouts; start one (or check that it can reach this store)",
            markup=False,
        )

    done = ws.deploy.wait(
        rollout.id,
        timeout_s=timeout.total_seconds(),
        on_event=_print_event,
        quiet_s=stalled_after.total_seconds(),
        on_quiet=stalled,
    )
    if done.state == State.PROMOTED:
        return
    if done.state in (State.ABORTED, State.PAUSED):
        console.print(f"rollout #{done.id} {done.state}: {done.reason or '-'}", markup=False)
    else:
        console.print(
            f"rollout #{done.id} still {position(done)} after {timeout}; it goes on: see "
            f"'ownloop status {done.model}'",
            markup=False,
        )
    ctx.exit(1)


def _print_event(event: RolloutEvent) -> None:
    before = "-" if event.from_state is None else str(event.from_state)
    console.print(
        f"{when(event.at)}  {before} -> {event.to_state}  {event.weight:g}%  {event.reason or ''}",
        markup=False,
    )


def _plan_words(plan: Plan) -> str:
    steps = ",".join(f"{s:g}" for s in plan.steps)
    key = plan.routing_key or "random per request"
    return (
        f"{plan.strategy} steps {steps}, {plan.min_samples:,} rows per arm, max wait "
        f"{span(plan.max_wait_s)} then {plan.on_inconclusive}, routing {key}"
    )


# -- status --------------------------------------------------------------------------------


@cli.command()
@click.argument("model", required=False)
@_json
def status(model: str | None, as_json: bool) -> None:
    """Where each deployment stands; with MODEL, the live analysis and what decides next."""
    ws = workspace()
    if model is None:
        found = ws.deploy.statuses()
        if as_json:
            echo_json(found)
        elif not found:
            console.print("nothing is deployed yet: 'ownloop deploy MODEL@VERSION'")
        else:
            table(
                None,
                ["model", "stable", "candidate", "state", "step", "weights"],
                [_overview(s) for s in found],
            )
        return
    one = ws.deploy.status(model)
    if as_json:
        echo_json(one)
        return
    _print_status(one, ws.deploy.events(one.rollout.id) if one.rollout else [])


def _overview(s: DeployStatus) -> list[Any]:
    r = s.rollout if s.active else None
    return [
        s.model,
        "-" if s.route is None or s.route.stable is None else f"v{s.route.stable}",
        "-" if r is None else f"v{r.candidate}",
        "-" if r is None else str(r.state),
        "-" if r is None else position(r),
        _weights(s.route),
    ]


def _weights(route: Route | None) -> str:
    if route is None:
        return "-"
    if route.candidate is None or route.candidate_arm is None:
        return "stable 100%"
    if route.candidate_arm == "shadow":
        return f"stable 100%, shadow v{route.candidate} mirrors every request"
    return f"stable {100 - route.weight:g}%, canary v{route.candidate} {route.weight:g}%"


def _print_status(s: DeployStatus, events: list[RolloutEvent]) -> None:
    if s.route is None or s.route.stable is None:
        console.print(f"[bold]{esc(s.model)}[/]: not deployed (no production version)")
    else:
        console.print(
            f"[bold]{esc(s.model)}[/]: production v{s.route.stable}; {esc(_weights(s.route))}"
        )
    r = s.rollout
    if r is not None:
        console.print(
            f"rollout #{r.id} of {r.ref} ({r.state}: {position(r)}) started {when(r.started_at)} "
            f"by {r.created_by}: {_plan_words(r.plan)}",
            markup=False,
        )
    if s.analysis is not None and r is not None and r.active:
        _print_analysis(s.analysis)
    if s.error:
        console.print(f"last analysis failed: {s.error}", markup=False)
    console.print(f"next: {s.next}", markup=False)
    if events:
        table(
            "transitions",
            ["when", "from", "to", "step", "weight", "by", "reason"],
            [
                [
                    when(e.at),
                    e.from_state or "-",
                    e.to_state,
                    e.step + 1 if e.step >= 0 else "-",
                    f"{e.weight:g}%",
                    e.by,
                    e.reason or "",
                ]
                for e in events
            ],
        )


def _print_analysis(a: StepAnalysis) -> None:
    console.print(
        f"analysis at {when(a.at)} (look {a.looks}, window {a.window_start:%H:%M:%S}-"
        f"{a.window_end:%H:%M:%S} UTC): {a.summary}",
        markup=False,
    )
    if not a.guardrails:
        return
    table(
        f"{a.arm} vs stable",
        ["guardrail", "stable", "candidate", "difference", "bound", "n", "outcome"],
        [
            [
                g.name,
                _num(g.stable),
                _num(g.candidate),
                _num(g.difference, "+.4g"),
                f"{g.bound:+.4g}",
                f"{g.n_candidate:,} / {g.n_stable:,}",
                g.outcome,
            ]
            for g in a.guardrails
        ],
    )
    for g in a.guardrails:
        if g.name in a.decided_by:
            console.print(f"  {g.name}: {g.text}", markup=False)


def _num(value: float | None, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


# -- a person decides ----------------------------------------------------------------------


@cli.command()
@click.argument("model")
@click.option("--reason", help="Why (kept in the audit log).")
def promote(model: str, reason: str | None) -> None:
    """Promote MODEL's active rollout now, whatever step it is at."""
    r = workspace().deploy.promote(model, reason=reason)
    console.print(f"{r.ref} is production now (rollout #{r.id})", markup=False)


@cli.command()
@click.argument("model")
@click.option("--reason", required=True, help="Why (kept in the audit log).")
def abort(model: str, reason: str) -> None:
    """Abort MODEL's active rollout: every request goes to stable again."""
    r = workspace().deploy.abort(model, reason=reason)
    console.print(f"rollout #{r.id} of {r.ref} aborted; stable v{r.stable} answers", markup=False)


@cli.command()
@click.argument("model")
@click.option("--reason", help="Why (kept in the audit log).")
def pause(model: str, reason: str | None) -> None:
    """Hold MODEL's active rollout where it is (the traffic split stays) until resumed."""
    r = workspace().deploy.pause(model, reason=reason)
    console.print(f"rollout #{r.id} of {r.ref} paused {placed(r)}", markup=False)


@cli.command()
@click.argument("model")
def resume(model: str) -> None:
    """Go on with MODEL's paused rollout."""
    r = workspace().deploy.resume(model)
    console.print(f"rollout #{r.id} of {r.ref} resumed {placed(r)}", markup=False)


# -- history and policy --------------------------------------------------------------------


@cli.command()
@click.argument("model")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True)
@_json
def rollouts(model: str, limit: int, as_json: bool) -> None:
    """MODEL's rollouts, newest first."""
    found = workspace().deploy.rollouts(model, limit=limit)
    if as_json:
        echo_json(found)
        return
    if not found:
        console.print(f"no rollouts of {esc(model)} yet: 'ownloop deploy {esc(model)}@VERSION'")
        return
    table(
        f"rollouts of {model}",
        ["id", "version", "over", "strategy", "state", "at", "started", "finished", "by"],
        [
            [
                r.id,
                r.candidate,
                r.stable or "-",
                r.plan.strategy,
                r.state,
                position(r),
                when(r.started_at),
                when(r.finished_at) if r.finished_at else "-",
                r.created_by,
            ]
            for r in found
        ],
    )


@cli.command()
@click.argument("model")
@_plan_options
@_json
def policy(
    model: str,
    strategy: str | None,
    steps: str | None,
    min_samples: int | None,
    max_wait: timedelta | None,
    routing_key: str | None,
    on_inconclusive: str | None,
    as_json: bool,
) -> None:
    """MODEL's default rollout plan; options given change it (audited)."""
    ws = workspace()
    plan = ws.deploy.policy(model)
    given = {"strategy": strategy, "steps": steps, "min_samples": min_samples}
    given.update(routing_key=routing_key, on_inconclusive=on_inconclusive)
    if any(v is not None for v in given.values()) or max_wait is not None:
        plan = ws.deploy.set_policy(model, merge_plan(plan, max_wait_s=_seconds(max_wait), **given))
    if as_json:
        echo_json(plan)
        return
    console.print(f"{model}: {_plan_words(plan)}", markup=False)
