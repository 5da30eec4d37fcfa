"""The pure parts of the backup operations: dump scanning, tool choice, pod credentials, metrics, names."""

from __future__ import annotations

import os
import random
import stat
from datetime import datetime, timezone, UTC
from pathlib import Path

import pytest

from coderctl.errors import UsageError
from coderctl.ops import files, metrics, pgtools
from coderctl.ops import manifest as mf
from coderctl.ops.pod import credentials_in_pod
from coderctl.ops.scan import BlockRows, CopyCounter, SqlScanner

DUMP = (
    b"--\n-- PostgreSQL database dump\n--\n\n"
    b"-- Dumped from database version 15.10\n-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)\n\n"
    b"SET statement_timeout = 0;\n"
    b"COPY public.users (id, email, bio) FROM stdin;\n"
    b"1\ta@example.org\tline one\\nline two\n"
    b"2\tb@example.org\t\\\\.\n"
    b"3\tc@example.org\t\\N\n"
    b"\\.\n\n"
    b'COPY "Odd Schema"."Table With Spaces" FROM stdin;\n'
    b"\\.\n\n"
    b"COPY public.audit_logs (id) FROM stdin;\n" + b"".join(b"%d\n" % i for i in range(1000)) + b"\\.\n\n"
    b"--\n-- PostgreSQL database dump complete\n--\n\n"
)


def scan(data: bytes, sizes: list[int]) -> SqlScanner:
    scanner = SqlScanner()
    pos = 0
    for size in sizes:
        scanner.feed(data[pos:pos + size])
        pos += size
    scanner.feed(data[pos:])
    scanner.finish()
    return scanner


@pytest.mark.parametrize("seed", range(30))
def test_scanner_is_independent_of_chunking(seed: int) -> None:
    rng = random.Random(seed)
    sizes = [rng.choice([1, 2, 3, 5, 7, 64, 1000]) for _ in range(400)]
    facts = scan(DUMP, sizes).facts
    assert facts.tables == {"public.users": 3, '"Odd Schema"."Table With Spaces"': 0, "public.audit_logs": 1000}
    assert facts.server_version == "15.10" and facts.pg_dump_version == "15.18 (Debian 15.18-0+deb12u1)"
    assert facts.complete and facts.rows == 1003 and facts.bytes_read == len(DUMP)


def test_scanner_sees_truncation() -> None:
    cut = DUMP.index(b"500\n")
    scanner = scan(DUMP[:cut], [100] * 10)
    assert scanner.in_copy and not scanner.facts.complete
    scanner = scan(DUMP[: DUMP.index(b"-- PostgreSQL database dump complete")], [4096])
    assert not scanner.in_copy and not scanner.facts.complete


def fake_tool(directory: Path, name: str, version: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) {version}'\n")
    path.chmod(0o755)
    return path


def test_local_pg_dump_older_than_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = fake_tool(tmp_path / "14", "pg_dump", "14.11")
    monkeypatch.setenv("PATH", str(old.parent))
    monkeypatch.setattr(pgtools, "SEARCH_DIRS", ())
    with pytest.raises(pgtools.ToolMissing) as err:
        pgtools.find("pg_dump", at_least=15, prefer="oldest", why="the server runs PostgreSQL 15.10")
    assert str(err.value) == ("the local pg_dump is version 14.11, older than PostgreSQL 15 (the server runs "
                              "PostgreSQL 15.10): install postgresql-client-15 or newer")
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    with pytest.raises(pgtools.ToolMissing, match="pg_dump is not installed here"):
        pgtools.find("pg_dump", at_least=15)


def test_tool_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for major in (14, 15, 17):
        fake_tool(tmp_path / f"lib/{major}/bin", "pg_dump", f"{major}.2")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(pgtools, "SEARCH_DIRS", (str(tmp_path / "lib/*/bin"),))
    assert pgtools.find("pg_dump", at_least=15, prefer="oldest").major == 15  # archives the pod can read
    assert pgtools.find("pg_dump", at_least=16, prefer="oldest").major == 17
    assert pgtools.find("pg_dump").major == 17
    assert pgtools.parse_version("psql (PostgreSQL) 9.6.24") == (9, "9.6")


def pod(env: list[dict[str, object]], mounts: list[str] = ()) -> dict[str, object]:  # type: ignore[assignment]
    return {"spec": {"containers": [{"name": "postgresql", "env": env,
                                     "volumeMounts": [{"name": "s", "mountPath": m} for m in mounts]}]}}


def test_pod_credentials() -> None:
    bitnami = [{"name": "POSTGRES_USER", "value": "coder"},
               {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
               {"name": "POSTGRES_POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "a"}}}]
    assert credentials_in_pod(pod(bitnami), "postgresql", "coder")
    assert credentials_in_pod(pod(bitnami), "postgresql", "postgres")
    assert not credentials_in_pod(pod(bitnami), "postgresql", "someone")
    files = [{"name": "POSTGRES_USER", "value": "coder"}]
    assert credentials_in_pod(pod(files, ["/opt/bitnami/postgresql/secrets/"]), "postgresql", "coder")
    assert not credentials_in_pod(pod(files), "postgresql", "coder")


def test_metrics_render_keeps_the_last_success(tmp_path: Path) -> None:
    path = tmp_path / "backup.prom"
    metrics.write(path, metrics.Run(100.0, True, "coder", "coder", duration_s=2.5, size=42, verified=True))
    first = path.read_text()
    assert 'coderctl_backup_size_bytes{namespace="coder",database="coder",destination="dir"} 42' in first
    metrics.write(path, metrics.Run(200.0, False, "coder", "coder"))
    second = path.read_text()
    labels = '{namespace="coder",database="coder",destination="dir"}'
    assert f"coderctl_backup_last_success_timestamp_seconds{labels} 100.000" in second
    assert f"coderctl_backup_last_run_success{labels} 0" in second
    assert f"coderctl_backup_last_run_timestamp_seconds{labels} 200.000" in second
    assert second.count("# TYPE") == 6
    fresh = tmp_path / "fresh.prom"
    metrics.write(fresh, metrics.Run(300.0, False, "coder", "coder"))
    assert "last_success" not in fresh.read_text() and fresh.read_text().count("# TYPE") == 2


def test_names() -> None:
    moment = datetime(2026, 11, 26, 12, 0, 5, tzinfo=UTC)
    assert mf.backup_name("coder", moment, "custom") == "coder-20261126T120005Z.dump"
    assert mf.backup_name("co/der", moment, "plain", "pre-restore") == "co_der-20261126T120005Z-pre-restore.sql"
    assert mf.time_from_name("coder-20261126T120005Z-pre-restore-2.dump") == moment
    assert mf.time_from_name("notes.sql") is None


@pytest.mark.parametrize("seed", range(20))
def test_copy_rows_are_counted_whatever_the_chunking_and_row_length(seed: int) -> None:
    rng = random.Random(seed)
    rows = [rng.choice([b"", b"x", b"\\\\.", b"\\.x", b"a\\nb", b"z" * rng.randint(1, 5000)]) for _ in range(50)]
    data = b"".join(r + b"\n" for r in rows) + b"\\.\n\n\n"
    pos, counter = 0, CopyCounter()
    while pos < len(data):
        size = rng.choice([1, 2, 3, 4, 5, 100, 7000])
        stop = counter.feed(data[pos:pos + size])
        if counter.ended:
            assert pos + stop == len(data) - 2
            break
        pos += size
    assert counter.ended and counter.rows == len(rows)
    assert counter.finish() == len(rows)
    cut = CopyCounter()
    cut.feed(b"1\n2\npartial")
    assert cut.finish() is None


def test_plain_scanner_keeps_no_long_line() -> None:
    """A 64 MiB row arrives in 1 MiB chunks: nothing of it is kept between chunks (this was quadratic)."""
    scanner = SqlScanner()
    scanner.feed(DUMP[: DUMP.index(b"1\ta@example.org")])
    chunk = b"ab" * (1 << 19)
    scanner.feed(b"9\t")
    for _ in range(64):
        scanner.feed(chunk)
        assert len(scanner._line) == 0  # noqa: SLF001
    scanner.feed(b"\n\\.\n\n--\n-- PostgreSQL database dump complete\n--\n")
    facts = scanner.finish()
    assert facts.tables == {"public.users": 1} and facts.complete


def test_a_new_backup_directory_is_private_and_an_existing_one_keeps_its_mode(tmp_path: Path) -> None:
    new = files.private_dir(tmp_path / "a" / "b")
    assert stat.S_IMODE(new.stat().st_mode) == 0o700
    for mode in (0o555, 0o750, 0o755, 0o700):
        existing = tmp_path / f"mode{mode:o}"
        existing.mkdir()
        existing.chmod(mode)
        assert files.private_dir(existing) == existing
        assert stat.S_IMODE(existing.stat().st_mode) == mode
    target = tmp_path / "real"
    target.mkdir(mode=0o755)
    target.chmod(0o755)
    link = tmp_path / "link"
    link.symlink_to(target)
    files.private_dir(link)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def test_a_backup_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    for mode in (0o1777, 0o777, 0o757):
        shared = tmp_path / f"shared{mode:o}"
        shared.mkdir()
        shared.chmod(mode)
        with pytest.raises(UsageError, match="writable by every user") as err:
            files.private_dir(shared)
        assert "\n" not in str(err.value)
        assert stat.S_IMODE(shared.stat().st_mode) == mode
    link = tmp_path / "to-shared"
    link.symlink_to(tmp_path / "shared1777")
    with pytest.raises(UsageError, match="writable by every user"):
        files.private_dir(link)
    group = tmp_path / "group"
    group.mkdir()
    group.chmod(0o2775)
    os.chown(group, -1, os.getegid())
    warnings: list[str] = []
    files.private_dir(group, warn=warnings.append)
    assert len(warnings) == 1 and "writable by its group" in warnings[0]
    foreign = max({os.getegid(), *os.getgroups()}) + 4242
    os.chown(group, -1, foreign)
    with pytest.raises(UsageError, match="group this process is not in"):
        files.private_dir(group)
    assert stat.S_IMODE(group.stat().st_mode) == 0o2775


GOOD_MANIFEST = {"file": "coder-20261126T120000Z.dump", "created_at": "2026-11-26T12:00:00Z", "duration_s": 1.5,
                 "via": "exec", "format": "custom", "database": "coder", "size": 10, "sha256": "0" * 64,
                 "verification": {"status": "ok"}, "tables": {"public.users": 3}}


@pytest.mark.parametrize("change", [
    {"created_at": 1764158400}, {"created_at": "not a time"}, {"created_at": None}, {"size": "10"},
    {"size": True}, {"size": -1}, {"sha256": 5}, {"sha256": "abc"}, {"verification": "ok"},
    {"verification": {"method": "x"}}, {"tables": {"public.users": "3"}}, {"tables": [1]}, {"format": "tar"},
    {"database": ["coder"]}, {"source": "pod"},
])
def test_every_malformed_manifest_is_a_manifest_error(change: dict[str, object]) -> None:
    assert mf.Manifest.from_dict(GOOD_MANIFEST).verified
    with pytest.raises(mf.ManifestError):
        mf.Manifest.from_dict({**GOOD_MANIFEST, **change})
    with pytest.raises(mf.ManifestError, match="no file"):
        mf.Manifest.from_dict({})


@pytest.mark.parametrize("seed", range(20))
def test_block_rows_agree_with_the_streaming_count(seed: int) -> None:
    """The archive's per-block count (newlines, end marker recognised at the end) equals the streaming count
    (marker searched in every piece), with and without pg_dump's end marker, on awkward rows."""
    rng = random.Random(seed)
    rows = [rng.choice([b"", b"x", b"\\\\.", b"\\.x", b"a\\nb", b"z" * rng.randint(1, 300)])
            for _ in range(rng.randint(0, 60))]
    body = b"".join(r + b"\n" for r in rows)
    for data in (body + b"\\.\n\n\n", body + b"\\.\n", body):
        counter = BlockRows()
        pos = 0
        while pos < len(data):
            size = rng.choice([1, 2, 3, 5, 64, 5000])
            counter.feed(data[pos:pos + size])
            pos += size
        assert counter.finish() == len(rows), data[-40:]
    cut = BlockRows()
    cut.feed(body + b"partial row")
    assert cut.finish() is None


@pytest.mark.parametrize("seed", range(10))
def test_block_rows_count_right_when_row_lengths_change(seed: int) -> None:
    """Long rows (counted by deleting newlines) and short or empty rows (counted by bytes.count), in runs that
    switch between the two ways within and across pieces, as slices of 256 KiB and as odd sizes."""
    rng = random.Random(seed)
    rows: list[bytes] = []
    for _ in range(rng.randint(1, 12)):
        length = rng.choice([0, 1, 7, 63, 64, 65, 300, 5000])
        rows += [b"r" * length] * rng.randint(1, 3000)
    data = b"".join(r + b"\n" for r in rows) + b"\\.\n"
    for size in (256 << 10, rng.randint(1, 4096)):
        counter = BlockRows()
        for pos in range(0, len(data), size):
            counter.feed(data[pos:pos + size])
        assert counter.finish() == len(rows)
