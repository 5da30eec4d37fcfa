"""Reading a dump as SQL text, fed in chunks of any size: per-table row counts, versions, completeness.

The text is a plain-format dump, or what `pg_restore -f -` makes of a custom archive. Table data travels
as `COPY name (columns) FROM stdin;`, one row per line (newlines inside values are escaped), ended by a
line `\\.`; so counting lines gives exact row counts, taken from the same snapshot as the data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_COPY = re.compile(r"^COPY (.+?)(?: \(.*\))? FROM stdin;$")
_END = b"\\.\n"
_TRAILER = "-- PostgreSQL database dump complete"
_SERVER = "-- Dumped from database version "
_PG_DUMP = "-- Dumped by pg_dump version "


@dataclass
class DumpFacts:
    tables: dict[str, int] = field(default_factory=dict)
    server_version: str | None = None
    pg_dump_version: str | None = None
    complete: bool = False
    bytes_read: int = 0

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


class SqlScanner:
    """Incremental: `feed()` chunks, then `facts`. Only lines outside COPY blocks are looked at one by one."""

    def __init__(self) -> None:
        self.facts = DumpFacts()
        self._carry = b""
        self._table: str | None = None
        self._rows = 0

    def feed(self, data: bytes) -> None:
        self.facts.bytes_read += len(data)
        start = 0
        if self._carry:  # complete the carried line without copying the whole chunk
            newline = data.find(b"\n")
            if newline < 0:
                self._carry += data
                return
            head, self._carry = self._carry + data[: newline + 1], b""
            self._consume(head, 0)
            start = newline + 1
        self._consume(data, start)

    def _consume(self, buf: bytes, pos: int) -> None:
        end = len(buf)
        while pos < end:
            if self._table is not None:
                pos = self._copy_rows(buf, pos)
                if self._table is not None:
                    break
                continue
            newline = buf.find(b"\n", pos)
            if newline < 0:
                break
            self._line(buf[pos:newline])
            pos = newline + 1
        if pos < end:
            self._carry += buf[pos:]

    def _copy_rows(self, buf: bytes, pos: int) -> int:
        """Consume whole rows from `pos` (a line start); return where unconsumed data begins."""
        if buf.startswith(_END, pos):
            return self._end_copy(pos + len(_END))
        marker = buf.find(b"\n" + _END, pos)
        if marker >= 0:
            self._rows += buf.count(b"\n", pos, marker + 1)
            return self._end_copy(marker + 1 + len(_END))
        last = buf.rfind(b"\n", pos)
        if last < 0:
            return pos
        self._rows += buf.count(b"\n", pos, last + 1)
        return last + 1

    def _end_copy(self, pos: int) -> int:
        assert self._table is not None
        self.facts.tables[self._table] = self.facts.tables.get(self._table, 0) + self._rows
        self._table, self._rows = None, 0
        return pos

    def _line(self, raw: bytes) -> None:
        if raw.startswith(b"COPY "):
            match = _COPY.match(raw.decode("utf-8", "replace"))
            if match:
                self._table, self._rows = match.group(1), 0
            return
        if not raw.startswith(b"-- "):
            return
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if line.startswith(_SERVER):
            self.facts.server_version = line[len(_SERVER):].strip()
        elif line.startswith(_PG_DUMP):
            self.facts.pg_dump_version = line[len(_PG_DUMP):].strip()
        elif line.startswith(_TRAILER):
            self.facts.complete = True

    def finish(self) -> DumpFacts:
        if self._carry and self._table is None:
            self._line(self._carry)
        self._carry = b""
        return self.facts

    @property
    def in_copy(self) -> bool:
        return self._table is not None
