"""rotate-secrets killed (SIGKILL) between any two steps, and right after a step took effect but before its
record said so; then `--resume ID` or `--rollback ID` from another process. After each, one consistent set of
credentials works everywhere and nothing holds the Lease."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from rotate_support import RotLab, doc, rotlab  # noqa: F401

pytestmark = [pytest.mark.fake_only, pytest.mark.flaky(reruns=2)]  # exec handshakes can time out under load

USER_STEPS = ["alter role user", "write CODER_DATABASE_URL", "write CODER_USER_PASSWORD", "wait for sync",
              "restart coder", "verify"]
RESTART_STEPS = ["write CODER_DATABASE_URL", "write CODER_USER_PASSWORD", "wait for sync", "alter role user",
                 "restart coder", "verify"]

KILLER = """
import json, os, signal, sys
from dataclasses import replace

import coderctl.ops.rotate as rotate
from coderctl.cli import main

args, step, when = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
build = rotate.actions


def killing(state, *more):
    out = []
    for action in build(state, *more):
        if action.name == step:
            original = action.do

            def do(run, original=original):
                if when == "before":
                    os.kill(os.getpid(), signal.SIGKILL)
                detail = original(run)
                os.kill(os.getpid(), signal.SIGKILL)
                return detail

            action = replace(action, do=do)
        out.append(action)
    return out


rotate.actions = killing
main(args)
"""
"""A rotation in a child process, killed before `step` starts or right after it took effect. A real
process, not a fork: a fork of this multi-threaded process may inherit a lock some lab thread held."""


def _killed(rotlab: RotLab, step: str, when: str, *more: str) -> str:
    args = [*rotlab.lab.args("-o", "json", timeout=10), "rotate-secrets", "--yes", "--sync-timeout", "10",
            "--rollout-timeout", "20", *more]
    path = os.pathsep.join([os.environ["PYTHONPATH"], *sys.path])
    env = {**os.environ, **rotlab.env, "PYTHONPATH": path, "PYTHONFAULTHANDLER": "1"}
    child = subprocess.Popen([sys.executable, "-c", KILLER, json.dumps(args), step, when], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
        stdout, stderr = child.communicate(timeout=10)
    rotlab.outputs += [stdout, stderr]
    assert child.returncode == -signal.SIGKILL, stderr
    listed = doc(rotlab.cli("rotate-secrets", "--list"))["result"]["rotations"]
    assert len(listed) == 1 and listed[0]["state"] == "interrupted", listed
    blocked = rotlab.rotate()
    assert blocked.code == 1 and f"--resume {listed[0]['id']}" in blocked.stderr
    return str(listed[0]["id"])


def _check(rotlab: RotLab, result: Any, before: dict[str, str], *, rotated: bool, admin: bool = False) -> None:
    assert result.code == 0, result.output
    after = rotlab.values()
    rotlab.assert_consistent()
    assert (after["CODER_USER_PASSWORD"] != before["CODER_USER_PASSWORD"]) == rotated
    if admin:
        assert (after["CODER_POSTGRES_ADMIN_PASSWORD"] != before["CODER_POSTGRES_ADMIN_PASSWORD"]) == rotated
    listed = doc(rotlab.cli("rotate-secrets", "--list"))["result"]["rotations"]
    assert listed[0]["state"] == ("done" if rotated else "rolled-back")
    rotlab.assert_no_leaks()


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", USER_STEPS)
@pytest.mark.parametrize(("action", "rotated"), [("--resume", True), ("--rollback", False)],
                         ids=["resumed", "rolled-back"])
def test_killed_then(rotlab: RotLab, step: str, when: str, action: str, rotated: bool) -> None:  # noqa: F811
    """Killed just before or after each step; another process finishes the rotation or undoes it."""
    before = rotlab.values()
    op = _killed(rotlab, step, when)
    _check(rotlab, rotlab.cli("rotate-secrets", action, op), before, rotated=rotated)


@pytest.mark.parametrize("rotlab", [{"auto_reload": False}], indirect=True)
@pytest.mark.parametrize("action", ["--resume", "--rollback"])
@pytest.mark.parametrize("step", RESTART_STEPS)
def test_killed_without_auto_reload(rotlab: RotLab, step: str, action: str) -> None:  # noqa: F811
    before = rotlab.values()
    op = _killed(rotlab, step, "after")
    _check(rotlab, rotlab.cli("rotate-secrets", action, op), before, rotated=action == "--resume")


@pytest.mark.parametrize("action", ["--resume", "--rollback"])
@pytest.mark.parametrize("step", ["write CODER_POSTGRES_ADMIN_PASSWORD", "alter role admin"])
def test_killed_in_an_all_rotation(rotlab: RotLab, step: str, action: str) -> None:  # noqa: F811
    before = rotlab.values()
    op = _killed(rotlab, step, "after", "--target", "all")
    _check(rotlab, rotlab.cli("rotate-secrets", action, op), before, rotated=action == "--resume", admin=True)


@pytest.mark.parametrize("action", ["--resume", "--rollback"])
@pytest.mark.parametrize("step", ["set up login roles", "alter role next", "write CODER_DATABASE_URL",
                                  "restart coder", "retire previous role"])
def test_killed_in_an_alternate_rotation(rotlab: RotLab, step: str, action: str) -> None:  # noqa: F811
    before = rotlab.values()
    op = _killed(rotlab, step, "after", "--strategy", "alternate")
    _check(rotlab, rotlab.cli("rotate-secrets", action, op), before, rotated=action == "--resume")
    assert rotlab.login_roles() == (set() if action == "--rollback" else {"coder_a", "coder_b"})
