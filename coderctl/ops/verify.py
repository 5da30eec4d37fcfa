"""`backup verify FILE`: the manifest's size and SHA-256, a full read of the archive with its row counts,
and with `--restore-to URL` a real restore into a scratch database whose row counts must match."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coderctl.clients.postgres import DatabaseURL
from coderctl.context import App
from coderctl.errors import CoderctlError, ExitCode, UsageError
from coderctl.ops import manifest as mf
from coderctl.ops import pgtools, tables
from coderctl.ops.journal import Journal, Outcome, StepFailed
from coderctl.ops.signals import interruptible
from coderctl.ops.verifier import FileCheck, read_file


def verify(app: App, file: str | Path, restore_to: str | None = None, progress: Any = None,
           journal: Journal | None = None) -> Outcome:
    journal = journal or Journal()
    path = mf.backup_file(file)
    result: dict[str, Any] = {"file": str(path)}

    def work() -> None:
        target = _empty_target(app, restore_to) if restore_to else None
        result.update(_run(app, path, target, journal, progress))
        if target is not None:
            result["restored_to"] = app.redact(restore_to or "")

    return verified(app, result, journal, work)


def read_back(record: mf.Manifest, full: FileCheck) -> str:
    """The archive read whole, and its row counts equal the manifest's (when it has them)."""
    if not full.ok or full.facts is None:
        raise StepFailed(full.error or "the archive does not read back")
    if record.tables is not None:
        diffs = tables.differences(record.tables, full.facts.tables)
        if diffs:
            raise StepFailed(f"row counts in the archive differ from the manifest: {tables.summary(diffs)}")
    return f"read in full: {len(full.facts.tables)} tables, {full.facts.rows} rows"


def verified(app: App, result: dict[str, Any], journal: Journal, work: Callable[[], None]) -> Outcome:
    """Run a verification (`work` fills `result` and `journal`), interruptible; a failure or an interruption
    becomes the outcome's status, error and exit code (a verification changes nothing: no way back needed)."""
    start = time.monotonic()
    try:
        with interruptible():
            work()
        code, message = ExitCode.OK, ""
    except CoderctlError as exc:
        code, message = exc.exit_code, app.redact(str(exc))
    except KeyboardInterrupt:
        code, message = ExitCode.PROBLEMS, "interrupted"
    result["status"] = "ok" if code == ExitCode.OK else "failed"
    if message:
        result["error"] = message
    result["duration_s"] = round(time.monotonic() - start, 3)
    return Outcome(int(code), result, journal.steps, message)


def _empty_target(app: App, restore_to: str) -> DatabaseURL:
    """Refuse a --restore-to database that holds anything, before the backup is even read (a plain dump
    starts with DROP statements, and a restore into a database in use proves nothing)."""
    url = DatabaseURL.parse(restore_to)
    app.redact.add(url.password, restore_to)
    found = tables.user_relations(app, url)
    if found:
        more = ", ..." if len(found) > 3 else ""
        raise UsageError(f"--restore-to database {url.database} at {url.host}:{url.port} is not empty "
                         f"({', '.join(found[:3])}{more}): it must be an empty scratch database; nothing was "
                         "read or restored")
    return url


def _run(app: App, path: Path, target: DatabaseURL | None, journal: Journal, progress: Any) -> dict[str, Any]:
    with journal.step("manifest") as step:
        record = mf.read(path)
        step.detail = f"{record.format} backup of {record.database} from {record.created_at} via {record.via}"
        if target is not None and record.format == "custom":
            try:
                tool = pgtools.reader_for(str(path), record.pg_dump_version,
                                          why="to restore into the scratch database")
            except pgtools.ToolMissing as exc:
                raise StepFailed(f"{exc}; nothing was read or restored") from None
            step.detail += f"; {tool.path} {tool.version} reads it"
    full = read_file(path, record.format, progress=progress)
    with journal.step("checksum") as step:
        if full.size != record.size:
            raise StepFailed(f"size {full.size} bytes, the manifest says {record.size}: the file was truncated "
                             "or changed")
        if full.sha256 != record.sha256:
            raise StepFailed("SHA-256 differs from the manifest: the file was changed or damaged")
        step.detail = f"{full.size} bytes, sha256 {full.sha256[:16]}… matches the manifest"
    with journal.step("read-back") as step:
        step.detail = read_back(record, full)
    assert full.facts is not None
    out: dict[str, Any] = {"format": record.format, "database": record.database, "created_at": record.created_at,
                           "size": full.size, "sha256": full.sha256, "tables": len(full.facts.tables),
                           "rows": full.facts.rows}
    if target is not None:
        with journal.step("restore-to") as step:
            step.detail = _restore_to(app, path, record, target)
    return out


def _restore_to(app: App, path: Path, record: mf.Manifest, url: DatabaseURL) -> str:
    env = pgtools.libpq_env(url, connect_timeout=app.timeout)
    reason = pgtools.restore_archive(str(path), record.format, database=url.database, env=env,
                                     flags=("--no-owner", "--no-privileges"),
                                     why="to restore into the scratch database")
    if reason is not None:
        raise StepFailed(app.redact(f"restore into {url.database} at {url.host}:{url.port} failed: {reason} "
                                    "(the scratch database must be empty)"))
    actual = tables.count_direct(app, url, url.host, url.port)
    diffs = tables.differences(record.tables or {}, actual)
    if diffs:
        raise StepFailed(f"restored row counts differ from the manifest: {tables.summary(diffs)}")
    if record.tables is None:
        return f"restored into {url.database}: {len(actual)} tables (the manifest has no row counts to compare)"
    return f"restored into {url.database}: {len(record.tables)} tables, row counts match the manifest"
