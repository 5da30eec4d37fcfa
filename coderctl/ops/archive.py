"""Reading a pg_dump custom-format archive (`pg_dump -Fc`) directly, fed in chunks of any size.

What is checked, without rendering any SQL: the header (magic `PGDMP`, archive version, integer and offset
sizes, format, compression), every TOC entry, and every data block the TOC announces, each exactly once:
its chunks, the zlib stream of each table and large object decompressed to its end (so zlib's own Adler-32
checksum is checked), and the rows of every table's COPY data counted. Memory stays constant: decompressed
data is looked at in slices of at most DECOMPRESS_SLICE bytes and never kept.

The layout, as pg_dump's pg_backup_archiver.c and pg_backup_custom.c write it:

    header   "PGDMP", major, minor, revision, int size, offset size, format (1 = custom),
             compression (1.15+: an algorithm byte; before: an int level), creation time (7 ints),
             database name, server version, pg_dump version (strings)
    TOC      count, then per entry: dump id, had-dumper, table oid, oid, tag, desc, section, definition,
             drop statement, COPY statement, namespace, tablespace, table AM (1.14+), relkind (1.16+),
             owner, with-oids, dependencies (strings up to a NULL one), data offset (flag byte + bytes)
    data     per entry with data: block type (1 data, 3 large objects), dump id, then chunks
             (int length, bytes) up to a zero length; large objects: (oid, chunks)... up to oid 0

An int is a sign byte and `int size` bytes, least significant first; a string is an int length (-1: NULL)
and that many bytes. Archives this reader does not know (a newer version, another compression) raise
Unsupported while the header is read, before anything else, so the caller can use pg_restore instead.

Compression (pg_dump 16+ writes lz4 and zstd besides gzip): each data stream is one zlib stream (gzip), one
LZ4 frame (lz4) or one Zstandard frame (zstd), cut into the chunks above. The zlib stream carries an Adler-32
checksum of what it holds; the frames pg_dump writes carry none (it sets no checksum flag), so for them
decompressing every frame to its end mark and counting the COPY rows is the check, and the SHA-256 recorded
while the file was written covers it from then on.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol

from coderctl.errors import CoderctlError
from coderctl.ops.scan import BlockRows, DumpFacts, copy_table

MAGIC = b"PGDMP"
OLDEST = (1, 12)  # PostgreSQL 9.6's pg_dump and later (11+ writes 1.13 or newer)
NEWEST_MINOR = 16
FORMAT_CUSTOM = 1
BLOCK_DATA, BLOCK_LARGE_OBJECTS = 1, 3
OFFSET_NOT_SET, OFFSET_SET, OFFSET_NO_DATA = 1, 2, 3
COMPRESSION = {0: "none", 1: "gzip", 2: "lz4", 3: "zstd"}
FRAMED = ("lz4", "zstd")
DECOMPRESS_SLICE = 256 << 10
"""Inflated data is handed on in slices of at most this size. Counting a slice's rows right after inflating it
finds it still in the CPU's cache: a 60 MB archive of 320 MB of rows read in 0.56-0.57 s of CPU with 128 or
256 KiB slices, 0.64-0.92 s with 1 MiB ones (best of nine, on a shared machine)."""
MAX_TOC_STRING = 64 << 20
"""No TOC string (a definition, a COPY statement) is near this; a larger length is a damaged TOC, and
waiting for that many bytes would hold them all in memory."""

Need = Generator[None, None, bytes]
Inflater = Any  # zlib's or isal_zlib's decompressobj(): the same interface


def _inflate_errors() -> tuple[type[Exception], ...]:
    try:
        from isal import isal_zlib
    except ImportError:
        return (zlib.error,)
    isal_error: Any = isal_zlib.error
    return (zlib.error, isal_error)


def _inflater() -> Inflater:
    """A zlib decompressor: python-isal's (ISA-L's inflate: about twice the speed of zlib's, the same
    streams, the same Adler-32 check) when it is installed, else the standard library's."""
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib.decompressobj()
    return isal_zlib.decompressobj()


INFLATE_ERRORS = _inflate_errors()


class Framed(Protocol):
    """An LZ4 or Zstandard frame decompressor: python-lz4's LZ4FrameDecompressor, or the standard library's
    ZstdDecompressor (compression.zstd, Python 3.14; backports.zstd before), which share bz2's interface."""

    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes | bytearray, max_length: int = -1) -> bytes: ...


def _framed(method: str) -> tuple[Framed, tuple[type[Exception], ...]] | None:
    """A decompressor for one frame of `method` and the errors it raises; None when its library is missing."""
    try:
        if method == "zstd":
            if sys.version_info >= (3, 14):
                from compression import zstd  # type: ignore[import-not-found, unused-ignore]
            else:
                from backports import zstd
            return zstd.ZstdDecompressor(), (zstd.ZstdError, EOFError)
        from lz4 import frame

        return frame.LZ4FrameDecompressor(), (RuntimeError, EOFError)
    except ImportError:
        return None


def compression_of(head: bytes | bytearray) -> str | None:
    """The compression a custom archive's first bytes name (the header's fixed part: magic, version, sizes,
    format, then an algorithm byte from 1.15 on, a zlib level before); None for anything else, or too few bytes."""
    if len(head) < 12 or head[:5] != MAGIC or head[10] != FORMAT_CUSTOM:
        return None
    minor, int_size = head[6], head[8]
    if minor >= 15:
        return COMPRESSION.get(head[11])
    if len(head) < 12 + int_size:
        return None
    return "gzip" if int.from_bytes(head[12:12 + int_size], "little") else "none"


def toc_length(path: str, limit: int = 64 << 20) -> int | None:
    """How many bytes of the custom archive at `path` its header and table of contents take (what `pg_restore
    -l` reads); None when this reader does not read the archive or the TOC does not end within `limit`."""
    reader = ArchiveReader()
    with open(path, "rb") as fh:
        while (chunk := fh.read(64 << 10)) and reader.facts.bytes_read < limit:
            try:
                reader.feed(chunk)
            except ArchiveError:
                return None
            if reader.header_done:
                return reader.toc_end
    return None


class ArchiveError(CoderctlError):
    pass


class Unsupported(ArchiveError):
    """A well-formed archive this reader does not read (raised only while the header is read)."""


@dataclass
class Entry:
    dump_id: int
    desc: str
    tag: str
    table: str | None
    data_state: int
    offset: int
    seen: bool = False
    read: bool = False


class ArchiveReader:
    """Push parser: `feed()` the archive's bytes in order, then `finish()` for its facts (or ArchiveError)."""

    def __init__(self) -> None:
        self.facts = DumpFacts()
        self.version = ""
        self.compression = ""
        self.header_done = False
        self.toc_end = 0
        """The offset where the table of contents ends and the data begins."""
        self.blocks = 0
        self._buf = bytearray()
        self._pos = 0
        self._base = 0  # stream offset of _buf[0]
        self._int_size = 4
        self._off_size = 8
        self._minor = 0
        self._entries: dict[int, Entry] = {}
        self._at_boundary = False
        self._block_start = 0
        self._failed: ArchiveError | None = None
        self._parser = self._parse()
        self._run()

    def feed(self, data: bytes) -> None:
        self.facts.bytes_read += len(data)
        if self._failed is not None:
            raise self._failed
        if self._pos:
            del self._buf[: self._pos]
            self._base += self._pos
            self._pos = 0
        self._buf += data
        self._run()

    def finish(self) -> DumpFacts:
        if self._failed is not None:
            raise self._failed
        missing = [e for e in self._entries.values() if e.data_state != OFFSET_NO_DATA and not e.read]
        if not self.header_done:
            raise ArchiveError("the archive ends inside its header or table of contents: it is truncated")
        if (not self._at_boundary or len(self._buf) > self._pos) and not missing and self._block_start:
            raise ArchiveError(f"bytes after the end of the archive's last data block (at byte {self._block_start})")
        if not self._at_boundary or len(self._buf) > self._pos:
            raise ArchiveError(f"the archive ends inside a block at byte {self._base + self._pos}: it is truncated")
        if missing:
            first = missing[0]
            raise ArchiveError(f"the archive ends before the data of {len(missing)} of its TOC entries "
                               f"(first: {first.desc} {first.tag}): it is truncated")
        self.facts.complete = True
        return self.facts

    def _run(self) -> None:
        """Parse what is buffered, up to where more bytes are needed (the parser never returns)."""
        try:
            next(self._parser)
        except ArchiveError as exc:
            self._failed = exc
            raise

    # reading primitives: generators that wait (yield) until enough bytes are buffered

    def _take(self, n: int) -> Need:
        while len(self._buf) - self._pos < n:
            yield
        start = self._pos
        self._pos += n
        return bytes(self._buf[start:self._pos])

    def _int(self) -> Generator[None, None, int]:
        raw = yield from self._take(1 + self._int_size)
        value = int.from_bytes(raw[1:], "little")
        return -value if raw[0] else value

    def _str(self) -> Generator[None, None, str | None]:
        length = yield from self._int()
        if length < 0:
            return None
        if length > MAX_TOC_STRING:
            raise ArchiveError(f"a TOC string of {length} bytes: the TOC is damaged")
        raw = yield from self._take(length)
        return raw.decode("utf-8", "replace")

    def _parse(self) -> Generator[None, None, None]:
        yield from self._header()
        yield from self._toc()
        self.toc_end = self._base + self._pos
        self.header_done = True
        while True:
            self._at_boundary = True
            start = self._block_start = self._base + self._pos
            kind = (yield from self._take(1))[0]
            self._at_boundary = False
            dump_id = yield from self._int()
            entry = self._entries.get(dump_id)
            if entry is None or entry.data_state == OFFSET_NO_DATA:
                raise ArchiveError(f"a data block at byte {start} has id {dump_id}, which the TOC does not "
                                   "announce: the archive is damaged")
            if entry.seen:
                raise ArchiveError(f"the data of {entry.desc} {entry.tag} appears twice: the archive is damaged")
            if entry.data_state == OFFSET_SET and entry.offset != start:
                raise ArchiveError(f"the data of {entry.desc} {entry.tag} is at byte {start}, the TOC says "
                                   f"{entry.offset}: the archive is damaged")
            entry.seen = True
            if kind == BLOCK_DATA:
                counter = BlockRows()
                yield from self._stream(entry, counter.feed if entry.table else None)
                if entry.table:
                    rows = counter.finish()
                    if rows is None:
                        raise ArchiveError(f"the COPY data of {entry.table} ends inside a row: the archive is "
                                           "damaged")
                    self.facts.tables[entry.table] = self.facts.tables.get(entry.table, 0) + rows
            elif kind == BLOCK_LARGE_OBJECTS:
                while (yield from self._int()) != 0:
                    yield from self._stream(entry, None)
            else:
                raise ArchiveError(f"unknown data block type {kind} at byte {start}: the archive is damaged")
            entry.read = True
            self.blocks += 1

    def _header(self) -> Generator[None, None, None]:
        if (yield from self._take(5)) != MAGIC:
            raise ArchiveError("no PGDMP header: not a pg_dump custom-format archive")
        major, minor, rev, int_size = yield from self._take(4)
        self.version = f"{major}.{minor}.{rev}"
        if major != 1 or (major, minor) < OLDEST or minor > NEWEST_MINOR:
            raise Unsupported(f"archive version {self.version}")
        if not 1 <= int_size <= 8:
            raise ArchiveError(f"integer size {int_size} in the header: the archive is damaged")
        self._int_size, self._minor = int_size, minor
        self._off_size = (yield from self._take(1))[0]
        if not 1 <= self._off_size <= 16:
            raise ArchiveError(f"offset size {self._off_size} in the header: the archive is damaged")
        fmt = (yield from self._take(1))[0]
        if fmt != FORMAT_CUSTOM:
            raise Unsupported(f"archive format {fmt} (not the custom format)")
        if minor >= 15:
            algorithm = (yield from self._take(1))[0]
            self.compression = COMPRESSION.get(algorithm, f"algorithm {algorithm}")
        else:
            level = yield from self._int()
            self.compression = "gzip" if level != 0 else "none"
        self.facts.compression = self.compression
        if self.compression not in ("none", "gzip") and (self.compression not in FRAMED
                                                         or _framed(self.compression) is None):
            raise Unsupported(f"{self.compression} compression")
        for _ in range(7):
            yield from self._int()
        yield from self._str()  # database name
        self.facts.server_version = yield from self._str()
        self.facts.pg_dump_version = yield from self._str()

    def _toc(self) -> Generator[None, None, None]:
        count = yield from self._int()
        if count < 0:
            raise ArchiveError(f"a TOC of {count} entries: the archive is damaged")
        for _ in range(count):
            dump_id = yield from self._int()
            if dump_id <= 0:
                raise ArchiveError(f"TOC entry id {dump_id}: the TOC is damaged")
            yield from self._int()  # had a dumper
            yield from self._str()  # table oid
            yield from self._str()  # oid
            tag = (yield from self._str()) or ""
            desc = (yield from self._str()) or ""
            yield from self._int()  # section
            yield from self._str()  # definition
            yield from self._str()  # drop statement
            copy = yield from self._str()
            for _field in range(3 if self._minor >= 14 else 2):  # namespace, tablespace[, table AM]
                yield from self._str()
            if self._minor >= 16:
                yield from self._int()  # relkind
            yield from self._str()  # owner
            yield from self._str()  # with oids
            while (yield from self._str()) is not None:  # dependencies
                pass
            flag = (yield from self._take(1))[0]
            raw = yield from self._take(self._off_size)
            if flag not in (OFFSET_NOT_SET, OFFSET_SET, OFFSET_NO_DATA):
                raise ArchiveError(f"data offset flag {flag} in TOC entry {dump_id}: the TOC is damaged")
            table = copy_table(copy) if copy and desc == "TABLE DATA" else None
            self._entries[dump_id] = Entry(dump_id, desc, tag, table, flag, int.from_bytes(raw, "little"))

    def _stream(self, entry: Entry, sink: Callable[[bytes | bytearray], object] | None) -> Generator[None, None, None]:
        """One data stream (a table's data or one large object): its chunks, decompressed when compressed,
        up to the zero length that ends it."""
        consume, ended = self._decoder(entry, sink)
        # whole chunks are joined for zlib (fewer calls); a frame decompressor keeps what it has not consumed and
        # copies it again on every call, so a joined megabyte took lz4 twice the CPU: they go one by one
        join = self.compression not in FRAMED
        chunks = 0
        isz = self._int_size
        while True:
            buf = self._buf
            # the common case: many whole chunks in the buffer, taken without a generator step per chunk and
            # handed on together (uncompressed archives have a chunk per row)
            pieces: list[bytearray] = []
            while len(buf) - self._pos > isz:
                p = self._pos
                length = int.from_bytes(buf[p + 1:p + 1 + isz], "little")
                if buf[p]:
                    length = -length
                if length <= 0 or len(buf) - p - 1 - isz < length:
                    break
                self._pos = p + 1 + isz + length
                pieces.append(buf[p + 1 + isz:self._pos])
            if pieces:
                chunks += len(pieces)
                if join or len(pieces) == 1:
                    consume(pieces[0] if len(pieces) == 1 else b"".join(pieces))
                else:
                    for one in pieces:
                        consume(one)
            length = yield from self._int()
            if length == 0:
                break
            if length < 0:
                raise ArchiveError(f"a chunk length of {length} in the data of {entry.desc} {entry.tag}: "
                                   "the archive is damaged")
            while length:
                while len(self._buf) == self._pos:
                    yield
                piece = min(length, len(self._buf) - self._pos)
                start = self._pos
                self._pos += piece
                length -= piece
                consume(self._buf[start:self._pos])
            chunks += 1
        if chunks and not ended():
            raise ArchiveError(f"the compressed data of {entry.desc} {entry.tag} ends early: the archive is damaged")

    def _decoder(self, entry: Entry, sink: Callable[[bytes | bytearray], object] | None,
                 ) -> tuple[Callable[[bytes | bytearray], None], Callable[[], bool]]:
        """For one stream: what takes its compressed bytes, and whether its compressed data has ended."""
        if self.compression in FRAMED:
            made = _framed(self.compression)
            assert made is not None  # the header was refused otherwise
            frame, errors = made

            def framed(data: bytes | bytearray) -> None:
                self._consume_framed(entry, frame, errors, sink, data)

            return framed, lambda: frame.eof
        inflate = _inflater() if self.compression == "gzip" else None

        def zlib_or_none(data: bytes | bytearray) -> None:
            self._consume(entry, inflate, sink, data)

        return zlib_or_none, lambda: inflate is None or inflate.eof

    @staticmethod
    def _consume(entry: Entry, inflate: Inflater | None, sink: Callable[[bytes | bytearray], object] | None,
                 data: bytes | bytearray) -> None:
        if inflate is None:
            if sink is not None:
                sink(data)
            return
        if inflate.eof:
            raise _trailing(entry)
        try:
            out = inflate.decompress(data, DECOMPRESS_SLICE)
            while True:
                if sink is not None and out:
                    sink(out)
                if inflate.unconsumed_tail:
                    out = inflate.decompress(inflate.unconsumed_tail, DECOMPRESS_SLICE)
                elif len(out) == DECOMPRESS_SLICE and not inflate.eof:
                    # a full slice with every input byte taken: the inflater can still hold output (ISA-L keeps
                    # a buffer of it, zlib a match being copied), which the next call gives without new input
                    out = inflate.decompress(b"", DECOMPRESS_SLICE)
                else:
                    break
        except INFLATE_ERRORS as exc:
            raise ArchiveError(f"the compressed data of {entry.desc} {entry.tag} is damaged ({exc})") from None
        if inflate.unused_data:
            raise _trailing(entry)

    def _consume_framed(self, entry: Entry, frame: Framed, errors: tuple[type[Exception], ...],
                        sink: Callable[[bytes | bytearray], object] | None, data: bytes | bytearray) -> None:
        if frame.eof:
            raise _trailing(entry)
        try:
            out = frame.decompress(data, DECOMPRESS_SLICE)
            while True:
                if sink is not None and out:
                    sink(out)
                if frame.eof or frame.needs_input:
                    break
                out = frame.decompress(b"", DECOMPRESS_SLICE)
        except errors as exc:
            raise ArchiveError(f"the {self.compression} data of {entry.desc} {entry.tag} is damaged ({exc})") from None
        if frame.eof and frame.unused_data:
            raise _trailing(entry)


def _trailing(entry: Entry) -> ArchiveError:
    return ArchiveError(f"bytes after the end of the compressed data of {entry.desc} {entry.tag}: the archive is "
                        "damaged")
