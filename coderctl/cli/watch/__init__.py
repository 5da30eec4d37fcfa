from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from coderctl.cli.options import Seconds, network_options
from coderctl.context import App

if TYPE_CHECKING:
    from coderctl.ops.storage import S3URL

INTERVAL = Seconds(0.1, 86400)
CHECK_TIMEOUT = Seconds(0.1, 3600)
EXAMPLES = """Examples:

\b
  coderctl watch --access-url https://coder.example.org
  coderctl watch --listen 0.0.0.0:9464 --interval 60 --check-interval derp.keys=300
  coderctl watch --only network --only dns --interval 30
  coderctl watch --backup-dir /srv/backups
  coderctl watch --backup-dir s3://coder-backups/coder/ --backup-interval 600"""


@click.command(epilog=EXAMPLES)
@click.option("--listen", default="127.0.0.1:9464", show_default=True, metavar="ADDR:PORT",
              help="where to serve /metrics, /healthz and /status (0.0.0.0:9464 in a pod; port 0: any free one)")
@click.option("--interval", type=INTERVAL, default=60.0, show_default=True, metavar="SECONDS",
              help="how often each check runs (each starts at its own offset within the interval)")
@click.option("--check-interval", "check_intervals", multiple=True, metavar="ID=SECONDS",
              help="another interval for one check, e.g. derp.keys=300 (repeatable)")
@click.option("--check-timeout", type=CHECK_TIMEOUT, default=None, metavar="SECONDS",
              help="a run still going after this is reported as an error [default: 2 x --timeout + 1]")
@click.option("--only", multiple=True, metavar="CATEGORY",
              help="run only this category: cluster, secrets, database, network, dns (repeatable)")
@click.option("--skip", multiple=True, metavar="ID", help="leave out this check (repeatable)")
@click.option("--concurrency", type=click.IntRange(1, 64), default=8, show_default=True,
              help="checks running at once")
@click.option("--backup-dir", default=None, metavar="DIR|s3://BUCKET/PREFIX",
              help="also report the newest backup and the newest verified one in DIR or under the bucket prefix "
                   "(credentials as for backup create) [default: the backup_destination setting, else backup_dir, "
                   "else none]")
@click.option("--backup-interval", type=INTERVAL, default=300.0, show_default=True, metavar="SECONDS",
              help="how often the backups are read (a bucket: one listing per read)")
@click.option("--via", type=click.Choice(["exec", "direct"]), default=None,
              help="database login through psql in the PostgreSQL pod (default) or directly")
@click.option("--db-address", metavar="HOST:PORT", default=None,
              help="with --via direct: where to connect [default: the URL's host]")
@network_options
@click.pass_obj
def watch(app: App, listen: str, interval: float, check_intervals: tuple[str, ...], check_timeout: float | None,
          only: tuple[str, ...], skip: tuple[str, ...], concurrency: int, backup_dir: str | None,
          backup_interval: float, via: str | None, db_address: str | None) -> int:
    """Run the read-only checks on a schedule; serve /metrics, /healthz, /status.

    /metrics is in the Prometheus text format, /status is the verify JSON envelope of the latest results.
    Runs until SIGTERM or SIGINT, then exits 0 within a second."""
    import importlib

    from coderctl import render
    from coderctl.checks.registry import select
    from coderctl.profile import override
    from coderctl.watch.server import parse_listen
    from coderctl.watch.service import run
    from coderctl.watch.watcher import Watcher, WatchOptions

    override(app.settings, {"db_via": via, "db_address": db_address})
    if app.settings.db_address:
        from coderctl.clients.postgres import parse_address

        parse_address(app.settings.db_address)
    parse_listen(listen)
    checks = select(only, skip)
    intervals = _intervals(check_intervals, {c.id for c in checks})
    backups = _backups(backup_dir or app.settings.backup_destination or app.settings.backup_dir)
    if any(c.uses_cluster for c in checks):
        app.kube()  # a missing or invalid kubeconfig is a usage error (exit 2), not a failed check
    app.http()
    for module in sorted({m for c in checks for m in c.modules}):
        importlib.import_module(module)
    options = WatchOptions(interval=interval, intervals=intervals, workers=concurrency,
                           check_timeout=check_timeout or 2 * app.timeout + 1, backup_dir=backups,
                           backup_interval=backup_interval)
    watcher = Watcher(app, checks, options)
    run(watcher, listen, on_ready=lambda url: click.echo(
        f"coderctl watch: {len(checks)} checks every {interval:g}s; serving {url}/metrics, /healthz, /status",
        err=True), on_stopped=lambda s: click.echo(f"coderctl watch: stopped in {s:.2f}s", err=True))
    if app.output == "json":
        render.print_json(watcher.status_document())
    return 0


def _backups(where: object) -> Path | S3URL | None:
    """A directory (Path) or a bucket prefix (S3URL); None: no backups reported."""
    from coderctl.ops.storage import S3URL, is_s3

    if not where:
        return None
    if is_s3(where):
        return S3URL.parse(str(where))
    return Path(str(where)).expanduser()


def _intervals(given: tuple[str, ...], known: set[str]) -> dict[str, float]:
    found: dict[str, float] = {}
    for entry in given:
        cid, sep, seconds = entry.partition("=")
        if not sep:
            raise click.BadParameter(f"{entry!r}: expected ID=SECONDS", param_hint="--check-interval")
        if cid not in known:
            raise click.BadParameter(f"{cid!r} is not among the checks selected (coderctl verify --list)",
                                     param_hint="--check-interval")
        found[cid] = INTERVAL.convert(seconds, None, None)
    return found
