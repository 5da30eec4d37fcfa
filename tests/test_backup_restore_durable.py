"""A `backup restore` killed (SIGKILL) right after any of its steps: `--list` shows it from another machine,
a second restore refuses naming it, and `--resume ID` or `--rollback ID` bring the deployment back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from backup_support import deployment_replicas
from clirun import ROOT, run_cli
from test_backup_restore import Setup, setup  # noqa: F401

from coderctl.ops.operation import KILL_AFTER_STEP


STEPS = ["check", "target", "confirm", "safety-backup", "scale-down", "restore", "row-counts", "scale-up"]


def killed_after(s: Setup, step: str) -> str:
    """Run a restore in a child process that dies right after `step`; the id of the record it left."""
    proc = subprocess.run([sys.executable, "-m", "coderctl", *s.lab.args("-o", "json"), "backup", "restore",
                           str(s.backup), "--yes", "--output-dir", str(s.out)], cwd=ROOT,
                          env={**os.environ, "NO_COLOR": "1", KILL_AFTER_STEP: step},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    s.lab.assert_no_secrets(proc.stdout, proc.stderr)
    return listed(s, step)


def listed(s: Setup, step: str) -> str:
    """`--list` from another machine (no local records) shows the unfinished restore at `step`."""
    r = run_cli(*s.lab.args("-o", "json"), "backup", "restore", "--list", env={"HOME": str(s.out / "elsewhere")})
    assert r.code == 0, r.output
    [op] = [o for o in json.loads(r.stdout)["result"]["operations"] if o["state"] in ("running", "interrupted")]
    assert op["step"] == step
    return str(op["id"])


def lease_free(s: Setup) -> bool:
    lease = s.lab.kube.get("Lease", "coder", "coderctl-operation") or {}
    return not (lease.get("spec") or {}).get("holderIdentity")


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_killed_then_resumed(setup: Setup, step: str) -> None:  # noqa: F811
    op = killed_after(setup, step)
    again, _ = setup.restore()
    assert again.code == 1 and f"--resume {op}" in again.stderr and f"--rollback {op}" in again.stderr
    r = run_cli(*setup.lab.args("-o", "json"), "backup", "restore", "--resume", op, "--yes",
                env={"HOME": str(setup.out / "elsewhere")})
    assert r.code == 0, r.output
    setup.lab.assert_no_secrets(r.stdout, r.stderr)
    assert setup.fingerprint() == setup.backed_up and deployment_replicas(setup.lab) == 1
    assert lease_free(setup)
    doc = json.loads(r.stdout)
    assert doc["result"]["status"] == "ok"


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_killed_then_rolled_back(setup: Setup, step: str) -> None:  # noqa: F811
    op = killed_after(setup, step)
    r = run_cli(*setup.lab.args("-o", "json"), "backup", "restore", "--rollback", op,
                env={"HOME": str(setup.out / "elsewhere")})
    assert r.code == 0, r.output
    setup.lab.assert_no_secrets(r.stdout, r.stderr)
    assert setup.fingerprint() == setup.changed and deployment_replicas(setup.lab) == 1
    assert lease_free(setup)
    after = run_cli(*setup.lab.args("-o", "json"), "backup", "restore", "--list")
    [entry] = [o for o in json.loads(after.stdout)["result"]["operations"] if o["id"] == op]
    assert entry["state"] in ("rolled-back", "failed")


def test_restore_flags_are_exclusive(setup: Setup) -> None:  # noqa: F811
    r = run_cli(*setup.lab.args(), "backup", "restore", str(setup.backup), "--list")
    assert r.code == 2 and "exactly one of" in r.stderr
    r = run_cli(*setup.lab.args(), "backup", "restore", "--resume", "restore-nope", "--yes")
    assert r.code == 1 and "no operation restore-nope" in r.stderr
