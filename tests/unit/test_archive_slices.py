"""The archive reader inflates each block in bounded slices: whatever the slice size and whichever inflater
(ISA-L's or zlib's), it must read every block to its end. When a slice fills up just as the input runs out,
the inflater can still hold output (ISA-L keeps a buffer of it, zlib a match being copied); a reader that
stopped there took a whole archive for one whose compressed data "ends early"."""

from __future__ import annotations

import os
import secrets
import subprocess
import zlib
from collections.abc import Iterator

import pytest
from lab.postgres import LabPostgres

from coderctl.ops import archive
from coderctl.ops.archive import ArchiveReader

ROWS = 3000


@pytest.fixture(scope="module")
def archives(lab_postgres: LabPostgres) -> Iterator[dict[str, bytes]]:
    """Archives (-Z1, -Z6, through a pipe as coderctl reads them) of rows that inflate to far more than they
    take compressed, so that slices fill up often."""
    name = f"slices_{secrets.token_hex(4)}"
    lab_postgres.create_database(name)
    try:
        with lab_postgres.connect(database=name, autocommit=True) as conn:
            conn.execute("CREATE TABLE wide (id int, body text)")
            conn.execute(f"INSERT INTO wide SELECT g, repeat(md5(g::text), 40 + g % 200) "
                         f"FROM generate_series(1, {ROWS}) AS g")
        env = {**os.environ, **lab_postgres.env(database=name)}
        yield {level: subprocess.run([str(lab_postgres.bindir / "pg_dump"), "-Fc", f"-Z{level}"], env=env,
                                     capture_output=True, check=True).stdout
               for level in ("1", "6")}
    finally:
        lab_postgres.drop_database(name)


@pytest.mark.parametrize("inflater", ["default", "zlib"])
@pytest.mark.parametrize("slice_size", [1 << 12, 1 << 15, 1 << 16, archive.DECOMPRESS_SLICE])
@pytest.mark.parametrize("level", ["1", "6"])
def test_every_slice_size_reads_every_block_whole(archives: dict[str, bytes], level: str, slice_size: int,
                                                  inflater: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "DECOMPRESS_SLICE", slice_size)
    if inflater == "zlib":
        monkeypatch.setattr(archive, "_inflater", zlib.decompressobj)
    data = archives[level]
    reader = ArchiveReader()
    for start in range(0, len(data), 1 << 16):
        reader.feed(data[start:start + (1 << 16)])
    assert reader.finish().tables == {"public.wide": ROWS}
