"""rotate-secrets under faults at every step: a second Infisical write that fails, an approval policy, a sync
that never comes, ALTER ROLE refused, new pods that crash, a rollout that times out. After each, one set of
credentials works everywhere (proven by logins), the Lease is free, and no secret value leaked."""

from __future__ import annotations

from typing import Any

import pytest

from rotate_support import RotLab, admin_sql, doc, rotlab  # noqa: F401

pytestmark = [pytest.mark.fake_only, pytest.mark.flaky(reruns=2)]  # exec handshakes can time out under load

BOTH = pytest.mark.parametrize("rotlab", [{}, {"auto_reload": False}], indirect=True,
                               ids=["auto-reload", "restart"])


def _failed_and_back(rotlab: RotLab, result: Any, before: dict[str, str], code: int = 1) -> dict[str, Any]:
    assert result.code == code, result.output
    out = doc(result)
    assert out["result"]["status"] == ("failed" if code == 1 else "needs-person")
    if code == 1:
        after = rotlab.values()
        assert after == before, "Infisical holds the previous values again"
        rotlab.assert_consistent()
    listed = doc(rotlab.cli("rotate-secrets", "--list"))["result"]["rotations"]
    assert listed[0]["state"] == ("rolled-back" if code == 1 else "failed")
    rotlab.assert_no_leaks()
    return out


def _fail_write(rotlab: RotLab, number: int, *, approval: bool = False) -> None:
    """The `number`-th secret write from now on fails (HTTP 500), or is held by a new approval policy."""
    fake = rotlab.infisical
    original = fake._policy_for
    seen = [0]

    def policy_for(env: str, path: str) -> Any:
        seen[0] += 1
        if seen[0] == number:
            if approval:
                fake.add_approval_policy("/")
            else:
                fake.fail_next_writes = 1
        return original(env, path)

    fake._policy_for = policy_for  # type: ignore[method-assign]


@BOTH
def test_second_infisical_write_fails(rotlab: RotLab) -> None:  # noqa: F811
    before = rotlab.values()
    _fail_write(rotlab, 2)
    out = _failed_and_back(rotlab, rotlab.rotate(), before)
    failed = [s for s in out["steps"] if s["status"] == "failed"]
    assert failed[0]["name"] == "write CODER_USER_PASSWORD" and "HTTP 500" in failed[0]["detail"]
    assert any(s["name"] == "undo write CODER_DATABASE_URL" and s["status"] == "ok" for s in out["steps"])


@BOTH
def test_approval_policy_on_the_first_write_changes_nothing(rotlab: RotLab) -> None:  # noqa: F811
    before = rotlab.values()
    rotlab.infisical.add_approval_policy("/")
    result = rotlab.rotate()
    out = _failed_and_back(rotlab, result, before)
    assert "requires approval for CODER_DATABASE_URL" in result.stderr
    assert "approval request" in out["result"]["error"]


def test_approval_policy_after_a_change_needs_a_person(rotlab: RotLab) -> None:  # noqa: F811
    before = rotlab.values()
    _fail_write(rotlab, 2, approval=True)
    result = rotlab.rotate()
    out = _failed_and_back(rotlab, result, before, code=3)
    assert "set CODER_DATABASE_URL back to the value of its version 1" in result.stderr
    assert f"--rollback {out['result']['operation']}" in result.stderr
    # the person does what it says: the reviewer rejects the request, the old value goes back by hand
    rotlab.infisical.approval_policies.clear()
    rotlab.infisical.approvals.clear()
    rollback = rotlab.cli("rotate-secrets", "--rollback", out["result"]["operation"])
    assert rollback.code == 0, rollback.output
    assert rotlab.values() == before
    rotlab.assert_consistent()
    rotlab.assert_no_leaks()


@pytest.mark.parametrize("rotlab", [{"sync_delay": 0.1}], indirect=True)
def test_sync_never_comes(rotlab: RotLab) -> None:  # noqa: F811
    before = rotlab.values()
    rotlab.operator.paused = True
    result = rotlab.cli("rotate-secrets", "--yes", "--sync-timeout", "1", "--rollout-timeout", "20")
    rotlab.operator.paused = False
    out = _failed_and_back(rotlab, result, before)
    assert "did not sync the new values" in out["result"]["error"]


@BOTH
def test_alter_role_fails(rotlab: RotLab) -> None:  # noqa: F811
    before = rotlab.values()
    admin_sql(rotlab.lab, "ALTER ROLE postgres IN DATABASE coder SET default_transaction_read_only = on")
    out = _failed_and_back(rotlab, rotlab.rotate(), before)
    failed = [s for s in out["steps"] if s["status"] == "failed"]
    assert failed[0]["name"] == "alter role user" and "read-only transaction" in failed[0]["detail"]


def _one_sync(rotlab: RotLab, writes: int = 2) -> None:
    """The operator syncs the rotation's writes in one pass (as with its 60 s resync interval), so Coder is
    restarted once: a scripted failure hits the rotation's own new pod."""
    fake, operator = rotlab.infisical, rotlab.operator
    original = fake._policy_for
    seen = [0]

    def policy_for(env: str, path: str) -> Any:
        seen[0] += 1
        if seen[0] == 1:
            operator.paused = True
        if seen[0] == writes:
            operator.paused = False
        return original(env, path)

    fake._policy_for = policy_for  # type: ignore[method-assign]


@BOTH
def test_new_pods_crash(rotlab: RotLab) -> None:  # noqa: F811
    before = rotlab.values()
    _one_sync(rotlab)
    rotlab.runtime.crash_next(prefix="coder-", log="panic: on purpose")
    out = _failed_and_back(rotlab, rotlab.rotate(), before)
    failed = [s for s in out["steps"] if s["status"] == "failed"]
    assert failed[0]["name"] == "restart coder" and "cannot start" in failed[0]["detail"]


@BOTH
def test_rollout_times_out(rotlab: RotLab) -> None:  # noqa: F811
    before = rotlab.values()
    _one_sync(rotlab)
    rotlab.runtime.never_ready(prefix="coder-")
    result = rotlab.cli("rotate-secrets", "--yes", "--sync-timeout", "10", "--rollout-timeout", "1.5")
    out = _failed_and_back(rotlab, result, before)
    failed = [s for s in out["steps"] if s["status"] == "failed"]
    assert failed[0]["name"] == "restart coder" and "deadline" in failed[0]["detail"]
