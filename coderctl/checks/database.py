"""The database URL's settings against the server, and a real login with its credentials."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from coderctl import discovery
from coderctl.checks.base import Outcome, SkipCheck, check, found, ok
from coderctl.checks.secrets import DB_URL_UNPARSABLE, infisical_set, restart_coder
from coderctl.clients.postgres import DatabaseURL
from coderctl.context import App
from coderctl.database import login, server_ssl_from_statefulset
from coderctl.errors import UsageError
from coderctl.problems import Code, code
from coderctl.redact import mask_url

LIBPQ_DEFAULT = "require"

DB_SSLMODE_MISMATCH = code(
    "DB-SSLMODE-MISMATCH", "fail", "The database URL requires SSL; the server has it off",
    meaning="the URL's sslmode (lib/pq defaults to require) needs TLS but PostgreSQL has ssl off: Coder fails with "
            "'pq: SSL is not enabled on the server'.",
    evidence="the URL's sslmode and the server's ssl setting (from a login, or the StatefulSet's "
             "POSTGRESQL_ENABLE_TLS)",
    fix="add sslmode=disable to CODER_DATABASE_URL in Infisical (in-cluster traffic), or enable TLS on the server",
    check="database.url", coder_code="EDB01")
DB_SSL_UNKNOWN = code(
    "DB-SSL-UNKNOWN", "warn", "Whether the database server has SSL on is unknown",
    meaning="no login succeeded and the StatefulSet does not say, so the URL's sslmode cannot be compared.",
    evidence="the URL's sslmode", fix="make database.connect pass; then this check can compare",
    check="database.url")
DB_PASSWORD_DRIFT = code(
    "DB-PASSWORD-DRIFT", "fail", "The database URL's password is not the role's password in PostgreSQL",
    meaning="password authentication failed: the Secret changed but the database did not. Bitnami sets passwords "
            "only when the data directory is first created (bitnami/charts#4025).",
    evidence="the login's user, database and PostgreSQL's answer",
    fix="ALTER ROLE the user to the Secret's password, or put the database's password back in Infisical; "
        "coderctl rotate-secrets does both in order", check="database.connect", coder_code="EDB01")
DB_SSL_REJECTED = code(
    "DB-SSL-REJECTED", "fail", "The login failed on SSL",
    meaning="the server and the URL disagree about SSL.",
    evidence="the login's error", fix="make sslmode in the URL match the server (database.url)",
    check="database.connect", coder_code="EDB01")
DB_ROLE_OR_DATABASE_MISSING = code(
    "DB-ROLE-OR-DATABASE-MISSING", "fail", "The URL's user or database does not exist",
    meaning="PostgreSQL answered that the role or the database does not exist on this server.",
    evidence="the login's user, database and PostgreSQL's answer",
    fix="check the names in CODER_DATABASE_URL against the server (\\du, \\l)", check="database.connect",
    coder_code="EDB01")
DB_TOO_MANY_CLIENTS = code(
    "DB-TOO-MANY-CLIENTS", "fail", "PostgreSQL refuses connections: too many clients",
    meaning="max_connections is reached; each coderd keeps a pool plus a LISTEN connection.",
    evidence="PostgreSQL's answer", fix="raise max_connections, or find what holds the connections",
    check="database.connect", coder_code="EDB01")
DB_HOST_UNRESOLVABLE = code(
    "DB-HOST-UNRESOLVABLE", "fail", "The database URL's host does not resolve",
    meaning="the host name in the URL is not a resolvable name.",
    evidence="the login's error", fix="see secret.consistency: put the PostgreSQL Service's name in the URL",
    check="database.connect", coder_code="EDB01")
DB_LOGIN_FAILED = code(
    "DB-LOGIN-FAILED", "fail", "The login with the database URL's credentials failed",
    meaning="a login failed for a reason not classified above; PostgreSQL's log says more.",
    evidence="the login's error", fix="look at the PostgreSQL pod's log", check="database.connect",
    coder_code="EDB01")
DB_CONNECTIONS_NEAR_MAX = code(
    "DB-CONNECTIONS-NEAR-MAX", "warn", "PostgreSQL is close to max_connections",
    meaning="90 % or more of max_connections are in use: Coder will soon get 'sorry, too many clients already'.",
    evidence="connections in use and max_connections",
    fix="raise max_connections before Coder hits the limit", check="database.connect")


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
        return found([DB_URL_UNPARSABLE(
            str(exc), evidence=[f"the database URL of Coder: {exc}"],
            fix=["percent-encode the password: urllib.parse.quote(password, safe='')",
                 infisical_set(app, "CODER_DATABASE_URL"), restart_coder(app)])], "")
    mode = url.params.get("sslmode")
    result = login(app, app.settings.db_via, app.settings.db_address)
    server_ssl, source = (result.ssl, "the server") if result.ok else (server_ssl_from_statefulset(app),
                                                                        "the StatefulSet")
    data = {"sslmode": mode, "server_ssl": server_ssl, "source": source}
    effective = mode or LIBPQ_DEFAULT
    if server_ssl is False and effective != "disable" and effective not in ("allow", "prefer"):
        said = f"sslmode={mode}" if mode else f"no sslmode (lib/pq defaults to {LIBPQ_DEFAULT})"
        return found([DB_SSLMODE_MISMATCH(
            f"the URL has {said} but {source} says ssl is off: Coder fails with "
            "'pq: SSL is not enabled on the server'",
            evidence=[f"database URL sslmode: {mode or 'unset'}",
                      f"{source}: ssl off" + (" (POSTGRESQL_ENABLE_TLS)" if source == "the StatefulSet" else "")],
            fix=[f"set CODER_DATABASE_URL in Infisical to {_with_sslmode_disable(raw)}",
                 infisical_set(app, "CODER_DATABASE_URL"), restart_coder(app)])], "", **data)
    if server_ssl is None:
        return found([DB_SSL_UNKNOWN(
            f"sslmode={effective}; whether the server has ssl on is unknown",
            evidence=[f"database URL sslmode: {mode or 'unset'}", f"login: {result.error or 'failed'}",
                      "StatefulSet: no POSTGRESQL_ENABLE_TLS"],
            fix=["make database.connect pass; then this check can compare"])], "", **data)
    if server_ssl and effective == "disable":
        return ok("sslmode=disable; the server offers ssl but the in-cluster connection does not use it", **data)
    return ok(f"sslmode={effective}, server ssl {'on' if server_ssl else 'off'}", **data)


def _explain(error: str, url: DatabaseURL, app: App) -> tuple[Code, list[str]]:
    """The code of a failed login and its fix, from PostgreSQL's (or the client's) answer."""
    lowered = error.lower()
    if "password authentication failed" in lowered:
        return DB_PASSWORD_DRIFT, [
            f"the password in the database URL is not {url.user}'s password in PostgreSQL (password drift). "
            "Bitnami sets passwords only when the data directory is first created, so a changed Secret never "
            "changes the database (bitnami/charts#4025): ALTER ROLE the user to the Secret's password, or put "
            "the database's password back in Infisical; coderctl rotate-secrets does both in order"]
    if "ssl" in lowered:
        return DB_SSL_REJECTED, ["make sslmode in the URL match the server (database.url)"]
    if "does not exist" in lowered:
        return DB_ROLE_OR_DATABASE_MISSING, [
            "the URL's user or database does not exist on this server; check the names in CODER_DATABASE_URL"]
    if "too many clients" in lowered:
        return DB_TOO_MANY_CLIENTS, ["raise max_connections (each coderd keeps a pool plus a LISTEN connection)"]
    if "no such host" in lowered or "could not translate host" in lowered or "name or service" in lowered:
        return DB_HOST_UNRESOLVABLE, ["the URL's host is not a resolvable name; see secret.consistency"]
    s = app.settings
    return DB_LOGIN_FAILED, [f"look at the PostgreSQL pod's log: kubectl -n {app.namespace} logs {s.postgres_pod} "
                             f"-c {s.postgres_container}"]


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
        kind, fix = _explain(result.error, url, app)
        return found([kind(f"login as {url.user} to {url.database} via {result.via} failed: {result.error}",
                           evidence=[f"login as {url.user} to database {url.database} at {url.host}:{url.port} "
                                     f"via {result.via}: {result.error}"], fix=fix)], "", **data)
    data.update(server_version=result.server_version, connections=result.connections,
                max_connections=result.max_connections)
    if result.connections and result.max_connections and result.connections >= 0.9 * result.max_connections:
        return found([DB_CONNECTIONS_NEAR_MAX(
            f"logged in, but {result.connections} of max_connections {result.max_connections} are in use",
            evidence=[f"pg_stat_activity: {result.connections} connections; max_connections: "
                      f"{result.max_connections}"],
            fix=["raise max_connections before Coder hits 'sorry, too many clients already' (the PostgreSQL "
                 f"HelmRelease's primary.extendedConfiguration, then restart statefulset/"
                 f"{app.settings.postgres_statefulset})"])], "", **data)
    return ok(f"logged in as {url.user} to {url.database} via {result.via} (PostgreSQL {result.server_version}, "
              f"{result.connections}/{result.max_connections} connections)", **data)
