"""The lab for rotations: the fake cluster with its pod runtime, the lab's fake Infisical (which holds the lab
database's real passwords), the fake operator syncing them into the managed Secret, and PostgreSQL logging
every statement. Everything a rotation changed in the session's PostgreSQL is put back afterwards."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from clirun import ROOT, Result
from lab.deployment import Lab
from lab.infisical import FakeInfisical
from lab.infisical_operator import REFERENCE_KEY_MAP, FakeInfisicalOperator, as_store, url_mapper
from lab.kube.runtime import PodRuntime
from lab.nginx import ACCESS_HOST, WILDCARD_DOMAIN

NS = "coder"
SECRET = "coder-database-secrets"
KEYS = ("CODER_POSTGRES_ADMIN_PASSWORD", "CODER_USER_PASSWORD", "CODER_DATABASE_URL")


@dataclass
class RotLab:
    lab: Lab
    infisical: FakeInfisical
    operator: FakeInfisicalOperator
    runtime: PodRuntime
    log_start: int = 0
    outputs: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """The network settings that keep the verify step's /healthz on the lab's nginx (Infisical's host is
        discovered: the InfisicalSecret's hostAPI is the lab's fake)."""
        ingress = self.lab.ingress
        port = ingress.nginx.port
        return {"CODERCTL_RESOLVE": f"{ACCESS_HOST}:{port}:127.0.0.1,*.{WILDCARD_DOMAIN}:{port}:127.0.0.1",
                "CODERCTL_CA_FILE": str(ingress.ca.ca_file), "CODERCTL_NAMESERVER": ingress.dns.nameserver}

    def cli(self, *args: str, json_out: bool = True, timeout: float = 10.0) -> Result:
        """coderctl as its own process, as an operator runs it (and off this process's GIL, which the lab's
        servers need). A generous --timeout: on a loaded machine an exec's WebSocket handshake can pass 3 s,
        and websockets' sync client then waits forever for its reader thread (TLS)."""
        out = ["-o", "json"] if json_out else []
        proc = subprocess.run([sys.executable, "-m", "coderctl", *self.lab.args(*out, timeout=timeout), *args],
                              env={**os.environ, "NO_COLOR": "1", **self.env}, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=110, cwd=ROOT, check=False)
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        self.outputs += [result.stdout, result.stderr]
        return result

    def rotate(self, *more: str, timeout: float = 10.0) -> Result:
        return self.cli("rotate-secrets", "--yes", "--sync-timeout", "10", "--rollout-timeout", "20", *more,
                        timeout=timeout)

    def secret(self) -> dict[str, str]:
        data = self.lab.kube.secret_data(NS, SECRET)
        assert data is not None
        return data

    def values(self) -> dict[str, str]:
        return {k: self.infisical.get_secret(k) for k in KEYS}

    def every_value(self) -> list[str]:
        """Every value any of the three secrets ever had (old and new), raw and percent-encoded."""
        raw = {v for k in KEYS for v in self.infisical.versions(k)}
        raw |= set(self.lab.secret_values())
        return sorted({form for v in raw if v for form in (v, quote(v, safe=""))})

    def statement_log(self) -> str:
        text = self.lab.postgres.logfile.read_text(errors="replace")
        return text[self.log_start:]

    def url_now(self) -> str:
        return self.secret()["database-url"]

    def login(self, user: str, password: str) -> bool:
        pg = self.lab.postgres
        try:
            with psycopg.connect(host=pg.host, port=pg.port, user=user, password=password, dbname="coder",
                                 connect_timeout=5):
                return True
        except psycopg.OperationalError as exc:
            assert "password authentication failed" in str(exc), str(exc)
            return False

    def login_roles(self) -> set[str]:
        """The alternate strategy's login roles that exist in the lab's PostgreSQL now."""
        pg = self.lab.postgres
        with psycopg.connect(host=str(pg.socket_dir), port=pg.port, user="postgres", dbname="postgres") as conn:
            rows = conn.execute("SELECT rolname FROM pg_roles WHERE rolname IN ('coder_a', 'coder_b')").fetchall()
        return {str(r[0]) for r in rows}

    def assert_consistent(self) -> None:
        """PostgreSQL, Infisical and the Secret agree, proven by logins; nothing holds the Lease."""
        from coderctl.clients.postgres import DatabaseURL

        values = self.values()
        assert self.operator.wait_synced(10)
        secret = self.secret()
        assert secret["postgres-admin-password"] == values["CODER_POSTGRES_ADMIN_PASSWORD"]
        assert secret["coder-user-password"] == values["CODER_USER_PASSWORD"]
        assert secret["database-url"] == values["CODER_DATABASE_URL"]
        url = DatabaseURL.parse(values["CODER_DATABASE_URL"])
        assert url.password == values["CODER_USER_PASSWORD"]
        assert self.login(url.user, values["CODER_USER_PASSWORD"])
        assert self.login("postgres", values["CODER_POSTGRES_ADMIN_PASSWORD"])
        lease = self.lab.kube.get("Lease", NS, "coderctl-operation") or {}
        assert not (lease.get("spec") or {}).get("holderIdentity")

    def assert_no_leaks(self) -> None:
        texts = [*self.outputs, self.statement_log(), json.dumps(self.lab.kube.exec_log)]
        for cm in self.lab.kube.list("ConfigMap", NS):
            if cm["metadata"]["name"].startswith("coderctl-op-"):
                texts.append(json.dumps(cm))
        for secret in self.every_value():
            for text in texts:
                assert secret not in text, "a secret value leaked"


def admin_sql(lab: Lab, sql: str) -> None:
    with psycopg.connect(host=str(lab.postgres.socket_dir), port=lab.postgres.port, user="postgres",
                         dbname="postgres", autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")
        conn.execute(sql.encode())


@contextmanager
def rotation_lab(lab: Lab, options: dict[str, Any] | None = None) -> Iterator[RotLab]:
    """The lab with its pod runtime, its fake Infisical (the database's real passwords) and the operator
    loop (`sync_delay`; `auto_reload=False` takes the annotation off Coder's Deployment); PostgreSQL logs
    every statement. The session's PostgreSQL gets its passwords and settings back at the end."""
    options = options or {}
    pg = lab.postgres
    admin_password, user_password = pg.admin_password, pg.user_password
    runtime = lab.enable_runtime(tick=0.05, login_retry=1.0, login_interval=0.1, restart_backoff=0.1,
                                 volume_delay=30.0)
    fake = lab.infisical
    assert fake is not None, "the lab's fake Infisical (a real cluster has none)"
    operator: FakeInfisicalOperator | None = None
    try:
        store = as_store(lab.kube)
        operator = FakeInfisicalOperator(store, url_mapper(fake.url), interval=0.1,
                                         delay=float(options.get("sync_delay", 0.2)), key_map=REFERENCE_KEY_MAP)
        operator.start()
        assert operator.wait_synced(10)
        if options.get("auto_reload") is False:
            lab.kube.patch("Deployment", NS, "coder", {"metadata": {"annotations": {
                "secrets.infisical.com/auto-reload": None}}})
        settle(lab, operator)
        admin_sql(lab, "ALTER SYSTEM SET log_statement = 'all'")
        admin_sql(lab, "SELECT pg_reload_conf()")
        start = len(pg.logfile.read_text(errors="replace"))
        yield RotLab(lab, fake, operator, runtime, log_start=start)
    finally:
        if operator is not None:
            operator.stop()
        lab.stop_runtimes()
        admin_sql(lab, "ALTER ROLE postgres IN DATABASE coder RESET ALL")
        admin_sql(lab, "DROP ROLE IF EXISTS coder_a, coder_b")
        admin_sql(lab, "ALTER SYSTEM RESET log_statement")
        admin_sql(lab, "SELECT pg_reload_conf()")
        pg.set_password("coder", user_password)
        pg.set_password("postgres", admin_password)


@pytest.fixture
def rotlab(lab: Lab, request: pytest.FixtureRequest) -> Iterator[RotLab]:
    with rotation_lab(lab, getattr(request, "param", None)) as built:
        yield built


def settle(lab: Lab, operator: FakeInfisicalOperator) -> None:
    """Until the operator's first restart of Coder (auto-reload) has rolled out and it has nothing left to do."""
    import time

    from lab.infisical_operator import VERSION_ANNOTATION, managed_secret_annotation_key

    key = managed_secret_annotation_key(SECRET)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert operator.wait_synced(10)
        dep = lab.kube.get("Deployment", NS, "coder") or {}
        secret = lab.kube.get("Secret", NS, SECRET) or {}
        version = (secret["metadata"].get("annotations") or {}).get(VERSION_ANNOTATION)
        stamped = (dep["spec"]["template"]["metadata"].get("annotations") or {}).get(key)
        if "secrets.infisical.com/auto-reload" not in (dep["metadata"].get("annotations") or {}) or stamped == version:
            break
        time.sleep(0.1)
    wait_rollout(lab)


def wait_rollout(lab: Lab, timeout: float = 20) -> None:
    import time

    from coderctl.clients.kube import KubeClient
    from coderctl.clients.rollout import wait_for_rollout

    time.sleep(0.3)
    wait_for_rollout(KubeClient(str(lab.kubeconfig), None, 5.0), NS, "coder", time.monotonic() + timeout)


def coder_pods(rot: RotLab) -> set[str]:
    return {p["metadata"]["name"] for p in rot.lab.kube.list("Pod", NS)
            if p["metadata"]["name"].startswith("coder-") and "postgresql" not in p["metadata"]["name"]}


def steps_of(result: Result) -> list[dict[str, Any]]:
    return list(json.loads(result.stdout)["steps"])


def doc(result: Result) -> dict[str, Any]:
    return dict(json.loads(result.stdout))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
