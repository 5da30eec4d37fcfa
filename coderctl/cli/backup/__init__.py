from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from coderctl.cli.options import CompressionChoice
from coderctl.context import App

if TYPE_CHECKING:
    from coderctl.ops.compression import Compression

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
def backup() -> None:
    """pg_dump backups of the Coder database: create, verify, list, prune, restore."""


def database_options(fn: F) -> F:
    """--via, --database-url, --db-address: how to reach the database (create, restore)."""

    @click.option("--via", type=click.Choice(["exec", "direct"]), default="exec", show_default=True,
                  help="run pg_dump/pg_restore in the PostgreSQL pod (exec) or locally against the database URL")
    @click.option("--database-url", metavar="URL", default=None,
                  help="database URL, best without its password (PGPASSWORD or ~/.pgpass supply it; a password "
                       "here shows in the process list) [default: CODERCTL_DATABASE_URL, else the Secret Coder uses]")
    @click.option("--db-address", metavar="HOST:PORT", default=None,
                  help="with --via direct: where to connect (e.g. a kubectl port-forward) [default: the URL's host]")
    @functools.wraps(fn)
    def wrapper(*args: Any, database_url: str | None, db_address: str | None, **kwargs: Any) -> Any:
        from coderctl.profile import override

        app = click.get_current_context().find_object(App)
        assert app is not None
        override(app.settings, {"database_url": database_url, "db_address": db_address})
        if database_url:
            app.redact.add(database_url)
            from coderctl.clients.postgres import DatabaseURL

            if DatabaseURL.parse(database_url).password:
                click.echo("coderctl: warning: the password in --database-url is visible to other users in the "
                           "process list; prefer CODERCTL_DATABASE_URL or PGPASSWORD", err=True)
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def object_lock_options(fn: F) -> F:
    """--object-lock-mode, --object-lock-days: retention of a backup written to a bucket (create, sync)."""

    @click.option("--object-lock-mode", type=click.Choice(["GOVERNANCE", "COMPLIANCE"], case_sensitive=False),
                  default=None, help="with a bucket: lock the backup and its manifest in this object lock mode (the "
                  "bucket must have object lock enabled) [default: s3_object_lock_mode setting (env: "
                  "CODERCTL_S3_OBJECT_LOCK_MODE)]")
    @click.option("--object-lock-days", type=click.IntRange(1, 36500), default=None, metavar="DAYS",
                  help="with a bucket: keep them locked this many days from the backup's creation [default: "
                       "s3_object_lock_days setting (env: CODERCTL_S3_OBJECT_LOCK_DAYS)]")
    @functools.wraps(fn)
    def wrapper(*args: Any, object_lock_mode: str | None, object_lock_days: int | None, **kwargs: Any) -> Any:
        from coderctl.errors import UsageError
        from coderctl.ops.storage import is_s3
        from coderctl.profile import override

        app = click.get_current_context().find_object(App)
        assert app is not None
        if object_lock_mode or object_lock_days:
            to, output_dir = kwargs.get("to") or kwargs.get("target"), kwargs.get("output_dir")
            if output_dir or not is_s3(to or _configured(app)):
                raise UsageError("--object-lock-mode / --object-lock-days: object lock is for a backup written to "
                                 "a bucket (--to s3://BUCKET/PREFIX)")
        override(app.settings, {"s3_object_lock_mode": object_lock_mode.upper() if object_lock_mode else None,
                                "s3_object_lock_days": object_lock_days})
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _configured(app: App) -> str | None:
    """The configured destination: backup_destination, else backup_dir (either a directory or s3://...)."""
    value = app.settings.backup_destination or app.settings.backup_dir
    return str(value) if value else None


def _dir(app: App, given: Path | None) -> Path:
    """A local directory (a restore's safety backup and downloaded copy): the flag, else the first of
    backup_destination and backup_dir that is a directory, else the default directory."""
    from coderctl.errors import UsageError
    from coderctl.ops.backup import default_dir
    from coderctl.ops.storage import is_s3

    if given is not None and str(given).startswith("s3:/"):
        raise UsageError(f"--output-dir {given}: a bucket is given with --to s3://BUCKET/PREFIX")
    if given is not None:
        return given
    local = [v for v in (app.settings.backup_destination, app.settings.backup_dir) if v and not is_s3(v)]
    return Path(str(local[0])).expanduser() if local else default_dir()


def _where(app: App, given: str | None) -> Any:
    """A directory (Path) or a bucket prefix (S3URL): the argument, else backup_destination, else backup_dir,
    else the default directory."""
    from coderctl.ops.backup import default_dir
    from coderctl.ops.storage import S3URL, is_s3

    text = given or _configured(app)
    if is_s3(text):
        return S3URL.parse(str(text))
    return Path(str(text)).expanduser() if text else default_dir()


def _report(app: App, command: str, outcome: Any, summary: list[str]) -> int:
    from coderctl import render

    if app.output == "json":
        render.emit(app, command, result=outcome.result, steps=[s.as_dict() for s in outcome.steps])
    else:
        render.print_steps([s.as_dict() for s in outcome.steps], color=app.color,
                           summary=[app.redact(line) for line in summary] if outcome.ok else [])
    if not outcome.ok:
        click.echo(app.redact(f"coderctl: error: {outcome.message}"), err=True)
    return int(outcome.code)


@backup.command()
@database_options
@object_lock_options
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="where to write (a directory) [default: as --to]")
@click.option("--to", "to", default=None, metavar="DIR|s3://BUCKET/PREFIX",
              help="where to write: a directory, or a bucket (credentials from the AWS environment variables, "
                   "the s3_credentials_secret Secret or shared files; AWS_ENDPOINT_URL for S3-compatible servers) "
                   "[default: backup_destination setting (env: CODERCTL_BACKUP_DESTINATION), else backup_dir, "
                   "else $XDG_DATA_HOME/coderctl/backups]")
@click.option("--format", "fmt", type=click.Choice(["custom", "plain"]), default="custom", show_default=True,
              help="pg_dump archive (-Fc, compressed) or plain SQL")
@click.option("--compress", type=CompressionChoice(), default="auto", show_default=True,
              metavar="auto|0-9|gzip[:N]|lz4[:N]|zstd[:N]|none",
              help="compression of the custom archive: auto is zstd:1 where the pg_dump that runs writes zstd "
                   "(16+), else zlib level 1 (about half the time of pg_dump's default 6, ~15% larger); a digit "
                   "is a zlib level")
@click.option("--no-verify", is_flag=True, help="do not read the dump back (no row counts in the manifest)")
@click.option("--metrics-file", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="PATH",
              help="write Prometheus textfile metrics here (node_exporter textfile collector)")
@click.pass_obj
def create(app: App, via: str, output_dir: Path | None, to: str | None, fmt: str, compress: Compression,
           no_verify: bool,
           metrics_file: Path | None) -> int:
    """Dump the Coder database to DIR/DATABASE-TIME.dump with a manifest, checked before it gets its name.

    The dump is streamed to NAME.partial, read back in full while it arrives, fsynced, and only then
    renamed; the manifest NAME.json holds its SHA-256, versions and row counts. Ctrl-C or SIGTERM
    removes the partial file and stops pg_dump (exit 1). With --to s3://BUCKET/PREFIX the dump streams
    into a multipart upload that is completed only once the dump is proven whole, else aborted.
    """
    from coderctl import render
    from coderctl.errors import UsageError
    from coderctl.ops.backup import CreateOptions
    from coderctl.ops.backup import create as run
    from coderctl.ops.storage import S3URL

    if to and output_dir:
        raise UsageError("give --to or --output-dir, not both")
    where = _where(app, to) if to else (_dir(app, output_dir) if output_dir else _where(app, None))
    remote = where if isinstance(where, S3URL) else None
    opts = CreateOptions(output_dir=where if remote is None else Path(), via=via, fmt=fmt, compress=compress,
                         verify=not no_verify, metrics_file=metrics_file, db_address=app.settings.db_address,
                         to=remote)
    with render.TransferProgress(f"pg_dump via {via}", enabled=app.output == "text") as bar:
        outcome = run(app, opts, progress=bar.callback, warm=_import_text_output if app.output == "text" else None)
    r = outcome.result
    summary = [(f"backup {r.get('file')}: {render.human_bytes(r.get('size'))}, "
                f"{'verified' if r.get('verified') else 'NOT verified'}, {r.get('tables')} tables, "
                f"{r.get('rows')} rows, in {r.get('duration_s', 0):.1f}s")]
    return _report(app, "backup create", outcome, summary)


def _import_text_output() -> None:
    """What the text report imports (rich: ~0.1 s), imported while the dump runs instead of after it."""
    import rich.console
    import rich.markup  # noqa: F401


@backup.command("verify")
@click.argument("file", type=click.Path(dir_okay=False), required=False, metavar="[FILE|s3://BUCKET/KEY]")
@click.option("--restore-to", metavar="URL", default=None,
              help="also restore into this empty scratch database and compare its row counts")
@click.pass_obj
def verify_cmd(app: App, file: str | None, restore_to: str | None) -> int:
    """Check FILE against its manifest: size, SHA-256, a full read of the archive and its row counts.

    Without FILE, the newest complete backup in the backup destination (backup_destination, else backup_dir,
    else the default directory)."""
    from coderctl import render
    from coderctl.ops import manifest as mf
    from coderctl.ops.storage import S3URL, is_s3
    from coderctl.ops.verify import verify

    if restore_to:
        app.redact.add(restore_to)
    if file is None:
        file = _newest(app)
    if is_s3(file):
        from coderctl.ops import remote

        with render.TransferProgress("downloading", enabled=app.output == "text") as bar:
            outcome = remote.verify(app, S3URL.parse(file), restore_to, progress=bar.callback)
        return _report(app, "backup verify", outcome, [f"{file}: intact, {outcome.result.get('tables')} tables, "
                                                       f"{outcome.result.get('rows')} rows"
                                                       + (", restored and counted" if restore_to else "")])
    path = mf.backup_file(file)
    with render.TransferProgress("reading", total=path.stat().st_size, enabled=app.output == "text") as bar:
        outcome = verify(app, path, restore_to, progress=bar.callback)
    r = outcome.result
    summary = [f"{r.get('file')}: intact, {r.get('tables')} tables, {r.get('rows')} rows"
               + (", restored and counted" if restore_to else "")]
    return _report(app, "backup verify", outcome, summary)


def _newest(app: App) -> str:
    """The newest complete backup of the configured destination (a path or an s3:// URL)."""
    from coderctl.errors import UsageError
    from coderctl.ops.catalog import newest_first, scan, scan_s3
    from coderctl.ops.storage import S3URL

    where = _where(app, None)
    if isinstance(where, S3URL):
        from coderctl.ops.s3 import open_bucket

        entries = scan_s3(open_bucket(app, where), where, checksums=False)
        shown = f"s3://{where.bucket}/{where.prefix}"
    else:
        entries = scan(where, checksums=False) if where.is_dir() else []
        shown = str(where)
    complete = sorted((e for e in entries if e.complete), key=newest_first, reverse=True)
    if not complete:
        raise UsageError(f"backup verify: no FILE given and no complete backup in {shown}")
    return complete[0].location


@backup.command("list")
@click.argument("directory", required=False, metavar="[DIRECTORY|s3://BUCKET/PREFIX]")
@click.option("--quick", is_flag=True, help="compare sizes with the manifests only; do not hash the files")
@click.pass_obj
def list_cmd(app: App, directory: str | None, quick: bool) -> int:
    """List the backups in DIRECTORY: name, age, size, via, verified, checksum state.

    In a bucket, checking the checksums downloads every backup (--quick compares sizes only)."""
    from coderctl import render
    from coderctl.ops import manifest as mf
    from coderctl.ops.catalog import scan, scan_s3
    from coderctl.ops.storage import S3URL

    where = _where(app, directory)
    if isinstance(where, S3URL):
        from coderctl.ops.s3 import open_bucket

        entries = scan_s3(open_bucket(app, where), where, checksums=not quick)
        where = f"s3://{where.bucket}/{where.prefix}"
    else:
        entries = scan(where, checksums=not quick) if directory or where.is_dir() else []
    now = mf.now_utc()
    bad = [e for e in entries if e.checksum not in ("ok", "unchecked")]
    if app.output == "json":
        render.emit(app, "backup list", directory=str(where), backups=[_entry_json(e) for e in entries])
    else:
        rows = [[e.name, render.human_age((now - e.time).total_seconds() if e.time else None),
                 render.human_bytes(e.size), e.manifest.via if e.manifest else "-",
                 ("yes" if e.manifest.verified else "no") if e.manifest else "-", e.checksum]
                for e in entries]
        header = ["NAME", "AGE", "SIZE", "VIA", "VERIFIED", "CHECKSUM"]
        if any(e.retention for e in entries):
            header.append("RETAINED UNTIL")
            for row, e in zip(rows, entries, strict=True):
                row.append(f"{mf.format_time(e.retention.until)} ({e.retention.mode})" if e.retention else "-")
        render.print_table(header, rows, color=app.color, empty=f"no backups in {where}")
    return 1 if bad else 0


def _entry_json(e: Any) -> dict[str, Any]:
    from coderctl.ops import manifest as mf

    m = e.manifest
    return {"file": e.name, "created_at": mf.format_time(e.time) if e.time else None, "size": e.size,
            "via": m.via if m else None, "format": m.format if m else None,
            "verified": m.verified if m else None, "checksum": e.checksum, "detail": e.detail,
            "retained_until": mf.format_time(e.retention.until) if e.retention else None,
            "lock_mode": e.retention.mode if e.retention else None}


@backup.command()
@click.argument("directory", required=False, metavar="[DIRECTORY|s3://BUCKET/PREFIX]")
@click.option("--keep-last", type=click.IntRange(min=0), default=0, metavar="N", help="keep the N newest")
@click.option("--keep-daily", type=click.IntRange(min=0), default=0, metavar="N",
              help="keep the newest of each of the last N days with a backup")
@click.option("--keep-weekly", type=click.IntRange(min=0), default=0, metavar="N",
              help="keep the newest of each of the last N ISO weeks with a backup")
@click.option("--keep-monthly", type=click.IntRange(min=0), default=0, metavar="N",
              help="keep the newest of each of the last N months with a backup")
@click.option("--dry-run", is_flag=True, help="only say what would be removed and why")
@click.pass_obj
def prune(app: App, directory: str | None, keep_last: int, keep_daily: int, keep_weekly: int, keep_monthly: int,
          dry_run: bool) -> int:
    """Remove old backups, keeping the last/daily/weekly/monthly ones (like restic); never the newest verified."""
    from coderctl import render
    from coderctl.ops.retention import Policy
    from coderctl.ops.retention import prune as run
    from coderctl.ops.storage import S3URL

    where = _where(app, directory)
    policy = Policy(keep_last, keep_daily, keep_weekly, keep_monthly)
    bucket = None
    if isinstance(where, S3URL):
        from coderctl.ops.s3 import open_bucket

        bucket = open_bucket(app, where)
    outcome = run(where, policy, dry_run=dry_run, bucket=bucket)
    if app.output == "json":
        render.emit(app, "backup prune", result=outcome.result, steps=[s.as_dict() for s in outcome.steps])
    else:
        rows = [[b["file"], b["action"], ", ".join(b["reasons"])] for b in outcome.result["backups"]]
        render.print_table(["NAME", "ACTION", "WHY"], rows, color=app.color, empty=f"no backups in {where}")
        for name in outcome.result["untouched"]:
            click.echo(f"{name}  left alone: not a complete coderctl backup")
    if not outcome.ok:
        click.echo(f"coderctl: error: {outcome.message}", err=True)
    return int(outcome.code)


@backup.command()
@click.argument("file", type=click.Path(dir_okay=False), required=False, metavar="[FILE|s3://BUCKET/KEY]")
@database_options
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--no-safety-backup", is_flag=True, help="skip the backup of the current database taken first")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="where the safety backup goes [default: as for backup create]")
@click.option("--list", "list_", is_flag=True, help="list restores recorded in the cluster (and on this machine)")
@click.option("--resume", metavar="ID", default=None, help="carry an unfinished restore forward")
@click.option("--rollback", metavar="ID", default=None, help="undo what an unfinished restore did")
@click.pass_obj
def restore(app: App, file: str | None, via: str, yes: bool, no_safety_backup: bool, output_dir: Path | None,
            list_: bool, resume: str | None, rollback: str | None) -> int:
    """Restore FILE into the deployment's database, with Coder scaled to 0 meanwhile.

    Checks FILE, asks for confirmation naming the target, takes a safety backup, scales Coder to 0,
    restores in one transaction, compares row counts with the manifest, and scales Coder back, also when
    something fails. Every step is recorded in the cluster (docs/operations.md): a restore that was
    killed is listed by --list and finished with --resume ID or undone with --rollback ID, from any machine.
    A backup in a bucket is first downloaded into the backup directory, checked as it arrives, and restored
    from that copy. Exit 1: failed and put back; exit 3: the output says what a person must do.
    """
    import sys

    from coderctl import render
    from coderctl.errors import UsageError
    from coderctl.ops import manifest as mf
    from coderctl.ops import restore as ops

    chosen = [name for name, given in (("FILE", file), ("--list", list_), ("--resume", resume),
                                       ("--rollback", rollback)) if given]
    if len(chosen) != 1:
        raise UsageError("backup restore: give exactly one of FILE, --list, --resume ID, --rollback ID"
                         + (f" (got {', '.join(chosen)})" if chosen else ""))
    if list_:
        return _list_operations(app, "backup restore")
    if not yes and not rollback and not sys.stdin.isatty():
        raise UsageError("restore replaces the database: pass --yes to run it without a terminal")

    def confirm(text: str, word: str) -> bool:
        if yes:
            return True
        click.echo(text, err=True)
        answer = click.prompt(f"Type the database name ({word}) to go on", err=True, default="",
                              show_default=False)
        return bool(answer.strip() == word)

    if rollback:
        outcome = ops.rollback(app, rollback)
        return _report(app, "backup restore", outcome, [f"restore {rollback} rolled back"])
    if resume:
        outcome = ops.resume(app, resume, confirm)
    else:
        assert file is not None
        from coderctl.ops.storage import S3URL, is_s3

        if is_s3(file):
            from coderctl.ops.remote import fetch

            with render.TransferProgress("downloading", enabled=app.output == "text") as bar:
                path = fetch(app, S3URL.parse(file), _dir(app, output_dir), progress=bar.callback)
        else:
            path = mf.backup_file(file)
        opts = ops.RestoreOptions(file=path, output_dir=_dir(app, output_dir), via=via,
                                  safety_backup=not no_safety_backup, db_address=app.settings.db_address)
        with render.TransferProgress("restoring", total=path.stat().st_size, enabled=app.output == "text") as bar:
            outcome = ops.restore(app, opts, confirm, progress=bar.callback)
    r = outcome.result
    summary = [(f"restored {Path(r['file']).name} into {r.get('target')}: {r.get('tables')} tables, row counts "
                f"match; Coder back to {r.get('replicas')} replica(s)")]
    return _report(app, "backup restore", outcome, summary)


def _seconds(text: str) -> float:
    from coderctl.errors import UsageError

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise UsageError(f"--older-than {text!r}: expected a duration such as 0, 90m, 24h or 2d") from None


_CLEANUP_EXAMPLES = ("Examples:\n\n\b\n  coderctl backup cleanup s3://coder-backups/coder/ --dry-run\n"
                     "  coderctl backup cleanup s3://coder-backups/coder/ --older-than 0")
_SYNC_EXAMPLES = ("Examples:\n\n\b\n  coderctl backup sync --from /srv/backups --to s3://coder-backups/coder/\n"
                  "  coderctl backup sync --from s3://coder-backups/coder/ --to /srv/backups --dry-run")


@backup.command(epilog=_CLEANUP_EXAMPLES)
@click.argument("prefix", required=False, metavar="[s3://BUCKET/PREFIX]")
@click.option("--older-than", default="24h", show_default=True, metavar="DURATION",
              help="only uploads started longer ago than this (0: all; s, m, h, d)")
@click.option("--dry-run", is_flag=True, help="only list them")
@click.pass_obj
def cleanup(app: App, prefix: str | None, older_than: str, dry_run: bool) -> int:
    """Abort the incomplete multipart uploads under PREFIX (left by runs that could not abort them).

    An incomplete upload is never visible as an object, but the server keeps (and bills) its parts until it
    is aborted. `backup list` shows them as partial. Without PREFIX: the backup_destination (or backup_dir)
    setting, which must then be a bucket.
    """
    from coderctl import render
    from coderctl.errors import UsageError
    from coderctl.ops.remote import cleanup as run
    from coderctl.ops.storage import S3URL

    where = S3URL.parse(prefix) if prefix else _where(app, None)
    if not isinstance(where, S3URL):
        raise UsageError(f"backup cleanup: no s3://BUCKET/PREFIX given and the backup destination {where} is a "
                         "directory")
    outcome = run(app, where, _seconds(older_than), dry_run=dry_run)
    if app.output == "json":
        render.emit(app, "backup cleanup", result=outcome.result, steps=[s.as_dict() for s in outcome.steps])
    else:
        rows = [[u["key"], u["initiated"] or "-", u["action"]] for u in outcome.result["uploads"]]
        render.print_table(["KEY", "STARTED", "ACTION"], rows, color=app.color,
                           empty=f"no incomplete multipart uploads under {outcome.result['prefix']}")
    if not outcome.ok:
        click.echo(app.redact(f"coderctl: error: {outcome.message}"), err=True)
    return int(outcome.code)


@backup.command(epilog=_SYNC_EXAMPLES)
@click.option("--from", "source", metavar="DIR|s3://BUCKET/PREFIX", help="where the backups are (required)")
@click.option("--to", "target", metavar="s3://BUCKET/PREFIX|DIR", help="where they are missing (required)")
@click.option("--dry-run", is_flag=True, help="only say what would be copied")
@object_lock_options
@click.pass_obj
def sync(app: App, source: str | None, target: str | None, dry_run: bool) -> int:
    """Copy the backups (with their manifests) that --to lacks, between a directory and a bucket.

    Each copy is checked against its manifest's SHA-256 as it is made and appears under its name only if it
    matches; a backup already there with the same SHA-256 is left, one with another is a conflict (exit 1).
    Into a bucket with an object lock asked, each copy is retained for the days asked from its backup's
    creation (a backup older than that is copied unlocked, and says so).
    """
    from coderctl import render
    from coderctl.errors import UsageError
    from coderctl.ops.sync import sync as run

    if not source or not target:
        raise UsageError("backup sync needs --from and --to (a directory and an s3://BUCKET/PREFIX)")
    outcome = run(app, _where(app, source), _where(app, target), dry_run=dry_run)
    if app.output == "json":
        render.emit(app, "backup sync", result=outcome.result, steps=[s.as_dict() for s in outcome.steps])
    else:
        rows = [[b["file"], render.human_bytes(b["size"]), b["action"]] for b in outcome.result["backups"]]
        render.print_table(["NAME", "SIZE", "ACTION"], rows, color=app.color,
                           empty=f"no backups in {outcome.result['from']}")
    if not outcome.ok:
        click.echo(app.redact(f"coderctl: error: {outcome.message}"), err=True)
    return int(outcome.code)


def _list_operations(app: App, command: str) -> int:
    from coderctl import render
    from coderctl.ops.operation import overview
    from coderctl.ops.restore import KIND

    rows = overview(app, KIND)
    if app.output == "json":
        render.emit(app, command, result={"operations": rows}, steps=[])
    else:
        render.print_table(["ID", "STATE", "STEP", "HOLDER", "STARTED"],
                           [[r["id"], r["state"], r["step"], r["holder"], r["started_at"]] for r in rows],
                           color=app.color, empty="no restores recorded")
    return 0
