"""A local dump moved into its file by the kernel (splice), the copy it falls back to where the kernel cannot
splice, a write that fails on the way, and a local dump of a given URL that never contacts the cluster."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest
from backup_support import create, direct, files
from lab.deployment import Lab

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
