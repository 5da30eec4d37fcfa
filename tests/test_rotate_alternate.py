"""rotate-secrets --strategy alternate: two login roles acting as the app role, zero failed logins for a
client that follows the Secret (a new pod) and one that keeps the credentials it started with until the old
pods are gone (an old pod)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from coderctl.clients.postgres import DatabaseURL
from rotate_support import NS, RotLab, admin_sql, coder_pods, doc, rotlab  # noqa: F401

pytestmark = [pytest.mark.fake_only, pytest.mark.flaky(reruns=2)]  # exec handshakes can time out under load
BOTH = pytest.mark.parametrize("rotlab", [{}, {"auto_reload": False}], indirect=True,
                               ids=["auto-reload", "restart"])


class Clients:
    """Two clients logging in every 50 ms while a rotation runs; failures counted per client."""

    def __init__(self, rot: RotLab) -> None:
        self.rot = rot
        self.started_with = rot.url_now()
        self.old_pods = coder_pods(rot)
        self.failed = {"new pod": 0, "old pod": 0}
        self.tries = {"new pod": 0, "old pod": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _login(self, url_text: str) -> bool:
        url = DatabaseURL.parse(url_text)
        pg = self.rot.lab.postgres
        try:
            with psycopg.connect(host=pg.host, port=pg.port, user=url.user, password=url.password,
                                 dbname=url.database, connect_timeout=3) as conn:
                return conn.execute("select current_user").fetchone() == ("coder",)
        except psycopg.OperationalError:
            return False

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, url in (("new pod", self.rot.url_now()), ("old pod", self.started_with)):
                if name == "old pod" and not coder_pods(self.rot) & self.old_pods:
                    continue
                self.tries[name] += 1
                if not self._login(url):
                    self.failed[name] += 1
            self._stop.wait(0.05)

    def __enter__(self) -> Clients:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.2)
        self._stop.set()
        self._thread.join(10)


@BOTH
def test_two_alternate_rotations_without_a_failed_login(rotlab: RotLab, tmp_path: Path) -> None:  # noqa: F811
    before = rotlab.values()
    dry = rotlab.cli("rotate-secrets", "--strategy", "alternate", "--dry-run", json_out=False)
    assert dry.code == 0 and "set up login roles" in dry.stdout and "coder_a, coder_b" in dry.stdout
    with Clients(rotlab) as clients:
        first = rotlab.rotate("--strategy", "alternate")
    assert first.code == 0, first.output
    assert clients.failed == {"new pod": 0, "old pod": 0} and clients.tries["new pod"] > 10
    assert DatabaseURL.parse(rotlab.values()["CODER_DATABASE_URL"]).user == "coder_a"
    rotlab.assert_consistent()
    assert not rotlab.login("coder", before["CODER_USER_PASSWORD"]), "the previous role was retired"
    middle = rotlab.values()
    with Clients(rotlab) as clients:
        second = rotlab.rotate("--strategy", "alternate")
    assert second.code == 0, second.output
    assert "set up login roles" not in [s["name"] for s in doc(second)["steps"]]
    assert clients.failed == {"new pod": 0, "old pod": 0}
    assert DatabaseURL.parse(rotlab.values()["CODER_DATABASE_URL"]).user == "coder_b"
    rotlab.assert_consistent()
    assert not rotlab.login("coder_a", middle["CODER_USER_PASSWORD"])
    verify = rotlab.cli("verify", "--access-url", rotlab.lab.access_url, *rotlab.lab.net_args())
    assert verify.code == 0, verify.output
    backup = rotlab.cli("backup", "create", "--via", "exec", "--output-dir", str(tmp_path / "b"))
    assert backup.code == 0, backup.output
    rotlab.assert_no_leaks()


@pytest.mark.parametrize("rotlab", [{"auto_reload": False}], indirect=True)
def test_a_failed_alternate_rotation_puts_the_previous_role_back(rotlab: RotLab) -> None:  # noqa: F811
    """The rollback also drops the login role the run created, and only that one: coder_b existed before."""
    admin_sql(rotlab.lab, "CREATE ROLE coder_b LOGIN")
    before = rotlab.values()
    rotlab.runtime.never_ready(prefix="coder-")
    result = rotlab.cli("rotate-secrets", "--yes", "--strategy", "alternate", "--rollout-timeout", "1.5")
    assert result.code == 1, result.output
    assert rotlab.values() == before
    assert rotlab.login_roles() == {"coder_b"}
    rotlab.assert_consistent()
    rotlab.assert_no_leaks()
