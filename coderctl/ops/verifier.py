"""Proving that a dump is whole: every block read back and row counts taken on the way. Custom archives
are parsed directly (coderctl.ops.archive: every TOC entry's data present, every zlib stream decompressed to
its checksum; `pg_restore -l` would pass a truncated one); plain dumps are scanned for their COPY data and
end-of-dump marker.

The check runs on a stream: `backup create` reads the file back while pg_dump is still writing it
(Follower), `backup verify` streams the finished file through the same check.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from coderctl.errors import CoderctlError
from coderctl.ops import pgtools
from coderctl.ops.archive import FRAMED, ArchiveError, ArchiveReader, Unsupported
from coderctl.ops.files import READ_CHUNK
from coderctl.ops.scan import DumpFacts, SqlScanner

WAKE_EVERY = 256 << 10
"""The writer wakes the follower once this many new bytes are in the file (it also looks every 50 ms): woken
for every piece, it read, hashed and parsed thousands of small pieces, each with its own overhead."""
WRITEBACK_EVERY = 4 << 20
"""The follower has the kernel start writing what it has read back to disk every this many bytes, so that the
fsync after pg_dump exits has only the last few megabytes left to write (fsync of 60 MB took 0.1 to 0.15 s on
the lab's disk)."""
METHOD_ARCHIVE = "archive read directly (every block decompressed, zlib checksums, COPY rows counted)"
METHOD_ARCHIVE_FRAMED = "archive read directly (every block decompressed to its frame's end, COPY rows counted)"
"""An lz4 or zstd archive: pg_dump writes its frames without checksums (coderctl.ops.archive)."""
METHOD_PG_RESTORE = "pg_restore -f - (every block read)"
METHOD_SQL = "SQL scan (COPY rows counted)"


class VerifyFailed(CoderctlError):
    pass


def _lower_priority() -> None:
    """Nice 10 for the calling thread (Linux threads have their own): reading back only takes spare CPU,
    so a local pg_dump is not slowed down by its own check."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _write_back(fd: int, offset: int, length: int) -> None:
    """Start writing a range of the file to disk without waiting for it (Linux: POSIX_FADV_DONTNEED starts
    the writeback of dirty pages, then drops the clean ones: this range was read back already)."""
    with contextlib.suppress(OSError, AttributeError):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


class StreamCheck:
    """Feed the dump's bytes in order; `finish()` returns its facts or raises VerifyFailed.

    Custom archives are read directly (ArchiveReader); only an archive it does not know (a newer archive
    version, lz4 or zstd) goes through `pg_restore -f -` and the SQL scan instead, decided from the header,
    before anything else is read. Plain dumps are scanned as SQL.
    """

    def __init__(self, fmt: str, pg_restore: pgtools.Tool | None = None) -> None:
        self.fmt = fmt
        self.scanner = SqlScanner()
        self.archive: ArchiveReader | None = ArchiveReader() if fmt == "custom" else None
        self.method = METHOD_ARCHIVE if fmt == "custom" else METHOD_SQL
        self._held = bytearray()
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._stderr: IO[bytes] | None = None
        self._error: BaseException | None = None
        self.pg_restore = pg_restore

    def _feed_archive(self, archive: ArchiveReader, data: bytes) -> None:
        if archive.header_done:
            archive.feed(data)
            return
        self._held += data
        try:
            archive.feed(data)
        except Unsupported as exc:
            self.archive = None
            self.method = METHOD_PG_RESTORE
            if self.pg_restore is None:
                why = f"to read an archive with {exc}, which coderctl does not read itself"
                try:
                    self.pg_restore = pgtools.find("pg_restore", why=why)
                except pgtools.ToolMissing as missing:
                    raise VerifyFailed(str(missing)) from None
            self._start()
            held, self._held = bytes(self._held), bytearray()
            self._write(held)
            return
        if archive.header_done:
            self._held = bytearray()
            if archive.compression in FRAMED:
                self.method = METHOD_ARCHIVE_FRAMED

    def _start(self) -> None:
        assert self.pg_restore is not None
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self._proc = subprocess.Popen(
            [self.pg_restore.path, "-f", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, start_new_session=True, bufsize=0,
        )
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, self._proc.pid, 10)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        for pipe in (self._proc.stdin, self._proc.stdout):
            pgtools.widen_pipe(pipe.fileno())  # sixteen times fewer wake-ups than with 64 KiB
        self._reader = threading.Thread(target=self._read, name="pg_restore-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        _lower_priority()
        try:
            while chunk := os.read(fd, READ_CHUNK):
                self.scanner.feed(chunk)
        except BaseException as exc:
            self._error = exc

    def feed(self, data: bytes) -> None:
        if self.archive is not None:
            try:
                self._feed_archive(self.archive, data)
            except ArchiveError as exc:
                raise VerifyFailed(f"the archive does not read back: {exc}") from None
        elif self._proc is not None:
            self._write(data)
        else:
            self.scanner.feed(data)

    def _write(self, data: bytes) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(data)
        except (BrokenPipeError, ValueError):
            raise VerifyFailed(self._failure("pg_restore stopped reading the archive")) from None

    def finish(self) -> DumpFacts:
        if self.archive is not None:
            try:
                return self.archive.finish()
            except ArchiveError as exc:
                raise VerifyFailed(f"the archive does not read back: {exc}") from None
        if self._proc is not None:
            assert self._proc.stdin is not None and self._reader is not None
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
            code = self._proc.wait()
            self._reader.join()
            if self._error is not None:
                raise self._error
            if code != 0:
                raise VerifyFailed(self._failure(f"pg_restore exited with {code}"))
        facts = self.scanner.finish()
        if self.scanner.in_copy:
            raise VerifyFailed("the dump ends inside a table's data: it is truncated")
        if not facts.complete:
            raise VerifyFailed("the dump has no end-of-dump marker: it is truncated or not a pg_dump file")
        return facts

    def _failure(self, default: str) -> str:
        text = ""
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.abort()
            if self._stderr is not None:
                self._stderr.seek(0)
                text = self._stderr.read(8192).decode("utf-8", "replace")
        return f"the archive does not read back: {pgtools.first_error(text, default)}"

    def abort(self) -> None:
        """Stop the reader process (interrupted or failed operation)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def close(self) -> None:
        self.abort()
        if self._stderr is not None:
            self._stderr.close()

    def __enter__(self) -> StreamCheck:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Follower(threading.Thread):
    """Reads a file back while it is being written and streams it through a StreamCheck.

    The writer never waits for the check: the follower reads what is on disk (the page cache) and may lag
    behind. It runs niced (10), taking the CPU that pg_dump, the server and the writer leave: on the lab's 2
    cores, lightly loaded, a 400 MB backup was faster and took less CPU than with the follower at the process's
    own priority. Once pg_dump has exited what is left is on the critical path, so `finish()` takes over on the
    calling thread, at its priority: a follower niced to the end took 4 to 11 s to catch up on the heavily
    loaded lab machine (1.4 to 1.9 s at the process's priority).
    What it hashes is what it read from the file: compared with the hash of what was written, it proves the
    file holds exactly the verified bytes; where the kernel wrote the file (a spliced local dump), it is the
    file's hash.
    """

    def __init__(self, path: Path, check: StreamCheck) -> None:
        super().__init__(name="read-back", daemon=True)
        self.path = path
        self.check = check
        self.digest = hashlib.sha256()
        self.read = 0
        self.error: str = ""
        self._more = threading.Event()
        self._final: int | None = None
        self._cancelled = False
        self._handover = False
        self._woken = 0
        self._written_back = 0
        self._fh: IO[bytes] | None = None

    def written(self, size: int) -> None:
        """The file now holds `size` bytes: wake the follower when a batch of new ones is there."""
        if size - self._woken >= WAKE_EVERY:
            self._woken = size
            self._more.set()

    def run(self) -> None:
        _lower_priority()
        self._follow(lambda: self._handover)

    def _follow(self, stop: Callable[[], bool]) -> None:
        """Read, hash and check what is in the file, waiting for more, until `stop()`, the end or an error."""
        try:
            if self._fh is None:
                self._fh = open(self.path, "rb", buffering=0)  # noqa: SIM115 (closed by _close)
            fh = self._fh
            while not self._cancelled and not stop():
                chunk = fh.read(READ_CHUNK)
                if chunk:
                    self.digest.update(chunk)
                    self.read += len(chunk)
                    if not self.error:
                        self.check.feed(chunk)
                    if self.read - self._written_back >= WRITEBACK_EVERY:
                        _write_back(fh.fileno(), self._written_back, self.read - self._written_back)
                        self._written_back = self.read
                    continue
                if self._final is not None and self.read >= self._final:
                    return
                self._more.wait(0.05)
                self._more.clear()
        except VerifyFailed as exc:
            self.error = str(exc)
        except OSError as exc:
            self.error = f"reading the file back: {exc.strerror}"

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.close()

    def finish(self, size: int) -> tuple[str, DumpFacts]:
        """Wait until all `size` bytes are read and checked; (sha256 of the file, facts), or VerifyFailed.
        The follower hands over: what it has not read yet is read on the calling thread."""
        self._final = size
        self._handover = True
        self._more.set()
        self.join()
        try:
            if not self.error:
                self._follow(lambda: False)
            if self.error:
                raise VerifyFailed(self.error)
            if self.read != size:
                raise VerifyFailed(f"read back {self.read} bytes of {size}")
            return self.digest.hexdigest(), self.check.finish()
        finally:
            self._close()
            self.check.close()

    def abort(self) -> None:
        self._cancelled = True
        self._more.set()
        self.check.abort()
        self.join(timeout=5)
        self._close()
        self.check.close()


class Inline(threading.Thread):
    """Streams the bytes handed to `feed()` through a StreamCheck on its own thread (an upload has no file to
    read back): the dump never waits for the check unless it is 16 chunks behind, so memory stays bounded."""

    def __init__(self, check: StreamCheck, depth: int = 16) -> None:
        super().__init__(name="inline-check", daemon=True)
        self.check = check
        self.error = ""
        self.read = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._cancelled = False

    def feed(self, chunk: bytes) -> None:
        while not self._cancelled:
            try:
                self._queue.put(chunk, timeout=0.5)
                return
            except queue.Full:
                continue

    def run(self) -> None:
        _lower_priority()
        while (chunk := self._queue.get()) is not None:
            if self._cancelled:
                return
            self.read += len(chunk)
            if self.error:
                continue
            try:
                self.check.feed(chunk)
            except VerifyFailed as exc:
                self.error = str(exc)

    def finish(self) -> DumpFacts:
        """Wait until every chunk is checked; the facts, or VerifyFailed."""
        self.feed(None)  # type: ignore[arg-type]
        self.join()
        try:
            if self.error:
                raise VerifyFailed(self.error)
            return self.check.finish()
        finally:
            self.check.close()

    def abort(self) -> None:
        self._cancelled = True
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self.check.abort()
        self.join(timeout=5)
        self.check.close()


@dataclass
class FileCheck:
    size: int
    sha256: str
    facts: DumpFacts | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def read_file(path: Path, fmt: str, *, full: bool = True, progress: Any = None) -> FileCheck:
    """Hash the file and (with `full`) stream it through StreamCheck. A failed read is `error`, not raised."""
    def chunks() -> Iterator[bytes]:
        with open(path, "rb", buffering=0) as fh:
            while chunk := fh.read(READ_CHUNK):
                yield chunk

    return read_stream(chunks(), fmt, full=full, progress=progress)


def read_stream(chunks: Iterable[bytes], fmt: str, *, full: bool = True, progress: Any = None,
                copy: Callable[[bytes], None] | None = None) -> FileCheck:
    """As read_file, for bytes from anywhere (a download); `copy` also receives every chunk (a local copy).
    A failed check is `error`; a failed read raises."""
    digest = hashlib.sha256()
    size = 0
    facts: DumpFacts | None = None
    error = ""
    check = StreamCheck(fmt) if full else None
    try:
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            if copy is not None:
                copy(chunk)
            if check is not None and not error:
                try:
                    check.feed(chunk)
                except VerifyFailed as exc:
                    error = str(exc)
            if progress is not None:
                progress(size)
        if check is not None and not error:
            try:
                facts = check.finish()
            except VerifyFailed as exc:
                error = str(exc)
    finally:
        if check is not None:
            check.close()
    return FileCheck(size, digest.hexdigest(), facts, error)
