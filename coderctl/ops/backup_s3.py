"""`backup create --to s3://BUCKET/PREFIX`: the dump streams into a multipart upload, hashed and read as it
is sent; the upload is completed only after pg_dump exited 0, the dump read whole and every part was stored,
then the manifest is written beside the object. Any failure aborts the upload: no object ever appears under
a backup's name unless it is whole (the caller's `_Attempt.discard()` aborts it, or deletes a completed
object whose manifest could not be written). With an object lock asked (ops/s3lock.py) the bucket must have
object lock enabled before anything is dumped, and both objects must read back retained as asked.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

from coderctl.context import App
from coderctl.ops import manifest as mf
from coderctl.ops import s3lock
from coderctl.ops.journal import Journal, StepFailed
from coderctl.ops.s3 import Bucket, Retention, open_bucket
from coderctl.ops.s3upload import MultipartWriter
from coderctl.ops.storage import S3URL
from coderctl.ops.verifier import Inline, StreamCheck, VerifyFailed

if TYPE_CHECKING:
    from coderctl.ops.backup import CreateOptions, Progress, _Attempt

METHOD_PARTS = "every part's Content-MD5 checked by the server, the completed object's size and ETag checked"


def run_s3(app: App, opts: CreateOptions, journal: Journal, attempt: _Attempt, progress: Progress | None,
           start: float) -> dict[str, Any]:
    from coderctl.ops import backup

    assert opts.to is not None
    with journal.step("prepare") as step:
        lock = s3lock.asked(app.settings)
        bucket = open_bucket(app, opts.to)
        if lock is not None:
            s3lock.require(bucket, lock)
        source = backup._prepare(app, opts)
        attempt.database = source.url.database
        step.detail = (f"{source.describe}; {source.format_detail(opts.fmt)} into {_where(opts.to)} "
                       f"at {bucket.endpoint} (credentials: {bucket.credentials.origin})"
                       + (f"; object lock {lock}" if lock is not None else ""))
    moment = mf.now_utc()
    wanted = lock.retention(moment) if lock is not None else None
    key = _free_key(bucket, opts.to, source.url.database, moment, opts)
    digest = hashlib.sha256()
    with journal.step("dump") as step:
        attempt.upload = upload = MultipartWriter(bucket, key, extra=s3lock.arguments(wanted))
        check = None
        if opts.verify:
            attempt.follower = check = Inline(StreamCheck(opts.fmt))
            check.start()

        def sink(chunk: bytes) -> None:
            upload.write(chunk)
            digest.update(chunk)
            if check is not None:
                if check.error:
                    raise StepFailed(check.error)
                check.feed(chunk)
            if progress is not None:
                progress(upload.size)

        started = time.monotonic()
        coder = backup._Background(lambda: backup.coder_version(app) if source.cluster else None)
        written = backup.run_dump(app, source, opts, sink)
        elapsed = max(time.monotonic() - started, 1e-6)
        step.detail = f"{upload.size} bytes in {elapsed:.1f}s ({upload.size / elapsed / 1e6:.1f} MB/s)"
    with journal.step("verify") as step:
        upload.finish()
        verification, facts = _verify(check, opts.fmt)
        step.detail = verification.detail
        if verification.status == "skipped":
            step.status = "skipped"
        version = coder.result()
    record = backup._manifest(key.rpartition("/")[2], moment, source, opts, upload.size, digest.hexdigest(),
                              verification, facts, version, written)
    with journal.step("commit") as step:
        upload.complete()
        retained, late = s3lock.confirm(bucket, key, wanted) if wanted is not None else (None, False)
        record.duration_s = round(time.monotonic() - start, 3)
        bucket.put_bytes(key + ".json", mf.encode(record), extra=s3lock.arguments(wanted))
        if wanted is not None:
            s3lock.confirm_or_remove(bucket, key + ".json", wanted)
        attempt.upload = None
        step.detail = f"s3://{bucket.name}/{key} (+ {record.file}.json)"
        if retained is not None:
            step.detail += f", both retained {s3lock.describe(retained)}" + (
                " (the dump's set after its upload: the server ignored the lock given with the multipart upload)"
                if late else "")
    return {"file": f"s3://{bucket.name}/{key}", "manifest": f"s3://{bucket.name}/{key}.json",
            "destination": _where(opts.to), "database": source.url.database, "size": upload.size,
            "sha256": record.sha256, "verified": verification.status == "ok", "tables": len(record.tables or {}),
            "rows": sum((record.tables or {}).values()), "server_version": record.server_version,
            "coder_version": version, "retention": _retention_json(retained)}


def _retention_json(retained: Retention | None) -> dict[str, str] | None:
    if retained is None:
        return None
    return {"mode": retained.mode, "retain_until": mf.format_time(retained.until)}


def _where(url: S3URL) -> str:
    return f"s3://{url.bucket}/{url.prefix}"


def _free_key(bucket: Bucket, to: S3URL, database: str, moment: Any, opts: CreateOptions) -> str:
    for n in range(1, 100):
        tag = "-".join(t for t in (opts.tag, str(n) if n > 1 else "") if t)
        key = to.prefix + mf.backup_name(database, moment, opts.fmt, tag)
        if bucket.head(key) is None and bucket.head(key + ".json") is None:
            return key
    raise StepFailed(f"no free backup name under {_where(to)}")


def _verify(check: Inline | None, fmt: str) -> tuple[mf.Verification, Any]:
    at = mf.format_time(mf.now_utc())
    if check is None:
        return mf.Verification("skipped", method=METHOD_PARTS, detail="--no-verify: not read", at=at), None
    try:
        facts = check.finish()
    except VerifyFailed as exc:
        raise StepFailed(str(exc)) from None
    whole = "every data block present" if fmt == "custom" else "end-of-dump marker present"
    detail = (f"read in full as it was uploaded: {len(facts.tables)} tables, {facts.rows} rows, {whole}; every "
              "part stored with its MD5 checked")
    return mf.Verification("ok", method=f"{check.check.method}; {METHOD_PARTS}", detail=detail, at=at), facts
