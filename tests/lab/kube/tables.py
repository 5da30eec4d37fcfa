"""Server-side printing: ``meta.k8s.io/v1`` Tables like the real API server sends to ``kubectl get``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Cell = Callable[[dict[str, Any]], Any]
Column = tuple[str, str, int, Cell]  # name, type, priority (1 = -o wide), cell


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    return f"{hours // 24 // 365}y"


def _since(stamp: str | None) -> str:
    if not stamp:
        return "<unknown>"
    then = datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return human_duration((datetime.now(UTC) - then).total_seconds())


def _get(obj: dict[str, Any], path: str, default: Any = None) -> Any:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return default
        node = node.get(part)
    return default if node is None else node


def _age(obj: dict[str, Any]) -> str:
    return _since(_get(obj, "metadata.creationTimestamp"))


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in _get(obj, "status.conditions", []):
        if cond.get("type") == kind:
            return cond
    return {}


def _pod_status(pod: dict[str, Any]) -> str:
    reason = _get(pod, "status.reason") or _get(pod, "status.phase", "Unknown")
    for cs in _get(pod, "status.containerStatuses", []):
        state = cs.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            term = state["terminated"]
            reason = term.get("reason") or f"ExitCode:{term.get('exitCode', 0)}"
    if _get(pod, "metadata.deletionTimestamp"):
        reason = "Terminating"
    return reason


def _restarts(pod: dict[str, Any]) -> str:
    statuses = _get(pod, "status.containerStatuses", [])
    total = sum(cs.get("restartCount", 0) for cs in statuses)
    finished = [(cs.get("lastState") or {}).get("terminated", {}).get("finishedAt") for cs in statuses]
    finished = [f for f in finished if f]
    return f"{total} ({_since(max(finished))} ago)" if total and finished else str(total)


def _pod_ready(pod: dict[str, Any]) -> str:
    statuses = _get(pod, "status.containerStatuses", [])
    ready = sum(1 for cs in statuses if cs.get("ready"))
    return f"{ready}/{len(_get(pod, 'spec.containers', []))}"


def _service_external(svc: dict[str, Any]) -> str:
    ips = [i.get("ip") or i.get("hostname") for i in _get(svc, "status.loadBalancer.ingress", [])]
    if ips:
        return ",".join(ip for ip in ips if ip)
    if _get(svc, "spec.type") == "LoadBalancer":
        return "<pending>"
    return ",".join(_get(svc, "spec.externalIPs", [])) or "<none>"


def _service_ports(svc: dict[str, Any]) -> str:
    parts = []
    for port in _get(svc, "spec.ports", []):
        node = f":{port['nodePort']}" if port.get("nodePort") else ""
        parts.append(f"{port.get('port')}{node}/{port.get('protocol', 'TCP')}")
    return ",".join(parts) or "<none>"


def _ingress_address(ing: dict[str, Any]) -> str:
    return ",".join(i.get("ip") or i.get("hostname", "") for i in _get(ing, "status.loadBalancer.ingress", []))


def _endpoints(ep: dict[str, Any]) -> str:
    out = []
    for subset in _get(ep, "subsets", []):
        for addr in subset.get("addresses") or []:
            for port in subset.get("ports") or []:
                out.append(f"{addr.get('ip')}:{port.get('port')}")
    return ",".join(out) or "<none>"


def _access_modes(obj: dict[str, Any]) -> str:
    short = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
    modes = _get(obj, "status.accessModes") or _get(obj, "spec.accessModes", [])
    return ",".join(short.get(m, m) for m in modes)


def _event_object(ev: dict[str, Any]) -> str:
    return f"{_get(ev, 'involvedObject.kind', '').lower()}/{_get(ev, 'involvedObject.name', '')}"


def _images(obj: dict[str, Any]) -> str:
    return ",".join(c.get("image", "") for c in _get(obj, "spec.template.spec.containers", []))


def _containers(obj: dict[str, Any]) -> str:
    return ",".join(c.get("name", "") for c in _get(obj, "spec.template.spec.containers", []))


_READY_STATUS: list[Column] = [
    ("Ready", "string", 0, lambda o: _condition(o, "Ready").get("status", "")),
    ("Status", "string", 0, lambda o: _condition(o, "Ready").get("message", "")),
]

COLUMNS: dict[str, list[Column]] = {
    "Pod": [
        ("Ready", "string", 0, _pod_ready),
        ("Status", "string", 0, _pod_status),
        ("Restarts", "string", 0, _restarts),
        ("Age", "string", 0, _age),
        ("IP", "string", 1, lambda o: _get(o, "status.podIP", "<none>")),
        ("Node", "string", 1, lambda o: _get(o, "spec.nodeName", "<none>")),
    ],
    "Deployment": [
        ("Ready", "string", 0,
         lambda o: f"{_get(o, 'status.readyReplicas', 0)}/{_get(o, 'spec.replicas', 1)}"),
        ("Up-to-date", "integer", 0, lambda o: _get(o, "status.updatedReplicas", 0)),
        ("Available", "integer", 0, lambda o: _get(o, "status.availableReplicas", 0)),
        ("Age", "string", 0, _age),
        ("Containers", "string", 1, _containers),
        ("Images", "string", 1, _images),
    ],
    "StatefulSet": [
        ("Ready", "string", 0,
         lambda o: f"{_get(o, 'status.readyReplicas', 0)}/{_get(o, 'spec.replicas', 1)}"),
        ("Age", "string", 0, _age),
        ("Containers", "string", 1, _containers),
        ("Images", "string", 1, _images),
    ],
    "ReplicaSet": [
        ("Desired", "integer", 0, lambda o: _get(o, "spec.replicas", 0)),
        ("Current", "integer", 0, lambda o: _get(o, "status.replicas", 0)),
        ("Ready", "integer", 0, lambda o: _get(o, "status.readyReplicas", 0)),
        ("Age", "string", 0, _age),
    ],
    "Service": [
        ("Type", "string", 0, lambda o: _get(o, "spec.type", "ClusterIP")),
        ("Cluster-IP", "string", 0, lambda o: _get(o, "spec.clusterIP", "<none>")),
        ("External-IP", "string", 0, _service_external),
        ("Port(s)", "string", 0, _service_ports),
        ("Age", "string", 0, _age),
        ("Selector", "string", 1,
         lambda o: ",".join(f"{k}={v}" for k, v in _get(o, "spec.selector", {}).items()) or "<none>"),
    ],
    "Ingress": [
        ("Class", "string", 0, lambda o: _get(o, "spec.ingressClassName", "<none>")),
        ("Hosts", "string", 0, lambda o: ",".join(r.get("host", "*") for r in _get(o, "spec.rules", []))),
        ("Address", "string", 0, _ingress_address),
        ("Ports", "string", 0, lambda o: "80, 443" if _get(o, "spec.tls") else "80"),
        ("Age", "string", 0, _age),
    ],
    "Secret": [
        ("Type", "string", 0, lambda o: o.get("type", "Opaque")),
        ("Data", "integer", 0, lambda o: len(o.get("data") or {})),
        ("Age", "string", 0, _age),
    ],
    "ConfigMap": [
        ("Data", "integer", 0, lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
        ("Age", "string", 0, _age),
    ],
    "PersistentVolumeClaim": [
        ("Status", "string", 0, lambda o: _get(o, "status.phase", "Pending")),
        ("Volume", "string", 0, lambda o: _get(o, "spec.volumeName", "")),
        ("Capacity", "string", 0, lambda o: _get(o, "status.capacity.storage", "")),
        ("Access Modes", "string", 0, _access_modes),
        ("StorageClass", "string", 0, lambda o: _get(o, "spec.storageClassName", "<unset>")),
        ("VolumeAttributesClass", "string", 0, lambda o: "<unset>"),
        ("Age", "string", 0, _age),
    ],
    "PersistentVolume": [
        ("Capacity", "string", 0, lambda o: _get(o, "spec.capacity.storage", "")),
        ("Access Modes", "string", 0, _access_modes),
        ("Reclaim Policy", "string", 0, lambda o: _get(o, "spec.persistentVolumeReclaimPolicy", "")),
        ("Status", "string", 0, lambda o: _get(o, "status.phase", "")),
        ("Claim", "string", 0,
         lambda o: f"{_get(o, 'spec.claimRef.namespace', '')}/{_get(o, 'spec.claimRef.name', '')}"),
        ("StorageClass", "string", 0, lambda o: _get(o, "spec.storageClassName", "")),
        ("Age", "string", 0, _age),
    ],
    "Event": [
        ("Last Seen", "string", 0, lambda o: _since(o.get("lastTimestamp") or o.get("eventTime"))),
        ("Type", "string", 0, lambda o: o.get("type", "")),
        ("Reason", "string", 0, lambda o: o.get("reason", "")),
        ("Object", "string", 0, _event_object),
        ("Message", "string", 0, lambda o: o.get("message", "")),
    ],
    "Namespace": [
        ("Status", "string", 0, lambda o: _get(o, "status.phase", "Active")),
        ("Age", "string", 0, _age),
    ],
    "Endpoints": [("Endpoints", "string", 0, _endpoints), ("Age", "string", 0, _age)],
    "ServiceAccount": [("Secrets", "integer", 0, lambda o: len(o.get("secrets") or [])), ("Age", "string", 0, _age)],
    "StorageClass": [
        ("Provisioner", "string", 0, lambda o: o.get("provisioner", "")),
        ("ReclaimPolicy", "string", 0, lambda o: o.get("reclaimPolicy", "Delete")),
        ("VolumeBindingMode", "string", 0, lambda o: o.get("volumeBindingMode", "Immediate")),
        ("AllowVolumeExpansion", "string", 0, lambda o: str(bool(o.get("allowVolumeExpansion"))).lower()),
        ("Age", "string", 0, _age),
    ],
    "IngressClass": [
        ("Controller", "string", 0, lambda o: _get(o, "spec.controller", "")),
        ("Parameters", "string", 0, lambda o: "<none>"),
        ("Age", "string", 0, _age),
    ],
    "HelmRelease": [("Age", "string", 0, _age), *_READY_STATUS],
    "Kustomization": [("Age", "string", 0, _age), *_READY_STATUS],
    "HelmRepository": [("URL", "string", 0, lambda o: _get(o, "spec.url", "")), ("Age", "string", 0, _age),
                       *_READY_STATUS],
    "Lease": [("Holder", "string", 0, lambda o: _get(o, "spec.holderIdentity", "")), ("Age", "string", 0, _age)],
    "IPAddressPool": [
        ("Auto Assign", "string", 0, lambda o: str(_get(o, "spec.autoAssign", True)).lower()),
        ("Avoid Buggy IPs", "string", 0, lambda o: str(_get(o, "spec.avoidBuggyIPs", False)).lower()),
        ("Addresses", "string", 0, lambda o: str(_get(o, "spec.addresses", []))),
        ("Age", "string", 0, _age),
    ],
}


def table(kind: str, objects: list[dict[str, Any]], resource_version: str,
          include_object: str | None) -> dict[str, Any]:
    columns: list[Column] = [("Name", "string", 0, lambda o: _get(o, "metadata.name", ""))]
    columns += COLUMNS.get(kind, [("Age", "string", 0, _age)])
    definitions = [
        {"name": name, "type": typ, "format": "name" if name == "Name" else "", "description": name,
         "priority": priority}
        for name, typ, priority, _ in columns
    ]
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [cell(obj) for _, _, _, cell in columns]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj.get("metadata", {})}
        rows.append(row)
    return {
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions, "rows": rows,
    }
