"""rotate-secrets end to end on the paths the other rotation tests leave out: `--via direct` (every login and
ALTER ROLE straight to PostgreSQL at `--db-address`, never an exec in its pod), `--strategy alternate --target
all` (the app role by the alternate strategy, `postgres` alongside, zero failed logins), and a direct address
that does not answer (the preflight refuses in one line, nothing changed)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from coderctl.clients.postgres import DatabaseURL
from rotate_support import NS, RotLab, coder_pods, doc, rotlab  # noqa: F401
from test_rotate_alternate import Clients
from test_rotate_user import _after

pytestmark = [pytest.mark.fake_only, pytest.mark.flaky(reruns=2)]  # exec handshakes can time out under load

AUTO: dict[str, Any] = {}
RESTART: dict[str, Any] = {"auto_reload": False}


def _direct(rot: RotLab, address: str | None = None) -> list[str]:
    pg = rot.lab.postgres
    return ["--via", "direct", "--db-address", address or f"{pg.host}:{pg.port}"]


def _ready(rot: RotLab) -> None:
    """Every Coder pod Running and Ready, and at least one of them."""
    pods = [rot.lab.kube.get("Pod", NS, name) for name in coder_pods(rot)]
    assert pods
    for pod in pods:
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or ()}
        assert pod["status"]["phase"] == "Running" and conditions.get("Ready") == "True", pod["metadata"]["name"]


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(240)  # a rotation, a verify and a backup, each its own process, on a loaded machine
@pytest.mark.parametrize(("rotlab", "target", "strategy"), [
    (RESTART, "user", "restart"), (RESTART, "admin", "restart"), (RESTART, "all", "restart"),
    (AUTO, "all", "restart"), (RESTART, "all", "alternate"),
], indirect=["rotlab"], ids=["user", "admin", "all", "all-auto-reload", "all-alternate"])
def test_direct_rotation(rotlab: RotLab, tmp_path: Path, target: str, strategy: str) -> None:  # noqa: F811
    before, pods = rotlab.values(), coder_pods(rotlab)
    execs = len(rotlab.lab.kube.exec_log)
    result = rotlab.rotate("--target", target, "--strategy", strategy, *_direct(rotlab))
    assert result.code == 0, result.output
    out = doc(result)
    assert out["result"]["status"] == "ok" and all(s["status"] == "ok" for s in out["steps"]), out["steps"]
    assert rotlab.lab.kube.exec_log[execs:] == [], "--via direct never execs in the PostgreSQL pod"
    user, admin = target != "admin", target != "user"
    if strategy == "alternate":
        assert DatabaseURL.parse(rotlab.values()["CODER_DATABASE_URL"]).user == "coder_a"
    _after(rotlab, tmp_path, before, pods, user=user, admin=admin)
    _ready(rotlab)


@pytest.mark.timeout(240)  # a rotation, a verify and a backup, each its own process, on a loaded machine
@pytest.mark.parametrize("rotlab", [AUTO, RESTART], indirect=True, ids=["auto-reload", "restart"])
def test_alternate_rotation_of_all(rotlab: RotLab, tmp_path: Path) -> None:  # noqa: F811
    """The first alternate run sets up the login roles, moves the URL to coder_a, retires coder's password and
    rotates postgres alongside; neither kind of client fails a login. (The second run, coder_a to coder_b, is
    tests/test_rotate_alternate.py's; two full rotations with their checks take minutes on a loaded machine.)"""
    before, pods = rotlab.values(), coder_pods(rotlab)
    with Clients(rotlab) as clients:
        result = rotlab.rotate("--strategy", "alternate", "--target", "all")
    assert result.code == 0, result.output
    names = [s["name"] for s in doc(result)["steps"]]
    assert names == ["preflight", "set up login roles", "alter role next", "write CODER_DATABASE_URL",
                     "write CODER_USER_PASSWORD", "write CODER_POSTGRES_ADMIN_PASSWORD", "wait for sync",
                     "alter role admin", "restart coder", "retire previous role", "verify"], names
    assert clients.failed == {"new pod": 0, "old pod": 0} and clients.tries["new pod"] > 10
    assert clients.tries["old pod"] > 0
    assert DatabaseURL.parse(rotlab.values()["CODER_DATABASE_URL"]).user == "coder_a"
    assert rotlab.login_roles() == {"coder_a", "coder_b"}
    _after(rotlab, tmp_path, before, pods, user=True, admin=True)
    _ready(rotlab)


@pytest.mark.parametrize("rotlab", [RESTART], indirect=True)
@pytest.mark.parametrize("output", ["text", "json"])
def test_direct_preflight_refuses_an_address_that_does_not_answer(rotlab: RotLab, output: str) -> None:  # noqa: F811
    before = rotlab.values()
    execs = len(rotlab.lab.kube.exec_log)
    address = f"127.0.0.1:{_closed_port()}"
    result = rotlab.rotate("--target", "all", *_direct(rotlab, address)) if output == "json" else \
        rotlab.cli("rotate-secrets", "--yes", "--target", "all", *_direct(rotlab, address), json_out=False)
    assert result.code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("coderctl: error: preflight: ") and address in lines[0], lines[0]
    assert lines[1] == "coderctl: error: preflight failed: nothing was changed"
    if output == "json":
        refused = doc(result)["result"]
        assert refused["status"] == "refused" and len(refused["problems"]) == 1
    assert rotlab.values() == before
    assert rotlab.lab.kube.exec_log[execs:] == []
    assert doc(rotlab.cli("rotate-secrets", "--list"))["result"]["rotations"] == []
    rotlab.assert_consistent()
    rotlab.assert_no_leaks()


def test_a_malformed_direct_address_is_a_usage_error(rotlab: RotLab) -> None:  # noqa: F811
    before = rotlab.values()
    result = rotlab.cli("rotate-secrets", "--yes", *_direct(rotlab, "nowhere"), json_out=False)
    assert result.code == 2, result.output
    assert "--db-address 'nowhere': expected HOST:PORT" in result.stderr
    assert rotlab.values() == before
