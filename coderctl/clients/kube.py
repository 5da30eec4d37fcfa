"""Kubernetes API access through the official client's configuration, auth and HTTP layer.

Objects come back as plain dicts (the JSON the API sent): checks read a few fields of many kinds,
custom resources included, and dicts keep that uniform without importing the generated models.
The error classes live in kube_errors.py (re-exported here), watching and waiting in kube_watch.py,
Lease helpers in kube_lease.py.
"""

from __future__ import annotations

import builtins
import copy
import json
import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlencode

from coderctl.clients import kube_watch
from coderctl.clients.kube_errors import KubeAlreadyExists as KubeAlreadyExists
from coderctl.clients.kube_errors import KubeApiError as KubeApiError
from coderctl.clients.kube_errors import KubeConflict as KubeConflict
from coderctl.clients.kube_errors import KubeError as KubeError
from coderctl.clients.kube_errors import KubeForbidden as KubeForbidden
from coderctl.clients.kube_errors import KubeGone as KubeGone
from coderctl.clients.kube_errors import KubeNotFound as KubeNotFound
from coderctl.clients.kube_errors import KubeUnauthorized as KubeUnauthorized
from coderctl.clients.kube_errors import KubeUnreachable as KubeUnreachable
from coderctl.clients.kube_errors import KubeWaitTimeout as KubeWaitTimeout
from coderctl.concurrent import Overran, within
from coderctl.clients.kube_errors import api_error
from coderctl.errors import ConfigError

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, Configuration


PatchKind = Literal["merge", "strategic", "json"]
PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}


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
LEASES = Resource("coordination.k8s.io/v1", "leases")

READS = frozenset({"GET", "HEAD"})

LIBRARY_MODULES = ("kubernetes.config", "kubernetes.client")
"""What the client imports when it is first built (about half a second, much more on a busy machine): a run
that may need the cluster imports them before its clock starts, so no timeout is spent importing."""


def _load_configuration(kubeconfig: str | None, context: str | None) -> Configuration:
    """The client configuration from the kubeconfig files as kubectl merges them (see kubeconfig.py), else
    in-cluster."""
    from coderctl.clients.kubeconfig import read_kubeconfigs

    found = read_kubeconfigs(kubeconfig)
    if found is not None:
        found.check_context(context)
    from kubernetes import config as kconfig
    from kubernetes.client import Configuration
    from kubernetes.config.config_exception import ConfigException

    cfg = Configuration()
    if found is None:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            try:
                kconfig.load_incluster_config(client_configuration=cfg)
            except ConfigException as exc:
                raise ConfigError(f"in-cluster configuration: {exc}") from None
            return cfg
        raise ConfigError("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or create ~/.kube/config")
    try:
        kconfig.load_kube_config(
            config_file=found.shown, context=context, client_configuration=cfg, persist_config=False
        )
    except ConfigException as exc:
        raise ConfigError(f"kubeconfig {found.shown}: {str(exc).strip().splitlines()[0]}") from None
    except Exception as exc:  # malformed entries surface as assorted exceptions
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"kubeconfig {found.shown} is not valid: {first}") from None
    return cfg


class KubeClient:
    """A thin, thread-safe wrapper: objects as dicts, errors as KubeError subclasses.

    Reads (get, list, logs), writes (create, replace, the three patch kinds, delete) with resourceVersion
    preconditions (a stale one raises KubeConflict), and waits (watch, wait_for: kube_watch.py).
    """

    def __init__(self, kubeconfig: str | None, context: str | None, timeout: float) -> None:
        self.configuration = _load_configuration(kubeconfig, context)
        self.configuration.retries = False
        self.configuration.connection_pool_maxsize = 32  # checks run concurrently; keep their connections
        self.timeout = timeout
        self._api: ApiClient | None = None

    # connection: what other transports (exec over WebSocket, watch streams) reuse --------------------------

    @property
    def host(self) -> str:
        return str(self.configuration.host)

    @property
    def api(self) -> ApiClient:
        if self._api is None:
            from kubernetes.client import ApiClient

            self._api = ApiClient(self.configuration)
        return self._api

    @property
    def tls_server_name(self) -> str | None:
        return self.configuration.tls_server_name or None

    @property
    def proxy(self) -> str | None:
        return self.configuration.proxy or None

    def url(self, path: str, query: dict[str, Any] | list[tuple[str, str]] | None = None, *,
            websocket: bool = False) -> str:
        """The full URL of an API path; `websocket` turns http(s) into ws(s)."""
        url = self.host.rstrip("/")
        if websocket:
            url = url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        url += path
        if isinstance(query, dict):
            query = [(k, v) for k, v in query.items() if v is not None]
        if query:
            url += "?" + urlencode(query, doseq=True)
        return url

    def auth_headers(self) -> dict[str, str]:
        """The Authorization header the kubeconfig calls for (refreshing an expiring token first)."""
        cfg = self.configuration
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)
        token = cfg.get_api_key_with_prefix("authorization") or cfg.get_api_key_with_prefix("BearerToken")
        if token:
            return {"Authorization": token}
        if cfg.username and cfg.password:
            return {"Authorization": str(cfg.get_basic_auth_token())}
        return {}

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS as the kubeconfig says (CA, client certificate, insecure-skip-tls-verify); None for http."""
        cfg = self.configuration
        if not self.host.startswith("https"):
            return None
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        if cfg.ca_cert_data:
            ctx.load_verify_locations(cadata=cfg.ca_cert_data)
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        if not cfg.verify_ssl:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

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

        url = self.url(path, query)
        headers = {"Accept": "application/json", "Content-Type": content_type, **self.auth_headers()}
        t = timeout or self.timeout

        def send() -> tuple[int, bytes]:
            response = self.api.rest_client.request(method, url, headers=headers, body=body,
                                                    _request_timeout=(t, t))
            return response.status, response.read()

        try:
            # The socket timeouts bound each connect and each read, not the answer: a server that trickles a
            # byte a second would hold a read forever. A read gets connect + read time in all; a write is
            # waited for, since one given up on could still take effect.
            status, data = within(send, 2 * t) if method in READS else send()
        except urllib3.exceptions.HTTPError as exc:
            raise KubeUnreachable(f"cannot reach the Kubernetes API at {self.host}: {transport_reason(exc)}") from None
        except Overran as exc:
            raise KubeUnreachable(f"cannot reach the Kubernetes API at {self.host}: {exc}") from None
        if status >= 400:
            raise api_error(method, path, status, data)
        if raw:
            return data.decode("utf-8", "replace")
        return json.loads(data) if data else {}

    # reads -----------------------------------------------------------------------------------------------

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
        return self.list_with_version(resource, namespace, label_selector=label_selector,
                                      field_selector=field_selector)[0]

    def list_with_version(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[builtins.list[dict[str, Any]], str]:
        """The items and the list's resourceVersion, the position a watch continues from."""
        data = self.request(
            "GET", resource.path(namespace),
            query={"labelSelector": label_selector, "fieldSelector": field_selector},
        )
        return list(data.get("items") or []), str((data.get("metadata") or {}).get("resourceVersion") or "")

    def logs(
        self, namespace: str, pod: str, container: str | None = None, *, previous: bool = False,
        tail_lines: int | None = None,
    ) -> str:
        query = {"container": container, "previous": "true" if previous else None, "tailLines": tail_lines}
        return str(self.request("GET", PODS.path(namespace, pod, "log"), query=query, raw=True))

    # writes ----------------------------------------------------------------------------------------------

    def create(self, resource: Resource, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """POST; an object of the same name raises KubeAlreadyExists."""
        return dict(self.request("POST", resource.path(namespace), body=body))

    def replace(self, resource: Resource, name: str, namespace: str | None, body: dict[str, Any], *,
                resource_version: str | None = None) -> dict[str, Any]:
        """PUT the whole object. The write happens only at `resource_version` (by default the body's
        metadata.resourceVersion); KubeConflict when the object changed since."""
        if resource_version is not None:
            body = {**body, "metadata": {**(body.get("metadata") or {}), "resourceVersion": resource_version}}
        return dict(self.request("PUT", resource.path(namespace, name), body=body))

    def patch(self, resource: Resource, name: str, namespace: str | None, patch: Any, *,
              kind: PatchKind = "merge", resource_version: str | None = None) -> dict[str, Any]:
        """A merge patch (RFC 7386), a strategic merge patch (not for custom resources), or a JSON patch
        (RFC 6902, a list of operations). With `resource_version` it applies only to that version of the
        object, else KubeConflict: the API server compares the patched object's resourceVersion with the
        stored one, which is how preconditions work for all three kinds."""
        if kind not in PATCH_CONTENT_TYPES:
            raise ValueError(f"unknown patch kind {kind!r}")
        if kind == "json":
            if not isinstance(patch, list):
                raise ValueError("a JSON patch is a list of operations")
            if resource_version is not None:
                patch = [{"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version},
                         *patch]
        elif resource_version is not None:
            patch = copy.deepcopy(patch)
            patch.setdefault("metadata", {})["resourceVersion"] = resource_version
        return dict(self.request("PATCH", resource.path(namespace, name), body=patch,
                                 content_type=PATCH_CONTENT_TYPES[kind]))

    def delete(self, resource: Resource, name: str, namespace: str | None, *, uid: str | None = None,
               resource_version: str | None = None, propagation: str | None = None) -> dict[str, Any]:
        """DELETE, only if the object still has this `uid` / `resource_version` (else KubeConflict).
        `propagation`: "Foreground", "Background" or "Orphan" for the objects it owns."""
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        if preconditions:
            options["preconditions"] = preconditions
        if propagation:
            options["propagationPolicy"] = propagation
        return dict(self.request("DELETE", resource.path(namespace, name), body=options))

    # waits: kube_watch's functions, bound as methods ---------------------------------------------------------

    watch = kube_watch.watch
    wait_for = kube_watch.wait_for
    wait_deleted = kube_watch.wait_deleted


def transport_reason(exc: Exception) -> str:
    """A short reason for a transport error (connection refused, timed out, TLS verification failed)."""
    cause = getattr(exc, "reason", None) or exc
    text = str(cause)
    for needle, short in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                          ("Name or service not known", "host name not found"),
                          ("CERTIFICATE_VERIFY_FAILED", "TLS certificate verification failed")):
        if needle in text:
            return short
    return text.split(": ", 1)[-1][:200]
