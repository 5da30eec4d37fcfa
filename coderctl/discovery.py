"""What the cluster tells about the deployment: its Coder Deployment, URLs and database URL.

The objects come from the run's snapshot (coderctl.snapshot), read once; an explicitly configured value
always wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coderctl.clients.infisical import InfisicalAuth, InfisicalClient
from coderctl.clients.kube import SECRETS
from coderctl.context import App
from coderctl.errors import CoderctlError
from coderctl.facts.kube import decoded_data
from coderctl.profile import FIELDS_BY_NAME
from coderctl.snapshot import snapshot


class DiscoveryError(CoderctlError):
    pass


class InfisicalCredentialsMissing(DiscoveryError):
    """None configured, and the InfisicalSecret names no service token coderctl can read."""


def coder_deployment(app: App) -> dict[str, Any]:
    return snapshot(app).coder_deployment


def container(pod_spec: dict[str, Any], name: str) -> dict[str, Any] | None:
    containers = pod_spec.get("containers") or []
    for c in containers:
        if c.get("name") == name:
            return dict(c)
    return dict(containers[0]) if len(containers) == 1 else None


def coder_env(app: App) -> dict[str, dict[str, Any]]:
    """The Coder container's env entries by name (each the raw `{name, value|valueFrom}` entry)."""
    dep = coder_deployment(app)
    spec = ((dep.get("spec") or {}).get("template") or {}).get("spec") or {}
    c = container(spec, app.settings.coder_container)
    return {e["name"]: e for e in (c or {}).get("env") or [] if "name" in e}


def _from_env(app: App, field: str, var: str) -> str | None:
    if app.settings.values[field].value:
        return str(app.settings.values[field].value)
    entry = coder_env(app).get(var)
    if entry is None or "value" not in entry:
        return None
    return str(entry["value"])


def access_url(app: App) -> str | None:
    """--access-url or configuration, else CODER_ACCESS_URL of the Coder Deployment."""
    return _from_env(app, "access_url", "CODER_ACCESS_URL")


def wildcard_url(app: App) -> str | None:
    return _from_env(app, "wildcard_url", "CODER_WILDCARD_ACCESS_URL")


def secret_data(app: App, name: str, namespace: str | None = None) -> dict[str, str]:
    """A Secret's decoded data; every value is registered with the redactor before anyone sees it."""
    return snapshot(app).secret_data(name, namespace)


def secret_object(app: App, name: str, namespace: str | None = None) -> dict[str, Any]:
    """A Secret as the API returns it (annotations included), read once per run; its values are registered
    with the redactor before anyone sees them. KubeNotFound when it does not exist."""
    ns = namespace or app.namespace

    def read() -> dict[str, Any]:
        obj = app.kube().get(SECRETS, name, ns)
        app.redact.add(*decoded_data(obj).values())
        return obj

    return app.cached(f"secret-object:{ns}/{name}", read)  # type: ignore[no-any-return]


def database_url(app: App) -> str:
    """--database-url or configuration, else the Secret key CODER_PG_CONNECTION_URL refers to."""
    configured = app.settings.database_url
    if configured:
        app.redact.add(configured)
        return str(configured)
    entry = coder_env(app).get("CODER_PG_CONNECTION_URL")
    if entry is None:
        raise DiscoveryError("the Coder container has no CODER_PG_CONNECTION_URL")
    if "value" in entry:
        app.redact.add(entry["value"])
        return str(entry["value"])
    ref = (entry.get("valueFrom") or {}).get("secretKeyRef") or {}
    if not ref.get("name") or not ref.get("key"):
        raise DiscoveryError("CODER_PG_CONNECTION_URL is neither a value nor a secretKeyRef")
    data = secret_data(app, ref["name"])
    if ref["key"] not in data:
        raise DiscoveryError(f"Secret {ref['name']} has no key {ref['key']}")
    return data[ref["key"]]


@dataclass(frozen=True)
class InfisicalTarget:
    """Where the operator reads the deployment's secrets, and with which credentials Secret."""

    host: str
    environment: str
    path: str
    project: str | None
    token_secret: tuple[str, str] | None  # (namespace, name)
    token_key: str


def infisical_target(app: App) -> InfisicalTarget:
    """The InfisicalSecret's hostAPI, secretsScope and token reference; configured values win."""
    s = app.settings
    obj = snapshot(app).infisical_secret_object
    spec = obj.get("spec") or {}
    auth = spec.get("authentication") or {}
    token = (auth.get("serviceToken") or {})
    scope = token.get("secretsScope") or (auth.get("universalAuth") or {}).get("secretsScope") or {}
    ref = token.get("serviceTokenSecretReference") or {}
    secret = (ref.get("secretNamespace") or app.namespace, ref["secretName"]) if ref.get("secretName") else None
    if s.infisical_token_secret:
        ns, _, name = str(s.infisical_token_secret).rpartition("/")
        secret = (ns or app.namespace, name)
    return InfisicalTarget(
        host=str(s.infisical_host or spec.get("hostAPI") or "https://app.infisical.com/api"),
        environment=str(s.infisical_environment or scope.get("envSlug") or "prod"),
        path=str(s.infisical_path or scope.get("secretsPath") or "/"),
        project=s.infisical_project or scope.get("projectId") or None,
        token_secret=secret,
        token_key="infisicalToken",
    )


def infisical_auth(app: App) -> InfisicalAuth:
    """Credentials from the settings (universal auth, else a token), else the operator's own service token."""
    s = app.settings
    if bool(s.infisical_client_id) != bool(s.infisical_client_secret) and not s.infisical_token:
        missing = "infisical_client_secret" if s.infisical_client_id else "infisical_client_id"
        raise DiscoveryError(f"Infisical universal auth is half configured: {missing} is not set "
                             f"({FIELDS_BY_NAME[missing].env_var})")
    auth = InfisicalAuth.from_values(s.infisical_client_id, s.infisical_client_secret, s.infisical_token)
    if auth is None:
        target = infisical_target(app)
        if target.token_secret is None:
            raise InfisicalCredentialsMissing(
                "no Infisical credentials: set INFISICAL_UNIVERSAL_AUTH_CLIENT_ID/_SECRET or INFISICAL_TOKEN, or "
                "reference a service token in the InfisicalSecret")
        ns, name = target.token_secret
        token = secret_data(app, name, ns).get(target.token_key)
        if not token:
            raise InfisicalCredentialsMissing(f"Secret {ns}/{name} has no {target.token_key}")
        auth = InfisicalAuth.service_token(token)
    app.redact.add(auth.secret)
    return auth


def infisical_auth_source(app: App) -> str:
    """Which credentials infisical_auth uses, for messages: the setting and where it came from, or the Secret."""
    s = app.settings
    if s.infisical_client_id and s.infisical_client_secret:
        return f"universal auth ({s.source('infisical_client_id')})"
    if s.infisical_token:
        return f"the token from {s.source('infisical_token')}"
    target = infisical_target(app)
    where = f" (Secret {'/'.join(target.token_secret)})" if target.token_secret else ""
    return f"the operator's service token{where}"


def infisical_client(app: App) -> tuple[InfisicalClient, str]:
    """The one place an Infisical client is built: target and credentials from the settings and the cluster;
    returns it with the project id (asked of Infisical when only a service token knows it)."""
    target = infisical_target(app)
    auth = infisical_auth(app)
    client = InfisicalClient(target.host, auth, timeout=app.timeout, register=app.redact.add)
    project = target.project
    if project is None:
        if auth.kind != "service-token":
            raise DiscoveryError("the Infisical project id is unknown: set infisical_project")
        project = client.service_token_project()
    return client, project
