"""Lab servers die with the test process: a killed pytest (a timeout, Ctrl-C twice) must not leave a
PostgreSQL, nginx or knotd running. `setpriv --pdeathsig` (util-linux) asks the kernel to signal the server
when the process that started it dies; without setpriv the command runs unguarded."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from typing import IO, Any


def die_with_parent(argv: list[str], signal_name: str = "TERM") -> list[str]:
    setpriv = shutil.which("setpriv")
    return [setpriv, f"--pdeathsig={signal_name}", "--", *argv] if setpriv else argv


def announced_port(proc: subprocess.Popen[str], pattern: str, timeout: float, what: str) -> int:
    """The port a server started on port 0 prints on stderr (the first group of `pattern`); its stderr is
    then drained in the background, so the server never blocks on a full pipe."""
    assert proc.stderr is not None
    stderr = proc.stderr
    deadline = time.monotonic() + timeout
    port = 0
    while time.monotonic() < deadline:
        line = stderr.readline()
        match = re.search(pattern, line)
        if match:
            port = int(match.group(1))
            break
        if not line and proc.poll() is not None:
            raise RuntimeError(f"{what} exited")
    assert port, f"{what} did not start"
    threading.Thread(target=_drain, args=(stderr,), daemon=True).start()
    return port


def _drain(stream: IO[str]) -> None:
    for _ in stream:
        pass


def terminate(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM, and SIGKILL when the server has not exited within `timeout`."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
