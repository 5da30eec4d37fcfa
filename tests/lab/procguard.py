"""Lab servers die with the test process: a killed pytest (a timeout, Ctrl-C twice) must not leave a
PostgreSQL, nginx or knotd running. `setpriv --pdeathsig` (util-linux) asks the kernel to signal the server
when the process that started it dies; without setpriv the command runs unguarded."""

from __future__ import annotations

import shutil


def die_with_parent(argv: list[str], signal_name: str = "TERM") -> list[str]:
    setpriv = shutil.which("setpriv")
    return [setpriv, f"--pdeathsig={signal_name}", "--", *argv] if setpriv else argv
