from __future__ import annotations

import click

from coderctl.cli.options import DEADLINE, network_options
from coderctl.context import App


@click.command()
@click.option("--only", multiple=True, metavar="CATEGORY",
              help="run only this category: cluster, secrets, database, network, dns (repeatable)")
@click.option("--skip", multiple=True, metavar="ID", help="leave out this check (repeatable)")
@click.option("--strict", is_flag=True, help="warnings fail too (exit 1)")
@click.option("--list", "list_only", is_flag=True, help="list the checks and exit")
@click.option("--deadline", type=DEADLINE, default=None, metavar="SECONDS",
              help="overall time limit for all checks [default: 6 x --timeout]")
@click.option("--via", type=click.Choice(["exec", "direct"]), default=None,
              help="database login through psql in the PostgreSQL pod (default) or directly")
@click.option("--db-address", metavar="HOST:PORT", default=None,
              help="with --via direct: where to connect (e.g. a kubectl port-forward) [default: the URL's host]")
@network_options
@click.pass_obj
def verify(app: App, only: tuple[str, ...], skip: tuple[str, ...], strict: bool, list_only: bool,
           deadline: float | None, via: str | None, db_address: str | None) -> int:
    """Run every read-only check concurrently and report; exit 0 when nothing failed, else 1."""
    from coderctl import render
    from coderctl.checks.registry import select
    from coderctl.cli.checkrun import run_and_report
    from coderctl.profile import override

    override(app.settings, {"db_via": via, "db_address": db_address})
    if app.settings.db_address:
        from coderctl.clients.postgres import parse_address

        parse_address(app.settings.db_address)
    checks = select(only, skip)
    if list_only:
        if app.output == "json":
            render.print_json({"checks": [{"id": c.id, "category": c.category, "title": c.title} for c in checks]})
        else:
            for c in checks:
                click.echo(f"{c.id:<24} {c.category:<9} {c.title}")
        return 0
    return run_and_report(app, "verify", checks, check_timeout=2 * app.timeout + 1,
                          deadline=deadline or 6 * app.timeout, strict=strict)
