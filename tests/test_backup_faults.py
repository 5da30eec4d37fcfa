"""Backups that go wrong: pg_dump failing midway, the exec stream dropped, the process interrupted. Each
leaves no file under the final name and exits non-zero; damaged files fail `backup verify`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from backup_support import create, direct, files, pod_path_first, wrapper
from clirun import ROOT, run_cli
from lab.deployment import Lab


FAIL_MIDWAY = '"$REAL_BIN/pg_dump" "$@" | head -c 20000\nexit 1'


def test_pg_dump_failing_midway_in_the_pod(lab: Lab, tmp_path: Path) -> None:
    pod_path_first(lab, wrapper(tmp_path / "bin", "pg_dump", FAIL_MIDWAY).parent)
    r, doc = create(lab, tmp_path / "b")
    assert r.code == 1
    assert "pg_dump in coder/coder-coder-postgresql-0 failed (exit 1)" in r.stderr
    assert doc["result"]["status"] == "failed"
    assert next(s for s in doc["steps"] if s["name"] == "dump")["status"] == "failed"
    assert files(tmp_path / "b") == []


def test_pg_dump_failing_midway_locally(lab: Lab, tmp_path: Path) -> None:
    real = lab.postgres.bindir / "pg_dump"
    bindir = wrapper(tmp_path / "bin", "pg_dump",
                     f'case "$1" in --version) exec "{real}" --version;; esac\n'
                     + FAIL_MIDWAY.replace("$REAL_BIN/pg_dump", str(real))).parent
    env = {"PATH": f"{bindir}:{os.environ['PATH']}"}
    r = run_cli(*lab.args("-o", "json"), "backup", "create", "--output-dir", str(tmp_path / "c"), *direct(lab),
                env=env)
    lab.assert_no_secrets(r.stdout, r.stderr)
    assert r.code == 1 and "pg_dump failed (exit 1)" in r.stderr, r.output
    assert files(tmp_path / "c") == []


@pytest.mark.parametrize("after", [0, 100, 20000])
def test_exec_stream_dropped(lab: Lab, tmp_path: Path, after: int) -> None:
    lab.kube.exec_fault = {"drop_after_bytes": after}
    r, _ = create(lab, tmp_path / "b")
    assert r.code == 1
    assert "without an exit status" in r.stderr and "incomplete" in r.stderr
    assert files(tmp_path / "b") == []
    assert lab.kube.exec_log[-1]["dropped_after_bytes"] == after


def test_verification_failure_keeps_nothing(lab: Lab, tmp_path: Path) -> None:
    """pg_dump exits 0 but its archive is cut short (what kubectl exec can do): the read-back catches it."""
    pod_path_first(lab, wrapper(tmp_path / "bin", "pg_dump", '"$REAL_BIN/pg_dump" "$@" | head -c 20000').parent)
    r, doc = create(lab, tmp_path / "b")
    assert r.code == 1 and "read back" in r.stderr, r.stderr
    assert next(s for s in doc["steps"] if s["name"] == "verify")["status"] == "failed"
    assert files(tmp_path / "b") == []


def _pg_dumps(bindir: Path) -> list[psutil.Process]:
    """This test's pg_dump processes: those whose PATH leads through its wrapper (other xdist workers run
    pg_dumps of their own at the same time)."""
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            named = p.info["name"] == "pg_dump" or any("pg_dump" in part for part in (p.info["cmdline"] or [])[:1])
            if named and str(bindir) in p.environ().get("PATH", ""):
                found.append(p)
        except psutil.Error:
            pass
    return found


@pytest.mark.parametrize(("via", "signum"), [("exec", signal.SIGINT), ("exec", signal.SIGTERM),
                                              ("direct", signal.SIGTERM)])
def test_interrupted_backup_cleans_up(lab: Lab, tmp_path: Path, via: str, signum: int) -> None:
    """A pg_dump that has written everything but never exits; coderctl is interrupted meanwhile."""
    real = lab.postgres.bindir / "pg_dump"
    # the version and the compression probe (`auto`, pod.DUMP) are answered at once
    script = f'case "$*" in --version|*coderctl-probe*) exec "{real}" "$@";; esac\n"{real}" "$@"\nsleep 60'
    bindir = wrapper(tmp_path / "bin", "pg_dump", script).parent
    out = tmp_path / "b"
    env = {**os.environ, "NO_COLOR": "1"}
    if via == "exec":
        pod_path_first(lab, bindir)
        more: list[str] = []
    else:
        env["PATH"] = f"{bindir}:{env['PATH']}"
        more = direct(lab)
    before = {p.pid for p in _pg_dumps(bindir)}
    proc = subprocess.Popen([sys.executable, "-m", "coderctl", *lab.args(), "backup", "create", "--output-dir",
                             str(out), *more], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        while not any(p.name.endswith(".partial") and p.stat().st_size > 1000 for p in _safe_iter(out)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the dump never started"
            time.sleep(0.05)
        time.sleep(0.3)
        assert {p.pid for p in _pg_dumps(bindir)} - before, "this test's pg_dump is not seen"
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, (stdout, stderr)
    assert f"interrupted by {signal.Signals(signum).name}" in stderr
    assert "Traceback" not in stderr
    assert files(out) == []
    deadline = time.monotonic() + 10
    while {p.pid for p in _pg_dumps(bindir)} - before and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p.info["cmdline"] for p in _pg_dumps(bindir) if p.pid not in before]
    assert left == [], f"pg_dump still running: {left}"
    lab.assert_no_secrets(stdout, stderr)


def _safe_iter(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except FileNotFoundError:
        return []


@pytest.fixture
def good_backup(lab: Lab, tmp_path: Path) -> Path:
    r, doc = create(lab, tmp_path / "good")
    assert r.code == 0
    return Path(doc["result"]["file"])


def verify(lab: Lab, path: Path) -> tuple[int, dict[str, object], str]:
    r = run_cli(*lab.args("-o", "json"), "backup", "verify", str(path))
    assert "Traceback" not in r.output
    return r.code, json.loads(r.stdout), r.stderr


def _step(doc: dict[str, object], name: str) -> dict[str, str]:
    return next(s for s in doc["steps"] if s["name"] == name)  # type: ignore[attr-defined, index]


def test_verify_good(lab: Lab, good_backup: Path) -> None:
    code, doc, _ = verify(lab, good_backup)
    assert code == 0 and doc["result"]["status"] == "ok"  # type: ignore[index]
    assert run_cli(*lab.args(), "backup", "verify", str(good_backup) + ".json").code == 0


def test_verify_truncated(lab: Lab, good_backup: Path) -> None:
    data = good_backup.read_bytes()
    good_backup.write_bytes(data[: len(data) // 2])
    code, doc, stderr = verify(lab, good_backup)
    assert code == 1 and "truncated" in stderr
    assert _step(doc, "checksum")["status"] == "failed"


def test_verify_altered(lab: Lab, good_backup: Path) -> None:
    data = bytearray(good_backup.read_bytes())
    data[len(data) // 2] ^= 0xFF
    good_backup.write_bytes(bytes(data))
    code, _, stderr = verify(lab, good_backup)
    assert code == 1 and "SHA-256 differs" in stderr


def test_verify_truncated_with_a_matching_manifest(lab: Lab, good_backup: Path) -> None:
    """Someone 'fixed' the manifest: the full read still fails (pg_restore -l alone would pass)."""
    import hashlib

    data = good_backup.read_bytes()[:-3000]
    good_backup.write_bytes(data)
    manifest = good_backup.with_name(good_backup.name + ".json")
    doc = json.loads(manifest.read_text())
    doc.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    manifest.write_text(json.dumps(doc))
    listed = subprocess.run([str(Path(sys.executable).parent / "coderctl"), "backup", "list",
                             str(good_backup.parent)], capture_output=True, text=True)
    assert listed.stdout.split()[-1] == "ok"  # the checksum matches; only reading it back shows the damage
    code, doc2, stderr = verify(lab, good_backup)
    assert code == 1 and "does not read back" in stderr
    assert _step(doc2, "checksum")["status"] == "ok" and _step(doc2, "read-back")["status"] == "failed"


def test_verify_without_manifest(lab: Lab, good_backup: Path) -> None:
    good_backup.with_name(good_backup.name + ".json").unlink()
    code, _, stderr = verify(lab, good_backup)
    assert code == 1 and "missing" in stderr
    r = run_cli("backup", "list", str(good_backup.parent))
    assert r.code == 1 and "no-manifest" in r.stdout


def test_verify_missing_file_is_a_usage_error(lab: Lab, tmp_path: Path) -> None:
    r = run_cli("backup", "verify", str(tmp_path / "nope.dump"))
    assert r.code == 2 and "no such backup file" in r.stderr
