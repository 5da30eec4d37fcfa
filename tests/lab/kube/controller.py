"""A tiny stand-in for the deployment and statefulset controllers.

It runs synchronously after writes that arrive over HTTP (a client scaling or restarting a workload), never
after seeding or scenarios, which describe the whole state themselves.

With a pod runtime attached to the store (lab/kube/runtime.py, opt-in), writes are handed to it instead: it
rolls workloads out step by step (lab/kube/rollout.py) and runs their pods' containers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from .store import Store, now_rfc3339

_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
NODE_NAME = "lab-node-1"
NODE_IP = "192.168.80.10"

PodCreated = Callable[[dict[str, Any], list[dict[str, Any]]], None]
"""Called with a new pod and the pods it replaces (to carry over scripted logs)."""


class Kubelet(Protocol):
    """What the controllers hand over to an attached pod runtime."""

    def workload_changed(self, kind: str, namespace: str, name: str) -> None:
        """A Deployment or StatefulSet was written (or lost a pod): reconcile it now and from now on."""


_KUBELETS: weakref.WeakKeyDictionary[Store, Kubelet] = weakref.WeakKeyDictionary()


def attach_kubelet(store: Store, kubelet: Kubelet) -> None:
    _KUBELETS[store] = kubelet


def detach_kubelet(store: Store, kubelet: Kubelet) -> None:
    if _KUBELETS.get(store) is kubelet:
        del _KUBELETS[store]


def kubelet_of(store: Store) -> Kubelet | None:
    return _KUBELETS.get(store)


def _handed_over(store: Store, workload: dict[str, Any]) -> bool:
    kubelet = kubelet_of(store)
    if kubelet is None:
        return False
    meta = workload["metadata"]
    kubelet.workload_changed(workload["kind"], meta["namespace"], meta["name"])
    return True


def _encode(digest: bytes, length: int) -> str:
    return "".join(_HASH_ALPHABET[b % len(_HASH_ALPHABET)] for b in digest[:length])


def template_hash(template: dict[str, Any]) -> str:
    clean = copy.deepcopy(template)
    (clean.get("metadata") or {}).get("labels", {}).pop("pod-template-hash", None)
    return _encode(hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).digest(), 10)


def random_suffix() -> str:
    """Five characters like the ones the API server appends for generateName and pod names."""
    return "".join(random.choice(_HASH_ALPHABET) for _ in range(5))


def _owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def _owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True,
    }


def running_pod(name: str, namespace: str, template: dict[str, Any], owner: dict[str, Any],
                extra_labels: dict[str, str]) -> dict[str, Any]:
    """A Running, Ready pod built from a pod template."""
    meta = copy.deepcopy(template.get("metadata") or {})
    spec = copy.deepcopy(template.get("spec") or {})
    spec.setdefault("nodeName", NODE_NAME)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("serviceAccountName", "default")
    now = now_rfc3339()
    def image_id(image: str) -> str:
        return f"{image.split(':')[0]}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"

    statuses = [
        {
            "name": c["name"], "image": c.get("image", ""), "imageID": image_id(c.get("image", "")),
            "containerID": f"containerd://{random.getrandbits(256):064x}",
            "ready": True, "started": True, "restartCount": 0, "state": {"running": {"startedAt": now}},
        }
        for c in spec.get("containers") or []
    ]
    ip = f"10.42.0.{random.randint(20, 250)}"
    conditions = [
        {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
        for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
    ]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {**(meta.get("labels") or {}), **extra_labels},
            "annotations": meta.get("annotations") or {},
            "ownerReferences": [_owner_ref(owner)],
        },
        "spec": spec,
        "status": {
            "phase": "Running", "conditions": conditions, "hostIP": NODE_IP, "hostIPs": [{"ip": NODE_IP}],
            "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now, "qosClass": "Burstable",
            "containerStatuses": statuses,
        },
    }


def reconcile_deployment(store: Store, old: dict[str, Any] | None, new: dict[str, Any],
                         pod_created: PodCreated) -> None:
    if _handed_over(store, new):
        return
    ns, name, uid = new["metadata"]["namespace"], new["metadata"]["name"], new["metadata"]["uid"]
    spec = new.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    template = spec.get("template") or {}
    sets = [rs for rs in store.list("ReplicaSet", ns) if _owned_by(rs, uid)]
    old_pods = [p for rs in sets for p in store.list("Pod", ns) if _owned_by(p, rs["metadata"]["uid"])]
    changed = old is None or (old.get("spec") or {}).get("template") != template or not sets
    if changed:
        pod_hash = template_hash(template)
        rs_name = f"{name}-{pod_hash}"
        for rs in sets:
            if rs["metadata"]["name"] != rs_name:
                _scale_replicaset(store, rs, 0, None, pod_created, [])
        current = store.get("ReplicaSet", ns, rs_name)
        if current is None:
            rs_template = copy.deepcopy(template)
            rs_template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = pod_hash
            selector = copy.deepcopy(spec.get("selector") or {})
            selector.setdefault("matchLabels", {})["pod-template-hash"] = pod_hash
            current = store.create({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {
                    "name": rs_name, "namespace": ns,
                    "labels": {**(template.get("metadata") or {}).get("labels", {}), "pod-template-hash": pod_hash},
                    "annotations": {"deployment.kubernetes.io/revision": str(len(sets) + 1)},
                    "ownerReferences": [_owner_ref(new)],
                },
                "spec": {"replicas": 0, "selector": selector, "template": rs_template},
                "status": {"replicas": 0},
            })
    else:
        active = [rs for rs in sets if (rs.get("spec") or {}).get("replicas", 0) > 0]
        current = max(active or sets, key=lambda rs: rs["metadata"]["creationTimestamp"])
    _scale_replicaset(store, current, replicas, new, pod_created, old_pods)
    _set_deployment_status(store, ns, name, replicas, current["metadata"]["name"])


def _scale_replicaset(store: Store, rs: dict[str, Any], replicas: int, deployment: dict[str, Any] | None,
                      pod_created: PodCreated, previous: list[dict[str, Any]]) -> None:
    ns, rs_name = rs["metadata"]["namespace"], rs["metadata"]["name"]
    pods = [p for p in store.list("Pod", ns) if _owned_by(p, rs["metadata"]["uid"])]
    pods.sort(key=lambda p: p["metadata"]["creationTimestamp"])
    for pod in pods[replicas:]:
        store.delete("Pod", ns, pod["metadata"]["name"])
    pod_hash = rs["metadata"].get("labels", {}).get("pod-template-hash", "")
    for _ in range(replicas - len(pods)):
        template = (rs.get("spec") or {}).get("template") or {}
        pod = store.create(running_pod(f"{rs_name}-{random_suffix()}", ns, template, rs,
                                       {"pod-template-hash": pod_hash}))
        pod_created(pod, previous)

    def change(obj: dict[str, Any]) -> dict[str, Any]:
        spec = obj.setdefault("spec", {})
        bump = 1 if spec.get("replicas") != replicas else 0
        spec["replicas"] = replicas
        counts = {"replicas": replicas, "fullyLabeledReplicas": replicas, "readyReplicas": replicas,
                  "availableReplicas": replicas}
        obj["status"] = {k: v for k, v in counts.items() if v or k == "replicas"}
        obj["status"]["observedGeneration"] = obj["metadata"].get("generation", 1) + bump
        return obj

    store.modify("ReplicaSet", ns, rs_name, change)


def _set_deployment_status(store: Store, ns: str, name: str, replicas: int, rs_name: str) -> None:
    now = now_rfc3339()

    def change(obj: dict[str, Any]) -> dict[str, Any]:
        counts = {"replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas,
                  "availableReplicas": replicas}
        status: dict[str, Any] = {"observedGeneration": obj["metadata"].get("generation", 1)}
        status.update({k: v for k, v in counts.items() if v})
        status["conditions"] = [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
             "message": "Deployment has minimum availability.", "lastUpdateTime": now,
             "lastTransitionTime": now},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": f'ReplicaSet "{rs_name}" has successfully progressed.', "lastUpdateTime": now,
             "lastTransitionTime": now},
        ]
        obj["status"] = status
        return obj

    store.modify("Deployment", ns, name, change)


def reconcile_statefulset(store: Store, old: dict[str, Any] | None, new: dict[str, Any],
                          pod_created: PodCreated) -> None:
    if _handed_over(store, new):
        return
    ns, name, uid = new["metadata"]["namespace"], new["metadata"]["name"], new["metadata"]["uid"]
    spec = new.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    template = spec.get("template") or {}
    changed = old is not None and (old.get("spec") or {}).get("template") != template
    revision = f"{name}-{template_hash(template)}"
    pods = {p["metadata"]["name"]: p for p in store.list("Pod", ns) if _owned_by(p, uid)}
    for pod_name in pods:
        ordinal = pod_name.rsplit("-", 1)[-1]
        if not ordinal.isdigit() or int(ordinal) >= replicas or changed:
            store.delete("Pod", ns, pod_name)
    for i in range(replicas):
        pod_name = f"{name}-{i}"
        if store.get("Pod", ns, pod_name) is None:
            labels = {"statefulset.kubernetes.io/pod-name": pod_name, "controller-revision-hash": revision,
                      "apps.kubernetes.io/pod-index": str(i)}
            pod = store.create(running_pod(pod_name, ns, template, new, labels))
            pod_created(pod, [pods[pod_name]] if pod_name in pods else [])

    def change(obj: dict[str, Any]) -> dict[str, Any]:
        counts = {"replicas": replicas, "readyReplicas": replicas, "currentReplicas": replicas,
                  "updatedReplicas": replicas, "availableReplicas": replicas}
        status: dict[str, Any] = {"observedGeneration": obj["metadata"].get("generation", 1),
                                  "currentRevision": revision, "updateRevision": revision,
                                  "collisionCount": 0}
        status.update({k: v for k, v in counts.items() if v or k in ("replicas", "availableReplicas")})
        obj["status"] = status
        return obj

    store.modify("StatefulSet", ns, name, change)


def react(store: Store, old: dict[str, Any] | None, new: dict[str, Any], pod_created: PodCreated) -> None:
    """Run the matching controller when a workload's spec changed (or it was just created)."""
    if old is not None and old.get("spec") == new.get("spec"):
        return
    if new["kind"] == "Deployment":
        reconcile_deployment(store, old, new, pod_created)
    elif new["kind"] == "StatefulSet":
        reconcile_statefulset(store, old, new, pod_created)
