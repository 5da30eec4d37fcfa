"""Logging in to the Coder database with the credentials of its URL, through the pod or directly.

Through the pod (`exec`, the default) needs no network path to the database: psql runs inside the
PostgreSQL pod (coderctl.database.pod) and connects locally; the password and the query travel on the exec
stream's stdin, never on a command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from coderctl import discovery
from coderctl.clients.kube import STATEFULSETS, KubeNotFound
from coderctl.clients.postgres import DatabaseURL, split_address
from coderctl.context import App
from coderctl.database import pod
from coderctl.database.messages import first_error
from coderctl.errors import CoderctlError

Via = Literal["exec", "direct"]

QUERY = ("select current_user, current_setting('ssl'), current_setting('max_connections'), "
         "(select count(*) from pg_stat_activity), current_setting('server_version')")


@dataclass
class Login:
    ok: bool
    via: Via
    error: str = ""
    ssl: bool | None = None
    max_connections: int | None = None
    connections: int | None = None
    server_version: str | None = None
    facts: dict[str, str] = field(default_factory=dict)


def login(app: App, via: Via, address: str | None = None) -> Login:
    """One login per run, shared by the database checks."""
    return app.cached(f"login:{via}:{address}", lambda: _login(app, via, address))  # type: ignore[no-any-return]


def _login(app: App, via: Via, address: str | None) -> Login:
    url = DatabaseURL.parse(discovery.database_url(app))
    app.redact.add(url.password)
    if via == "direct":
        return _direct(app, url, address)
    return _exec(app, url)


def _parse_row(parts: list[str], via: Via) -> Login:
    if len(parts) < 5:
        return Login(False, via, error=f"unexpected answer from psql: {'|'.join(parts)[:80]!r}")
    _, ssl, maxc, count, version = parts[:5]
    return Login(True, via, ssl=ssl.strip() == "on", max_connections=int(maxc), connections=int(count),
                 server_version=version.strip())


def _exec(app: App, url: DatabaseURL) -> Login:
    try:
        rows = pod.query(app, pod.login_target(app, url), QUERY, idle_timeout=app.timeout * 2)
    except pod.PodQueryFailed as exc:
        return Login(False, "exec", error=str(exc) or "login failed")
    return _parse_row(rows[0] if rows else [], "exec")


def _direct(app: App, url: DatabaseURL, address: str | None) -> Login:
    import psycopg

    from coderctl.clients.postgres import connect

    host, port = split_address(address, url)
    try:
        with connect(url, timeout=app.timeout, host=host, port=port) as conn:
            row = conn.execute(QUERY).fetchone()
    except psycopg.Error as exc:
        return Login(False, "direct", error=app.redact(first_error(str(exc), "login failed")))
    assert row is not None
    return _parse_row([str(v) for v in row], "direct")


def server_ssl_from_statefulset(app: App) -> bool | None:
    """Bitnami turns TLS on with POSTGRESQL_ENABLE_TLS=yes; without it the server has ssl off."""
    try:
        sts = app.kube().get(STATEFULSETS, app.settings.postgres_statefulset, app.namespace)
    except (KubeNotFound, CoderctlError):
        return None
    spec = ((sts.get("spec") or {}).get("template") or {}).get("spec") or {}
    container = discovery.container(spec, app.settings.postgres_container) or {}
    env = {e.get("name"): e.get("value") for e in container.get("env") or []}
    return str(env.get("POSTGRESQL_ENABLE_TLS", "no")).lower() in ("yes", "true", "1")
