"""`coderctl rotate-secrets`: click only; the rotation is coderctl/ops/rotate.py."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from collections.abc import Callable
from typing import Any

import click

from coderctl.cli.options import Seconds, network_options
from coderctl.context import App

WAIT = Seconds(0, 86400)


@click.command("rotate-secrets")
@click.option("--target", type=click.Choice(["user", "admin", "all"]), default="user", show_default=True,
              help="the app role's password and URL, the admin (postgres) password, or both")
@click.option("--strategy", type=click.Choice(["restart", "alternate"]), default="restart", show_default=True,
              help="one role, restarted onto its new password (restart); two login roles (alternate)")
@click.option("--dry-run", is_flag=True, help="print the plan and run the preflight checks; change nothing")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--via", type=click.Choice(["exec", "direct"]), default="exec", show_default=True,
              help="log in and run SQL through psql in the PostgreSQL pod, or directly (--db-address)")
@click.option("--db-address", metavar="HOST:PORT", default=None,
              help="with --via direct: where PostgreSQL answers (e.g. a kubectl port-forward); also for --resume "
                   "and --rollback of a direct rotation [default: the db_address setting, else the URL's host]")
@click.option("--sync-timeout", type=WAIT, default=180.0, show_default=True, metavar="S",
              help="how long to wait for the Infisical operator to sync the managed Secret")
@click.option("--rollout-timeout", type=WAIT, default=300.0, show_default=True, metavar="S",
              help="how long to wait for Coder's rollout")
@click.option("--list", "list_", is_flag=True, help="every rotation, newest first, with its state")
@click.option("--resume", metavar="ID", default=None, help="carry an interrupted rotation forward")
@click.option("--rollback", metavar="ID", default=None, help="put back everything a rotation changed")
@network_options
@click.pass_obj
def rotate_secrets(app: App, target: str, strategy: str, dry_run: bool, yes: bool, via: str,
                   db_address: str | None, sync_timeout: float, rollout_timeout: float, list_: bool,
                   resume: str | None, rollback: str | None) -> int:
    """Rotate the database passwords across Infisical, the managed Secret, PostgreSQL and Coder.

    Prints the plan, checks everything first, then writes Infisical (read back), waits for the operator's
    sync, sets the role's password with a SCRAM verifier, restarts Coder and verifies; any failure after
    the first change puts everything back. Exit 0 done, 1 failed and put back (or refused), 2 usage,
    3 a person must finish (the output says how). See docs/rotate-secrets.md.
    """
    from coderctl import render
    from coderctl.errors import UsageError
    from coderctl.ops import rotate as ops
    from coderctl.profile import override

    override(app.settings, {"db_address": db_address})
    if app.settings.db_address:
        from coderctl.clients.postgres import parse_address

        parse_address(app.settings.db_address)
    started_at, start = datetime.now(UTC), time.monotonic()
    if sum(bool(x) for x in (list_, resume, rollback)) > 1:
        raise UsageError("--list, --resume and --rollback exclude each other")
    if list_:
        return _list(app, ops.rotations(app), started_at, start)
    if resume or rollback:
        _, outcome = ops.resume(app, resume, _healthz(app)) if resume else ops.rollback(app, str(rollback))
        return _report(app, outcome, started_at, start, {})
    opts = ops.RotateOptions(target=target, strategy=strategy, via=via, sync_timeout=sync_timeout,
                             rollout_timeout=rollout_timeout, health=_healthz(app))
    prepared = ops.prepare(app, opts)
    extra: dict[str, Any] = {"plan": prepared.plan(), "auto_reload": prepared.state["auto_reload"]}
    if app.output == "text":
        _print_plan(app, prepared)
    if prepared.problems:
        return _refused(app, prepared.problems, extra, started_at, start)
    if dry_run:
        if app.output == "json":
            _json(app, {**extra, "status": "dry-run", "target": target, "strategy": strategy}, [], started_at, start)
        else:
            render.say("preflight passed; --dry-run: nothing changed")
        return 0
    _confirm(yes, target)
    _, outcome = ops.start(app, prepared)
    return _report(app, outcome, started_at, start, extra)


def _healthz(app: App) -> Callable[[], tuple[str, str]]:
    """verify's own http.healthz check, for the rotation's verify step (ops may not import the checks)."""

    def probe() -> tuple[str, str]:
        from coderctl.checks import network  # noqa: F401 — registers http.healthz
        from coderctl.checks.base import REGISTRY
        from coderctl.checks.runner import run_checks

        result = run_checks([REGISTRY["http.healthz"]], app, check_timeout=2 * app.timeout + 1,
                            deadline=2 * app.timeout + 2)[0]
        said = "; ".join(p.message for p in result.problems) or result.detail
        return result.status.value, app.redact(said)

    return probe


def _print_plan(app: App, prepared: Any) -> None:
    from coderctl import render

    s = prepared.state
    render.say(f"Rotation plan: target {s['target']}, strategy {s['strategy']}, namespace {app.namespace}, "
               f"auto-reload {'on' if s['auto_reload'] else 'off'}")
    for i, step in enumerate(prepared.plan(), 1):
        render.say(f"  {i}. {step['step']}: {step['does']}")


def _confirm(yes: bool, target: str) -> None:
    import sys

    from coderctl.errors import UsageError

    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("rotate-secrets changes the deployment's passwords: pass --yes to run it without a terminal")
    if not click.confirm(f"Rotate the {target} credentials now?", err=True, default=False):
        raise click.exceptions.Abort()


def _refused(app: App, problems: list[str], extra: dict[str, Any], started_at: datetime, start: float) -> int:
    from coderctl import render

    if app.output == "json":
        _json(app, {**extra, "status": "refused", "problems": problems}, [], started_at, start)
    for p in problems:
        render.say(app.redact(f"coderctl: error: preflight: {p}"), err=True)
    render.say("coderctl: error: preflight failed: nothing was changed", err=True)
    return 1


def _json(app: App, result: dict[str, Any], steps: list[dict[str, Any]], started_at: datetime,
          start: float) -> None:
    from coderctl import render

    render.print_json(render.envelope("rotate-secrets", started_at, time.monotonic() - start,
                                      result=app.redact.deep(result), steps=app.redact.deep(steps)))


def _report(app: App, outcome: Any, started_at: datetime, start: float, extra: dict[str, Any]) -> int:
    from coderctl import render

    steps = [s.as_dict() for s in outcome.steps]
    if app.output == "json":
        _json(app, {**extra, **outcome.result}, steps, started_at, start)
    else:
        r = outcome.result
        summary = [f"rotation {r.get('operation')}: {r.get('status')}"]
        render.print_steps(steps, color=app.color, summary=[app.redact(line) for line in summary])
    if not outcome.ok and outcome.message:
        render.say(app.redact(f"coderctl: error: {outcome.message}"), err=True)
    health = outcome.result.get("healthz") or {}
    if health.get("status") not in (None, "ok", "skip"):
        render.say(app.redact(f"coderctl: warning: the rotation is done, but Coder's /healthz through the access URL "
                              f"is {health['status']}: {health.get('detail')} (coderctl verify)"), err=True)
    return int(outcome.code)


def _list(app: App, rows: list[dict[str, Any]], started_at: datetime, start: float) -> int:
    from coderctl import render

    if app.output == "json":
        _json(app, {"rotations": rows}, [], started_at, start)
        return 0
    render.print_table(["ID", "STATE", "STEP", "STARTED", "HOLDER"],
                       [[r["id"], r["state"], r["step"], r["started_at"], r["holder"]] for r in rows],
                       color=app.color, empty="no rotations")
    return 0
