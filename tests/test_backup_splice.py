"""A local dump (`--via direct`): moved into its file by the kernel (splice), the copy it falls back to where the
kernel cannot splice, a write that fails on the way, a given URL that never contacts the cluster, and the
choice of the local pg_dump (started before the server's version is known when there is only one)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest
from backup_support import create, direct, files
from lab.deployment import Lab

from coderctl.ops import pgtools
from coderctl.ops.files import PartialFile


def _manifest(doc: dict[str, object]) -> dict[str, object]:
    result = doc["result"]
    assert isinstance(result, dict)
    return dict(json.loads(Path(str(result["manifest"])).read_text()))


def _intact(doc: dict[str, object]) -> None:
    result = doc["result"]
    assert isinstance(result, dict)
    dump = Path(str(result["file"]))
    manifest = _manifest(doc)
    assert result["verified"] is True and manifest["size"] == dump.stat().st_size
    assert manifest["sha256"] == result["sha256"] == hashlib.sha256(dump.read_bytes()).hexdigest()
    assert result["rows"] and result["tables"]


def test_a_verified_local_dump_is_spliced_and_its_hash_is_the_files(lab: Lab, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    moved: list[int] = []
    real = os.splice

    def counting(*args: int) -> int:
        n = real(*args)
        moved.append(n)
        return n

    monkeypatch.setattr(os, "splice", counting)
    r, doc = create(lab, tmp_path / "b", *direct(lab))
    assert r.code == 0, r.output
    _intact(doc)
    assert moved and sum(moved) == doc["result"]["size"]


def test_without_verification_the_dump_is_copied_and_hashed_on_the_way(lab: Lab, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    moved: list[int] = []
    monkeypatch.setattr(os, "splice", lambda *args: moved.append(1) or 0)
    r, doc = create(lab, tmp_path / "b", *direct(lab), "--no-verify")
    assert r.code == 0, r.output
    dump = Path(doc["result"]["file"])
    assert doc["result"]["sha256"] == hashlib.sha256(dump.read_bytes()).hexdigest() and not moved


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP])
def test_where_the_kernel_cannot_splice_the_dump_is_copied(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           code: int) -> None:
    def refuse(*args: int) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "splice", refuse)
    r, doc = create(lab, tmp_path / "b", *direct(lab))
    assert r.code == 0, r.output
    _intact(doc)


@pytest.mark.parametrize("verify", [True, False], ids=["spliced", "copied"])
def test_a_full_disk_is_one_line_and_leaves_nothing(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    verify: bool) -> None:
    """The disk fills on the way (after the first splice; at the first copied write): exit 1, one line naming
    the cause, no file left behind."""
    real_splice = os.splice
    calls: list[int] = []

    def splice(*args: int) -> int:
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_splice(*args)

    def write(self: PartialFile, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "splice", splice)
    monkeypatch.setattr(PartialFile, "write", write)
    out = tmp_path / "b"
    r, doc = create(lab, out, *direct(lab), *([] if verify else ["--no-verify"]))
    assert r.code == 1, r.output
    errors = [line for line in r.stderr.splitlines() if "warning" not in line]
    assert errors == ["coderctl: error: writing the dump: No space left on device"]
    assert doc["result"]["status"] == "failed" and files(out) == []
    assert len(calls) == (2 if verify else 0)


def test_a_local_dump_of_a_given_url_never_contacts_the_cluster(lab: Lab, tmp_path: Path) -> None:
    before = len(lab.kube.request_log)
    r, doc = create(lab, tmp_path / "b", *direct(lab))
    assert r.code == 0, r.output
    assert lab.kube.request_log[before:] == []
    assert _manifest(doc)["coder_version"] is None


def test_a_local_dump_of_the_clusters_url_records_coders_version(lab: Lab, tmp_path: Path) -> None:
    r, doc = create(lab, tmp_path / "b", "--via", "direct", "--db-address", f"127.0.0.1:{lab.postgres.port}")
    assert r.code == 0, r.output
    assert _manifest(doc)["coder_version"] == "v2.25.0"


OLD_PG_DUMP = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) 14.11"; exit 0; fi
echo "pg_dump: error: aborting because of server version mismatch" >&2
exit 1
"""


def _tools(directory: Path, monkeypatch: pytest.MonkeyPatch, **scripts: str) -> None:
    """Only these pg_dumps are found: DIRECTORY/NAME/pg_dump for each NAME."""
    for name, text in scripts.items():
        (directory / name).mkdir(parents=True)
        tool = directory / name / "pg_dump"
        tool.write_text(text)
        tool.chmod(0o755)
    monkeypatch.setattr(pgtools, "SEARCH_DIRS", (str(directory / "*"),))
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                               if not (Path(p) / "pg_dump").exists() or "pg_wrapper" in
                                               os.path.realpath(Path(p) / "pg_dump")))


def test_the_only_local_pg_dump_older_than_the_server_is_named(lab: Lab, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """pg_dump starts before the server has said its version; when it fails, the server's answer names the
    cause, as when it is asked first."""
    _tools(tmp_path / "tools", monkeypatch, old=OLD_PG_DUMP)
    out = tmp_path / "b"
    r, doc = create(lab, out, *direct(lab))
    assert r.code == 1, r.output
    major = lab.postgres.version.split(".")[0]
    assert (f"the local pg_dump is version 14.11, older than PostgreSQL {major} (the server runs PostgreSQL "
            f"{lab.postgres.version.split()[0]}" in r.stderr), r.stderr
    assert f"install postgresql-client-{major} or newer" in r.stderr
    assert doc["result"]["status"] == "failed" and files(out) == []


def test_among_several_local_pg_dumps_the_servers_major_is_chosen(lab: Lab, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = lab.postgres.bindir / "pg_dump"
    _tools(tmp_path / "tools", monkeypatch, old=OLD_PG_DUMP, same=f'#!/bin/sh\nexec "{real}" "$@"\n')
    r, doc = create(lab, tmp_path / "b", *direct(lab))
    assert r.code == 0, r.output
    prepare = next(s for s in doc["steps"] if s["name"] == "prepare")
    assert str(tmp_path / "tools" / "same" / "pg_dump") in prepare["detail"]
    assert str(_manifest(doc)["server_version"]).startswith(lab.postgres.version.split()[0])


def test_the_server_version_is_recorded_without_the_read_back(lab: Lab, tmp_path: Path) -> None:
    r, doc = create(lab, tmp_path / "b", *direct(lab), "--no-verify")
    assert r.code == 0, r.output
    assert str(_manifest(doc)["server_version"]).startswith(lab.postgres.version.split()[0])


def test_a_failing_fsync_is_one_line_and_leaves_nothing(lab: Lab, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk refuses the data at the fsync (EIO), which runs beside the read-back's end."""
    def sync(self: PartialFile) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(PartialFile, "sync", sync)
    out = tmp_path / "b"
    r, doc = create(lab, out, *direct(lab))
    assert r.code == 1, r.output
    errors = [line for line in r.stderr.splitlines() if "warning" not in line]
    assert errors == ["coderctl: error: writing the dump to disk: Input/output error"]
    assert doc["result"]["status"] == "failed" and files(out) == []
