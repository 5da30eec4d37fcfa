"""backup restore into the deployment's database: a round trip, and a failure injected at each step. Coder's
replicas are always put back (exit 1), or coderctl exits 3 with the exact commands when it cannot."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from backup_support import (
    copy_of_coder,
    create,
    deployment_replicas,
    exec_argv_text,
    pod_path_first,
    use_database,
    wrapper,
)
from clirun import ROOT, Result, run_cli
from lab.deployment import Lab

pytestmark = pytest.mark.flaky(reruns=2)  # in-process exec: a stream can fail to open under load (tests/conftest.py)

LISTING = 'case "$1" in -l) exec "$REAL_BIN/pg_restore" "$@";; esac\n'
"""Wrappers that inject a failure into the restore let the pod's `pg_restore -l` (asked before anything changes,
restore.Restore._pods_pg_restore) through to the real one."""
CHANGE = ("DELETE FROM workspace_agent_logs; "
          "INSERT INTO licenses (uploaded_at, jwt, exp, uuid) VALUES (now(), 'later', now(), gen_random_uuid())")
EXTRA_ROW = ('"$REAL_BIN/psql" -X -q -w -U coder -d "$DB" -c "INSERT INTO licenses (uploaded_at, jwt, exp, uuid) '
             "VALUES (now(), 'stray', now(), gen_random_uuid())\"")


@dataclass
class Setup:
    lab: Lab
    db: str
    backup: Path
    backed_up: dict[str, tuple[int, str]]
    changed: dict[str, tuple[int, str]]
    out: Path

    def fingerprint(self) -> dict[str, tuple[int, str]]:
        return self.lab.postgres.table_fingerprint(self.db)

    def restore(self, *more: str, yes: bool = True, env: dict[str, str] | None = None) -> tuple[Result, dict[str, Any]]:
        r = run_cli(*self.lab.args("-o", "json"), "backup", "restore", str(self.backup), "--output-dir",
                    str(self.out), *(["--yes"] if yes else []), *more, env=env)
        self.lab.assert_no_secrets(r.stdout, r.stderr, exec_argv_text(self.lab))
        assert "Traceback" not in r.output
        return r, json.loads(r.stdout) if r.stdout.strip() else {}


@pytest.fixture
def setup(lab: Lab, tmp_path: Path) -> Iterator[Setup]:
    """A database of its own with the seed content, backed up, then changed."""
    with copy_of_coder(lab) as db:
        use_database(lab, db)
        r, doc = create(lab, tmp_path / "backups")
        assert r.code == 0, r.stderr
        backed_up = lab.postgres.table_fingerprint(db)
        with lab.postgres.connect(database=db) as conn:
            conn.execute(CHANGE)
        changed = lab.postgres.table_fingerprint(db)
        assert changed != backed_up
        yield Setup(lab, db, Path(doc["result"]["file"]), backed_up, changed, tmp_path / "safety")


def steps(doc: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["status"] for s in doc.get("steps", [])}


def test_restore_round_trip_via_exec(setup: Setup) -> None:
    r, doc = setup.restore()
    assert r.code == 0, r.stderr
    assert list(steps(doc)) == ["check", "target", "confirm", "safety-backup", "scale-down", "restore",
                                "row-counts", "scale-up"]
    assert set(steps(doc).values()) == {"ok"}
    assert "the pod's pg_restore reads it" in next(s["detail"] for s in doc["steps"] if s["name"] == "target")
    assert setup.fingerprint() == setup.backed_up
    assert deployment_replicas(setup.lab) == 1
    safety = Path(doc["result"]["safety_backup"])
    assert safety.parent == setup.out and "-pre-restore" in safety.name and safety.exists()
    # the safety backup holds the state before the restore
    restored_back = run_cli(*setup.lab.args(), "backup", "restore", str(safety), "--yes", "--no-safety-backup")
    assert restored_back.code == 0, restored_back.output
    assert setup.fingerprint() == setup.changed


def test_restore_round_trip_via_direct_and_plain(setup: Setup, tmp_path: Path) -> None:
    lab = setup.lab
    r, doc = setup.restore("--via", "direct", "--database-url", lab.postgres.url(database=setup.db))
    assert r.code == 0, r.stderr
    assert " reads it" in next(s["detail"] for s in doc["steps"] if s["name"] == "check")
    assert setup.fingerprint() == setup.backed_up
    r, plain = create(lab, tmp_path / "plain", "--format", "plain")
    with lab.postgres.connect(database=setup.db) as conn:
        conn.execute(CHANGE)
    setup.backup = Path(plain["result"]["file"])
    r, doc = setup.restore("--no-safety-backup")
    assert r.code == 0, r.stderr
    assert setup.fingerprint() == setup.backed_up


def test_confirmation_is_required_without_a_terminal(setup: Setup) -> None:
    r, doc = setup.restore(yes=False)
    assert r.code == 2 and "--yes" in r.stderr
    assert setup.fingerprint() == setup.changed and deployment_replicas(setup.lab) == 1
    assert "safety-backup" not in steps(doc)


def test_damaged_file_changes_nothing(setup: Setup) -> None:
    data = setup.backup.read_bytes()
    setup.backup.write_bytes(data[:-100])
    r, doc = setup.restore()
    assert r.code == 1 and steps(doc) == {"check": "failed"}
    assert setup.fingerprint() == setup.changed and deployment_replicas(setup.lab) == 1


def test_failed_safety_backup_changes_nothing(setup: Setup) -> None:
    setup.lab.kube.exec_fault = {"drop_after_bytes": 1000}
    r, doc = setup.restore()
    assert r.code == 1 and "safety backup failed, nothing was changed" in r.stderr
    assert steps(doc)["safety-backup"] == "failed" and "scale-down" not in steps(doc)
    assert setup.fingerprint() == setup.changed and deployment_replicas(setup.lab) == 1


def test_scale_down_forbidden_changes_nothing(setup: Setup) -> None:
    setup.lab.kube.forbid("patch", "deployments", "coder")
    r, doc = setup.restore()
    assert r.code == 1, r.stderr
    assert steps(doc)["scale-down"] == "failed" and "scale-up" not in steps(doc)
    assert setup.fingerprint() == setup.changed and deployment_replicas(setup.lab) == 1


def test_failed_restore_rolls_back_and_scales_back(setup: Setup, tmp_path: Path) -> None:
    failing = LISTING + 'cat >/dev/null; echo "pg_restore: error: injected" >&2; exit 1'
    pod_path_first(setup.lab, wrapper(tmp_path / "bin", "pg_restore", failing).parent)
    r, doc = setup.restore()
    assert r.code == 1 and "injected" in r.stderr
    s = steps(doc)
    assert s["restore"] == "failed" and s["check-unchanged"] == "ok" and s["scale-up"] == "ok"
    assert setup.fingerprint() == setup.changed and deployment_replicas(setup.lab) == 1


def _misbehaving_pg_restore(tmp_path: Path, later: str) -> Path:
    """The first run restores and then adds a stray row (row counts go wrong); later runs do `later`."""
    flag = tmp_path / "ran-once"
    body = (f'{LISTING}for a; do case "$prev" in -d) DB=$a;; esac; prev=$a; done\n'
            f'if [ ! -e "{flag}" ]; then touch "{flag}"; "$REAL_BIN/pg_restore" "$@" || exit $?; {EXTRA_ROW}; '
            f'exit 0; fi\n{later}')
    return wrapper(tmp_path / "bin", "pg_restore", body).parent


def test_wrong_row_counts_restore_the_safety_backup(setup: Setup, tmp_path: Path) -> None:
    pod_path_first(setup.lab, _misbehaving_pg_restore(tmp_path, 'exec "$REAL_BIN/pg_restore" "$@"'))
    r, doc = setup.restore()
    assert r.code == 1 and "row counts differ" in r.stderr, r.stderr
    s = steps(doc)
    assert s["row-counts"] == "failed" and s["check-unchanged"] == "warn"
    assert s["restore-safety-backup"] == "ok" and s["scale-up"] == "ok"
    assert setup.fingerprint() == setup.changed and deployment_replicas(setup.lab) == 1


def test_needs_a_person_when_the_safety_backup_cannot_be_restored(setup: Setup, tmp_path: Path) -> None:
    pod_path_first(setup.lab, _misbehaving_pg_restore(tmp_path, 'cat >/dev/null; exit 1'))
    r, doc = setup.restore()
    assert r.code == 3, r.stderr
    safety = doc["result"]["safety_backup"]
    assert doc["result"]["status"] == "needs-person"
    assert f"coderctl -n coder backup restore {safety} --yes --no-safety-backup --via exec" in r.stderr
    assert steps(doc)["restore-safety-backup"] == "failed"
    assert deployment_replicas(setup.lab) == 1


def test_needs_a_person_when_coder_cannot_be_scaled_back(setup: Setup, tmp_path: Path) -> None:
    lab = setup.lab
    pod_path_first(lab, wrapper(tmp_path / "bin", "pg_restore", 'sleep 0.5; exec "$REAL_BIN/pg_restore" "$@"').parent)
    stop = threading.Event()

    def forbid_once_scaled_down() -> None:
        while not stop.is_set():
            if deployment_replicas(lab) == 0:
                lab.kube.forbid("patch", "deployments", "coder")
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=forbid_once_scaled_down, daemon=True)
    watcher.start()
    try:
        r, doc = setup.restore()
    finally:
        stop.set()
        watcher.join()
    assert r.code == 3, r.stderr
    assert "kubectl -n coder scale deployment/coder --replicas=1" in r.stderr
    assert steps(doc)["restore"] == "ok" and steps(doc)["scale-up"] == "failed"
    assert setup.fingerprint() == setup.backed_up and deployment_replicas(lab) == 0


def test_interrupted_restore_is_put_back(setup: Setup, tmp_path: Path) -> None:
    lab = setup.lab
    once = tmp_path / "slept"  # only the interrupted restore sleeps; a safety restore, if one runs, does not
    slow = f'{LISTING}mkdir {once} 2>/dev/null && sleep 60; exec "$REAL_BIN/pg_restore" "$@"'
    pod_path_first(lab, wrapper(tmp_path / "bin", "pg_restore", slow).parent)
    proc = subprocess.Popen([sys.executable, "-m", "coderctl", *lab.args("-o", "json"), "backup", "restore",
                             str(setup.backup), "--yes", "--output-dir", str(setup.out)], cwd=ROOT,
                            env={**os.environ, "NO_COLOR": "1", "PYTHONFAULTHANDLER": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not any("head -c" in e["command"][2] for e in lab.kube.exec_log):  # the restore's exec
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack on stderr
            raise AssertionError("no exit 30 s after SIGTERM:\n" + proc.communicate(timeout=10)[1]) from None
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stderr
    assert "interrupted by SIGTERM" in stderr
    doc = json.loads(stdout)
    assert steps(doc)["restore"] == "interrupted" and steps(doc)["scale-up"] == "ok"
    assert setup.fingerprint() == setup.changed and deployment_replicas(lab) == 1


def test_unexpected_error_still_scales_coder_back(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    from coderctl.ops import restore as restore_module

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(restore_module, "_restore_into", broken)
    r, doc = setup.restore()
    assert r.code == 1 and "internal error: RuntimeError: a bug" in r.stderr
    assert steps(doc)["restore"] == "failed" and steps(doc)["scale-up"] == "ok"
    assert deployment_replicas(setup.lab) == 1 and setup.fingerprint() == setup.changed


def test_restore_over_the_v4_exec_protocol(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """v4 cannot half-close stdin: the pod side stops reading after the file's size (`head -c`)."""
    from coderctl.clients import kube_exec

    monkeypatch.setattr(kube_exec, "PROTOCOLS", ("v4.channel.k8s.io",))
    r, doc = setup.restore()
    assert r.code == 0, r.stderr
    assert setup.fingerprint() == setup.backed_up and deployment_replicas(setup.lab) == 1
