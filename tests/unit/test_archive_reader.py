"""The custom-format archive reader against the real tools, on real dumps of the lab database.

Every archive is also read by `pg_restore -f -` (its SQL scanned for COPY row counts) and listed by
`pg_restore -l`: the reader must agree with them on whole archives, and reject what pg_restore rejects
(a truncated file, a damaged compressed block), including truncations `pg_restore -l` does not notice.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lab import pgclient
from lab.postgres import LabPostgres

from coderctl.ops import archive
from coderctl.ops.archive import ArchiveError, ArchiveReader
from coderctl.ops.scan import DumpFacts, SqlScanner
from coderctl.ops.verifier import METHOD_PG_RESTORE, StreamCheck, VerifyFailed

ODD_DATA = r"""
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Table With Spaces" (id int, note text, raw bytea);
INSERT INTO "Odd Schema"."Table With Spaces" VALUES
  (1, E'line one\nline two', '\x00ff'), (2, E'\\.', NULL), (3, E'tab\there \\ back', ''), (4, '\.', '\x5c2e');
CREATE TABLE public.empty_table (id int);
SELECT lo_from_bytea(0, 'a large object');
"""


NEWER = pgclient.bindir()
"""pg_dump and pg_restore 17 with lz4 and zstd (tests/lab/pgclient.py), when the lab has them."""
needs_newer = pytest.mark.skipif(NEWER is None, reason="no pg_dump 17 in the lab (tests/lab/pgclient.py fetch)")
ARCHIVES = ["pipe-Z0", "pipe-Z1", "pipe-Z6", "file-Z1",
            *[pytest.param(name, marks=needs_newer) for name in ("17-gzip", "17-lz4", "17-zstd", "17-zstd-9",
                                                                 "17-file-zstd", "17-none")]]
"""pg_dump 15's archives (1.14, zlib), and pg_dump 17's (1.16) with each compression it writes."""
NEWER_ARGS = {"17-gzip": (["-Z", "gzip:1"], True), "17-lz4": (["-Z", "lz4"], True),
              "17-zstd": (["-Z", "zstd:1"], True), "17-zstd-9": (["-Z", "zstd:9"], True),
              "17-file-zstd": (["-Z", "zstd"], False), "17-none": (["-Z", "none"], True)}


@dataclass
class Dump:
    name: str
    path: Path
    data: bytes
    reference: DumpFacts
    listed: int  # TABLE DATA entries in `pg_restore -l`
    tools: Path  # the pg_dump that made it, and the pg_restore that reads it


def _env(pg: LabPostgres, database: str) -> dict[str, str]:
    return {**os.environ, **pg.env(database=database)}


def _restored_sql(tools: Path, path: Path) -> tuple[int, DumpFacts, str]:
    out = subprocess.run([str(tools / "pg_restore"), "-f", "-", str(path)], capture_output=True, check=False)
    scanner = SqlScanner()
    scanner.feed(out.stdout)
    return out.returncode, scanner.finish(), out.stderr.decode(errors="replace")


def _listed(tools: Path, path: Path) -> tuple[int, int]:
    out = subprocess.run([str(tools / "pg_restore"), "-l", str(path)], capture_output=True, text=True,
                         check=False)
    return out.returncode, sum(" TABLE DATA " in line for line in out.stdout.splitlines())


@pytest.fixture(scope="module")
def source(lab_postgres: LabPostgres) -> Iterator[str]:
    """A copy of the lab's Coder database with awkward rows, an empty table and a large object."""
    name = f"archive_{secrets.token_hex(4)}"
    lab_postgres.create_database(name)
    try:
        pg_dump = subprocess.run([str(lab_postgres.bindir / "pg_dump"), "-Fc"], env=_env(lab_postgres, "coder"),
                                 capture_output=True, check=True)
        subprocess.run([str(lab_postgres.bindir / "pg_restore"), "-d", name, "--exit-on-error"],
                       env=_env(lab_postgres, name), input=pg_dump.stdout, capture_output=True, check=True)
        with lab_postgres.connect(database=name, autocommit=True) as conn:
            conn.execute(ODD_DATA)
        yield name
    finally:
        lab_postgres.drop_database(name)


@pytest.fixture(scope="module")
def dumps(lab_postgres: LabPostgres, source: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dump]:
    """Archives as coderctl makes them (pg_dump writing to a pipe: no data offsets in the TOC) at levels 0, 1
    and 6, and one written to a file (pg_dump then fills in the offsets); with pg_dump 17, the same in each of
    its compressions. Each is read by the pg_restore of its own version for the reference."""
    work = tmp_path_factory.mktemp("archives")
    made: dict[str, Dump] = {}
    plan = [("pipe-Z0", ["-Z0"], True, lab_postgres.bindir), ("pipe-Z1", ["-Z1"], True, lab_postgres.bindir),
            ("pipe-Z6", ["-Z6"], True, lab_postgres.bindir), ("file-Z1", ["-Z1"], False, lab_postgres.bindir)]
    if NEWER is not None:
        plan += [(name, args, to_pipe, NEWER) for name, (args, to_pipe) in NEWER_ARGS.items()]
    for name, args, to_pipe, tools in plan:
        path = work / f"{name}.dump"
        argv = [str(tools / "pg_dump"), "-Fc", *args]
        if to_pipe:
            with open(path, "wb") as fh:
                dumped = subprocess.run(argv, env=_env(lab_postgres, source), stdout=subprocess.PIPE, check=True)
                fh.write(dumped.stdout)
        else:
            subprocess.run([*argv, "-f", str(path)], env=_env(lab_postgres, source), check=True)
        code, reference, err = _restored_sql(tools, path)
        assert code == 0, err
        list_code, listed = _listed(tools, path)
        assert list_code == 0
        made[name] = Dump(name, path, path.read_bytes(), reference, listed, tools)
    return made


def read(data: bytes, rng: random.Random | None = None) -> DumpFacts:
    reader = ArchiveReader()
    pos = 0
    while pos < len(data):
        size = rng.choice([1, 3, 8, 100, 4096, 65536, 1 << 20]) if rng else len(data)
        reader.feed(data[pos:pos + size])
        pos += size
    return reader.finish()


@pytest.mark.parametrize("name", ARCHIVES)
def test_the_reader_agrees_with_pg_restore(dumps: dict[str, Dump], name: str) -> None:
    dump = dumps[name]
    expected = {"17-lz4": "lz4", "17-zstd": "zstd", "17-zstd-9": "zstd", "17-file-zstd": "zstd", "17-none": "none",
                "pipe-Z0": "none"}.get(name, "gzip")
    for seed in (None, 1, 2):
        reader = ArchiveReader()
        reader.feed(dump.data[:64])
        assert reader.compression == expected
        facts = read(dump.data, random.Random(seed) if seed is not None else None)
        assert facts.complete
        assert facts.tables == dump.reference.tables
        assert facts.server_version == dump.reference.server_version
        assert facts.pg_dump_version == dump.reference.pg_dump_version
        assert facts.bytes_read == len(dump.data)
    assert len(facts.tables) == dump.listed
    assert facts.tables['"Odd Schema"."Table With Spaces"'] == 4 and facts.tables["public.empty_table"] == 0
    assert facts.rows > 100


def _block_starts(data: bytes) -> list[int]:
    """Stream offsets where data blocks begin, found by the reader itself (a block's first byte is read
    when `blocks` has not yet counted it)."""
    reader = ArchiveReader()
    starts: list[int] = []
    for pos in range(0, len(data), 1):
        was_boundary = reader._at_boundary  # noqa: SLF001
        reader.feed(data[pos:pos + 1])
        if was_boundary and not reader._at_boundary:  # noqa: SLF001
            starts.append(pos)
        if len(starts) >= 3:
            break
    return starts


COMPRESSED = ["pipe-Z1", *[pytest.param(name, marks=needs_newer) for name in ("17-lz4", "17-zstd")]]


@pytest.mark.parametrize("name", COMPRESSED)
def test_a_truncated_archive_is_rejected_like_pg_restore_does(dumps: dict[str, Dump], tmp_path: Path,
                                                               name: str) -> None:
    dump = dumps[name]
    starts = _block_starts(dump.data)
    assert len(starts) == 3
    cuts = {"in the header": 12, "in the TOC": starts[0] // 2, "before the first block": starts[0],
            "at a block boundary": starts[2], "inside a block": starts[2] + 7,
            "in the middle": len(dump.data) // 2, "one byte short": len(dump.data) - 1}
    for where, cut in cuts.items():
        with pytest.raises(ArchiveError, match="truncated|ends"):
            read(dump.data[:cut])
        path = tmp_path / f"cut-{cut}.dump"
        path.write_bytes(dump.data[:cut])
        code, _, _ = _restored_sql(dump.tools, path)
        assert code != 0, f"pg_restore -f - read an archive cut {where}"
        if cut >= starts[0]:
            assert _listed(dump.tools, path)[0] == 0  # pg_restore -l alone does not see it
    check = StreamCheck("custom")
    check.feed(dump.data[: len(dump.data) // 2])
    with pytest.raises(VerifyFailed, match="truncated"):
        check.finish()


@pytest.mark.parametrize("name", COMPRESSED)
def test_a_damaged_archive_is_rejected_like_pg_restore_does(dumps: dict[str, Dump], tmp_path: Path,
                                                             name: str) -> None:
    """A byte changed in the header, or anywhere in the data: whatever pg_restore notices (an error, or other
    row counts), the reader notices too (an error, or the same other row counts). zlib streams carry a
    checksum, so in a gzip archive every change to the data is found; the LZ4 and Zstandard frames pg_dump
    writes carry none, so a changed literal byte can pass both (the manifest's SHA-256 is what covers those),
    but a broken frame cannot."""
    dump = dumps[name]
    last = _block_starts(dump.data)[2]
    rng = random.Random(name)
    offsets = {"the magic": 1, "compressed data": last + (len(dump.data) - last) // 2,
               "compressed data near the end": len(dump.data) - 20,
               **{f"data at {o}": o for o in sorted(rng.sample(range(last, len(dump.data) - 5), 24))}}
    caught = 0
    for where, offset in offsets.items():
        damaged = bytearray(dump.data)
        damaged[offset] ^= 0x5A
        path = tmp_path / f"damaged-{offset}.dump"
        path.write_bytes(bytes(damaged))
        code, facts, _ = _restored_sql(dump.tools, path)
        noticed = code != 0 or facts.tables != dump.reference.tables
        try:
            tables = read(bytes(damaged)).tables
        except ArchiveError:
            caught += 1
        else:  # other row counts are caught by `backup verify`, against the manifest's
            assert not noticed or tables != dump.reference.tables, f"pg_restore noticed damage to {where}"
            assert name != "pipe-Z1", f"a changed byte in {where} passed the zlib checksum"
    assert caught == len(offsets) if name == "pipe-Z1" else caught >= 1  # the magic, at least
    with pytest.raises(ArchiveError, match="after the end"):
        read(dump.data + b"\x01")


def test_an_archive_version_it_does_not_know_goes_through_pg_restore(dumps: dict[str, Dump],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    dump = dumps["pipe-Z1"]
    monkeypatch.setattr(archive, "NEWEST_MINOR", dump.data[6] - 1)
    with pytest.raises(archive.Unsupported):
        read(dump.data)
    with StreamCheck("custom") as check:
        for pos in range(0, len(dump.data), 3000):
            check.feed(dump.data[pos:pos + 3000])
        facts = check.finish()
    assert check.method == METHOD_PG_RESTORE
    assert facts.tables == dump.reference.tables


PROBE = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from coderctl.ops.verifier import read_file

    def high_water() -> int:  # VmHWM: peak RSS of this process image (ru_maxrss would include the parent's)
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) * 1024

    def rss() -> int:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) * 1024

    before = rss()
    out = {}
    for path, fmt in ((sys.argv[1], "custom"), (sys.argv[2], "plain")):
        start = time.monotonic()
        check = read_file(Path(path), fmt)
        out[fmt] = {"error": check.error, "rows": check.facts.tables.get("public.one_big_row") if check.facts else None,
                    "seconds": time.monotonic() - start}
    out["peak_growth_mb"] = (high_water() - before) / 2**20
    print(json.dumps(out))
""")


def test_memory_stays_constant_for_a_64_mb_row(lab_postgres: LabPostgres, tmp_path: Path) -> None:
    """One 64 MiB bytea value (128 MiB of hex in the COPY data) read back from both formats: the peak RSS
    of the reading process grows by a bounded amount, and in linear time (this took 40 s and ~300 MB)."""
    name = f"bigrow_{secrets.token_hex(4)}"
    lab_postgres.create_database(name)
    try:
        with lab_postgres.connect(database=name, autocommit=True) as conn:
            conn.execute("CREATE TABLE one_big_row (id int, payload bytea)")
            # 1 MiB of md5 output repeated: as hard to compress as random bytes (deflate looks back 32 KiB)
            conn.execute("INSERT INTO one_big_row SELECT 1, decode(repeat(string_agg(md5(g::text), '' ORDER BY g), "
                         "64), 'hex') FROM generate_series(1, 65536) AS g")
        env = _env(lab_postgres, name)
        custom, plain = tmp_path / "big.dump", tmp_path / "big.sql"
        subprocess.run([str(lab_postgres.bindir / "pg_dump"), "-Fc", "-Z1", "-f", str(custom)], env=env, check=True)
        subprocess.run([str(lab_postgres.bindir / "pg_dump"), "-Fp", "-f", str(plain)], env=env, check=True)
    finally:
        lab_postgres.drop_database(name)
    assert plain.stat().st_size > 128 << 20
    out = subprocess.run([sys.executable, "-c", PROBE, str(custom), str(plain)], capture_output=True, text=True,
                         check=False, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["custom"] == {**result["custom"], "error": "", "rows": 1}
    assert result["plain"] == {**result["plain"], "error": "", "rows": 1}
    assert result["peak_growth_mb"] < 32, result
    assert result["custom"]["seconds"] < 30 and result["plain"]["seconds"] < 30, result


ZEROS_PROBE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from coderctl.ops.verifier import read_file

    def status(field: str) -> int:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith(field)) * 1024

    before = status("VmRSS:")
    out = {}
    for path in sys.argv[1:]:
        check = read_file(Path(path), "custom")
        out[path] = {"error": check.error, "rows": check.facts.tables.get("public.zeros") if check.facts else None}
    out["peak_growth_mb"] = (status("VmHWM:") - before) / 2**20
    print(json.dumps(out))
""")


@needs_newer
def test_a_frame_that_inflates_a_thousandfold_is_read_in_bounded_memory(lab_postgres: LabPostgres,
                                                                         tmp_path: Path) -> None:
    """One 64 MiB bytea of zeros (128 MiB of hex in the COPY data): lz4 and zstd archives hold it in a few
    kilobytes to a few hundred, so a chunk of compressed data is megabytes of rows. The reader never takes a
    frame's output whole."""
    assert NEWER is not None
    name = f"zeros_{secrets.token_hex(4)}"
    lab_postgres.create_database(name)
    paths = []
    try:
        with lab_postgres.connect(database=name, autocommit=True) as conn:
            conn.execute("CREATE TABLE zeros (id int, payload bytea)")
            conn.execute("INSERT INTO zeros VALUES (1, decode(repeat('00', 64 << 20), 'hex'))")
        for method in ("zstd:1", "lz4"):
            path = tmp_path / f"zeros-{method.split(':')[0]}.dump"
            subprocess.run([str(NEWER / "pg_dump"), "-Fc", "-Z", method, "-f", str(path)],
                           env=_env(lab_postgres, name), check=True)
            paths.append(str(path))
    finally:
        lab_postgres.drop_database(name)
    assert all(Path(p).stat().st_size < 4 << 20 for p in paths)
    out = subprocess.run([sys.executable, "-c", ZEROS_PROBE, *paths], capture_output=True, text=True, check=False,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for path in paths:
        assert result[path] == {"error": "", "rows": 1}
    assert result["peak_growth_mb"] < 32, result
