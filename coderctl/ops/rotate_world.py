"""What a rotation reads and writes outside the record: Infisical, the managed Secret, the database roles and
the Coder Deployment.

Every value read here is registered with the run's redactor before anything else sees it. Nothing here
caches a secret across steps: a resumed or rolled-back rotation (another process, another machine) finds
the values it needs in Infisical by the versions the record holds.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from coderctl.clients.kube import DEPLOYMENTS, SECRETS
from coderctl.errors import CoderctlError
from coderctl.facts.kube import decoded_data

if TYPE_CHECKING:
    from coderctl.clients.infisical import InfisicalClient, SecretVersion
    from coderctl.context import App

T = TypeVar("T")
Target = Literal["user", "admin", "all"]
Strategy = Literal["restart", "alternate"]
Via = Literal["exec", "direct"]

ADMIN_PASSWORD = "CODER_POSTGRES_ADMIN_PASSWORD"
USER_PASSWORD = "CODER_USER_PASSWORD"
DATABASE_URL = "CODER_DATABASE_URL"
SECRET_KEYS = {ADMIN_PASSWORD: "postgres-admin-password", USER_PASSWORD: "coder-user-password",
               DATABASE_URL: "database-url"}
"""Infisical secret name -> key of the managed Secret (the reference InfisicalSecret's mapping)."""
ADMIN_ROLE = "postgres"
AUTO_RELOAD = "secrets.infisical.com/auto-reload"
VERSION_ANNOTATION = "secrets.infisical.com/version"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"

PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 44
"""44 characters of 62: 261 bits. ASCII letters and digits need no SASLprep and no percent-encoding."""


class RotateError(CoderctlError):
    """A rotation step failed; the message says what and where (no secret value)."""


def new_password() -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def keys_for(target: str) -> list[str]:
    """The Infisical secrets a rotation of `target` writes, in the order it writes them: the URL (what Coder
    reads) before the password, so that an operator sync between the two writes (and the restart it brings
    under auto-reload) already gives Coder the new URL."""
    user = [DATABASE_URL, USER_PASSWORD]
    return {"user": user, "admin": [ADMIN_PASSWORD], "all": [*user, ADMIN_PASSWORD]}[target]


def managed_annotation_key(secret_name: str) -> str:
    """The annotation the Infisical operator stamps on auto-reload workloads (BuildManagedSecretAnnotationKey)."""
    prefix = "secrets.infisical.com/managed-secret"
    short = prefix.split("/", 1)[1]
    if len(short) + 1 + len(secret_name) <= 63:
        return f"{prefix}.{secret_name}"
    digest = hashlib.sha256(secret_name.encode()).hexdigest()[:8]
    return f"{prefix}.{secret_name[:63 - len(short) - 10]}-{digest}"


def restart_patch(now: datetime | None = None) -> dict[str, Any]:
    """The strategic merge patch `kubectl rollout restart` sends."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}


@dataclass(frozen=True)
class Scope:
    project: str
    environment: str
    path: str

    def describe(self) -> str:
        return f"Infisical {self.environment}:{self.path}"


class World:
    """The run's access to everything a rotation touches; names come from the record's state."""

    def __init__(self, app: App, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state

    # -- Infisical -------------------------------------------------------------------------------------

    def infisical(self) -> InfisicalClient:
        from coderctl import discovery

        client, _ = self.app.cached("rotate:infisical", lambda: discovery.infisical_client(self.app))
        return client  # type: ignore[no-any-return]

    @property
    def scope(self) -> Scope:
        s = self.state["infisical"]
        return Scope(s["project"], s["environment"], s["path"])

    def read(self, name: str, version: int | None = None) -> SecretVersion:
        sc = self.scope
        return self.infisical().get_secret(name, project_id=sc.project, environment=sc.environment, path=sc.path,
                                           version=version)

    def write(self, name: str, value: str) -> SecretVersion:
        sc = self.scope
        return self.infisical().set_secret(name, value, project_id=sc.project, environment=sc.environment,
                                           path=sc.path, create=False)

    def old_value(self, name: str) -> str:
        return self.read(name, int(self.state["versions"][name]["old"])).value

    def new_value(self, name: str) -> str:
        """The value this rotation wrote (the version the record holds), else the current one."""
        version = self.state["versions"][name].get("new")
        return self.read(name, int(version) if version else None).value

    # -- the managed Secret ----------------------------------------------------------------------------

    def secret_values(self) -> dict[str, str]:
        """The managed Secret's data now (never from the run's cache), by Infisical name."""
        data = decoded_data(self.app.kube().get(SECRETS, self.state["secret"], self.app.namespace))
        out = {name: data[key] for name, key in SECRET_KEYS.items() if key in data}
        for value in out.values():
            self.app.redact.add(value)
        return out

    def secret_version(self) -> str:
        obj = self.app.kube().get(SECRETS, self.state["secret"], self.app.namespace)
        return str(((obj.get("metadata") or {}).get("annotations") or {}).get(VERSION_ANNOTATION) or "")

    def wait_secret(self, expected: dict[str, str], timeout: float, what: str) -> float:
        """Until the managed Secret holds `expected`; seconds waited, RotateError at the timeout."""
        import hmac

        start = time.monotonic()
        while True:
            now = self.secret_values()
            if all(hmac.compare_digest(now.get(k, "").encode(), v.encode()) for k, v in expected.items()):
                return time.monotonic() - start
            if time.monotonic() - start >= timeout:
                behind = sorted(SECRET_KEYS[k] for k, v in expected.items() if now.get(k) != v)
                raise RotateError(
                    f"the Infisical operator did not sync {what} into Secret {self.app.namespace}/"
                    f"{self.state['secret']} within {timeout:g} s (still behind: {', '.join(behind)}); check "
                    f"the InfisicalSecret's status: kubectl -n {self.app.namespace} describe infisicalsecret")
            time.sleep(0.1)

    # -- the Coder Deployment --------------------------------------------------------------------------

    def deployment(self) -> dict[str, Any]:
        return self.app.kube().get(DEPLOYMENTS, self.state["deployment"], self.app.namespace)

    def restart(self) -> str:
        patch = restart_patch()
        self.app.kube().patch(DEPLOYMENTS, self.state["deployment"], self.app.namespace, patch, kind="strategic")
        return str(patch["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT])

    def wait_operator_restart(self, timeout: float) -> None:
        """Until the operator stamped the Deployment's pod template with the managed Secret's version."""
        key = managed_annotation_key(self.state["secret"])
        start = time.monotonic()
        while True:
            version = self.secret_version()
            template = ((self.deployment().get("spec") or {}).get("template") or {}).get("metadata") or {}
            if version and (template.get("annotations") or {}).get(key) == version:
                return
            if time.monotonic() - start >= timeout:
                raise RotateError(f"the Infisical operator did not restart deployment {self.state['deployment']} "
                                  f"within {timeout:g} s (auto-reload)")
            time.sleep(0.1)

    def wait_rollout(self, timeout: float) -> str:
        from coderctl.clients.rollout import RolloutError, wait_for_rollout

        try:
            state = wait_for_rollout(self.app.kube(), self.app.namespace, self.state["deployment"],
                                     time.monotonic() + timeout)
        except RolloutError as exc:
            raise RotateError(self.app.redact(str(exc))) from None
        return f"{state.new_ready} of {state.replicas} pods of ReplicaSet {state.new_replicaset} ready"

    # -- the database ----------------------------------------------------------------------------------

    @property
    def exec_idle(self) -> float:
        """How long a login or ALTER ROLE in the pod may stay silent: they answer within a second or two."""
        return max(self.app.timeout * 3, 10.0)

    def _bounded(self, call: Callable[[], T], what: str) -> T:
        """`call` (an exec in the PostgreSQL pod) with a hard limit. websockets' sync client can block for good
        when a WebSocket handshake times out (it joins a reader thread stuck in a TLS read); a rotation must fail
        and roll back instead of holding the Lease forever. The stuck thread is left behind (a daemon)."""
        import threading

        limit = self.app.timeout * 2 + self.exec_idle + 5
        box: list[Any] = []

        def run() -> None:
            try:
                box.append((True, call()))
            except BaseException as exc:  # noqa: BLE001 — handed to the caller's thread
                box.append((False, exc))

        worker = threading.Thread(target=run, name=f"exec: {what}", daemon=True)
        worker.start()
        worker.join(limit)
        if not box:
            raise RotateError(f"cannot {what} in pod {self.app.namespace}/{self.app.settings.postgres_pod}: the exec "
                              f"did not finish within {limit:g} s")
        good, value = box[0]
        if not good:
            raise value
        return value  # type: ignore[no-any-return]

    def can_login(self, user: str, password: str) -> bool:
        """Does `user` log in with `password`? False only for an authentication failure."""
        from coderctl.database import pod

        self.app.redact.add(password)
        if self.state.get("via") == "direct":
            return self._direct_login(user, password)
        t = pod.Target(self.app.namespace, self.app.settings.postgres_pod, self.app.settings.postgres_container,
                       user, self.state["database"], (password,), sources="given")
        try:
            self._bounded(lambda: pod.query(self.app, t, "select 1", idle_timeout=self.exec_idle), f"log in as {user}")
        except pod.PodQueryFailed as exc:
            if _auth_failure(str(exc)):
                return False
            raise RotateError(f"cannot test the login of {user}: {exc}") from None
        return True

    def acts_as(self, user: str, password: str) -> str:
        """The role a session of `user` acts as (current_user after its role setting)."""
        from coderctl.database import pod

        self.app.redact.add(password)
        if self.state.get("via") == "direct":
            acting = self._direct_query(user, password, "select current_user", f"log in as {user}")
            if acting is None:
                raise RotateError(f"cannot log in as {user}: password authentication failed")
            return acting
        t = pod.Target(self.app.namespace, self.app.settings.postgres_pod, self.app.settings.postgres_container,
                       user, self.state["database"], (password,), sources="given")
        try:
            rows = self._bounded(lambda: pod.query(self.app, t, "select current_user", idle_timeout=self.exec_idle),
                                 f"log in as {user}")
        except pod.PodQueryFailed as exc:
            raise RotateError(f"cannot log in as {user}: {exc}") from None
        return rows[0][0] if rows and rows[0] else ""

    def admin_sql(self, sql: str, candidates: list[str]) -> list[list[str]]:
        """Run `sql` as the admin role, logging in with the first candidate password that works; the rows of
        its statements that return any."""
        from coderctl.database import pod

        offered = [p for p in dict.fromkeys(candidates) if p]
        self.app.redact.add(*offered)
        if self.state.get("via") == "direct":
            return self._direct_sql(sql, offered)
        t = pod.Target(self.app.namespace, self.app.settings.postgres_pod, self.app.settings.postgres_container,
                       ADMIN_ROLE, self.state["database"], tuple(offered[:2]), sources="given")
        try:
            return self._bounded(lambda: pod.query(self.app, t, sql, idle_timeout=self.exec_idle),
                                 f"SQL as {ADMIN_ROLE}")
        except pod.PodQueryFailed as exc:
            raise RotateError(f"as {ADMIN_ROLE} in pod {self.app.namespace}/{self.app.settings.postgres_pod}: "
                              f"{exc}") from None

    def set_role_password(self, role: str, password: str, admin_candidates: list[str]) -> None:
        """ALTER ROLE with a SCRAM verifier built here: the plaintext never reaches PostgreSQL."""
        from coderctl.clients.scram import verifier

        self.app.redact.add(password)
        self.admin_sql(f"ALTER ROLE {quote_ident(role)} PASSWORD {quote_literal(verifier(password))};\n",
                       admin_candidates)

    def _url_for(self, user: str, password: str) -> Any:
        from coderctl.clients.postgres import DatabaseURL

        base = DatabaseURL.parse(self.read(DATABASE_URL).value)
        url = DatabaseURL.parse(base.with_password(password))
        return url if url.user == user else _with_user(url, user)

    def _direct_login(self, user: str, password: str) -> bool:
        return self._direct_query(user, password, "select 1", f"test the login of {user}") is not None

    def _direct_query(self, user: str, password: str, sql: str, what: str) -> str | None:
        """The first column of the first row of `sql` run as `user` over the direct address; None when the
        password is refused. Any other failure is a RotateError of one line."""
        import psycopg

        from coderctl.clients.postgres import connect, split_address

        url = self._url_for(user, password)
        host, port = split_address(self.app.settings.db_address, url)
        try:
            with connect(url, timeout=self.app.timeout, host=host, port=port) as conn:
                row = conn.execute(sql).fetchone()
        except psycopg.Error as exc:
            if _auth_failure(str(exc)):
                return None
            raise RotateError(f"cannot {what} over {host}:{port}: {self._said(exc)}") from None
        return "" if not row or row[0] is None else str(row[0])

    def _said(self, exc: Exception) -> str:
        """The driver's error as one redacted line (libpq adds hints on lines of their own)."""
        text = str(exc).strip()
        return self.app.redact(text.splitlines()[0] if text else type(exc).__name__)

    def _direct_sql(self, sql: str, offered: list[str]) -> list[list[str]]:
        import psycopg

        from coderctl.clients.postgres import connect, split_address

        last = ""
        for password in offered:
            url = self._url_for(ADMIN_ROLE, password)
            host, port = split_address(self.app.settings.db_address, url)
            try:
                with connect(url, timeout=self.app.timeout, host=host, port=port) as conn:
                    cur = conn.execute(sql.encode())
                    rows: list[list[str]] = []
                    while True:
                        if cur.description:
                            rows += [["" if c is None else str(c) for c in row] for row in cur.fetchall()]
                        if not cur.nextset():
                            break
                    conn.commit()
                    return rows
            except psycopg.Error as exc:
                last = self._said(exc)
                if not _auth_failure(str(exc)):
                    break
        raise RotateError(f"as {ADMIN_ROLE} over {self.app.settings.db_address or 'the URL host'}: {last}")


def replace_user(raw: str, old_user: str, new_user: str) -> str:
    """The URL string with only the user name of its userinfo changed; every other byte as it was."""
    from urllib.parse import quote

    scheme, sep, rest = raw.partition("://")
    for old in dict.fromkeys((quote(old_user, safe=""), old_user)):
        if rest.startswith(f"{old}:") or rest.startswith(f"{old}@"):
            return f"{scheme}{sep}{quote(new_user, safe='')}{rest[len(old):]}"
    raise RotateError("the database URL names its user elsewhere than in its userinfo; cannot point it at "
                      "another login role")


def login_roles(owner: str) -> tuple[str, str]:
    """The two login roles that act as `owner` under strategy alternate."""
    return f"{owner}_a", f"{owner}_b"


def _with_user(url: Any, user: str) -> Any:
    from urllib.parse import quote

    from coderctl.clients.postgres import DatabaseURL

    raw: str = url.raw
    scheme, rest = raw.split("://", 1)
    _, at, tail = rest.rpartition("@")
    userinfo = f"{quote(user, safe='')}:{quote(url.password, safe='')}"
    return DatabaseURL.parse(f"{scheme}://{userinfo}@{tail}" if at else raw)


def _auth_failure(text: str) -> bool:
    lowered = text.lower()
    return "authentication failed" in lowered or "no password supplied" in lowered


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
