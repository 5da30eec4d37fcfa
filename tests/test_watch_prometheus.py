"""coderctl watch against the lab, scraped by a real Prometheus (Debian package `prometheus`) every second:
a fault injected into the ingress shows as the failing check through PromQL, and so does the recovery.

One watcher process serves the whole story (the lab's RBAC is exactly deploy/watch/rbac.yaml): every check
passes, promtool accepts /metrics, Prometheus sees the fault and the recovery, SIGTERM ends it with 0.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from clirun import ROOT
from envelope_schema import validate_envelope
from lab.deployment import Lab
from lab.nginx import ACCESS_HOST, WILDCARD_DOMAIN, LabNginx, free_port, nginx_binary
from lab.procguard import terminate
from lab.procguard import die_with_parent
from test_watch import make_backup

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
pytestmark = [
    pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None,
                       reason="prometheus/promtool not installed (Debian package prometheus)"),
    pytest.mark.fake_only,  # the shipped Roles are enforced by the fake API
    pytest.mark.slow,
]
INTERVAL = 2.0
SCRAPE = 1.0


def get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()  # type: ignore[no-any-return]


def until(condition: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"not within {timeout:g}s: {what}")


class Prometheus:
    def __init__(self, workdir: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"global": {"scrape_interval": f"{SCRAPE:g}s", "scrape_timeout": "900ms",
                             "evaluation_interval": "1s"},
                  "rule_files": [str(ROOT / "deploy" / "watch" / "coderctl-watch.rules.yaml")],
                  "scrape_configs": [{"job_name": "coderctl-watch", "static_configs": [{"targets": [target]}]}]}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            die_with_parent([str(PROMETHEUS), f"--config.file={workdir / 'prometheus.yml'}",
                             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                             "--log.level=warn"]),
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, start_new_session=True)
        until(lambda: get(self.url + "/-/ready") is not None, 30, "Prometheus ready")

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = json.loads(get(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"))
        assert body["status"] == "success", body
        return body["data"]["result"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        terminate(self.process)
        self.log.close()


class WatchProcess:
    def __init__(self, workdir: Path, args: list[str], env: dict[str, str]) -> None:
        self.stderr_path = workdir / "watch.stderr"
        self.stdout_path = workdir / "watch.stdout"
        with self.stderr_path.open("wb") as err, self.stdout_path.open("wb") as out:
            self.process = subprocess.Popen(
                die_with_parent([sys.executable, "-m", "coderctl", *args]), stdin=subprocess.DEVNULL, stdout=out,
                stderr=err, env={**os.environ, "NO_COLOR": "1", **env}, cwd=workdir)
        line = until(lambda: next((x for x in self.stderr_path.read_text().splitlines() if "serving http" in x),
                                  None) or self._died(), 30, "watch serving")
        self.url = line.split("serving ")[1].split("/metrics")[0]

    def _died(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"watch exited {self.process.returncode}: {self.stderr_path.read_text()}")

    @property
    def target(self) -> str:
        return self.url.removeprefix("http://")

    def status(self) -> dict[str, Any]:
        return json.loads(get(self.url + "/status"))  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def set_variant(nginx: LabNginx, variant: str) -> None:
    """Rewrite the running nginx's configuration and reload it (the master keeps its ports)."""
    nginx.variant = variant  # type: ignore[assignment]
    nginx.conf_path.write_text(nginx.render_config())
    subprocess.run([nginx_binary(), "-p", f"{nginx.prefix}/", "-c", str(nginx.conf_path), "-s", "reload"],
                   check=True, capture_output=True, timeout=10)


@pytest.fixture
def watched(lab: Lab, make_nginx: Callable[..., LabNginx], tmp_path: Path) -> Iterator[tuple[WatchProcess, LabNginx]]:
    roles = [d for d in yaml.safe_load_all((ROOT / "deploy" / "watch" / "rbac.yaml").read_text())
             if d and d["kind"] == "Role"]
    lab.kube.grant_only(roles)
    nginx = make_nginx(lab.ingress.coder.port)
    backups = tmp_path / "backups"
    backups.mkdir()
    make_backup(backups, datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2), verified=True)
    port = nginx.port
    args = [*lab.args(timeout=2), "-o", "json", "watch", "--listen", "127.0.0.1:0", "--interval", f"{INTERVAL:g}",
            "--access-url", f"https://{ACCESS_HOST}:{port}", "--resolve", f"{ACCESS_HOST}:{port}:127.0.0.1",
            "--resolve", f"*.{WILDCARD_DOMAIN}:{port}:127.0.0.1", "--ca-file", str(lab.ingress.ca.ca_file),
            "--nameserver", lab.ingress.dns.nameserver, "--backup-dir", str(backups)]
    env = {"CODERCTL_WILDCARD_URL": f"*.{WILDCARD_DOMAIN}", "CODERCTL_EXPECTED_CODER_VERSION": "v2.25.0"}
    watch = WatchProcess(tmp_path, args, env)
    try:
        yield watch, nginx
    finally:
        watch.stop()


def test_prometheus_sees_a_fault_and_its_recovery(watched: tuple[WatchProcess, LabNginx], lab: Lab,
                                                  tmp_path: Path) -> None:
    watch, nginx = watched

    # every check has run once and passes with the shipped Roles (derp.hold is off unless asked for)
    status = until(lambda: (s := watch.status()) and not s["watch"]["pending"] and s, 20, "every check ran")
    validate_envelope(status)
    bad = {c["id"]: c["detail"] for c in status["checks"] if c["status"] not in ("ok", "skip")}
    assert bad == {}
    assert {c["id"] for c in status["checks"] if c["status"] == "skip"} == {"derp.hold"}
    assert status["command"] == "watch" and status["summary"]["ok"] == len(status["checks"]) - 1
    lab.assert_no_secrets(json.dumps(status), get(watch.url + "/metrics").decode())

    text = get(watch.url + "/metrics").decode()
    checked = subprocess.run([str(PROMTOOL), "check", "metrics"], input=text, capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert get(watch.url + "/healthz") == b"ok\n"

    (tmp_path / "prometheus").mkdir()
    prom = Prometheus(tmp_path / "prometheus", watch.target)
    try:
        ok = 'coderctl_check_status{id="derp.upgrade",status="ok"} == 1'
        failing = 'coderctl_check_status{id="derp.upgrade",status="fail"} == 1'
        until(lambda: prom.query(ok), 15, "Prometheus scraped derp.upgrade ok")
        assert prom.query('coderctl_backup_last_verified{directory=~".+"} == 1')
        assert prom.query('up{job="coderctl-watch"} == 1')
        assert prom.query("coderctl_derp_ping_rtt_seconds > 0")

        set_variant(nginx, "no-upgrade")
        start = time.monotonic()
        until(lambda: prom.query(failing), 20, "Prometheus shows derp.upgrade failing")
        detected = time.monotonic() - start
        assert prom.query('coderctl_problem_active{check="derp.upgrade",code="DERP-UPGRADE-BLOCKED"} == 1')
        assert not prom.query(ok)

        set_variant(nginx, "healthy")
        start = time.monotonic()
        until(lambda: prom.query(ok), 20, "Prometheus shows derp.upgrade ok again")
        recovered = time.monotonic() - start
        assert not prom.query('coderctl_problem_active{check="derp.upgrade"}')
    finally:
        prom.stop()
    # the check's interval plus two scrape intervals, plus a second for the check's own run
    bound = INTERVAL + 2 * SCRAPE + 1
    print(f"fault seen after {detected:.2f}s, recovery after {recovered:.2f}s (bound {bound:g}s)")
    assert detected <= bound and recovered <= bound, (detected, recovered)

    watch.process.send_signal(signal.SIGTERM)
    assert watch.process.wait(5) == 0
    # the watcher's own account of its stop (the interpreter's exit after it is not the watcher's to speed up)
    stopped = next(x for x in watch.stderr_path.read_text().splitlines() if "stopped in" in x)
    assert float(stopped.rpartition(" ")[2].rstrip("s")) < 1.0, stopped
    final = json.loads(watch.stdout_path.read_text())
    validate_envelope(final)
    assert final["command"] == "watch" and final["summary"]["fail"] == 0
