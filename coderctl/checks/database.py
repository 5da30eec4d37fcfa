"""The database URL's settings against the server, and a real login with its credentials."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from coderctl import discovery
from coderctl.checks.base import Outcome, SkipCheck, check, fail, ok, warn
from coderctl.clients.postgres import DatabaseURL
from coderctl.context import App
from coderctl.database import login, server_ssl_from_statefulset
from coderctl.errors import UsageError
from coderctl.redact import mask_url

LIBPQ_DEFAULT = "require"


def _with_sslmode_disable(url: str) -> str:
    parts = urlsplit(url)
    query = re.sub(r"(^|&)sslmode=[^&]*", "", parts.query).strip("&")
    query = (query + "&" if query else "") + "sslmode=disable"
    return str(mask_url(urlunsplit(parts._replace(query=query))))


EXEC_MODULES = ("websockets.sync.client",)


@check("database.url", "database", "Database URL's sslmode agrees with the server", needs=("secret.database",),
       modules=EXEC_MODULES)
def database_url(app: App) -> Outcome:
    """sslmode of the URL (Coder's lib/pq defaults to require) against the server's ssl setting, read by
    logging in, or else from the Bitnami StatefulSet's POSTGRESQL_ENABLE_TLS."""
    raw = discovery.database_url(app)
    try:
        url = DatabaseURL.parse(raw)
    except UsageError as exc:
        return fail(str(exc), "percent-encode the password: urllib.parse.quote(password, safe='')")
    mode = url.params.get("sslmode")
    result = login(app, app.settings.db_via, app.settings.db_address)
    server_ssl, source = (result.ssl, "the server") if result.ok else (server_ssl_from_statefulset(app),
                                                                        "the StatefulSet")
    data = {"sslmode": mode, "server_ssl": server_ssl, "source": source}
    effective = mode or LIBPQ_DEFAULT
    if server_ssl is False and effective != "disable" and effective not in ("allow", "prefer"):
        said = f"sslmode={mode}" if mode else f"no sslmode (lib/pq defaults to {LIBPQ_DEFAULT})"
        return fail(f"the URL has {said} but {source} says ssl is off: Coder fails with "
                    "'pq: SSL is not enabled on the server'",
                    f"set CODER_DATABASE_URL in Infisical to {_with_sslmode_disable(raw)}", **data)
    if server_ssl is None:
        return warn(f"sslmode={effective}; whether the server has ssl on is unknown", None, **data)
    if server_ssl and effective == "disable":
        return ok("sslmode=disable; the server offers ssl but the in-cluster connection does not use it", **data)
    return ok(f"sslmode={effective}, server ssl {'on' if server_ssl else 'off'}", **data)


def _explain(error: str, url: DatabaseURL) -> str:
    lowered = error.lower()
    if "password authentication failed" in lowered:
        return (f"the password in the database URL is not {url.user}'s password in PostgreSQL (password drift). "
                "Bitnami sets passwords only when the data directory is first created, so a changed Secret never "
                "changes the database (bitnami/charts#4025): ALTER ROLE the user to the Secret's password, or put "
                "the database's password back in Infisical; coderctl rotate-secrets does both in order")
    if "ssl" in lowered:
        return "make sslmode in the URL match the server (database.url)"
    if "does not exist" in lowered:
        return "the URL's user or database does not exist on this server; check the names in CODER_DATABASE_URL"
    if "too many clients" in lowered:
        return "raise max_connections (each coderd keeps a pool plus a LISTEN connection)"
    if "no such host" in lowered or "could not translate host" in lowered or "name or service" in lowered:
        return "the URL's host is not a resolvable name; see secret.consistency"
    return "look at the PostgreSQL pod's log: kubectl -n coder logs coder-coder-postgresql-0"


@check("database.connect", "database", "Coder's database credentials log in", needs=("secret.database",),
       modules=EXEC_MODULES)
def database_connect(app: App) -> Outcome:
    """A login with the URL's user, password and database: by exec of psql in the PostgreSQL pod (default), or
    directly (--via direct, --db-address HOST:PORT)."""
    try:
        url = DatabaseURL.parse(discovery.database_url(app))
    except UsageError:
        raise SkipCheck("the database URL does not parse (secret.consistency)") from None
    result = login(app, app.settings.db_via, app.settings.db_address)
    data: dict[str, object] = {"via": result.via, "user": url.user, "database": url.database}
    if not result.ok:
        return fail(f"login as {url.user} to {url.database} via {result.via} failed: {result.error}",
                    _explain(result.error, url), **data)
    data.update(server_version=result.server_version, connections=result.connections,
                max_connections=result.max_connections)
    if result.connections and result.max_connections and result.connections >= 0.9 * result.max_connections:
        return warn(f"logged in, but {result.connections} of max_connections {result.max_connections} are in use",
                    "raise max_connections before Coder hits 'sorry, too many clients already'", **data)
    return ok(f"logged in as {url.user} to {url.database} via {result.via} (PostgreSQL {result.server_version}, "
              f"{result.connections}/{result.max_connections} connections)", **data)
