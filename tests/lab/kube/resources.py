"""The resource table the fake serves: discovery documents and path resolution come from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CRUD_VERBS: tuple[str, ...] = (
    "create", "delete", "deletecollection", "get", "list", "patch", "update", "watch",
)


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = CRUD_VERBS
    categories: tuple[str, ...] = ()
    custom: bool = False
    """Served from a CustomResourceDefinition: no strategic merge patch, as in a real cluster."""

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def qualified(self) -> str:
        """``deployments.apps``: the name used in API error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


_STATUS = ("status",)
RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "namespaces", "Namespace", False, ("ns",), _STATUS),
    Resource("", "v1", "pods", "Pod", True, ("po",), ("status", "log", "exec"), categories=("all",)),
    Resource("", "v1", "services", "Service", True, ("svc",), _STATUS, categories=("all",)),
    Resource("", "v1", "secrets", "Secret"),
    Resource("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    Resource("", "v1", "events", "Event", True, ("ev",)),
    Resource("", "v1", "endpoints", "Endpoints", True, ("ep",)),
    Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), _STATUS),
    Resource("", "v1", "persistentvolumes", "PersistentVolume", False, ("pv",), _STATUS),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",)),
    Resource("apps", "v1", "deployments", "Deployment", True, ("deploy",), ("status", "scale"),
             categories=("all",)),
    Resource("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",), ("status", "scale"),
             categories=("all",)),
    Resource("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ("status", "scale"),
             categories=("all",)),
    Resource("networking.k8s.io", "v1", "ingresses", "Ingress", True, ("ing",), _STATUS),
    Resource("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False),
    Resource("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, ("sc",)),
    Resource("secrets.infisical.com", "v1alpha1", "infisicalsecrets", "InfisicalSecret", True, (), _STATUS,
             custom=True),
    Resource("helm.toolkit.fluxcd.io", "v2", "helmreleases", "HelmRelease", True, ("hr",), _STATUS, custom=True),
    Resource("kustomize.toolkit.fluxcd.io", "v1", "kustomizations", "Kustomization", True, ("ks",), _STATUS,
             custom=True),
    Resource("source.toolkit.fluxcd.io", "v1", "helmrepositories", "HelmRepository", True, ("helmrepo",),
             _STATUS, custom=True),
    Resource("metallb.io", "v1beta1", "ipaddresspools", "IPAddressPool", True, custom=True),
    Resource("events.k8s.io", "v1", "events", "Event", True, ("ev",)),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True),
    Resource("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False,
             verbs=("create",)),
)

SUBRESOURCE_VERBS: dict[str, tuple[str, ...]] = {
    "status": ("get", "patch", "update"),
    "scale": ("get", "patch", "update"),
    "log": ("get",),
    "exec": ("create", "get"),
}
SUBRESOURCE_KINDS: dict[str, str] = {"log": "Pod", "exec": "PodExecOptions"}

STORED_KINDS: dict[str, Resource] = {}
for _r in RESOURCES:
    if _r.kind != "SelfSubjectAccessReview":
        STORED_KINDS.setdefault(_r.kind, _r)


def group_versions() -> dict[str, list[Resource]]:
    """Resources by group/version, in table order."""
    out: dict[str, list[Resource]] = {}
    for res in RESOURCES:
        out.setdefault(res.group_version, []).append(res)
    return out


def find(group: str, version: str, plural: str) -> Resource | None:
    for res in RESOURCES:
        if (res.group, res.version, res.plural) == (group, version, plural):
            return res
    return None


def for_kind(kind: str) -> Resource:
    """The resource an object of ``kind`` is stored under (core events win over events.k8s.io)."""
    try:
        return STORED_KINDS[kind]
    except KeyError:
        raise ValueError(f"the fake Kubernetes API does not serve kind {kind!r}") from None


def core_to_events_v1(ev: dict[str, Any]) -> dict[str, Any]:
    """The events.k8s.io/v1 view of a core Event (the real server converts between the two)."""
    first = ev.get("firstTimestamp") or ev["metadata"].get("creationTimestamp")
    event_time = ev.get("eventTime") or (first[:19] + ".000000Z" if first else None)
    out: dict[str, Any] = {
        "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": ev["metadata"],
        "eventTime": event_time, "reason": ev.get("reason"), "note": ev.get("message"), "type": ev.get("type"),
        "regarding": ev.get("involvedObject"), "related": ev.get("related"), "action": ev.get("action"),
        "reportingController": ev.get("reportingComponent") or (ev.get("source") or {}).get("component"),
        "reportingInstance": ev.get("reportingInstance") or (ev.get("source") or {}).get("host"),
        "deprecatedSource": ev.get("source"), "deprecatedFirstTimestamp": ev.get("firstTimestamp"),
        "deprecatedLastTimestamp": ev.get("lastTimestamp"), "deprecatedCount": ev.get("count"),
    }
    return {k: v for k, v in out.items() if v is not None}


def events_v1_to_core(ev: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Event", "metadata": ev.get("metadata") or {},
        "eventTime": ev.get("eventTime"), "reason": ev.get("reason"), "message": ev.get("note"),
        "type": ev.get("type"), "involvedObject": ev.get("regarding") or {}, "related": ev.get("related"),
        "action": ev.get("action"), "reportingComponent": ev.get("reportingController"),
        "reportingInstance": ev.get("reportingInstance"), "source": ev.get("deprecatedSource"),
        "firstTimestamp": ev.get("deprecatedFirstTimestamp"), "lastTimestamp": ev.get("deprecatedLastTimestamp"),
        "count": ev.get("deprecatedCount"),
    }
    return {k: v for k, v in out.items() if v is not None}
