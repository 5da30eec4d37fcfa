"""The one line worth showing from the error output of psql, pg_dump, pg_restore or coderctl's pod scripts."""

from __future__ import annotations

import re

_TELLING = re.compile(r"error|fatal|could not|failed|refused|no password|not found|coderctl:", re.IGNORECASE)
# `psql:<stdin>:3: ` when psql reads a script
_PROGRAM = re.compile(r"^(?:psql|pg_dump|pg_dumpall|pg_restore|pg_isready)(?::[^:\n]*:\d+)?: ")
_LEVEL = re.compile(r"^error: ")


def first_error(text: str, default: str = "") -> str:
    """The first line that says what went wrong (else the first line, else `default`), without the program
    name and `error:` prefix that the PostgreSQL client programs put in front."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = next((line for line in lines if _TELLING.search(line)), lines[0] if lines else "")
    if not line:
        return default
    return _LEVEL.sub("", _PROGRAM.sub("", line)) or default
