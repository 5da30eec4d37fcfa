"""Backups in a bucket: verify (a download through the same checks as a file), fetch (a verified local copy,
which restore and sync use), and cleanup of incomplete multipart uploads.

`backup restore s3://...` restores from a verified local copy rather than from a second download: the bytes
restored are then exactly the bytes checked (an object can be replaced between two downloads), and
`--via direct`'s pg_restore reads a file. The copy is kept in the backup directory with its manifest, as a
complete local backup.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from coderctl.context import App
from coderctl.errors import CoderctlError, ExitCode, UsageError
from coderctl.ops import manifest as mf
from coderctl.ops.catalog import read_s3_manifest
from coderctl.ops.files import PartialFile, private_dir
from coderctl.ops.journal import Journal, Outcome, StepFailed
from coderctl.ops.s3 import Bucket, open_bucket
from coderctl.ops.storage import S3URL
from coderctl.ops.verifier import FileCheck, read_stream
from coderctl.ops.verify import read_back


def backup_key(url: S3URL) -> str:
    """The data object a user named: the dump itself or its manifest."""
    key = url.key
    if key.endswith((".dump.json", ".sql.json")):
        key = key[: -len(".json")]
    if not key or key.endswith("/"):
        raise UsageError(f"{url}: names a prefix, not a backup (s3://BUCKET/PREFIX/NAME.dump)")
    return key


def _check(bucket: Bucket, key: str, record: mf.Manifest, full: FileCheck) -> str:
    """StepFailed unless the download matches the manifest and reads back whole; the checksum detail."""
    if full.size != record.size:
        raise StepFailed(f"size {full.size} bytes, the manifest says {record.size}: the object was truncated "
                         "or changed")
    if full.sha256 != record.sha256:
        raise StepFailed("SHA-256 differs from the manifest: the object was changed or damaged")
    return f"{full.size} bytes, sha256 {full.sha256[:16]}… matches the manifest"


def verify(app: App, url: S3URL, restore_to: str | None = None, progress: Any = None,
           journal: Journal | None = None) -> Outcome:
    """`backup verify s3://...`: manifest, a download checked against it and read whole; with `restore_to`,
    a verified local copy (in a private temporary directory) restored into that scratch database."""
    from coderctl.ops import verify as local

    journal = journal or Journal()
    result: dict[str, Any] = {"file": str(url)}

    def work() -> None:
        key = backup_key(url)
        target = local._empty_target(app, restore_to) if restore_to else None
        bucket = open_bucket(app, url)
        with journal.step("manifest") as step:
            record = read_s3_manifest(bucket, key)
            step.detail = f"{record.format} backup of {record.database} from {record.created_at} via {record.via}"
        if target is None:
            full = read_stream(bucket.chunks(key), record.format, progress=progress)
            staged = None
        else:
            staged, full = _download_to_temp(bucket, key, record, progress)
        try:
            with journal.step("checksum") as step:
                step.detail = _check(bucket, key, record, full)
            with journal.step("read-back") as step:
                step.detail = read_back(record, full)
            assert full.facts is not None
            result.update({"format": record.format, "database": record.database,
                           "created_at": record.created_at, "size": full.size, "sha256": full.sha256,
                           "tables": len(full.facts.tables), "rows": full.facts.rows})
            if target is not None and staged is not None:
                with journal.step("restore-to") as step:
                    step.detail = local._restore_to(app, staged, record, target)
                result["restored_to"] = app.redact(restore_to or "")
        finally:
            if staged is not None:
                _remove_tree(staged.parent)

    return local.verified(app, result, journal, work)


def _download_to_temp(bucket: Bucket, key: str, record: mf.Manifest, progress: Any) -> tuple[Path, FileCheck]:
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="coderctl-verify-"))
    path = directory / key.rpartition("/")[2]
    with PartialFile(path) as out:
        full = read_stream(bucket.chunks(key), record.format, progress=progress, copy=out.write)
        out.commit()
    return path, full


def _remove_tree(directory: Path) -> None:
    import shutil

    shutil.rmtree(directory, ignore_errors=True)


def fetch(app: App, url: S3URL, directory: Path, progress: Any = None, *, bucket: Bucket | None = None) -> Path:
    """Download a backup and its manifest into `directory`, checked against the manifest (size, SHA-256, a
    full read, row counts) as it arrives; nothing appears under its name unless it passed. An identical copy
    already there is used as it is."""
    key = backup_key(url)
    bucket = bucket or open_bucket(app, url)
    record = read_s3_manifest(bucket, key)
    directory = private_dir(directory)
    final = directory / key.rpartition("/")[2]
    if final.exists():
        from coderctl.ops.files import sha256_file

        if final.stat().st_size == record.size and sha256_file(final) == record.sha256:
            if not mf.manifest_path(final).exists():
                mf.write(final, record)
            return final
        raise UsageError(f"{final} already exists and differs from {url}: move it away first")
    info = bucket.head(key)
    with PartialFile(final) as out:
        full = read_stream(bucket.chunks(key, etag=info.etag if info else None), record.format, progress=progress,
                           copy=out.write)
        _check(bucket, key, record, full)
        read_back(record, full)
        out.sync()
        mf.write(final, record)
        out.commit()
    return final


def cleanup(app: App, url: S3URL, older_than_s: float, *, dry_run: bool, journal: Journal | None = None) -> Outcome:
    """Abort the incomplete multipart uploads under a prefix started more than `older_than_s` ago."""
    journal = journal or Journal()
    start = time.monotonic()
    bucket = open_bucket(app, url)
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    uploads = bucket.pending_uploads(url.prefix)
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for u in uploads:
        old = u.initiated is None or u.initiated <= cutoff
        row = {"key": u.key, "upload_id": u.upload_id,
               "initiated": mf.format_time(u.initiated) if u.initiated else None,
               "action": "kept (too recent)" if not old else ("would abort" if dry_run else "aborted")}
        if old and not dry_run:
            try:
                bucket.abort(u.key, u.upload_id)
            except CoderctlError as exc:
                row["action"], row["error"] = "failed", str(exc)
                failed.append(f"{u.key}: {exc}")
        rows.append(row)
    done = sum(r["action"] == "aborted" for r in rows)
    journal.note("cleanup", "failed" if failed else "ok",
                 f"{len(uploads)} incomplete upload(s) under s3://{url.bucket}/{url.prefix}; "
                 f"{done} aborted" + (" (dry run)" if dry_run else ""))
    result = {"status": "failed" if failed else "ok", "prefix": f"s3://{url.bucket}/{url.prefix}",
              "dry_run": dry_run, "uploads": rows, "duration_s": round(time.monotonic() - start, 3)}
    if failed:
        return Outcome(int(ExitCode.PROBLEMS), result, journal.steps, "could not abort: " + "; ".join(failed))
    return Outcome(int(ExitCode.OK), result, journal.steps)
