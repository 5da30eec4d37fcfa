"""Kubernetes API access through the official client's configuration, auth and HTTP layer.

Objects come back as plain dicts (the JSON the API sent): checks read a few fields of many kinds,
custom resources included, and dicts keep that uniform without importing the generated models.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from coderctl.errors import CoderctlError, ConfigError

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, Configuration


class KubeError(CoderctlError):
    """The API answered with an error, or could not be reached."""


class KubeUnreachable(KubeError):
    pass


class KubeApiError(KubeError):
    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeNotFound(KubeApiError):
    pass


class KubeForbidden(KubeApiError):
    def __init__(self, status: int, message: str, reason: str, verb: str, resource: str) -> None:
        super().__init__(status, message, reason)
        self.verb = verb
        self.resource = resource


class KubeUnauthorized(KubeApiError):
    pass


@dataclass(frozen=True)
class Resource:
    """An API resource: `group_version` is "v1" for the core group, else "group/version"."""

    group_version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
        if sub:
            base += f"/{sub}"
        return base


PODS = Resource("v1", "pods")
SERVICES = Resource("v1", "services")
SECRETS = Resource("v1", "secrets")
CONFIGMAPS = Resource("v1", "configmaps")
EVENTS = Resource("v1", "events")
PVCS = Resource("v1", "persistentvolumeclaims")
DEPLOYMENTS = Resource("apps/v1", "deployments")
STATEFULSETS = Resource("apps/v1", "statefulsets")
INGRESSES = Resource("networking.k8s.io/v1", "ingresses")
INFISICALSECRETS = Resource("secrets.infisical.com/v1alpha1", "infisicalsecrets")
HELMRELEASES = Resource("helm.toolkit.fluxcd.io/v2", "helmreleases")
KUSTOMIZATIONS = Resource("kustomize.toolkit.fluxcd.io/v1", "kustomizations")
IPADDRESSPOOLS = Resource("metallb.io/v1beta1", "ipaddresspools")


def _load_configuration(kubeconfig: str | None, context: str | None) -> Configuration:
    from kubernetes import config as kconfig
    from kubernetes.client import Configuration
    from kubernetes.config.config_exception import ConfigException

    cfg = Configuration()
    paths = [p for p in (kubeconfig or os.environ.get("KUBECONFIG") or "").split(os.pathsep) if p]
    if not paths:
        default = Path("~/.kube/config").expanduser()
        if default.is_file():
            paths = [str(default)]
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            try:
                kconfig.load_incluster_config(client_configuration=cfg)
            except ConfigException as exc:
                raise ConfigError(f"in-cluster configuration: {exc}") from None
            return cfg
        else:
            raise ConfigError("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config")
    missing = [p for p in paths if not Path(p).expanduser().is_file()]
    if missing:
        raise ConfigError(f"kubeconfig {missing[0]} does not exist")
    try:
        kconfig.load_kube_config(
            config_file=os.pathsep.join(paths), context=context, client_configuration=cfg, persist_config=False
        )
    except ConfigException as exc:
        raise ConfigError(f"kubeconfig {os.pathsep.join(paths)}: {str(exc).strip().splitlines()[0]}") from None
    except Exception as exc:  # malformed YAML and friends surface as assorted exceptions
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"kubeconfig {os.pathsep.join(paths)} is not valid: {first}") from None
    return cfg


class KubeClient:
    """A thin, thread-safe wrapper: get/list/patch/logs as dicts, errors as KubeError subclasses."""

    def __init__(self, kubeconfig: str | None, context: str | None, timeout: float) -> None:
        self.configuration = _load_configuration(kubeconfig, context)
        self.configuration.retries = False
        self.configuration.connection_pool_maxsize = 32  # checks run concurrently; keep their connections
        self.timeout = timeout
        self._api: ApiClient | None = None

    @property
    def host(self) -> str:
        return str(self.configuration.host)

    @property
    def api(self) -> ApiClient:
        if self._api is None:
            from kubernetes.client import ApiClient

            self._api = ApiClient(self.configuration)
        return self._api

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        raw: bool = False,
        timeout: float | None = None,
    ) -> Any:
        import urllib3

        url = self.host.rstrip("/") + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None}, doseq=True)
        headers = {"Accept": "application/json", "Content-Type": content_type}
        self._authorize(headers)
        t = timeout or self.timeout
        try:
            response = self.api.rest_client.request(
                method, url, headers=headers, body=body, _request_timeout=(t, t)
            )
            data = response.read()
        except urllib3.exceptions.HTTPError as exc:
            raise KubeUnreachable(f"cannot reach the Kubernetes API at {self.host}: {_reason(exc)}") from None
        if response.status >= 400:
            raise _api_error(method, path, response.status, data)
        if raw:
            return data.decode("utf-8", "replace")
        return json.loads(data) if data else {}

    def _authorize(self, headers: dict[str, str]) -> None:
        cfg = self.configuration
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)
        token = cfg.get_api_key_with_prefix("authorization") or cfg.get_api_key_with_prefix("BearerToken")
        if token:
            headers["Authorization"] = token
        elif cfg.username and cfg.password:
            headers["Authorization"] = str(cfg.get_basic_auth_token())

    def version(self) -> dict[str, Any]:
        return dict(self.request("GET", "/version"))

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        return dict(self.request("GET", resource.path(namespace, name)))

    def get_or_none(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return self.get(resource, name, namespace)
        except KubeNotFound:
            return None

    def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        data = self.request(
            "GET", resource.path(namespace),
            query={"labelSelector": label_selector, "fieldSelector": field_selector},
        )
        return list(data.get("items") or [])

    def patch(self, resource: Resource, name: str, namespace: str | None, patch: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("PATCH", resource.path(namespace, name), body=patch,
                                 content_type="application/merge-patch+json"))

    def logs(
        self, namespace: str, pod: str, container: str | None = None, *, previous: bool = False,
        tail_lines: int | None = None,
    ) -> str:
        query = {"container": container, "previous": "true" if previous else None, "tailLines": tail_lines}
        return str(self.request("GET", PODS.path(namespace, pod, "log"), query=query, raw=True))


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    for needle, short in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                          ("Name or service not known", "host name not found"),
                          ("CERTIFICATE_VERIFY_FAILED", "TLS certificate verification failed")):
        if needle in text:
            return short
    return text.split(": ", 1)[-1][:200]


_VERBS = {"GET": "get", "PATCH": "patch", "PUT": "update", "POST": "create", "DELETE": "delete"}


def _api_error(method: str, path: str, status: int, data: bytes) -> KubeApiError:
    try:
        body = json.loads(data)
        message = str(body.get("message") or "")
        reason = str(body.get("reason") or "")
    except (ValueError, AttributeError):
        message, reason = data.decode("utf-8", "replace")[:200], ""
    message = message or f"HTTP {status}"
    if status == 404:
        return KubeNotFound(status, message, reason)
    if status == 401:
        return KubeUnauthorized(status, f"the Kubernetes API rejected the credentials: {message}", reason)
    if status == 403:
        parts = [p for p in path.split("?")[0].split("/") if p]
        verb = _VERBS.get(method, method.lower())
        resource = parts[-1] if parts else path
        if "namespaces" in parts:
            after = parts[parts.index("namespaces") + 2:]
            if after:
                resource = after[0] + ("/" + after[2] if len(after) > 2 else "")
                if method == "GET" and len(after) == 1:
                    verb = "list"
        return KubeForbidden(status, message, reason, verb, resource)
    return KubeApiError(status, message, reason)
