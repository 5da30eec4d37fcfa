"""Where a dump comes from: pg_dump in the PostgreSQL pod (exec) or a local pg_dump (direct).

Both hand the dump to `sink` chunk by chunk as it arrives, so memory stays constant whatever the size,
and both decide success by pg_dump's exit status, never by the stream merely ending.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from coderctl.clients.postgres import DatabaseURL
from coderctl.context import App
from coderctl.ops import pgtools
from coderctl.ops.compression import AUTO, FALLBACK, Compression
from coderctl.ops.journal import StepFailed

if TYPE_CHECKING:
    from coderctl.ops.pod import Target

Sink = Callable[[bytes], None]
SMALL_READ, PAUSE = 128 << 10, 0.004
"""pg_dump writes its archive 4 KiB at a time: a reader that takes each write as it comes made 10,000 reads of
6 KiB on average for a 60 MB archive (-Z1), each followed by a file write, a hash update and a wake-up. After
a read shorter than SMALL_READ the reader pauses (with the 1 MiB pipe only: 4 ms is about 100 KiB at -Z1's
rate, a tenth of the pipe), so the next read finds more: about a thousand reads instead."""
UNSPLICEABLE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV)
"""What splice(2) answers where the kernel or the filesystem cannot splice into the file."""
FORMAT_ARGS = {"custom": ["-Fc"], "plain": ["-Fp", "--clean", "--if-exists"]}


def dump_args(fmt: str, compression: Compression) -> list[str]:
    return [*FORMAT_ARGS[fmt], *compression.pg_dump_args()] if fmt == "custom" else FORMAT_ARGS[fmt]


def via_exec(app: App, t: Target, fmt: str, sink: Sink, compression: Compression = AUTO) -> None:
    """pg_dump in the pod; `auto` is decided there, by the pod's own pg_dump (pod.DUMP)."""
    from coderctl.clients.kube_exec import ExecStreamBroken
    from coderctl.ops import pod

    z = "auto" if compression.method == "auto" else compression.pg_dump_args()[1]
    try:
        # stdin stays open: its end tells the in-pod watcher to stop pg_dump (see pod.DUMP).
        result = pod.run(app, t, pod.DUMP, fmt, z, stdout=sink, close_stdin=False)
    except ExecStreamBroken as exc:
        raise StepFailed(str(exc)) from None
    if not result.ok:
        raise StepFailed(app.redact(f"pg_dump in {t.namespace}/{t.pod} failed (exit {result.exit_code}): "
                                    f"{pod.error_line(result)}"))


def server_major(app: App, url: DatabaseURL, host: str, port: int) -> tuple[int, str]:
    """The server's major version and version string, over a direct connection (a local psql is quicker
    to start than importing psycopg)."""
    psql = pgtools.choose(pgtools.installed("psql"), at_least=None, prefer="newest")
    if psql is not None:
        env = pgtools.libpq_env(url, host=host, port=port, connect_timeout=app.timeout)
        out = subprocess.run([psql.path, "-XAtw", "-c", "SHOW server_version_num", "-c", "SHOW server_version"],
                             env=env, capture_output=True, text=True, timeout=app.timeout * 3, check=False)
        lines = out.stdout.splitlines()
        if out.returncode == 0 and len(lines) >= 2 and lines[0].isdigit():
            return int(lines[0]) // 10000, lines[1].strip()
        first = pgtools.first_error(out.stderr, "no answer")
        raise StepFailed(app.redact(f"cannot connect to {host}:{port}: {first}"))
    import psycopg

    from coderctl.clients.postgres import connect

    try:
        with connect(url, timeout=app.timeout, host=host, port=port) as conn:
            number = conn.info.server_version
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as exc:
        first = pgtools.first_error(str(exc), type(exc).__name__)
        raise StepFailed(app.redact(f"cannot connect to {host}:{port}: {first}")) from None
    return number // 10000, str(row[0]) if row else str(number)


class Receiver(Protocol):
    """A file pg_dump's output can be moved into by the kernel, without passing through Python."""

    def splice_from(self, fd: int, limit: int) -> int: ...


def via_direct(app: App, url: DatabaseURL, host: str, port: int, tool: pgtools.Tool, fmt: str,
               sink: Sink, compression: Compression = FALLBACK, *, into: Receiver | None = None,
               spliced: Callable[[int], None] | None = None) -> None:
    """pg_dump's output into `sink`, or, with `into`, moved straight into that file (splice(2)) and announced
    to `spliced` by its size: copying 60 MB through Python (read, write, hash) took 0.23-0.28 s of CPU that
    pg_dump and the server then lacked on the lab's 2 CPUs; splicing it, 0.09-0.11 s. Where the kernel
    cannot splice into the file, the first attempt fails before any byte moved and the bytes go to `sink`."""
    env = pgtools.libpq_env(url, host=host, port=port, connect_timeout=app.timeout)
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen([tool.path, "-w", *dump_args(fmt, compression)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=errors, env=env, start_new_session=True)
        try:
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            # pg_dump -Z1 writes about 25 MB/s here, which fills the default 64 KiB pipe in under 3 ms, about as
            # long as this thread can wait for the GIL while the read-back runs; 1 MiB is 40 ms of slack.
            _pump(fd, sink, into, spliced or (lambda n: None), PAUSE if pgtools.widen_pipe(fd) else 0.0)
            code = proc.wait()
        finally:
            stop(proc)
        if code != 0:
            errors.seek(0)
            reason = pgtools.first_error(errors.read(16384).decode("utf-8", "replace"))
            raise StepFailed(app.redact(f"pg_dump failed (exit {code}): {reason}"))


def _pump(fd: int, sink: Sink, into: Receiver | None, spliced: Callable[[int], None], pause: float) -> None:
    """Everything from the pipe: spliced into `into`, else read and handed to `sink`. Splicing falls back to
    reading when its first attempt fails as unsupported (nothing moved then). After a move shorter than
    SMALL_READ, a pause, so that the next one finds more."""
    def copy() -> int:
        chunk = os.read(fd, pgtools.PIPE_SIZE)
        if chunk:
            sink(chunk)
        return len(chunk)

    def splice() -> int:
        assert into is not None
        moved = into.splice_from(fd, pgtools.PIPE_SIZE)
        if moved:
            spliced(moved)
        return moved

    take, moved = copy, 0
    if into is not None and hasattr(os, "splice"):  # Linux, Python 3.10+
        try:
            moved = into.splice_from(fd, pgtools.PIPE_SIZE)
            take = splice
        except OSError as exc:
            if exc.errno not in UNSPLICEABLE:
                raise
    if take is splice:
        if moved:
            spliced(moved)
    else:
        moved = copy()
    while moved:
        if moved < SMALL_READ and pause:
            time.sleep(pause)
        moved = take()


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End a child started in its own session, and everything it started: SIGTERM to its process group,
    SIGKILL after 5 s."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    else:
        _signal_group(proc, signal.SIGTERM)  # helpers it left behind (a wrapper's children)
    if proc.stdout is not None:
        proc.stdout.close()


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)
