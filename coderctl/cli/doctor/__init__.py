from __future__ import annotations

from typing import Any

import click

from coderctl.cli.options import DEADLINE, network_options
from coderctl.context import App


class _Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        from coderctl.doctor.duration import parse_duration

        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.command()
@click.option("--bundle", "bundle_path", type=click.Path(dir_okay=False), metavar="PATH", default=None,
              help="also write a redacted support bundle (.tar.gz, mode 0600) to PATH")
@click.option("--since", type=_Duration(), default="1h", show_default=True, metavar="DURATION",
              help="Warning events and log lines newer than this (30m, 2h, 1d)")
@click.option("--deadline", type=DEADLINE, default=None, metavar="SECONDS",
              help="overall time limit for checks and evidence [default: 6 x --timeout]")
@network_options
@click.pass_obj
def doctor(app: App, bundle_path: str | None, since: float, deadline: float | None) -> int:
    """Name the most likely root causes, with evidence and the exact fix; exit 0 when nothing is wrong.

    Runs every verify check and, under the same deadline, gathers Warning events and the Coder and PostgreSQL
    logs newer than --since, InfisicalSecret and Flux conditions, the Coder Service's endpoints and, with
    CODER_SESSION_TOKEN, Coder's own health report. Failures that follow from one cause are folded under it.
    Reads only."""
    import importlib
    from pathlib import Path

    from coderctl import render
    from coderctl.checks.registry import all_checks
    from coderctl.config_file import effective
    from coderctl.doctor.run import run

    checks = all_checks()
    app.kube()  # a missing or invalid kubeconfig is a usage error (exit 2)
    if bundle_path and not Path(bundle_path).expanduser().parent.is_dir():
        raise click.BadParameter(f"directory of {bundle_path} does not exist", param_hint="--bundle")
    for module in sorted({m for c in checks for m in c.modules}):
        importlib.import_module(module)
    report = run(app, checks, check_timeout=2 * app.timeout + 1, deadline=deadline or 6 * app.timeout,
                 since_s=since)
    document = render.envelope("doctor", report.started_at, report.duration_s, summary=render.summary(report.results),
                               findings=[f.as_dict() for f in report.findings],
                               checks=[app.redact.deep(r.as_dict()) for r in report.results])
    if bundle_path:
        from coderctl.doctor.bundle import write

        write(Path(bundle_path), app, report, document, effective(app.settings))
    if app.output == "json":
        render.print_json(document)
    else:
        render.print_findings(report.findings, report.results, report.duration_s, color=app.color,
                              verbose=app.verbose)
        if bundle_path:
            render.say(f"support bundle: {bundle_path}", err=True)
    return 1 if report.unhealthy else 0
