"""backup create --compress: `auto` asks the pg_dump that runs (in the pod, or the local one) whether it writes
zstd, and the archive, its read-back and its manifest say what it got. Against the lab's pg_dump 15 (zlib
only) and Debian 13's pg_dump 17 (lz4, zstd; tests/lab/pgclient.py) in the pod's place."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from backup_support import (
    POD,
    copy_of_coder,
    create,
    deployment_replicas,
    direct,
    files,
    scratch_database,
    use_database,
)
from clirun import run_cli
from lab import pgclient
from lab.deployment import Lab, bitnami_path_map, bitnami_pod_env

from coderctl.ops import archive, compression, pgtools
from coderctl.ops.compression import Compression, parse
from coderctl.ops.verifier import METHOD_ARCHIVE, METHOD_ARCHIVE_FRAMED

NEWER = pgclient.bindir()
needs_newer = pytest.mark.skipif(NEWER is None, reason="no pg_dump 17 in the lab (tests/lab/pgclient.py fetch)")


@pytest.fixture
def pod_with_pg17(lab: Lab) -> Iterator[Path]:
    """The PostgreSQL pod's client programs are pg_dump, pg_restore and psql 17 (a Bitnami image of 16+)."""
    assert NEWER is not None
    env = {**bitnami_pod_env(lab.postgres), "PATH": f"{NEWER}:/usr/local/bin:/usr/bin:/bin"}
    lab.kube.set_exec(*POD, env=env, path_map={f"/opt/bitnami/postgresql/bin/{tool}": str(NEWER / tool)
                                               for tool in ("pg_dump", "pg_restore", "psql")})
    try:
        yield NEWER
    finally:
        lab.kube.set_exec(*POD, env=bitnami_pod_env(lab.postgres), path_map=bitnami_path_map(lab.postgres))


def _made(doc: dict[str, object]) -> tuple[dict[str, object], str | None]:
    result = doc["result"]
    assert isinstance(result, dict)
    manifest = json.loads(Path(str(result["manifest"])).read_text())
    head = Path(str(result["file"])).read_bytes()[:64]
    return manifest, archive.compression_of(head)


def _prepared(doc: dict[str, object]) -> str:
    steps = doc["steps"]
    assert isinstance(steps, list)
    return str(next(step for step in steps if step["name"] == "prepare")["detail"])


def test_auto_is_zlib_level_1_where_pg_dump_writes_nothing_else(lab: Lab, tmp_path: Path) -> None:
    r, doc = create(lab, tmp_path / "b")
    assert r.code == 0, r.output
    manifest, written = _made(doc)
    assert written == "gzip" and manifest["compression"] == 1 and manifest["compression_method"] == "gzip"
    assert manifest["verification"]["method"] == METHOD_ARCHIVE
    assert "custom format, zstd:1 if the pod's pg_dump writes it, else gzip:1" in _prepared(doc)


@needs_newer
def test_auto_is_zstd_where_the_pods_pg_dump_writes_it(lab: Lab, tmp_path: Path, pod_with_pg17: Path) -> None:
    """The pod's pg_dump writes zstd: the archive is zstd, read back frame by frame and verified again by
    `backup verify`. (Not restored here: pg_restore 17 sets transaction_timeout, which the lab's PostgreSQL 15
    does not know; a pod's client is its server's version.)"""
    with copy_of_coder(lab) as db:
        use_database(lab, db)
        r, doc = create(lab, tmp_path / "b")
        assert r.code == 0, r.output
        manifest, written = _made(doc)
        assert written == "zstd"
        assert manifest["compression"] == 1 and manifest["compression_method"] == "zstd"
        assert manifest["pg_dump_version"].startswith("17")
        assert manifest["verification"]["status"] == "ok"
        assert manifest["verification"]["method"] == METHOD_ARCHIVE_FRAMED
        backed_up = lab.postgres.table_fingerprint(db)
        assert manifest["tables"] == {f"public.{t}": rows for t, (rows, _) in backed_up.items()}
        v = run_cli(*lab.args("-o", "json"), "backup", "verify", str(doc["result"]["file"]))
        assert v.code == 0, v.output


@needs_newer
def test_without_the_read_back_the_method_comes_from_the_archives_first_bytes(lab: Lab, tmp_path: Path,
                                                                             pod_with_pg17: Path) -> None:
    r, doc = create(lab, tmp_path / "b", "--no-verify")
    assert r.code == 0, r.output
    manifest, written = _made(doc)
    assert written == "zstd" and manifest["compression_method"] == "zstd" and manifest["compression"] == 1
    assert manifest["verification"]["status"] == "skipped" and manifest["tables"] is None


@needs_newer
@pytest.mark.parametrize(("asked", "method"), [("lz4", "lz4"), ("zstd:9", "zstd"), ("gzip:1", "gzip"), ("6", "gzip"),
                                               ("none", "none")])
def test_an_explicit_method_reaches_the_pods_pg_dump(lab: Lab, tmp_path: Path, pod_with_pg17: Path, asked: str,
                                                    method: str) -> None:
    r, doc = create(lab, tmp_path / "b", "--compress", asked)
    assert r.code == 0, r.output
    manifest, written = _made(doc)
    assert written == method and manifest["compression_method"] == method
    assert manifest["compression"] == {"lz4": None, "zstd:9": 9, "gzip:1": 1, "6": 6, "none": 0}[asked]
    assert manifest["verification"]["status"] == "ok"


def test_a_method_the_pods_pg_dump_cannot_write_fails_with_its_reason_and_leaves_nothing(lab: Lab,
                                                                                         tmp_path: Path) -> None:
    out = tmp_path / "b"
    r, doc = create(lab, out, "--compress", "zstd:1")
    assert r.code == 1
    error = doc["result"]["error"]
    assert "pg_dump" in error and "zstd:1" in error and "-Z/--compress" in error, error
    assert files(out) == []


@needs_newer
def test_direct_auto_asks_the_local_pg_dump(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only pg_dump 17 installed locally: it writes zstd, so auto takes it; with 15 beside it, 15 is the one
    for a 15 server (its archives the server's own pg_restore reads), and writes zlib."""
    assert NEWER is not None
    monkeypatch.setattr(pgtools, "SEARCH_DIRS", ())
    monkeypatch.setenv("PATH", f"{NEWER}:/usr/bin:/bin")
    r, doc = create(lab, tmp_path / "b", *direct(lab))
    assert r.code == 0, r.output
    manifest, written = _made(doc)
    assert written == "zstd" and manifest["compression_method"] == "zstd" and manifest["compression"] == 1
    assert "custom format, zstd:1 into" in _prepared(doc)
    monkeypatch.undo()
    r, doc = create(lab, tmp_path / "c", *direct(lab))
    assert r.code == 0, r.output
    assert _made(doc)[1] == "gzip" and "custom format, gzip:1 into" in _prepared(doc)


@needs_newer
def test_the_probe_tells_builds_apart() -> None:
    assert NEWER is not None
    old = pgtools.choose(pgtools.installed("pg_dump"), at_least=None, prefer="oldest")
    assert old is not None and old.major < 16
    assert compression.supported(str(NEWER / "pg_dump"))
    assert compression.supported(str(NEWER / "pg_dump"), Compression("lz4"))
    assert not compression.supported(old.path)
    assert compression.resolve(compression.AUTO, str(NEWER / "pg_dump"), 17) == compression.PREFERRED
    assert compression.resolve(compression.AUTO, old.path, old.major) == compression.FALLBACK
    assert compression.resolve(Compression("lz4", 3), old.path, old.major) == Compression("lz4", 3)


@pytest.mark.parametrize(("text", "expected"), [
    ("auto", "auto"), ("0", "none"), ("1", "gzip:1"), ("9", "gzip:9"), ("gzip", "gzip"), ("GZIP:4", "gzip:4"),
    ("lz4", "lz4"), ("lz4:12", "lz4:12"), ("zstd", "zstd"), ("zstd:22", "zstd:22"), ("none", "none")])
def test_compress_values(text: str, expected: str) -> None:
    assert str(parse(text)) == expected


@pytest.mark.parametrize("text", ["10", "-1", "zstd:0", "zstd:23", "lz4:13", "gzip:0", "brotli", "zstd:", "none:1",
                                  "zstd:long", "", "1.5"])
def test_bad_compress_values_are_one_line_usage_errors(lab: Lab, text: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        parse(text)
    r = run_cli(*lab.args(), "backup", "create", "--compress", text, "--output-dir", str(tmp_path / "b"))
    assert r.code == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "--compress" in r.stderr, r.stderr
    assert files(tmp_path / "b") == []


@needs_newer
def test_a_direct_restore_refuses_an_archive_its_pg_restore_cannot_read_before_anything_changes(
        lab: Lab, tmp_path: Path, pod_with_pg17: Path) -> None:
    """A zstd archive of pg_dump 17 (archive 1.16), restored --via direct where the local pg_restore is 15:
    refused at the first step, before the confirmation, the safety backup and Coder's scale-down."""
    with copy_of_coder(lab) as db:
        use_database(lab, db)
        r, doc = create(lab, tmp_path / "b")
        assert r.code == 0, r.output
        before, replicas = lab.postgres.table_fingerprint(db), deployment_replicas(lab)
        r = run_cli(*lab.args("-o", "json"), "backup", "restore", str(doc["result"]["file"]), "--yes", "--via",
                    "direct", "--database-url", lab.postgres.url(database=db), "--output-dir", str(tmp_path / "s"))
        lab.assert_no_secrets(r.stdout, r.stderr)
        assert r.code == 1, r.output
        steps = {step["name"]: step for step in json.loads(r.stdout)["steps"]}
        assert steps["check"]["status"] == "failed"
        detail = steps["check"]["detail"]
        assert "the local pg_restore 15" in detail and "made by pg_dump 17" in detail, detail
        assert "unsupported version (1.16)" in detail and "nothing was changed" in detail, detail
        assert "safety-backup" not in steps or steps["safety-backup"]["status"] != "ok"
        assert files(tmp_path / "s") == []
        assert lab.postgres.table_fingerprint(db) == before and deployment_replicas(lab) == replicas


@needs_newer
def test_verify_restore_to_refuses_an_archive_its_pg_restore_cannot_read_before_reading_it(
        lab: Lab, tmp_path: Path, pod_with_pg17: Path) -> None:
    r, doc = create(lab, tmp_path / "b")
    assert r.code == 0, r.output
    with scratch_database(lab) as db:
        v = run_cli(*lab.args("-o", "json"), "backup", "verify", str(doc["result"]["file"]), "--restore-to",
                    lab.postgres.url(database=db))
        lab.assert_no_secrets(v.stdout, v.stderr)
        assert v.code == 1, v.output
        steps = json.loads(v.stdout)["steps"]
        assert [(s["name"], s["status"]) for s in steps] == [("manifest", "failed")]
        assert "the local pg_restore 15" in steps[0]["detail"] and "unsupported version (1.16)" in steps[0]["detail"]
        assert "nothing was read or restored" in steps[0]["detail"]
        assert lab.postgres.table_fingerprint(db) == {}


@needs_newer
def test_an_exec_restore_refuses_an_archive_the_pods_pg_restore_cannot_read_before_anything_changes(
        lab: Lab, tmp_path: Path, pod_with_pg17: Path) -> None:
    """A backup of pg_dump 17 (archive 1.16, zstd), restored where the pod's client is 15 (a rebuilt older
    cluster): the pod's pg_restore is asked first, and the restore stops before the confirmation, the safety
    backup and Coder's scale-down."""
    with copy_of_coder(lab) as db:
        use_database(lab, db)
        r, doc = create(lab, tmp_path / "b")
        assert r.code == 0, r.output
        lab.kube.set_exec(*POD, env=bitnami_pod_env(lab.postgres), path_map=bitnami_path_map(lab.postgres))
        before, replicas = lab.postgres.table_fingerprint(db), deployment_replicas(lab)
        r = run_cli(*lab.args("-o", "json"), "backup", "restore", str(doc["result"]["file"]), "--yes",
                    "--output-dir", str(tmp_path / "s"))
        lab.assert_no_secrets(r.stdout, r.stderr)
        assert r.code == 1, r.output
        steps = {step["name"]: step for step in json.loads(r.stdout)["steps"]}
        assert steps["check"]["status"] == "ok" and steps["target"]["status"] == "failed"
        detail = steps["target"]["detail"]
        assert "pg_restore in coder/coder-coder-postgresql-0 cannot read" in detail, detail
        assert "made by pg_dump 17" in detail and "unsupported version (1.16)" in detail, detail
        assert "nothing was changed" in detail
        assert files(tmp_path / "s") == []
        assert lab.postgres.table_fingerprint(db) == before and deployment_replicas(lab) == replicas
