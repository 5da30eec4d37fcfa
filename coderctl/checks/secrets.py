"""The managed Secret, its consistency with the cluster, and the Infisical sync that fills it."""

from __future__ import annotations

from typing import Any

from coderctl import discovery
from coderctl.checks.base import Outcome, check, error, fail, ok, skip, warn
from coderctl.checks.kubefacts import condition_true, service_ref
from coderctl.clients.kube import INFISICALSECRETS, SERVICES, KubeApiError, KubeNotFound
from coderctl.clients.postgres import DatabaseURL
from coderctl.context import App
from coderctl.errors import UsageError

KEYS = ("postgres-admin-password", "coder-user-password", "database-url")
LOADED = "secrets.infisical.com/LoadedInfisicalToken"
READY = "secrets.infisical.com/ReadyToSyncSecrets"


@check("secret.database", "secrets", "Managed database Secret has its three keys", needs=("cluster.reachable",))
def secret_database(app: App) -> Outcome:
    """The Secret the Infisical operator manages: present, with postgres-admin-password, coder-user-password and
    database-url, none empty. Values are never shown."""
    name = app.settings.database_secret
    try:
        data = discovery.secret_data(app, name)
    except KubeNotFound:
        return fail(f"Secret {app.namespace}/{name} not found",
                    "the Infisical operator creates it: infisical.sync says why it did not")
    missing = [k for k in KEYS if k not in data]
    empty = [k for k in KEYS if k in data and not data[k]]
    facts = {"keys": sorted(data)}
    if missing or empty:
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"empty {', '.join(empty)}"] if empty else []
        return fail(f"Secret {name}: " + "; ".join(parts),
                    "set CODER_POSTGRES_ADMIN_PASSWORD, CODER_USER_PASSWORD and CODER_DATABASE_URL in Infisical "
                    "(environment prod, path /) and let the operator sync", **facts)
    return ok(f"Secret {name} has {', '.join(KEYS)}", **facts)


def _postgres_services(app: App, namespace: str) -> list[dict[str, Any]]:
    services = app.kube().list(SERVICES, namespace)
    return [s for s in services if "postgres" in s["metadata"]["name"]
            and (s.get("spec") or {}).get("clusterIP") != "None"]


@check("secret.consistency", "secrets", "Database URL agrees with the password and the Service",
       needs=("secret.database",))
def secret_consistency(app: App) -> Outcome:
    """database-url parses; its password equals coder-user-password; its host is an existing Service (short
    name, name.namespace, .svc, .svc.cluster.local) and its port one of the Service's."""
    data = discovery.secret_data(app, app.settings.database_secret)
    try:
        url = DatabaseURL.parse(data["database-url"])
    except UsageError as exc:
        return fail(f"database-url does not parse: {str(exc).removeprefix('database URL: ')}",
                    "percent-encode the password in the URL: urllib.parse.quote(password, safe='') "
                    "(coder/coder#16319)")
    problems: list[str] = []
    fixes: list[str] = []
    if url.password != data["coder-user-password"]:
        problems.append("the password in database-url differs from coder-user-password")
        fixes.append("make CODER_DATABASE_URL in Infisical carry CODER_USER_PASSWORD (percent-encoded)")
    facts: dict[str, Any] = {"host": url.host, "port": url.port, "user": url.user, "database": url.database}
    ref = service_ref(url.host, app.namespace)
    if ref is None:
        facts["service"] = None
    else:
        name, ns = ref
        try:
            svc = app.kube().get(SERVICES, name, ns)
            ports = [int(p["port"]) for p in (svc.get("spec") or {}).get("ports") or []]
            facts["service"] = f"{ns}/{name}"
            if url.port not in ports:
                problems.append(f"port {url.port} is not a port of Service {ns}/{name} ({ports})")
                fixes.append(f"use port {ports[0]}" if ports else "fix the Service's ports")
        except KubeNotFound:
            candidates = [s["metadata"]["name"] for s in _postgres_services(app, ns)]
            hint = f"; the PostgreSQL Service is {' or '.join(candidates)}" if candidates else ""
            problems.append(f"host {url.host!r}: no Service {name} in namespace {ns}{hint} — Coder fails with "
                            f"'lookup {url.host} ... no such host'")
            fixes.append(f"use host {candidates[0]} in CODER_DATABASE_URL" if candidates
                         else "point the URL at the PostgreSQL Service")
    if problems:
        return fail("; ".join(problems), "; ".join(fixes) + " (then the operator syncs the Secret)", **facts)
    return ok(f"URL for {url.user}@{url.host}:{url.port}/{url.database} matches the password and the Service",
              **facts)


def _infisical_secret(app: App) -> dict[str, Any] | None:
    def read() -> dict[str, Any] | None:
        try:
            return app.kube().get(INFISICALSECRETS, app.settings.infisical_secret, app.namespace)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise
    return app.cached("infisicalsecret", read)  # type: ignore[no-any-return]


@check("infisical.sync", "secrets", "Infisical operator syncs the database secrets", needs=("cluster.reachable",))
def infisical_sync(app: App) -> Outcome:
    """The InfisicalSecret's conditions LoadedInfisicalToken and ReadyToSyncSecrets, with their messages."""
    obj = _infisical_secret(app)
    if obj is None:
        return skip(f"no InfisicalSecret {app.namespace}/{app.settings.infisical_secret} (or the Infisical operator "
                    "is not installed)")
    loaded, loaded_msg = condition_true(obj, LOADED)
    ready, ready_msg = condition_true(obj, READY)
    spec = obj.get("spec") or {}
    facts = {"host_api": spec.get("hostAPI"), "loaded_token": loaded, "ready": ready, "message": ready_msg}
    fix = ("check the InfisicalSecret's hostAPI, project/env slug and path, and the token "
           "(Infisical/infisical#725); an expired token needs a new one and an operator restart "
           "(Infisical/infisical#7179): kubectl -n infisical-operator rollout restart deployment")
    if loaded is False:
        return fail(f"the operator could not load its Infisical token: {loaded_msg}", fix, **facts)
    if ready is False:
        return fail(f"sync failing: {ready_msg}", fix, **facts)
    if ready is None:
        return warn("the InfisicalSecret has no ReadyToSyncSecrets condition yet: the operator has not "
                    "reconciled it", "check that the Infisical operator is running", **facts)
    return ok(f"syncing: {ready_msg}", **facts)


@check("infisical.token", "secrets", "The operator's Infisical credentials exist", needs=("cluster.reachable",))
def infisical_token(app: App) -> Outcome:
    """The Secret the InfisicalSecret's authentication references (service token or universal auth) exists
    and has its keys, non-empty."""
    obj = _infisical_secret(app)
    if obj is None:
        return skip("no InfisicalSecret to read the token reference from")
    auth = (obj.get("spec") or {}).get("authentication") or {}
    if "serviceToken" in auth:
        ref = (auth["serviceToken"] or {}).get("serviceTokenSecretReference") or {}
        keys: tuple[str, ...] = ("infisicalToken",)
    elif "universalAuth" in auth:
        ref = (auth["universalAuth"] or {}).get("credentialsRef") or {}
        keys = ("clientId", "clientSecret")
    else:
        return warn(f"authentication method {', '.join(auth) or 'none'} is not one coderctl reads",
                    "service tokens and universal auth are understood")
    name, ns = ref.get("secretName"), ref.get("secretNamespace") or app.namespace
    if not name:
        return fail("the InfisicalSecret names no credentials Secret")
    try:
        data = discovery.secret_data(app, name, ns)
    except KubeNotFound:
        return fail(f"Secret {ns}/{name} (the operator's Infisical credentials) not found",
                    f"recreate it: kubectl -n {ns} create secret generic {name} --from-literal="
                    f"{keys[0]}=<token> (a service token or machine identity from Infisical)")
    except KubeApiError as exc:
        if exc.status == 403:
            return error(f"cannot read Secret {ns}/{name}: {exc}",
                         "verify needs get on secrets in that namespace (docs/rbac.md)")
        raise
    missing = [k for k in keys if not data.get(k)]
    if missing:
        return fail(f"Secret {ns}/{name} lacks {', '.join(missing)}", "put the credentials under that key")
    return ok(f"Secret {ns}/{name} has {', '.join(keys)}", secret=f"{ns}/{name}")
