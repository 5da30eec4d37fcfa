"""The Deployment and StatefulSet controllers of the pod runtime: one idempotent sync per call, as the real ones.

A Deployment sync finds (or creates) the ReplicaSet of the current pod template, named
``<deployment>-<pod-template-hash>``, and applies the RollingUpdate arithmetic of the real controller: the new
ReplicaSet grows while the total stays within ``replicas + maxSurge``; old ReplicaSets lose their unready pods
first, then shrink only while ``replicas - maxUnavailable`` pods stay available. Pods are created Pending and
left to the runtime, which starts them and decides whether they become Ready; the next sync (every tick)
takes the next step. Status and conditions are computed from what the pods are, and written only when they
change, so watches see real transitions.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

from .controller import NODE_NAME, _owned_by, _owner_ref, random_suffix, template_hash
from .store import Store, now_rfc3339

NewPod = Callable[[dict[str, Any]], None]
"""Called with every pod a controller creates (already in the store)."""

REVISION = "deployment.kubernetes.io/revision"


def record_event(store: Store, obj: dict[str, Any], reason: str, message: str, *, warning: bool = False,
                 component: str = "deployment-controller", fieldpath: str | None = None) -> None:
    """An Event about ``obj``; a repeat of the same reason and message bumps the count of the first one."""
    meta = obj["metadata"]
    ns = meta.get("namespace", "default")
    digest = hashlib.sha256(f"{meta.get('uid')}/{reason}/{message}".encode()).hexdigest()[:16]
    name = f"{meta['name']}.{digest}"
    now = now_rfc3339()
    existing = store.get("Event", ns, name)
    if existing is not None:
        def bump(event: dict[str, Any]) -> dict[str, Any]:
            event["count"] = int(event.get("count") or 1) + 1
            event["lastTimestamp"] = now
            return event

        store.modify("Event", ns, name, bump)
        return
    involved = {"apiVersion": obj.get("apiVersion", ""), "kind": obj["kind"], "name": meta["name"],
                "namespace": ns, "uid": meta.get("uid", "")}
    if fieldpath:
        involved["fieldPath"] = fieldpath
    source = {"component": component, **({"host": NODE_NAME} if component == "kubelet" else {})}
    store.create({"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": ns},
                  "involvedObject": involved, "reason": reason, "message": message,
                  "type": "Warning" if warning else "Normal", "source": source,
                  "firstTimestamp": now, "lastTimestamp": now, "count": 1})


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pending_pod(name: str, namespace: str, template: dict[str, Any], owner: dict[str, Any],
                extra_labels: dict[str, str]) -> dict[str, Any]:
    """A pod as the scheduler leaves it: bound to the node, containers still being created."""
    meta = copy.deepcopy(template.get("metadata") or {})
    spec = copy.deepcopy(template.get("spec") or {})
    spec.setdefault("nodeName", NODE_NAME)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("serviceAccountName", "default")
    now = now_rfc3339()
    waiting = {"waiting": {"reason": "ContainerCreating"}}
    statuses = [{"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": False,
                 "started": False, "restartCount": 0, "state": copy.deepcopy(waiting), "lastState": {}}
                for c in spec.get("containers") or []]
    names = ", ".join(c["name"] for c in spec.get("containers") or [])
    unready = {"status": "False", "reason": "ContainersNotReady", "lastProbeTime": None,
               "message": f"containers with unready status: [{names}]", "lastTransitionTime": now}
    conditions = [
        {"type": "PodReadyToStartContainers", "status": "False", "lastProbeTime": None, "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastProbeTime": None, "lastTransitionTime": now},
        {"type": "Ready", **unready}, {"type": "ContainersReady", **unready},
        {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now},
    ]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {**(meta.get("labels") or {}), **extra_labels},
                     "annotations": meta.get("annotations") or {}, "ownerReferences": [_owner_ref(owner)]},
        "spec": spec,
        "status": {"phase": "Pending", "conditions": conditions, "hostIP": "", "qosClass": "Burstable",
                   "startTime": now, "containerStatuses": statuses},
    }


def _strip_hash(template: dict[str, Any]) -> dict[str, Any]:
    clean = copy.deepcopy(template)
    labels = (clean.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop("pod-template-hash", None)
    return clean


def _scaled(value: Any, replicas: int, default: str, round_up: bool) -> int:
    raw = default if value is None else value
    if isinstance(raw, str) and raw.endswith("%"):
        exact = int(raw[:-1]) * replicas / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(raw)


def surge_and_unavailable(spec: dict[str, Any]) -> tuple[int, int]:
    """maxSurge (rounded up) and maxUnavailable (rounded down), never both 0, as the real controller."""
    replicas = int(spec.get("replicas", 1))
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0, replicas
    rolling = strategy.get("rollingUpdate") or {}
    surge = _scaled(rolling.get("maxSurge"), replicas, "25%", True)
    unavailable = _scaled(rolling.get("maxUnavailable"), replicas, "25%", False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


class ProgressClock:
    """When each Deployment last made progress (monotonic, so lab deadlines can be sub-second)."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], float] = {}

    def touch(self, key: tuple[str, str]) -> None:
        self.last[key] = time.monotonic()

    def since(self, key: tuple[str, str]) -> float:
        return time.monotonic() - self.last.setdefault(key, time.monotonic())


class DeploymentController:
    def __init__(self, store: Store, new_pod: NewPod, progress_deadline: float | None) -> None:
        self.store = store
        self.new_pod = new_pod
        self.progress_deadline = progress_deadline
        self.clock = ProgressClock()

    def sync(self, namespace: str, name: str) -> None:
        dep = self.store.get("Deployment", namespace, name)
        if dep is None:
            return
        spec = dep.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        sets = [rs for rs in self.store.list("ReplicaSet", namespace) if _owned_by(rs, dep["metadata"]["uid"])]
        new_rs, created = self._new_replicaset(dep, sets)
        old = sorted((rs for rs in sets if rs["metadata"]["uid"] != new_rs["metadata"]["uid"]),
                     key=lambda rs: rs["metadata"]["creationTimestamp"])
        pods = self._pods_by_set([new_rs, *old])
        surge, unavailable = surge_and_unavailable(spec)
        want = {rs["metadata"]["uid"]: int((rs.get("spec") or {}).get("replicas", 0)) for rs in [new_rs, *old]}
        new_uid = new_rs["metadata"]["uid"]

        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        if recreate:
            for rs in old:
                want[rs["metadata"]["uid"]] = 0
            if not any(pods[rs["metadata"]["uid"]] for rs in old):
                want[new_uid] = replicas
        elif want[new_uid] > replicas:
            want[new_uid] = replicas
        elif want[new_uid] < replicas:
            room = replicas + surge - sum(want.values())
            want[new_uid] += max(0, min(room, replicas - want[new_uid]))

        if not recreate:
            self._scale_down_old(old, pods, want, replicas - unavailable, new_uid)

        for rs in [new_rs, *old]:
            before = int((rs.get("spec") or {}).get("replicas", 0))
            after = want[rs["metadata"]["uid"]]
            if before != after:
                direction = "up" if after > before else "down"
                record_event(self.store, dep, "ScalingReplicaSet",
                             f"Scaled {direction} replica set {rs['metadata']['name']} from {before} to {after}")
            self._sync_replicaset(rs, after, dep)
        self._set_status(dep, new_rs, [new_rs, *old], created, unavailable)

    def _new_replicaset(self, dep: dict[str, Any], sets: list[dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        template = (dep.get("spec") or {}).get("template") or {}
        wanted = _strip_hash(template)
        for rs in sets:
            if _strip_hash((rs.get("spec") or {}).get("template") or {}) == wanted:
                return rs, False
        ns, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        pod_hash = template_hash(template)
        revision = 1 + max((int((rs["metadata"].get("annotations") or {}).get(REVISION, "0") or 0) for rs in sets),
                           default=0)
        rs_template = copy.deepcopy(template)
        rs_template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = pod_hash
        selector = copy.deepcopy((dep.get("spec") or {}).get("selector") or {})
        selector.setdefault("matchLabels", {})["pod-template-hash"] = pod_hash
        replicas = int((dep.get("spec") or {}).get("replicas", 1))
        surge, _ = surge_and_unavailable(dep.get("spec") or {})
        created = self.store.create({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": f"{name}-{pod_hash}", "namespace": ns,
                "labels": {**(template.get("metadata") or {}).get("labels", {}), "pod-template-hash": pod_hash},
                "annotations": {REVISION: str(revision), "deployment.kubernetes.io/desired-replicas": str(replicas),
                                "deployment.kubernetes.io/max-replicas": str(replicas + surge)},
                "ownerReferences": [_owner_ref(dep)],
            },
            "spec": {"replicas": 0, "selector": selector, "template": rs_template},
            "status": {"replicas": 0},
        })

        def annotate(obj: dict[str, Any]) -> dict[str, Any]:
            obj["metadata"].setdefault("annotations", {})[REVISION] = str(revision)
            return obj

        self.store.modify("Deployment", ns, name, annotate)
        self.clock.touch((ns, name))
        return created, True

    def _pods_by_set(self, sets: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        ns = sets[0]["metadata"]["namespace"]
        pods = self.store.list("Pod", ns)
        return {rs["metadata"]["uid"]: [p for p in pods if _owned_by(p, rs["metadata"]["uid"])] for rs in sets}

    @staticmethod
    def _scale_down_old(old: list[dict[str, Any]], pods: dict[str, list[dict[str, Any]]], want: dict[str, int],
                        min_available: int, new_uid: str) -> None:
        new_unavailable = want[new_uid] - sum(1 for p in pods[new_uid] if pod_ready(p))
        room = sum(want.values()) - min_available - max(new_unavailable, 0)
        if room <= 0:
            return
        for rs in old:
            uid = rs["metadata"]["uid"]
            unhealthy = max(0, min(want[uid], len(pods[uid])) - sum(1 for p in pods[uid] if pod_ready(p)))
            cut = min(room, unhealthy)
            want[uid] -= cut
            room -= cut
        available = sum(sum(1 for p in pods[uid] if pod_ready(p)) for uid in pods)
        budget = available - min_available
        for rs in old:
            if budget <= 0:
                break
            uid = rs["metadata"]["uid"]
            cut = min(want[uid], budget)
            want[uid] -= cut
            budget -= cut

    def _sync_replicaset(self, rs: dict[str, Any], replicas: int, dep: dict[str, Any]) -> None:
        ns, rs_name, uid = rs["metadata"]["namespace"], rs["metadata"]["name"], rs["metadata"]["uid"]
        pods = [p for p in self.store.list("Pod", ns) if _owned_by(p, uid)]
        if len(pods) > replicas:
            pods.sort(key=lambda p: (pod_ready(p), p["metadata"]["creationTimestamp"]))
            doomed = pods[: len(pods) - replicas]
            pods = pods[len(pods) - replicas:]
            for pod in doomed:
                self.store.delete("Pod", ns, pod["metadata"]["name"])
                self.clock.touch((ns, dep["metadata"]["name"]))
                record_event(self.store, rs, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}",
                             component="replicaset-controller")
        pod_hash = rs["metadata"].get("labels", {}).get("pod-template-hash", "")
        template = (rs.get("spec") or {}).get("template") or {}
        for _ in range(replicas - len(pods)):
            pod = self.store.create(pending_pod(f"{rs_name}-{random_suffix()}", ns, template, rs,
                                                {"pod-template-hash": pod_hash}))
            pods.append(pod)
            record_event(self.store, rs, "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}",
                         component="replicaset-controller")
            self.new_pod(pod)
        ready = sum(1 for p in pods if pod_ready(p))

        def change(obj: dict[str, Any]) -> dict[str, Any]:
            obj.setdefault("spec", {})["replicas"] = replicas
            obj["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/desired-replicas"] = \
                str(int((dep.get("spec") or {}).get("replicas", 1)))
            counts = {"replicas": len(pods), "fullyLabeledReplicas": len(pods), "readyReplicas": ready,
                      "availableReplicas": ready}
            status: dict[str, Any] = {k: v for k, v in counts.items() if v or k == "replicas"}
            status["observedGeneration"] = obj["metadata"].get("generation", 1)
            obj["status"] = status
            return obj

        _modify_if_changed(self.store, "ReplicaSet", ns, rs_name, change)

    def _set_status(self, dep: dict[str, Any], new_rs: dict[str, Any], sets: list[dict[str, Any]],
                    created: bool, max_unavailable: int) -> None:
        ns, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        key = (ns, name)
        spec = dep.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        current = {rs["metadata"]["uid"]: self.store.get("ReplicaSet", ns, rs["metadata"]["name"]) or rs
                   for rs in sets}
        pods = self._pods_by_set(list(current.values()))
        total_spec = sum(int((rs.get("spec") or {}).get("replicas", 0)) for rs in current.values())
        actual = sum(len(p) for p in pods.values())
        ready = sum(1 for ps in pods.values() for p in ps if pod_ready(p))
        updated = len(pods[new_rs["metadata"]["uid"]])
        counts = {"replicas": actual, "updatedReplicas": updated, "readyReplicas": ready,
                  "availableReplicas": ready, "unavailableReplicas": max(total_spec - ready, 0)}
        previous = dep.get("status") or {}
        progressed = created or any(counts[k] > int(previous.get(k) or 0)
                                    for k in ("updatedReplicas", "readyReplicas", "availableReplicas")) \
            or actual - updated < int(previous.get("replicas") or 0) - int(previous.get("updatedReplicas") or 0)
        if progressed:
            self.clock.touch(key)
        complete = updated == replicas and ready == replicas and actual == replicas
        rs_name = new_rs["metadata"]["name"]
        old_progress = _condition(previous, "Progressing")
        deadline = self.progress_deadline if self.progress_deadline is not None else \
            float(spec.get("progressDeadlineSeconds", 600))
        if complete:
            progress = ("True", "NewReplicaSetAvailable", f'ReplicaSet "{rs_name}" has successfully progressed.')
        elif created:
            progress = ("True", "NewReplicaSetCreated", f'Created new replica set "{rs_name}"')
        elif progressed:
            progress = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        elif (old_progress or {}).get("reason") == "ProgressDeadlineExceeded" or self.clock.since(key) > deadline:
            progress = ("False", "ProgressDeadlineExceeded", f'ReplicaSet "{rs_name}" has timed out progressing.')
        elif old_progress is not None and old_progress.get("reason") != "NewReplicaSetAvailable":
            progress = (old_progress["status"], old_progress["reason"], old_progress.get("message", ""))
        else:
            progress = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        if ready >= replicas - max_unavailable:
            available = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            available = ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")

        def change(obj: dict[str, Any]) -> dict[str, Any]:
            old_status = obj.get("status") or {}
            status: dict[str, Any] = {"observedGeneration": obj["metadata"].get("generation", 1)}
            status.update({k: v for k, v in counts.items() if v})
            status["conditions"] = [_transition(old_status, "Available", *available),
                                    _transition(old_status, "Progressing", *progress)]
            obj["status"] = status
            return obj

        _modify_if_changed(self.store, "Deployment", ns, name, change)


class StatefulSetController:
    """Pods ``<name>-<ordinal>`` of the current revision, recreated Pending when missing or outdated.

    A revision is remembered per template hash from the first sync, so a seeded StatefulSet keeps the revision
    its status names until its template really changes."""

    def __init__(self, store: Store, new_pod: NewPod) -> None:
        self.store = store
        self.new_pod = new_pod
        self.revisions: dict[tuple[str, str], tuple[str, str]] = {}

    def revision(self, sts: dict[str, Any]) -> str:
        key = (sts["metadata"]["namespace"], sts["metadata"]["name"])
        pod_hash = template_hash((sts.get("spec") or {}).get("template") or {})
        known = self.revisions.get(key)
        if known is None:
            known = (pod_hash, (sts.get("status") or {}).get("updateRevision") or f"{key[1]}-{pod_hash}")
        elif known[0] != pod_hash:
            known = (pod_hash, f"{key[1]}-{pod_hash}")
        self.revisions[key] = known
        return known[1]

    def sync(self, namespace: str, name: str) -> None:
        store = self.store
        sts = store.get("StatefulSet", namespace, name)
        if sts is None:
            return
        spec = sts.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        template = spec.get("template") or {}
        uid = sts["metadata"]["uid"]
        revision = self.revision(sts)
        for pod in store.list("Pod", namespace):
            if not _owned_by(pod, uid):
                continue
            pod_name = pod["metadata"]["name"]
            ordinal = pod_name.rsplit("-", 1)[-1]
            outdated = (pod["metadata"].get("labels") or {}).get("controller-revision-hash") != revision
            if not ordinal.isdigit() or int(ordinal) >= replicas or outdated:
                store.delete("Pod", namespace, pod_name)
        for i in range(replicas):
            pod_name = f"{name}-{i}"
            if store.get("Pod", namespace, pod_name) is None:
                labels = {"statefulset.kubernetes.io/pod-name": pod_name, "controller-revision-hash": revision,
                          "apps.kubernetes.io/pod-index": str(i)}
                self.new_pod(store.create(pending_pod(pod_name, namespace, template, sts, labels)))
        live = [p for p in store.list("Pod", namespace) if _owned_by(p, uid)]
        ready = sum(1 for p in live if pod_ready(p))

        def change(obj: dict[str, Any]) -> dict[str, Any]:
            counts = {"replicas": len(live), "readyReplicas": ready, "currentReplicas": len(live),
                      "updatedReplicas": len(live), "availableReplicas": ready}
            status: dict[str, Any] = {"observedGeneration": obj["metadata"].get("generation", 1),
                                      "currentRevision": revision, "updateRevision": revision,
                                      "collisionCount": 0}
            status.update({k: v for k, v in counts.items() if v or k in ("replicas", "availableReplicas")})
            obj["status"] = status
            return obj

        _modify_if_changed(store, "StatefulSet", namespace, name, change)


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def _transition(old_status: dict[str, Any], kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
    """A condition that keeps its times while nothing about it changes."""
    old = _condition(old_status, kind)
    now = now_rfc3339()
    if old is not None and (old.get("status"), old.get("reason"), old.get("message")) == (status, reason, message):
        return old
    transition = old.get("lastTransitionTime", now) if old is not None and old.get("status") == status else now
    return {"type": kind, "status": status, "lastUpdateTime": now, "lastTransitionTime": transition,
            "reason": reason, "message": message}


def _modify_if_changed(store: Store, kind: str, namespace: str, name: str,
                       change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    current = store.get(kind, namespace, name)
    if current is None:
        return
    wanted = change(copy.deepcopy(current))
    if wanted != current:
        store.modify(kind, namespace, name, lambda _obj: wanted)
