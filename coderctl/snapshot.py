"""What the cluster tells about one Coder deployment, read lazily, once per run, into one typed object.

It sits in discovery's layer, just below `discovery` (which builds URLs, credentials and clients from it) and
above `context` (it reads through the App's kube client): it does I/O, so it cannot live in the pure `facts`
package. Every object is read the first time someone asks and shared by everyone after, even when several
checks ask at once; a failed read is remembered as well, so concurrent checks do not each wait for the same
timeout. `refresh()` forgets everything, failures included: operations call it after they change the cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

from coderctl.clients.kube import (
    DEPLOYMENTS,
    HELMRELEASES,
    INFISICALSECRETS,
    INGRESSES,
    IPADDRESSPOOLS,
    KUSTOMIZATIONS,
    PODS,
    SECRETS,
    SERVICES,
    STATEFULSETS,
    KubeApiError,
    KubeNotFound,
)
from coderctl.clients.postgres import DatabaseURL
from coderctl.concurrent import Memo
from coderctl.context import App
from coderctl.errors import CoderctlError
from coderctl.facts.kube import decoded_data, match_labels_selector

T = TypeVar("T")

DATABASE_URL_KEY = "database-url"


@dataclass(frozen=True)
class ManagedSecret:
    """The Secret the Infisical operator manages: its key names and its database URL, parsed; no values."""

    namespace: str
    name: str
    keys: tuple[str, ...]
    database_url: DatabaseURL | None
    database_url_error: str | None = None


class Snapshot:
    """One run's view of the cluster; see the module's docstring."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._memo = Memo()

    def refresh(self) -> None:
        """Forget every object read so far (and every failure): the next question reads the cluster again."""
        self._memo.clear()

    def _once(self, key: Hashable, read: Callable[[], T]) -> T:
        return self._memo.get(key, read)

    @property
    def coder_deployment(self) -> dict[str, Any]:
        """The Coder Deployment; KubeNotFound when it does not exist."""
        app = self._app
        return self._once("coder-deployment",
                          lambda: app.kube().get(DEPLOYMENTS, app.settings.coder_deployment, app.namespace))

    @property
    def coder_pods(self) -> list[dict[str, Any]]:
        """The pods the Coder Deployment's selector picks, without those being deleted."""
        def read() -> list[dict[str, Any]]:
            selector = match_labels_selector(self.coder_deployment)
            pods = self._app.kube().list(PODS, self._app.namespace, label_selector=selector or None)
            return [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]

        return self._once("coder-pods", read)

    @property
    def postgres_statefulset(self) -> dict[str, Any]:
        """The PostgreSQL StatefulSet; KubeNotFound when it does not exist."""
        app = self._app
        return self._once("postgres-statefulset",
                          lambda: app.kube().get(STATEFULSETS, app.settings.postgres_statefulset, app.namespace))

    def service(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        ns = namespace or self._app.namespace
        return self._once(("service", ns, name), lambda: self._app.kube().get_or_none(SERVICES, name, ns))

    def services(self, namespace: str | None = None) -> list[dict[str, Any]]:
        ns = namespace or self._app.namespace
        return self._once(("services", ns), lambda: self._app.kube().list(SERVICES, ns))

    def ingress(self, name: str) -> dict[str, Any] | None:
        app = self._app
        return self._once(("ingress", name), lambda: app.kube().get_or_none(INGRESSES, name, app.namespace))

    @property
    def ingresses(self) -> list[dict[str, Any]]:
        """Every Ingress of the Coder namespace."""
        return self._once("ingresses", lambda: self._app.kube().list(INGRESSES, self._app.namespace))

    @property
    def infisical_secret(self) -> dict[str, Any] | None:
        """The InfisicalSecret the operator syncs the managed Secret from; None when it does not exist."""
        try:
            return self.infisical_secret_object
        except KubeNotFound:
            return None

    @property
    def infisical_secret_object(self) -> dict[str, Any]:
        """The InfisicalSecret; KubeNotFound when it does not exist."""
        app = self._app
        return self._once("infisicalsecret",
                          lambda: app.kube().get(INFISICALSECRETS, app.settings.infisical_secret, app.namespace))

    def secret_data(self, name: str, namespace: str | None = None) -> dict[str, str]:
        """A Secret's decoded data; every value is registered with the redactor before anyone sees it."""
        ns = namespace or self._app.namespace

        def read() -> dict[str, str]:
            decoded = decoded_data(self._app.kube().get(SECRETS, name, ns))
            for value in decoded.values():
                self._app.redact.add(value)
            return decoded

        return self._once(("secret", ns, name), read)

    @property
    def managed_secret(self) -> ManagedSecret:
        """The managed database Secret (settings.database_secret); KubeNotFound when it does not exist."""
        app = self._app
        name = str(app.settings.database_secret)
        data = self.secret_data(name)
        url: DatabaseURL | None = None
        error: str | None = None
        if data.get(DATABASE_URL_KEY):
            try:
                url = DatabaseURL.parse(data[DATABASE_URL_KEY])
            except CoderctlError as exc:
                error = str(exc)
        return ManagedSecret(app.namespace, name, tuple(sorted(data)), url, error)

    @property
    def helm_releases(self) -> list[dict[str, Any]]:
        """The HelmReleases of the Coder namespace; KubeApiError 404 when Flux is not installed."""
        return self._once("helmreleases", lambda: self._app.kube().list(HELMRELEASES, self._app.namespace))

    @property
    def kustomizations(self) -> list[dict[str, Any]]:
        """The Kustomizations of the Flux namespace; KubeApiError 404 when Flux is not installed."""
        app = self._app
        return self._once("kustomizations", lambda: app.kube().list(KUSTOMIZATIONS, app.settings.flux_namespace))

    @property
    def metallb_pools(self) -> dict[str, list[str]] | None:
        """MetalLB pool name -> address entries; None when MetalLB's API is not installed or not readable."""
        def read() -> dict[str, list[str]] | None:
            try:
                pools = self._app.kube().list(IPADDRESSPOOLS, self._app.settings.metallb_namespace)
            except KubeApiError as exc:
                if exc.status in (403, 404):
                    return None
                raise
            return {p["metadata"]["name"]: list((p.get("spec") or {}).get("addresses") or []) for p in pools}

        return self._once("metallb-pools", read)


def snapshot(app: App) -> Snapshot:
    """The run's snapshot: one per App."""
    return app.cached("snapshot", lambda: Snapshot(app))  # type: ignore[no-any-return]
