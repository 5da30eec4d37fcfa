"""A deployment on PostgreSQL 17: `backup create --via direct` against a real 17 server (Debian 13's, run by
tests/lab/pgclient.py and LabPostgres) takes zstd by default, and the archive restores whole: `backup verify
--restore-to` restores it into a scratch database of the same server with the local pg_restore 17 and compares
every table's row count with the manifest. Also lz4, and zlib on request."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import Result, run_cli
from lab import pgclient
from lab.postgres import LabPostgres

from coderctl.ops import archive

NEWER = pgclient.bindir()
pytestmark = pytest.mark.skipif(NEWER is None, reason="no PostgreSQL 17 in the lab (tests/lab/pgclient.py fetch)")


@pytest.fixture(scope="module")
def pg17() -> Iterator[LabPostgres]:
    assert NEWER is not None
    with LabPostgres(bindir=NEWER) as pg:
        assert pg.version.startswith("17")
        yield pg


def _run(pg: LabPostgres, *args: str) -> Result:
    """coderctl with PostgreSQL 17's programs first on PATH (the local pg_dump for a 17 server)."""
    import os

    r = run_cli("-o", "json", *args, env={"PATH": f"{NEWER}:{os.environ['PATH']}"})
    assert "Traceback" not in r.output
    for secret in (pg.user_password, pg.admin_password):
        assert secret not in r.output
    return r


@pytest.mark.parametrize(("asked", "method"), [(None, "zstd"), ("lz4", "lz4"), ("1", "gzip")])
def test_a_backup_of_postgresql_17_restores_whole(pg17: LabPostgres, tmp_path: Path, asked: str | None,
                                                  method: str) -> None:
    out = tmp_path / "b"
    r = _run(pg17, "backup", "create", "--via", "direct", "--database-url", pg17.url(), "--output-dir", str(out),
             *(["--compress", asked] if asked else []))
    assert r.code == 0, r.output
    result = json.loads(r.stdout)["result"]
    dump = Path(result["file"])
    manifest = json.loads(Path(result["manifest"]).read_text())
    assert archive.compression_of(dump.read_bytes()[:64]) == method == manifest["compression_method"]
    assert manifest["pg_dump_version"].startswith("17") and manifest["server_version"].startswith("17")
    assert manifest["verification"]["status"] == "ok"
    expected = pg17.table_fingerprint("coder")
    assert manifest["tables"] == {f"public.{t}": rows for t, (rows, _) in expected.items()}
    scratch = f"scratch_{secrets.token_hex(4)}"
    pg17.create_database(scratch)
    try:
        v = _run(pg17, "backup", "verify", str(dump), "--restore-to", pg17.url(database=scratch))
        assert v.code == 0, v.output
        steps = {step["name"]: step for step in json.loads(v.stdout)["steps"]}
        assert steps["restore-to"]["status"] == "ok" and "row counts match" in steps["restore-to"]["detail"]
        assert "pg_restore" in steps["manifest"]["detail"] and "17" in steps["manifest"]["detail"]
        assert pg17.table_fingerprint(scratch) == expected
    finally:
        pg17.drop_database(scratch)
