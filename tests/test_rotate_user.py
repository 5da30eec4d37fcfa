"""rotate-secrets, strategy restart, end to end against the lab: the plan, the preflight, and full rotations
of the app role, the admin role and both, with and without the operator's auto-reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.infisical_operator import AUTO_RELOAD_ANNOTATION
from rotate_support import NS, RotLab, coder_pods, doc, rotlab  # noqa: F401

pytestmark = [pytest.mark.fake_only, pytest.mark.flaky(reruns=2)]  # exec handshakes can time out under load

NO_AUTO_RELOAD = [{"auto_reload": False}]


def test_dry_run_prints_the_plan_and_changes_nothing(rotlab: RotLab) -> None:  # noqa: F811
    before = rotlab.values()
    result = rotlab.cli("rotate-secrets", "--dry-run", json_out=False)
    assert result.code == 0, result.output
    for name in ("preflight", "alter role user", "write CODER_DATABASE_URL", "write CODER_USER_PASSWORD",
                 "wait for sync", "restart coder", "verify", "Secret coder-database-secrets", "ALTER ROLE coder",
                 "deployment coder", "Infisical prod:/"):
        assert name in result.stdout
    assert "nothing changed" in result.stdout
    as_json = rotlab.cli("rotate-secrets", "--dry-run", "--target", "all")
    assert as_json.code == 0
    plan = [p["step"] for p in doc(as_json)["result"]["plan"]]
    assert plan == ["preflight", "alter role user", "write CODER_DATABASE_URL", "write CODER_USER_PASSWORD",
                    "write CODER_POSTGRES_ADMIN_PASSWORD", "wait for sync", "alter role admin", "restart coder",
                    "verify"]
    assert rotlab.values() == before
    assert rotlab.cli("rotate-secrets", "--list").stdout.count('"id"') == 0
    rotlab.assert_consistent()
    rotlab.assert_no_leaks()


def test_without_a_terminal_it_asks_for_yes(rotlab: RotLab) -> None:  # noqa: F811
    result = rotlab.cli("rotate-secrets", json_out=False)
    assert result.code == 2
    assert "--yes" in result.stderr


def test_preflight_refuses_when_the_secret_lags_behind_infisical(rotlab: RotLab) -> None:  # noqa: F811
    rotlab.operator.paused = True
    rotlab.infisical.set_secret("CODER_POSTGRES_ADMIN_PASSWORD", "changed-by-hand-in-the-ui")
    result = rotlab.cli("rotate-secrets", "--yes", json_out=False)
    assert result.code == 1
    assert "postgres-admin-password differs from CODER_POSTGRES_ADMIN_PASSWORD" in result.stderr
    assert "nothing was changed" in result.stderr
    assert rotlab.cli("rotate-secrets", "--list").stdout.count('"id"') == 0


def test_preflight_refuses_while_another_operation_holds_the_lease(rotlab: RotLab) -> None:  # noqa: F811
    from coderctl.clients.kube import KubeClient
    from coderctl.ops.lock import OperationLock

    lock = OperationLock(KubeClient(str(rotlab.lab.kubeconfig), None, 5), NS, holder="alice@laptop:42",
                         operation="restore-x")
    lock.acquire()
    try:
        result = rotlab.rotate()
    finally:
        lock.release()
    assert result.code == 1
    assert "alice@laptop:42" in result.stderr


def _after(rotlab: RotLab, tmp_path: Path, before: dict[str, str], pods: set[str], *, user: bool,
           admin: bool) -> None:
    after = rotlab.values()
    assert (after["CODER_USER_PASSWORD"] != before["CODER_USER_PASSWORD"]) == user
    assert (after["CODER_DATABASE_URL"] != before["CODER_DATABASE_URL"]) == user
    assert (after["CODER_POSTGRES_ADMIN_PASSWORD"] != before["CODER_POSTGRES_ADMIN_PASSWORD"]) == admin
    rotlab.assert_consistent()
    if user:
        assert not rotlab.login("coder", before["CODER_USER_PASSWORD"])
        assert len(after["CODER_USER_PASSWORD"]) >= 43
        assert not (coder_pods(rotlab) & pods), "Coder was restarted"
    if admin:
        assert not rotlab.login("postgres", before["CODER_POSTGRES_ADMIN_PASSWORD"])
    assert all(rotlab.lab.kube.get("Pod", NS, p)["status"]["phase"] == "Running" for p in coder_pods(rotlab))
    verify = rotlab.cli("verify", "--access-url", rotlab.lab.access_url, *rotlab.lab.net_args())
    assert verify.code == 0, verify.output
    backup = rotlab.cli("backup", "create", "--via", "exec", "--output-dir", str(tmp_path / "b"))
    assert backup.code == 0, backup.output
    rotlab.assert_no_leaks()


@pytest.mark.parametrize("rotlab", [{}, *NO_AUTO_RELOAD], indirect=True, ids=["auto-reload", "restart"])
def test_user_rotation(rotlab: RotLab, tmp_path: Path) -> None:  # noqa: F811
    before, pods = rotlab.values(), coder_pods(rotlab)
    result = rotlab.rotate()
    assert result.code == 0, result.output
    out = doc(result)
    assert out["result"]["status"] == "ok"
    assert all(s["status"] == "ok" for s in out["steps"])
    assert out["result"]["healthz"]["status"] == "ok"
    assert "Coder /healthz through the access URL: 200 OK" in out["steps"][-1]["detail"]
    dep = rotlab.lab.kube.get("Deployment", NS, "coder")
    template = dep["spec"]["template"]["metadata"].get("annotations") or {}
    if AUTO_RELOAD_ANNOTATION in (dep["metadata"].get("annotations") or {}):
        assert "kubectl.kubernetes.io/restartedAt" not in template, "the operator restarted it, not coderctl"
    else:
        assert "kubectl.kubernetes.io/restartedAt" in template
    _after(rotlab, tmp_path, before, pods, user=True, admin=False)
    listed = doc(rotlab.cli("rotate-secrets", "--list"))["result"]["rotations"]
    assert [(r["id"], r["state"]) for r in listed] == [(out["result"]["operation"], "done")]
    assert listed[0]["started_at"] and listed[0]["holder"]


@pytest.mark.parametrize("rotlab", [{}, *NO_AUTO_RELOAD], indirect=True, ids=["auto-reload", "restart"])
def test_admin_rotation(rotlab: RotLab, tmp_path: Path) -> None:  # noqa: F811
    before = rotlab.values()
    annotations = rotlab.lab.kube.get("Deployment", NS, "coder")["metadata"].get("annotations") or {}
    auto = AUTO_RELOAD_ANNOTATION in annotations
    result = rotlab.rotate("--target", "admin")
    assert result.code == 0, result.output
    names = [s["name"] for s in doc(result)["steps"]]
    assert ("restart coder" in names) == auto, "admin rotations restart nothing (but the operator's auto-reload)"
    _after(rotlab, tmp_path, before, set(), user=False, admin=True)


@pytest.mark.parametrize("rotlab", [{}, *NO_AUTO_RELOAD], indirect=True, ids=["auto-reload", "restart"])
def test_all_rotation(rotlab: RotLab, tmp_path: Path) -> None:  # noqa: F811
    before, pods = rotlab.values(), coder_pods(rotlab)
    result = rotlab.rotate("--target", "all")
    assert result.code == 0, result.output
    _after(rotlab, tmp_path, before, pods, user=True, admin=True)


@pytest.mark.parametrize("rotlab", NO_AUTO_RELOAD, indirect=True)
def test_a_failing_healthz_after_a_rotation_is_a_warning(rotlab: RotLab) -> None:  # noqa: F811
    """The rotation stands (its logins were proven; a rollback would restart Coder for a path problem), and the
    verify step, the result and stderr say that /healthz failed through the access URL."""
    before = rotlab.values()
    result = rotlab.rotate("--target", "admin", "--access-url", f"{rotlab.lab.access_url}/elsewhere")
    assert result.code == 0, result.output
    out = doc(result)
    assert out["result"]["healthz"]["status"] == "fail"
    verify = out["steps"][-1]
    assert verify["name"] == "verify" and verify["status"] == "warn", verify
    assert "/elsewhere/healthz: 404" in verify["detail"]
    assert "warning: the rotation is done, but Coder's /healthz" in result.stderr
    assert rotlab.values()["CODER_POSTGRES_ADMIN_PASSWORD"] != before["CODER_POSTGRES_ADMIN_PASSWORD"]
    rotlab.assert_consistent()
    rotlab.assert_no_leaks()
