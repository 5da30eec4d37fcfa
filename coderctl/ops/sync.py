"""`backup sync --from A --to B`: copy the complete backups that B lacks, between a directory and a bucket
(either way), each checked by its manifest's SHA-256 as it is copied; nothing appears under a backup's name
at B unless it matched. A backup B already holds with the same SHA-256 is left; one with a different SHA-256
is a conflict, left alone on both sides.

Into a bucket, with an object lock asked (ops/s3lock.py), the bucket must have object lock enabled before
anything is copied, and each copy (the dump and its manifest) is retained for the days asked from the backup's
creation, as `backup create` would have retained it, and read back so; a backup whose retention is already
over is copied without a lock, and says so.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from coderctl.context import App
from coderctl.errors import CoderctlError, ExitCode, UsageError
from coderctl.ops import manifest as mf
from coderctl.ops import s3lock
from coderctl.ops.catalog import Entry, scan, scan_s3
from coderctl.ops.files import READ_CHUNK
from coderctl.ops.journal import Journal, Outcome, StepFailed
from coderctl.ops.s3 import Bucket, Retention, open_bucket
from coderctl.ops.signals import interruptible
from coderctl.ops.storage import S3URL


def _entries(app: App, where: Path | S3URL) -> tuple[list[Entry], Bucket | None]:
    if isinstance(where, S3URL):
        bucket = open_bucket(app, where)
        return scan_s3(bucket, where, checksums=False), bucket
    if not where.expanduser().is_dir():
        return [], None
    return scan(where, checksums=False), None


def _describe(where: Path | S3URL) -> str:
    return f"s3://{where.bucket}/{where.prefix}" if isinstance(where, S3URL) else str(where)


def sync(app: App, source: Path | S3URL, target: Path | S3URL, *, dry_run: bool = False,
         journal: Journal | None = None) -> Outcome:
    if isinstance(source, S3URL) == isinstance(target, S3URL):
        raise UsageError("backup sync copies between a directory and a bucket: give one of each")
    journal = journal or Journal()
    start = time.monotonic()
    rows: list[dict[str, Any]] = []
    try:
        with interruptible():
            with journal.step("list") as step:
                have, source_bucket = _entries(app, source)
                if isinstance(source, Path) and not source.expanduser().is_dir():
                    raise UsageError(f"{source}: no such directory")
                there, target_bucket = _entries(app, target)
                step.detail = f"{len(have)} at {_describe(source)}, {len(there)} at {_describe(target)}"
                lock = s3lock.asked(app.settings) if target_bucket is not None else None
                if lock is not None:
                    assert target_bucket is not None
                    s3lock.require(target_bucket, lock)
                    step.detail += f"; object lock {lock}"
            existing = {e.name: e for e in there if e.complete}
            for entry in have:
                if not entry.complete or entry.manifest is None:
                    continue
                row = {"file": entry.name, "size": entry.manifest.size}
                rows.append(row)
                other = existing.get(entry.name)
                if other is not None and other.manifest is not None:
                    same = other.manifest.sha256 == entry.manifest.sha256
                    row["action"] = "present" if same else "conflict: a different backup of that name is there"
                    continue
                if dry_run:
                    row["action"] = "would copy"
                    continue
                try:
                    with journal.step(f"copy {entry.name}") as step:
                        held = _copy(app, entry, target, source_bucket, target_bucket, lock)
                        step.detail = f"{entry.manifest.size} bytes, SHA-256 checked" + (f"; {held}" if held else "")
                    row["action"] = "copied" + (f", {held}" if held else "")
                except CoderctlError as exc:
                    row["action"] = f"failed: {app.redact(str(exc))}"
        code, message = ExitCode.OK, ""
    except CoderctlError as exc:
        code, message = exc.exit_code, app.redact(str(exc))
    except KeyboardInterrupt:
        code, message = ExitCode.PROBLEMS, "interrupted: the upload in progress was aborted"
    failed = [r for r in rows if str(r.get("action", "")).startswith(("failed", "conflict"))]
    if failed and not message:
        code = ExitCode.PROBLEMS
        message = "; ".join(f"{r['file']}: {r['action']}" for r in failed)
    result = {"status": "ok" if code == ExitCode.OK else "failed", "from": _describe(source), "to": _describe(target),
              "dry_run": dry_run, "backups": rows, "duration_s": round(time.monotonic() - start, 3)}
    if message:
        result["error"] = message
    return Outcome(int(code), result, journal.steps, message)


def _copy(app: App, entry: Entry, target: Path | S3URL, source_bucket: Bucket | None,
          target_bucket: Bucket | None, lock: s3lock.ObjectLock | None) -> str:
    """Copy one backup; notes on the copy: what it is retained as, whether only the manifest was missing."""
    if isinstance(target, S3URL):
        assert target_bucket is not None
        wanted = s3lock.for_backup(lock, entry.time, mf.now_utc()) if lock is not None else None
        completed = _upload(entry, target_bucket, target.prefix + entry.name, wanted)
        notes = ["only its manifest was missing (an interrupted copy): the dump there matched"] if completed else []
        if lock is not None and wanted is None:
            notes.append(f"not locked: {lock} from its creation ended before now")
        elif wanted is not None:
            notes.append(f"retained {s3lock.describe(wanted)}" if not completed else
                         f"manifest retained {s3lock.describe(wanted)}")
        return "; ".join(notes)
    from coderctl.ops.remote import fetch

    assert source_bucket is not None
    fetch(app, S3URL(source_bucket.name, entry.key), target, bucket=source_bucket)
    return ""


def _upload(entry: Entry, bucket: Bucket, key: str, wanted: Retention | None) -> bool:
    """Stream a local backup into a multipart upload, completed only if it has its manifest's size and
    SHA-256; then its manifest beside it; with `wanted`, both retained so, read back. True when the dump was
    already there without its manifest (see _complete) and only the manifest was written."""
    from coderctl.ops.s3upload import MultipartWriter

    assert entry.manifest is not None
    if bucket.head(key) is not None:
        _complete(entry, bucket, key, wanted)
        return True
    upload = MultipartWriter(bucket, key, extra=s3lock.arguments(wanted))
    try:
        digest = hashlib.sha256()
        with open(entry.path, "rb", buffering=0) as fh:
            while chunk := fh.read(READ_CHUNK):
                digest.update(chunk)
                upload.write(chunk)
        if upload.size != entry.manifest.size or digest.hexdigest() != entry.manifest.sha256:
            raise StepFailed(f"{entry.path} does not match its manifest (size or SHA-256): not copied")
        upload.finish()
        upload.complete()
        if wanted is not None:
            s3lock.confirm(bucket, key, wanted)
        _put_manifest(entry, bucket, key, wanted)
    except BaseException:
        upload.abort()
        raise
    return False


def _put_manifest(entry: Entry, bucket: Bucket, key: str, wanted: Retention | None) -> None:
    assert entry.manifest is not None
    bucket.put_bytes(key + ".json", mf.encode(entry.manifest), extra=s3lock.arguments(wanted))
    if wanted is not None:
        s3lock.confirm_or_remove(bucket, key + ".json", wanted)


def _complete(entry: Entry, bucket: Bucket, key: str, wanted: Retention | None) -> None:
    """A dump already in the bucket without its manifest: a copy interrupted between the two (under an object
    lock, one nobody could remove until its retention ends). When it is this backup, byte for byte (size, then
    SHA-256 of a full download), only the manifest is written; anything else is left alone."""
    assert entry.manifest is not None
    info = bucket.head(key)
    where = f"s3://{bucket.name}/{key}"
    if info is None or info.size != entry.manifest.size:
        raise StepFailed(f"{where} exists without a manifest and differs from {entry.path} (size): left alone")
    digest = hashlib.sha256()
    for chunk in bucket.chunks(key, etag=info.etag):
        digest.update(chunk)
    if digest.hexdigest() != entry.manifest.sha256:
        raise StepFailed(f"{where} exists without a manifest and differs from {entry.path} (SHA-256): left alone")
    _put_manifest(entry, bucket, key, wanted)
