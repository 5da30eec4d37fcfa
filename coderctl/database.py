"""Logging in to the Coder database with the credentials of its URL, through the pod or directly.

Through the pod (`exec`, the default) needs no network path to the database: psql runs inside the
PostgreSQL pod and connects locally. The password travels on the exec stream's stdin, never on a command
line (it would show in the pod's process list and the API server's audit log).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from coderctl import discovery
from coderctl.clients.kube import STATEFULSETS, KubeNotFound
from coderctl.clients.kube_exec import exec_stream
from coderctl.clients.postgres import DatabaseURL, split_address
from coderctl.context import App
from coderctl.errors import CoderctlError

Via = Literal["exec", "direct"]

QUERY = ("select current_user, current_setting('ssl'), current_setting('max_connections'), "
         "(select count(*) from pg_stat_activity), current_setting('server_version')")

# `read` takes the password from the first line of stdin, so EOF is not needed (v4 exec has no way to send it).
LOGIN_SCRIPT = (
    'IFS= read -r PGPASSWORD; export PGPASSWORD; '
    'P=$(command -v psql || echo /opt/bitnami/postgresql/bin/psql); '
    'exec "$P" -X -q -t -A -F "|" -v ON_ERROR_STOP=1 -U "$1" -d "$2" -c "$3"'
)


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


def _parse_row(line: str, via: Via) -> Login:
    parts = line.strip().split("|")
    if len(parts) < 5:
        return Login(False, via, error=f"unexpected answer from psql: {line[:80]!r}")
    _, ssl, maxc, count, version = parts[:5]
    return Login(True, via, ssl=ssl.strip() == "on", max_connections=int(maxc), connections=int(count),
                 server_version=version.strip())


def _exec(app: App, url: DatabaseURL) -> Login:
    s = app.settings
    out = bytearray()

    def take(chunk: bytes) -> None:
        if len(out) < 65536:
            out.extend(chunk)

    result = exec_stream(
        app.kube(), app.namespace, s.postgres_pod, ["sh", "-c", LOGIN_SCRIPT, "coderctl", url.user, url.database,
                                                     QUERY],
        container=s.postgres_container, stdout=take, stdin=[url.password.encode() + b"\n"],
        idle_timeout=app.timeout * 2,
    )
    if not result.ok:
        message = result.stderr.decode("utf-8", "replace").strip() or result.message
        return Login(False, "exec", error=app.redact(_first_error(message)))
    return _parse_row(out.decode("utf-8", "replace"), "exec")


def _direct(app: App, url: DatabaseURL, address: str | None) -> Login:
    import psycopg

    from coderctl.clients.postgres import connect

    host, port = split_address(address, url)
    try:
        with connect(url, timeout=app.timeout, host=host, port=port) as conn:
            row = conn.execute(QUERY).fetchone()
    except psycopg.Error as exc:
        return Login(False, "direct", error=app.redact(_first_error(str(exc))))
    assert row is not None
    return _parse_row("|".join(str(v) for v in row), "direct")


def _first_error(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if re.search(r"FATAL|ERROR|error|could not|failed|refused", line):
            return re.sub(r"^(psql: )?(error: )?", "", line)
    return text.strip().splitlines()[0] if text.strip() else "login failed"


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
