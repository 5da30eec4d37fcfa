"""Kubernetes API access: the connection a kubeconfig names (kube_connection.py: read directly when plain, else
by the official client's loader), HTTP through urllib3 as the official client's REST layer does.

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
import threading
import warnings
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
    import urllib3
    from kubernetes.client import Configuration

    from coderctl.clients.kube_connection import Connection
    from coderctl.clients.kubeconfig import Kubeconfigs


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

def preload(kubeconfig: str | None, context: str | None) -> None:
    """Import what the client will need, before a run's clock starts: the library's loader (about half a second,
    much more on a busy machine) only when the kubeconfig is not plain (kube_connection.py). Errors are left
    for the client to report."""
    import importlib

    import urllib3  # noqa: F401

    try:
        _load_connection(kubeconfig, context, plain_only=True)
    except _NeedsLibrary:
        for module in ("kubernetes.config", "kubernetes.client"):
            importlib.import_module(module)
    except ConfigError:
        pass


class _NeedsLibrary(Exception):
    pass


def _load_connection(kubeconfig: str | None, context: str | None, *, plain_only: bool = False) -> Connection:
    """The connection from the kubeconfig files as kubectl merges them (see kubeconfig.py): read directly when
    plain, else by the official client; else in-cluster."""
    from coderctl.clients import kube_connection
    from coderctl.clients.kubeconfig import read_kubeconfigs

    found = read_kubeconfigs(kubeconfig)
    if found is not None:
        found.check_context(context)
        connection = kube_connection.plain(found, context)
        if connection is not None:
            return connection
    if plain_only:
        raise _NeedsLibrary
    return kube_connection.from_library(_load_configuration(found, context))


def _load_configuration(found: Kubeconfigs | None, context: str | None) -> Configuration:
    """The official client's configuration (every form of kubeconfig, in-cluster configuration)."""
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
    preconditions (a stale one raises KubeConflict), and waits (watch, wait_for: kube_watch.py). HTTP through
    one urllib3 pool, as the official client's own REST layer does; the connection settings come from
    kube_connection.py.
    """

    def __init__(self, kubeconfig: str | None, context: str | None, timeout: float) -> None:
        self.connection = _load_connection(kubeconfig, context)
        self.timeout = timeout
        self.auth_headers()  # credentials no HTTP header can carry are a configuration error, before any request
        self._pool: urllib3.PoolManager | None = None
        self._pool_lock = threading.Lock()

    # connection: what other transports (exec over WebSocket, watch streams) reuse --------------------------

    @property
    def host(self) -> str:
        return self.connection.host

    @property
    def pool(self) -> urllib3.PoolManager:
        """The HTTP connection pool (checks run concurrently: up to 32 connections are kept)."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = self._new_pool()
            return self._pool

    def _new_pool(self) -> urllib3.PoolManager:
        import urllib3

        options: dict[str, Any] = {"num_pools": 4, "maxsize": 32, "retries": False}
        context = self.ssl_context()
        if context is not None:
            options["ssl_context"] = context
            if self.tls_server_name:
                options["server_hostname"] = self.tls_server_name
            if not self.connection.verify:
                options.update(cert_reqs="CERT_NONE", assert_hostname=False)
                # asked for by the kubeconfig, as kubectl takes it: not a warning on every request
                warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        if self.proxy:
            return urllib3.ProxyManager(self.proxy, **options)
        return urllib3.PoolManager(**options)

    @property
    def tls_server_name(self) -> str | None:
        return self.connection.tls_server_name

    @property
    def proxy(self) -> str | None:
        return self.connection.proxy

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
        headers = self.connection.auth_headers()
        value = headers.get("Authorization", "")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ConfigError("the kubeconfig's credentials (token, or user name and password) hold a control "
                              "character (a line break at the end?): remove it from the kubeconfig or the token file")
        return headers

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS as the kubeconfig says (CA, client certificate, insecure-skip-tls-verify); None for http."""
        return self.connection.ssl_context()

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

        data = json.dumps(body).encode() if body is not None else None

        def send() -> tuple[int, bytes]:
            response = self.pool.request(method, url, headers=headers, body=data,
                                         timeout=urllib3.Timeout(connect=t, read=t), retries=False)
            return response.status, response.data

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
