"""`backup create`: prepare -> dump (streamed into NAME.partial, hashed and read back as it arrives) ->
verify (exit status, end of dump, fsync, checksum of the file on disk) -> commit (rename, manifest).

Into a bucket (`--to s3://BUCKET/PREFIX`) the dump streams into a multipart upload instead, read as it is
sent, and the upload is completed only when pg_dump exited 0, the dump read whole and every part was stored
(ops/s3upload.py); the manifest is written beside the object after it.

Nothing appears under the final name unless every step passed; on any failure or interruption the
partial file is removed (the multipart upload aborted) and the pg_dump stopped, locally or in the pod.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coderctl import __version__
from coderctl.clients.postgres import DatabaseURL, split_address
from coderctl.context import App
from coderctl.errors import CoderctlError, ExitCode
from coderctl.ops import archive, dump, pgtools
from coderctl.ops import manifest as mf
from coderctl.ops.compression import AUTO, FALLBACK, PREFERRED, Compression, resolve
from coderctl.ops.files import PartialFile, private_dir
from coderctl.ops.journal import Journal, Outcome, StepFailed
from coderctl.ops.scan import DumpFacts
from coderctl.ops.signals import Interrupted, interruptible, shielded
from coderctl.ops.storage import S3URL
from coderctl.ops.verifier import Follower, Inline, StreamCheck, VerifyFailed

if TYPE_CHECKING:
    from coderctl.ops.pod import Target

Progress = Callable[[int], None]
HEAD_BYTES = 24
"""Enough of an archive's first bytes for the compression its header names (archive.compression_of)."""


@dataclass
class CreateOptions:
    output_dir: Path
    via: str = "exec"
    fmt: str = "custom"
    compress: Compression = AUTO
    verify: bool = True
    metrics_file: Path | None = None
    db_address: str | None = None
    tag: str = ""
    to: S3URL | None = None
    """A bucket and prefix to stream to instead of output_dir."""


@dataclass
class _Source:
    via: str
    url: DatabaseURL
    describe: str
    target: Target | None = None
    host: str = ""
    port: int = 0
    pg_dump: pgtools.Tool | None = None
    server_version: str | None = None
    compression: Compression = AUTO
    """What pg_dump is asked for: `auto` made concrete for a local pg_dump; left to the pod's script for exec."""
    server: _Concurrently | None = None
    """The server's (major, version), still being asked while pg_dump starts (one local pg_dump: nothing to
    choose, so pg_dump need not wait for the answer; it tells why a failed pg_dump failed)."""
    cluster: bool = True
    """Whether the run uses the Kubernetes API (exec, or a URL read from the cluster); only then is Coder's
    version looked up for the manifest. A local dump of a given URL never contacts the cluster: it works when
    the API does not, never waits on it, and spares pg_dump the Kubernetes client's import (0.4-0.6 s of CPU
    that pg_dump and the server lacked on the lab's 2 CPUs)."""

    def format_detail(self, fmt: str) -> str:
        """`custom format, zstd:1`; for exec, `auto` as the pod's script decides it."""
        if fmt != "custom":
            return f"{fmt} format"
        if self.compression.method == "auto":
            return f"custom format, {PREFERRED} if the pod's pg_dump writes it, else {FALLBACK}"
        return f"custom format, {self.compression}"

    def known_server_version(self) -> str | None:
        """The server's version, asked before pg_dump started or while it ran; None when it did not answer."""
        if self.server_version is None and self.server is not None:
            try:
                self.server_version = self.server.result()[1]
            except CoderctlError:
                return None
        return self.server_version


class _Attempt:
    """What a run holds that must not outlive a failure."""

    def __init__(self) -> None:
        self.out: PartialFile | None = None
        self.upload: Any = None
        self.follower: Follower | Inline | None = None
        self.database = ""

    def discard(self) -> str:
        """Undo what the run wrote; '' when nothing is left, else what is (an upload that could not be aborted)."""
        if self.follower is not None:
            self.follower.abort()
        if self.out is not None:
            self.out.discard()
        if self.upload is not None:
            reason = self.upload.abort()
            if reason:
                return (f"the incomplete multipart upload of s3://{self.upload.bucket.name}/{self.upload.key} could "
                        f"not be aborted ({reason}): remove it with coderctl backup cleanup "
                        f"s3://{self.upload.bucket.name}/{self.upload.key.rpartition('/')[0]} --older-than 0")
        return ""


def default_dir() -> Path:
    import os

    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "coderctl" / "backups"


class _Background:
    """A best-effort lookup that runs while the dump streams (it must not delay the dump), then `after`:
    work the end of the run would otherwise wait for (compiling the redactor's patterns, importing what the
    report prints with), done while pg_dump still runs. `lazy`: it starts at `start()` (the dump's first
    bytes), not at once: Python work on another thread holds the GIL in turns with the thread that is about
    to start pg_dump, which then started 20-30 ms later."""

    def __init__(self, fn: Callable[[], Any], *after: Callable[[], object], lazy: bool = False) -> None:
        import threading

        self._value: Any = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fn, after), name="lookup", daemon=True)
        self._started = False
        if not lazy:
            self.start()

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def _run(self, fn: Callable[[], Any], after: tuple[Callable[[], object], ...]) -> None:
        try:
            self._value = fn()
        except Exception:
            self._value = None
        finally:
            self._done.set()
        for task in after:
            try:
                task()
            except Exception:  # a warm-up only saves time later; the real call reports its own failure
                pass

    def result(self, timeout: float = 10) -> Any:
        self.start()
        self._done.wait(timeout)
        return self._value


def coder_version(app: App) -> str | None:
    """The Coder image tag (best effort: None when the cluster cannot tell)."""
    from coderctl import discovery

    try:
        dep = discovery.coder_deployment(app)
    except CoderctlError:
        return None
    spec = ((dep.get("spec") or {}).get("template") or {}).get("spec") or {}
    c = discovery.container(spec, app.settings.coder_container) or {}
    match = re.search(r":(v?\d+\.\d+\.\d+[^@]*)", str(c.get("image") or ""))
    if match:
        return match.group(1)
    label = ((dep.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/version")
    return f"v{label}" if label and not str(label).startswith("v") else label


def create(app: App, opts: CreateOptions, progress: Progress | None = None,
           journal: Journal | None = None, warm: Callable[[], object] | None = None) -> Outcome:
    """`warm`: best-effort work for after the run (e.g. importing what the report prints with), done in the
    background while pg_dump runs rather than after it."""
    journal = journal or Journal()
    start = time.monotonic()
    attempt = _Attempt()
    base: dict[str, Any] = {"via": opts.via, "format": opts.fmt}
    try:
        with interruptible():
            result = _run(app, opts, journal, attempt, progress, start, warm)
        code, message = int(ExitCode.OK), ""
        result = {"status": "ok", **base, **result}
    except BaseException as exc:
        with shielded():
            left = attempt.discard()
        if isinstance(exc, Interrupted):
            message = f"interrupted by {exc.name}: the partial file was removed and pg_dump stopped"
            code = ExitCode.PROBLEMS
        elif isinstance(exc, KeyboardInterrupt):
            message, code = "interrupted: the partial file was removed and pg_dump stopped", ExitCode.PROBLEMS
        elif isinstance(exc, CoderctlError):
            message, code = app.redact(str(exc)), exc.exit_code
        else:
            raise
        if opts.to is not None:
            message = message.replace("the partial file was removed", "the upload was aborted")
        if left:
            message, code = f"{message}; {left}", ExitCode.NEEDS_PERSON
        result = {"status": "failed", **base, "database": attempt.database or None, "error": message}
    duration = time.monotonic() - start
    result["duration_s"] = round(duration, 3)
    if opts.metrics_file is not None:
        code, message = _write_metrics(app, opts, journal, result, code, message, duration)
    return Outcome(int(code), result, journal.steps, message)


def _run(app: App, opts: CreateOptions, journal: Journal, attempt: _Attempt, progress: Progress | None,
         start: float, warm: Callable[[], object] | None = None) -> dict[str, Any]:
    if opts.to is not None:
        from coderctl.ops.backup_s3 import run_s3

        return run_s3(app, opts, journal, attempt, progress, start)
    with journal.step("prepare") as step:
        warnings: list[str] = []
        out_dir = private_dir(opts.output_dir, warn=warnings.append)
        source = _prepare(app, opts)
        attempt.database = source.url.database
        step.detail = "; ".join([f"{source.describe}; {source.format_detail(opts.fmt)} into {out_dir}", *warnings])
        if warnings:
            step.status = "warn"
    moment = mf.now_utc()
    final = _free_name(out_dir, source.url.database, moment, opts)
    digest = hashlib.sha256()
    with journal.step("dump") as step:
        attempt.out = out = PartialFile(final)
        follower = None
        if opts.verify:
            attempt.follower = follower = Follower(out.partial, StreamCheck(opts.fmt))
            follower.start()

        spliced = 0

        def arrived() -> None:
            coder.start()
            if follower is not None:
                if follower.error:
                    raise StepFailed(follower.error)
                follower.written(out.size)
            if progress is not None:
                progress(out.size)

        def sink(chunk: bytes) -> None:
            out.write(chunk)
            digest.update(chunk)
            arrived()

        def moved(size: int) -> None:
            nonlocal spliced
            spliced += size
            arrived()

        started = time.monotonic()
        coder = _Background(lambda: coder_version(app) if source.cluster else None, lambda: app.redact(" "),
                            *([warm] if warm else []), lazy=True)
        # with the read-back on, a local dump need not pass through Python: the read-back hashes the file
        written = run_dump(app, source, opts, sink, into=out if follower is not None else None, spliced=moved)
        elapsed = max(time.monotonic() - started, 1e-6)
        step.detail = f"{out.size} bytes in {elapsed:.1f}s ({out.size / elapsed / 1e6:.1f} MB/s)"
    with journal.step("verify") as step:
        syncing = _Concurrently(out.sync)  # the fsync waits on the disk while the read-back ends on the CPU
        try:
            verification, facts, sha256 = _verify(follower, out, None if spliced else digest.hexdigest(), opts.fmt)
        finally:
            syncing.wait()
        try:
            syncing.result()
        except OSError as exc:
            raise StepFailed(f"writing the dump to disk: {exc.strerror or exc}") from None
        step.detail = verification.detail
        if verification.status == "skipped":
            step.status = "skipped"
        version = coder.result()
    record = _manifest(final.name, moment, source, opts, out.size, sha256, verification, facts, version, written)
    with journal.step("commit") as step:
        record.duration_s = round(time.monotonic() - start, 3)
        with PartialFile(mf.manifest_path(final)) as manifest_out:  # written first: renames are all that is left
            manifest_out.write(mf.encode(record))
            manifest_out.sync()
            path = out.commit()
            manifest_file = manifest_out.commit()
        step.detail = f"{path} (+ {manifest_file.name})"
    return {"file": str(path), "manifest": str(manifest_file), "database": source.url.database,
            "size": out.size, "sha256": record.sha256, "verified": verification.status == "ok",
            "tables": len(record.tables or {}), "rows": sum((record.tables or {}).values()),
            "server_version": record.server_version, "coder_version": version}


def run_dump(app: App, source: _Source, opts: CreateOptions, sink: dump.Sink, *, into: PartialFile | None = None,
             spliced: Callable[[int], None] | None = None) -> str | None:
    """pg_dump from the pod or locally into `sink`; StepFailed unless it exited 0. A local pg_dump's output
    is moved straight into `into` where the kernel can (dump.via_direct), each move told to `spliced`.
    Returns the compression the archive's header names, when its first bytes passed through `sink`."""
    head = bytearray()

    def forward(chunk: bytes) -> None:
        if len(head) < HEAD_BYTES:
            head.extend(chunk[:HEAD_BYTES - len(head)])
        sink(chunk)

    if source.target is not None:
        dump.via_exec(app, source.target, opts.fmt, forward, source.compression)
        return archive.compression_of(head)
    assert source.pg_dump is not None
    try:
        dump.via_direct(app, source.url, source.host, source.port, source.pg_dump, opts.fmt, forward,
                        source.compression, into=into, spliced=spliced)
    except OSError as exc:
        raise StepFailed(f"writing the dump: {exc.strerror or exc}") from None
    except StepFailed:
        _why_pg_dump_failed(source)
        raise
    return archive.compression_of(head)


def _manifest(name: str, moment: Any, source: _Source, opts: CreateOptions, size: int, sha256: str,
              verification: mf.Verification, facts: DumpFacts | None, version: str | None,
              written: str | None = None) -> mf.Manifest:
    level, method = _compression_record(source.compression, (facts.compression if facts else None) or written) \
        if opts.fmt == "custom" else (None, None)
    return mf.Manifest(
        file=name, created_at=mf.format_time(moment), duration_s=0.0, via=source.via, format=opts.fmt,
        database=source.url.database, size=size, sha256=sha256, verification=verification,
        server_version=(facts.server_version if facts else None) or source.known_server_version(),
        pg_dump_version=(facts.pg_dump_version if facts else None) or (
            source.pg_dump.version if source.pg_dump else None),
        coder_version=version, compression=level, compression_method=method,
        source=_source_record(source), tables=facts.tables if facts else None,
        coderctl=__version__,
    )


def _compression_record(asked: Compression, found: str | None) -> tuple[int | None, str | None]:
    """The manifest's compression level and method: the method as the archive's header names it (else as
    asked); the level as asked (`auto` is level 1 either way; a method's own default is not known here)."""
    method = found or (asked.method if asked.method != "auto" else None)
    if method == "none":
        return 0, method
    if asked.method == "auto":
        return (1 if method else None), method
    return asked.level, method


def _free_name(directory: Path, database: str, moment: Any, opts: CreateOptions) -> Path:
    """DATABASE-TIME[-TAG].EXT, with -2, -3, ... when two backups start within the same second."""
    for n in range(1, 100):
        tag = "-".join(t for t in (opts.tag, str(n) if n > 1 else "") if t)
        path = directory / mf.backup_name(database, moment, opts.fmt, tag)
        if not path.exists() and not path.with_name(path.name + ".partial").exists():
            return path
    raise StepFailed(f"no free backup name in {directory}")


def _prepare(app: App, opts: CreateOptions) -> _Source:
    configured = bool(app.settings.database_url)
    url = DatabaseURL.parse(_database_url(app))
    app.redact.add(url.password)
    if opts.via == "exec":
        from coderctl.ops import pod

        t = pod.target(app, url)
        return _Source("exec", url, t.describe(), target=t, compression=opts.compress)
    host, port = split_address(opts.db_address, url)
    server = _Concurrently(lambda: dump.server_major(app, url, host, port))
    tools = pgtools.installed("pg_dump")
    if len(tools) == 1:
        tool, version, pending = tools[0], None, server
    else:
        major, version = server.result()
        tool = _pg_dump_for(tools, major, version)
        pending = None
    chosen = resolve(opts.compress, tool.path, tool.major) if opts.fmt == "custom" else opts.compress
    return _Source("direct", url, f"database {url.database} as {url.user} at {host}:{port} with {tool.path} "
                   f"{tool.version}", host=host, port=port, pg_dump=tool, server_version=version, server=pending,
                   cluster=not configured, compression=chosen)


def _pg_dump_for(tools: list[pgtools.Tool], major: int, version: str) -> pgtools.Tool:
    """The local pg_dump for a server of this version: the oldest that is not older (its archives the
    server's own pg_restore reads), else ToolMissing saying what to install."""
    return pgtools.pick(tools, "pg_dump", at_least=major, prefer="oldest", why=f"the server runs PostgreSQL {version}")


def _why_pg_dump_failed(source: _Source) -> None:
    """For a pg_dump started before the server's version was known: the reason the server gives, if any
    (StepFailed: the server cannot be reached; ToolMissing: the server is newer than pg_dump); they read as
    when the server is asked first."""
    if source.server is None or source.pg_dump is None:
        return
    major, version = source.server.result()
    _pg_dump_for([source.pg_dump], major, version)


def _database_url(app: App) -> str:
    """A configured URL (--database-url, CODERCTL_DATABASE_URL, a profile) as discovery would give it, without
    importing the cluster's modules first: `--via direct` then reaches pg_dump without them."""
    configured = app.settings.database_url
    if configured:
        app.redact.add(str(configured))
        return str(configured)
    from coderctl import discovery

    return discovery.database_url(app)


class _Concurrently:
    """`fn` on another thread (the server's version asked while the local pg_dumps tell theirs, the fsync while
    the read-back ends); `result()` returns its value or raises its exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        import threading

        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name="prepare", daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:
            self._error = exc

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _verify(follower: Follower | None, out: PartialFile, written_sha: str | None,
            fmt: str) -> tuple[mf.Verification, DumpFacts | None, str]:
    """(verification, facts, the file's SHA-256). `written_sha`: the hash of the bytes as they were written,
    None where the kernel moved them (the read-back's hash is then the file's)."""
    at = mf.format_time(mf.now_utc())
    if follower is None:
        assert written_sha is not None
        return mf.Verification("skipped", detail="--no-verify: not read back", at=at), None, written_sha
    try:
        read_sha, facts = follower.finish(out.size)
    except VerifyFailed as exc:
        raise StepFailed(str(exc)) from None
    if written_sha is not None and read_sha != written_sha:
        raise StepFailed("the file read back differs from what was written (disk or filesystem error)")
    method = follower.check.method
    whole = "every data block present" if fmt == "custom" else "end-of-dump marker present"
    detail = f"read back in full: {len(facts.tables)} tables, {facts.rows} rows, {whole}"
    return mf.Verification("ok", method=method, detail=detail, at=at), facts, read_sha


def _source_record(source: _Source) -> dict[str, str]:
    if source.target is not None:
        t = source.target
        return {"namespace": t.namespace, "pod": t.pod, "container": t.container, "user": t.user,
                "credentials": t.credentials}
    return {"host": source.host, "port": str(source.port), "user": source.url.user}


def _write_metrics(app: App, opts: CreateOptions, journal: Journal, result: dict[str, Any], code: int,
                   message: str, duration: float) -> tuple[int, str]:
    from coderctl.ops import metrics

    assert opts.metrics_file is not None
    run = metrics.Run(finished=time.time(), success=code == ExitCode.OK, namespace=app.namespace,
                      database=str(result.get("database") or ""), duration_s=duration,
                      size=int(result.get("size") or 0), verified=bool(result.get("verified")),
                      **({"destination": "s3", "bucket": opts.to.bucket, "prefix": opts.to.prefix} if opts.to else {}))
    try:
        with journal.step("metrics") as step:
            metrics.write(opts.metrics_file, run)
            step.detail = str(opts.metrics_file)
    except (OSError, CoderctlError) as exc:
        text = f"cannot write --metrics-file {opts.metrics_file}: {getattr(exc, 'strerror', None) or exc}"
        return (code or ExitCode.PROBLEMS), (message or text)
    return code, message
