"""The managed Secret, its consistency with the cluster, and the Infisical sync that fills it."""

from __future__ import annotations

from typing import Any

from coderctl import discovery
from coderctl.checks.base import Outcome, check, found, ok, skip
from coderctl.checks.errors import KUBE_FORBIDDEN, not_found
from coderctl.clients.kube import SECRETS, KubeApiError, KubeNotFound
from coderctl.clients.postgres import DatabaseURL
from coderctl.context import App
from coderctl.snapshot import snapshot
from coderctl.errors import CoderctlError, UsageError
from coderctl.facts.kube import condition_true, service_ref
from coderctl.problems import Problem, code

KEYS = ("postgres-admin-password", "coder-user-password", "database-url")
LOADED = "secrets.infisical.com/LoadedInfisicalToken"
READY = "secrets.infisical.com/ReadyToSyncSecrets"
INFISICAL_VARS = {"postgres-admin-password": "CODER_POSTGRES_ADMIN_PASSWORD",
                  "coder-user-password": "CODER_USER_PASSWORD", "database-url": "CODER_DATABASE_URL"}

SECRET_MISSING = code(
    "SECRET-MISSING", "fail", "The managed database Secret does not exist",
    meaning="the Secret the Infisical operator fills is absent: Coder's pods cannot start (their "
            "CODER_PG_CONNECTION_URL comes from it).",
    evidence="the namespace and Secret name asked for",
    fix="the Infisical operator creates it: infisical.sync says why it did not", check="secret.database")
SECRET_KEY_MISSING = code(
    "SECRET-KEY-MISSING", "fail", "The managed Secret lacks a key",
    meaning="postgres-admin-password, coder-user-password or database-url is absent: the Infisical secret of the "
            "same meaning is missing or renamed.",
    evidence="the Secret's keys", fix="set the missing secret in Infisical and let the operator sync",
    check="secret.database")
SECRET_KEY_EMPTY = code(
    "SECRET-KEY-EMPTY", "fail", "A key of the managed Secret is empty",
    meaning="the key exists but its value is empty: the Infisical secret is empty.",
    evidence="the Secret's empty keys (never their values)",
    fix="set a value for the secret in Infisical and let the operator sync", check="secret.database")
DB_URL_UNPARSABLE = code(
    "DB-URL-UNPARSABLE", "fail", "The database URL does not parse",
    meaning="database-url is not a valid PostgreSQL URL, most often because the password has characters that "
            "must be percent-encoded (coder/coder#16319); Coder cannot start.",
    evidence="the parse error (never the URL's password)",
    fix="percent-encode the password in the URL: urllib.parse.quote(password, safe='')",
    check="secret.consistency, database.url")
DB_PASSWORD_MISMATCH = code(
    "DB-PASSWORD-MISMATCH", "fail", "The database URL's password differs from coder-user-password",
    meaning="the two keys of the managed Secret that should carry the same password do not: one was rotated "
            "without the other.",
    evidence="the keys compared (never their values)",
    fix="make CODER_DATABASE_URL in Infisical carry CODER_USER_PASSWORD (percent-encoded)",
    check="secret.consistency")
DB_PORT_NOT_SERVICE = code(
    "DB-PORT-NOT-SERVICE", "fail", "The database URL's port is not a port of its Service",
    meaning="the URL names an existing Service but a port it does not expose: Coder's connection is refused.",
    evidence="the URL's host and port, and the Service's ports",
    fix="use the Service's port in CODER_DATABASE_URL", check="secret.consistency", coder_code="EDB01")
DB_HOST_NO_SERVICE = code(
    "DB-HOST-NO-SERVICE", "fail", "The database URL names a Service that does not exist",
    meaning="the URL's host is a cluster Service name with no such Service: Coder fails with "
            "'lookup HOST ... no such host'. With Flux the chart's Service is <namespace>-<release>-postgresql.",
    evidence="the URL's host, and the Services in its namespace",
    fix="put the PostgreSQL Service's name in CODER_DATABASE_URL in Infisical, then restart Coder",
    check="secret.consistency", coder_code="EDB01")
INFISICAL_TOKEN_NOT_LOADED = code(
    "INFISICAL-TOKEN-NOT-LOADED", "fail", "The Infisical operator cannot load its token",
    meaning="the InfisicalSecret's LoadedInfisicalToken condition is False: the credentials Secret is missing, "
            "wrong or expired, so nothing syncs.",
    evidence="the LoadedInfisicalToken condition's message",
    fix="fix the credentials Secret (infisical.token); an expired token needs a new one and an operator restart "
        "(Infisical/infisical#7179)", check="infisical.sync")
INFISICAL_SYNC_FAILING = code(
    "INFISICAL-SYNC-FAILING", "fail", "The Infisical operator fails to sync",
    meaning="the ReadyToSyncSecrets condition is False: the operator reaches Infisical but cannot read the "
            "secrets (wrong hostAPI, project, environment or path, or no access; Infisical/infisical#725).",
    evidence="the ReadyToSyncSecrets condition's message and the InfisicalSecret's hostAPI",
    fix="check the InfisicalSecret's hostAPI, project/env slug and path, and the token", check="infisical.sync")
INFISICAL_NOT_RECONCILED = code(
    "INFISICAL-NOT-RECONCILED", "warn", "The InfisicalSecret has not been reconciled",
    meaning="it has no ReadyToSyncSecrets condition: the operator is not running or has not seen it yet.",
    evidence="the InfisicalSecret's conditions", fix="check that the Infisical operator is running",
    check="infisical.sync")
INFISICAL_AUTH_UNKNOWN = code(
    "INFISICAL-AUTH-UNKNOWN", "warn", "The InfisicalSecret uses an authentication coderctl does not read",
    meaning="only service tokens and universal auth are understood, so the credentials are not checked.",
    evidence="the InfisicalSecret's spec.authentication methods",
    fix="none needed if the operator syncs; coderctl reads serviceToken and universalAuth", check="infisical.token")
INFISICAL_NO_CREDENTIALS_REF = code(
    "INFISICAL-NO-CREDENTIALS-REF", "fail", "The InfisicalSecret names no credentials Secret",
    meaning="its authentication has no secretName: the operator has no token to log in with.",
    evidence="the InfisicalSecret's authentication reference",
    fix="set serviceTokenSecretReference (or credentialsRef) to the Secret holding the token",
    check="infisical.token")
INFISICAL_CREDENTIALS_MISSING = code(
    "INFISICAL-CREDENTIALS-MISSING", "fail", "The operator's Infisical credentials Secret does not exist",
    meaning="the Secret the InfisicalSecret references is absent: the operator cannot log in, nothing syncs.",
    evidence="the reference and the missing Secret",
    fix="recreate the Secret with a service token or machine identity from Infisical", check="infisical.token")
INFISICAL_CREDENTIALS_INCOMPLETE = code(
    "INFISICAL-CREDENTIALS-INCOMPLETE", "fail", "The operator's Infisical credentials lack a key",
    meaning="the credentials Secret exists but a key the authentication needs is missing or empty.",
    evidence="the Secret and its missing keys (never values)", fix="put the credentials under that key",
    check="infisical.token")


def infisical_set(app: App, *variables: str) -> str:
    """The `infisical secrets set` command for the deployment's environment and path (values left as ...)."""
    try:
        target = discovery.infisical_target(app)
        env, path = target.environment, target.path
    except (CoderctlError, KeyError):
        env = str(app.settings.infisical_environment or "prod")
        path = str(app.settings.infisical_path or "/")
    return f"infisical secrets set {' '.join(f'{v}=...' for v in variables)} --env {env} --path {path}"


def restart_coder(app: App) -> str:
    return f"kubectl -n {app.namespace} rollout restart deployment/{app.settings.coder_deployment}"


@check("secret.database", "secrets", "Managed database Secret has its three keys", needs=("cluster.reachable",))
def secret_database(app: App) -> Outcome:
    """The Secret the Infisical operator manages: present, with postgres-admin-password, coder-user-password and
    database-url, none empty. Values are never shown."""
    name = app.settings.database_secret
    where = f"Secret {app.namespace}/{name}"
    try:
        data = discovery.secret_data(app, name)
    except KubeNotFound:
        return found([not_found(
            SECRET_MISSING, "Secret", SECRETS, name, app.namespace,
            fix=["the Infisical operator creates it: infisical.sync says why it did not",
                 f"kubectl -n {app.namespace} describe infisicalsecret {app.settings.infisical_secret}"])], "")
    missing = [k for k in KEYS if k not in data]
    empty = [k for k in KEYS if k in data and not data[k]]
    facts = {"keys": sorted(data)}
    problems: list[Problem] = []
    if missing:
        problems.append(SECRET_KEY_MISSING(
            f"Secret {name}: missing {', '.join(missing)}",
            evidence=[f"{where} keys: {', '.join(sorted(data)) or 'none'}"],
            fix=[infisical_set(app, *(INFISICAL_VARS[k] for k in missing)) + " and let the operator sync"]))
    if empty:
        problems.append(SECRET_KEY_EMPTY(
            f"Secret {name}: empty {', '.join(empty)}", evidence=[f"{where} key {k}: empty" for k in empty],
            fix=[infisical_set(app, *(INFISICAL_VARS[k] for k in empty)) + " and let the operator sync"]))
    return found(problems, f"Secret {name} has {', '.join(KEYS)}", **facts)


def _postgres_services(services: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in services if "postgres" in s["metadata"]["name"]
            and (s.get("spec") or {}).get("clusterIP") != "None"]


@check("secret.consistency", "secrets", "Database URL agrees with the password and the Service",
       needs=("secret.database",))
def secret_consistency(app: App) -> Outcome:
    """database-url parses; its password equals coder-user-password; its host is an existing Service (short
    name, name.namespace, .svc, .svc.cluster.local) and its port one of the Service's."""
    secret = app.settings.database_secret
    data = discovery.secret_data(app, secret)
    where = f"Secret {app.namespace}/{secret} key database-url"
    then = [infisical_set(app, "CODER_DATABASE_URL") + " (the operator then syncs the Secret)", restart_coder(app)]
    try:
        url = DatabaseURL.parse(data["database-url"])
    except UsageError as exc:
        reason = str(exc).removeprefix("database URL: ")
        return found([DB_URL_UNPARSABLE(
            f"database-url does not parse: {reason}", evidence=[f"{where}: {reason}"],
            fix=["percent-encode the password in the URL: urllib.parse.quote(password, safe='') "
                 "(coder/coder#16319)", *then])], "")
    problems: list[Problem] = []
    if url.password != data["coder-user-password"]:
        problems.append(DB_PASSWORD_MISMATCH(
            "the password in database-url differs from coder-user-password",
            evidence=[f"Secret {app.namespace}/{secret}: the password of key database-url differs from key "
                      "coder-user-password (values not shown)"],
            fix=["make CODER_DATABASE_URL in Infisical carry CODER_USER_PASSWORD (percent-encoded)", *then]))
    facts: dict[str, Any] = {"host": url.host, "port": url.port, "user": url.user, "database": url.database}
    ref = service_ref(url.host, app.namespace)
    if ref is None:
        facts["service"] = None
    else:
        name, ns = ref
        svc = snapshot(app).service(name, ns)
        if svc is not None:
            ports = [int(p["port"]) for p in (svc.get("spec") or {}).get("ports") or []]
            facts["service"] = f"{ns}/{name}"
            if url.port not in ports:
                problems.append(DB_PORT_NOT_SERVICE(
                    f"port {url.port} is not a port of Service {ns}/{name} ({ports})",
                    evidence=[f"{where}: host {url.host}, port {url.port}", f"Service {ns}/{name} ports: {ports}"],
                    fix=[f"use port {ports[0]} in CODER_DATABASE_URL" if ports else "fix the Service's ports",
                         *then]))
        else:
            services = snapshot(app).services(ns)
            candidates = [s["metadata"]["name"] for s in _postgres_services(services)]
            hint = f"; the PostgreSQL Service is {' or '.join(candidates)}" if candidates else ""
            listed = ", ".join(s["metadata"]["name"] for s in services)
            problems.append(DB_HOST_NO_SERVICE(
                f"host {url.host!r}: no Service {name} in namespace {ns}{hint} — Coder fails with "
                f"'lookup {url.host} ... no such host'",
                evidence=[f"{where}: host {url.host}", f"Services in {ns}: {listed or 'none'}"],
                fix=[f"use host {candidates[0]} in CODER_DATABASE_URL" if candidates
                     else "point the URL at the PostgreSQL Service", *then]))
    return found(problems, f"URL for {url.user}@{url.host}:{url.port}/{url.database} matches the password and the "
                 "Service", **facts)


def _infisical_secret(app: App) -> dict[str, Any] | None:
    return snapshot(app).infisical_secret


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
    where = f"InfisicalSecret {app.namespace}/{app.settings.infisical_secret}"
    scope = f"hostAPI {spec.get('hostAPI')}"
    restart = "kubectl -n infisical-operator rollout restart deployment"
    if loaded is False:
        return found([INFISICAL_TOKEN_NOT_LOADED(
            f"the operator could not load its Infisical token: {loaded_msg}",
            evidence=[f"{where} condition {LOADED}: False, {loaded_msg!r}"],
            fix=["fix the credentials Secret (infisical.token says which); an expired token needs a new one and an "
                 f"operator restart (Infisical/infisical#7179): {restart}"])], "", **facts)
    if ready is False:
        return found([INFISICAL_SYNC_FAILING(
            f"sync failing: {ready_msg}", evidence=[f"{where} condition {READY}: False, {ready_msg!r}",
                                                   f"{where} {scope}"],
            fix=["check the InfisicalSecret's hostAPI, project/env slug and path, and the token "
                 f"(Infisical/infisical#725): kubectl -n {app.namespace} get infisicalsecret "
                 f"{app.settings.infisical_secret} -o yaml",
                 f"an expired token needs a new one and an operator restart (Infisical/infisical#7179): {restart}"])],
            "", **facts)
    if ready is None:
        return found([INFISICAL_NOT_RECONCILED(
            "the InfisicalSecret has no ReadyToSyncSecrets condition yet: the operator has not reconciled it",
            evidence=[f"{where} status.conditions: no {READY}"],
            fix=["check that the Infisical operator is running: kubectl get pods -n infisical-operator"])], "",
            **facts)
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
        methods = ", ".join(auth) or "none"
        return found([INFISICAL_AUTH_UNKNOWN(
            f"authentication method {methods} is not one coderctl reads",
            evidence=[f"InfisicalSecret {app.namespace}/{app.settings.infisical_secret} spec.authentication: "
                      f"{methods}"],
            fix=["service tokens and universal auth are understood"])], "")
    name, ns = ref.get("secretName"), ref.get("secretNamespace") or app.namespace
    owner = f"InfisicalSecret {app.namespace}/{app.settings.infisical_secret}"
    if not name:
        return found([INFISICAL_NO_CREDENTIALS_REF(
            "the InfisicalSecret names no credentials Secret",
            evidence=[f"{owner} spec.authentication.{next(iter(auth))}: no secretName"],
            fix=[f"kubectl -n {app.namespace} edit infisicalsecret {app.settings.infisical_secret}: set the "
                 "credentials Secret's name"])], "")
    try:
        data = discovery.secret_data(app, name, ns)
    except KubeNotFound:
        return found([not_found(
            INFISICAL_CREDENTIALS_MISSING, "Secret", SECRETS, name, ns,
            message=f"Secret {ns}/{name} (the operator's Infisical credentials) not found",
            evidence=[f"{owner} references Secret {ns}/{name}"],
            fix=[f"recreate it: kubectl -n {ns} create secret generic {name} "
                 + " ".join(f"--from-literal={k}=<{k}>" for k in keys)
                 + " (a service token or machine identity from Infisical)"])], "")
    except KubeApiError as exc:
        if exc.status == 403:
            return found([KUBE_FORBIDDEN(
                f"cannot read Secret {ns}/{name}: {exc}",
                evidence=[f"get secrets/{name} in namespace {ns}: HTTP 403: {exc}"],
                fix=["verify needs get on secrets in that namespace (docs/rbac.md)",
                     f"kubectl auth can-i get secrets -n {ns}"])], "")
        raise
    missing = [k for k in keys if not data.get(k)]
    if missing:
        return found([INFISICAL_CREDENTIALS_INCOMPLETE(
            f"Secret {ns}/{name} lacks {', '.join(missing)}",
            evidence=[f"Secret {ns}/{name} key {k}: missing or empty" for k in missing],
            fix=[f"put the credentials under that key: kubectl -n {ns} edit secret {name}"])], "")
    return ok(f"Secret {ns}/{name} has {', '.join(keys)}", secret=f"{ns}/{name}")
