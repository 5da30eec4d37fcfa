"""Checks of the PostgreSQL StatefulSet and its volume."""

from __future__ import annotations

from typing import Any

from coderctl.checks.base import Outcome, check, found, ok
from coderctl.checks.errors import not_found
from coderctl.clients.kube import EVENTS, PODS, PVCS, STATEFULSETS, KubeNotFound
from coderctl.context import App
from coderctl.snapshot import snapshot
from coderctl.facts.kube import condition_true, quantity
from coderctl.problems import Problem, code

PG_STATEFULSET_MISSING = code(
    "PG-STATEFULSET-MISSING", "fail", "The PostgreSQL StatefulSet does not exist",
    meaning="no StatefulSet of that name: the PostgreSQL HelmRelease is not installed, or its name differs (Flux "
            "names the release <namespace>-<name>, so the chart's objects are coder-coder-postgresql).",
    evidence="the namespace and StatefulSet name asked for",
    fix="check postgres_statefulset and the PostgreSQL HelmRelease (flux get helmreleases -A)",
    check="postgres.statefulset")
PG_SCALED_ZERO = code(
    "PG-SCALED-ZERO", "fail", "The PostgreSQL StatefulSet is scaled to 0",
    meaning="spec.replicas is 0: the database is down and Coder cannot start.",
    evidence="StatefulSet spec.replicas", fix="kubectl -n NAMESPACE scale statefulset/NAME --replicas=1",
    check="postgres.statefulset", coder_code="EDB01")
PG_NOT_READY = code(
    "PG-NOT-READY", "fail", "The PostgreSQL pod is not ready",
    meaning="the StatefulSet has fewer ready replicas than desired, or its pod is missing, pending or failing "
            "its readiness probe; Coder cannot reach its database.",
    evidence="StatefulSet ready/desired replicas and the pod's phase and waiting reasons",
    fix="postgres.pvc tells whether the volume is the cause; else describe the pod and read its log",
    check="postgres.statefulset", coder_code="EDB01")
PG_PVC_MISSING = code(
    "PG-PVC-MISSING", "fail", "The PostgreSQL PersistentVolumeClaim does not exist",
    meaning="the claim the StatefulSet's volumeClaimTemplates should have created is absent.",
    evidence="the claim name derived from the StatefulSet",
    fix="the StatefulSet creates it from its volumeClaimTemplates; check the StatefulSet's events",
    check="postgres.pvc")
PG_PVC_NOT_BOUND = code(
    "PG-PVC-NOT-BOUND", "fail", "The PostgreSQL volume is not bound",
    meaning="the claim is Pending (or Lost): the storage class cannot provision a volume, so PostgreSQL cannot "
            "start.",
    evidence="the claim's phase, storage class and its last Warning event",
    fix="the storage class must exist and be able to provision (kubectl get storageclass; for Longhorn, its "
        "manager pods and nodes)", check="postgres.pvc")
PG_PVC_CLASS_DIFFERS = code(
    "PG-PVC-CLASS-DIFFERS", "warn", "The PostgreSQL volume has another storage class than expected",
    meaning="the claim's storageClassName differs from storage_class in the profile.",
    evidence="the claim's spec.storageClassName and the expected class",
    fix="set storage_class in the profile if this is intended", check="postgres.pvc")
PG_PVC_TOO_SMALL = code(
    "PG-PVC-TOO-SMALL", "warn", "The PostgreSQL volume is smaller than expected",
    meaning="the claim's capacity is below pvc_size in the profile.",
    evidence="the claim's status.capacity.storage and the expected size",
    fix="expand the claim (the storage class must allow volume expansion), or set pvc_size in the profile",
    check="postgres.pvc")


@check("postgres.statefulset", "cluster", "PostgreSQL StatefulSet and pod ready", needs=("cluster.reachable",))
def statefulset(app: App) -> Outcome:
    """The PostgreSQL StatefulSet's ready replicas and its pod's readiness."""
    s = app.settings
    try:
        sts = snapshot(app).postgres_statefulset
    except KubeNotFound:
        return found([not_found(
            PG_STATEFULSET_MISSING, "StatefulSet", STATEFULSETS, s.postgres_statefulset, app.namespace,
            fix=["check the PostgreSQL HelmRelease: Flux names the release <namespace>-<name>, so the chart's "
                 "objects are coder-coder-postgresql", f"kubectl -n {app.namespace} get statefulsets"])], "")
    desired = int((sts.get("spec") or {}).get("replicas", 1))
    ready = int((sts.get("status") or {}).get("readyReplicas") or 0)
    data: dict[str, Any] = {"desired": desired, "ready": ready}
    replicas = (f"StatefulSet {app.namespace}/{s.postgres_statefulset} spec.replicas: {desired}, "
                f"status.readyReplicas: {ready}")
    pod_state = ""
    try:
        pod = app.kube().get(PODS, s.postgres_pod, app.namespace)
        is_ready, _ = condition_true(pod, "Ready")
        phase = (pod.get("status") or {}).get("phase", "Unknown")
        data["pod_phase"] = phase
        if not is_ready:
            waiting = [c.get("state", {}).get("waiting", {}).get("reason")
                       for c in (pod.get("status") or {}).get("containerStatuses") or []]
            reasons = [w for w in waiting if w]
            pod_state = f"pod {s.postgres_pod} is {phase}" + (f" ({', '.join(reasons)})" if reasons else "")
    except KubeNotFound:
        pod_state = f"pod {s.postgres_pod} does not exist"
    if desired == 0:
        return found([PG_SCALED_ZERO(
            f"StatefulSet {s.postgres_statefulset} is scaled to 0: the database is down", evidence=[replicas],
            fix=[f"kubectl -n {app.namespace} scale statefulset/{s.postgres_statefulset} --replicas=1"])], "",
            **data)
    if ready < desired or pod_state:
        detail = f"{ready}/{desired} ready" + (f"; {pod_state}" if pod_state else "")
        return found([PG_NOT_READY(
            detail, evidence=[replicas] + ([f"Pod {app.namespace}/{pod_state.removeprefix('pod ')}"]
                                           if pod_state else []),
            fix=["postgres.pvc tells whether the volume is the cause",
                 f"kubectl -n {app.namespace} describe pod {s.postgres_pod}",
                 f"kubectl -n {app.namespace} logs {s.postgres_pod} -c {s.postgres_container}"])], "", **data)
    return ok(f"{ready}/{desired} ready, pod {s.postgres_pod} ready", **data)


def _claim_name(sts: dict[str, Any] | None, app: App) -> str:
    templates = ((sts or {}).get("spec") or {}).get("volumeClaimTemplates") or []
    template = templates[0]["metadata"]["name"] if templates else "data"
    return f"{template}-{app.settings.postgres_pod}"


def _events_for(app: App, kind: str, name: str) -> list[dict[str, Any]]:
    events = app.kube().list(EVENTS, app.namespace,
                             field_selector=f"involvedObject.kind={kind},involvedObject.name={name}")
    return sorted(events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))


@check("postgres.pvc", "cluster", "PostgreSQL volume bound, with the expected size and class",
       needs=("cluster.reachable",))
def pvc(app: App) -> Outcome:
    """The StatefulSet's PersistentVolumeClaim: phase, capacity, storage class; for Pending, its events."""
    s = app.settings
    try:
        sts = snapshot(app).postgres_statefulset
    except KubeNotFound:
        sts = None
    name = _claim_name(sts, app)
    try:
        claim = app.kube().get(PVCS, name, app.namespace)
    except KubeNotFound:
        return found([not_found(
            PG_PVC_MISSING, "PersistentVolumeClaim", PVCS, name, app.namespace,
            fix=["the StatefulSet creates it from its volumeClaimTemplates; check the StatefulSet's events: "
                 f"kubectl -n {app.namespace} describe statefulset/{s.postgres_statefulset}"])], "")
    status, spec = claim.get("status") or {}, claim.get("spec") or {}
    phase = status.get("phase", "Unknown")
    capacity = (status.get("capacity") or {}).get("storage") or ((spec.get("resources") or {}).get("requests")
                                                                  or {}).get("storage")
    klass = spec.get("storageClassName")
    data = {"name": name, "phase": phase, "capacity": capacity, "storage_class": klass}
    where = f"PersistentVolumeClaim {app.namespace}/{name}"
    if phase != "Bound":
        warnings = [e for e in _events_for(app, "PersistentVolumeClaim", name) if e.get("type") == "Warning"]
        why = f"{warnings[-1].get('reason')}: {warnings[-1].get('message')}" if warnings else "no warning events"
        return found([PG_PVC_NOT_BOUND(
            f"PVC {name} is {phase}: {why}",
            evidence=[f"{where} status.phase: {phase}, spec.storageClassName: {klass}",
                      f"last Warning event of {name}: {why}"],
            fix=[f"the storage class {klass!r} must exist and be able to provision "
                 f"(kubectl get storageclass; for Longhorn, its manager pods and nodes)",
                 f"kubectl -n {app.namespace} describe pvc {name}"])], "", **data)
    problems: list[Problem] = []
    if s.storage_class and klass != s.storage_class:
        problems.append(PG_PVC_CLASS_DIFFERS(
            f"PVC {name}: storage class {klass}, expected {s.storage_class}",
            evidence=[f"{where} spec.storageClassName: {klass}", f"storage_class: {s.storage_class}"],
            fix=[f"set storage_class = \"{klass}\" in the profile if this is intended"]))
    want, have = quantity(s.pvc_size), quantity(capacity)
    if want is not None and have is not None and have < want:
        problems.append(PG_PVC_TOO_SMALL(
            f"PVC {name}: capacity {capacity}, expected {s.pvc_size}",
            evidence=[f"{where} status.capacity.storage: {capacity}", f"pvc_size: {s.pvc_size}"],
            fix=[f"kubectl -n {app.namespace} patch pvc {name} -p "
                 f"'{{\"spec\":{{\"resources\":{{\"requests\":{{\"storage\":\"{s.pvc_size}\"}}}}}}}}' "
                 "(the storage class must allow expansion), or set pvc_size in the profile"]))
    return found(problems, f"PVC {name} bound, {capacity} on {klass}", **data)
