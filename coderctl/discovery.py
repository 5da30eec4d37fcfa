"""What the cluster tells about the deployment: its Coder Deployment, URLs and database URL.

Each value is read once per run (App.cached) and an explicitly configured value always wins.
"""

from __future__ import annotations

import base64
from typing import Any

from coderctl.clients.kube import DEPLOYMENTS, SECRETS
from coderctl.context import App
from coderctl.errors import CoderctlError


class DiscoveryError(CoderctlError):
    pass


def coder_deployment(app: App) -> dict[str, Any]:
    s = app.settings
    return app.cached("coder-deployment", lambda: app.kube().get(DEPLOYMENTS, s.coder_deployment, app.namespace))  # type: ignore[no-any-return]


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
    ns = namespace or app.namespace

    def read() -> dict[str, str]:
        secret = app.kube().get(SECRETS, name, ns)
        decoded: dict[str, str] = {}
        for key, value in (secret.get("data") or {}).items():
            try:
                decoded[key] = base64.b64decode(value).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                decoded[key] = ""
            app.redact.add(decoded[key])
        return decoded

    return app.cached(f"secret:{ns}/{name}", read)  # type: ignore[no-any-return]


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
