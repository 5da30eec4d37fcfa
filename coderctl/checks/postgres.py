"""Checks of the PostgreSQL StatefulSet and its volume."""

from __future__ import annotations

from typing import Any

from coderctl.checks.base import Outcome, check, fail, ok, warn
from coderctl.checks.kubefacts import condition_true, quantity
from coderctl.clients.kube import EVENTS, PODS, PVCS, STATEFULSETS, KubeNotFound
from coderctl.context import App


@check("postgres.statefulset", "cluster", "PostgreSQL StatefulSet and pod ready", needs=("cluster.reachable",))
def statefulset(app: App) -> Outcome:
    """The PostgreSQL StatefulSet's ready replicas and its pod's readiness."""
    s = app.settings
    try:
        sts = app.kube().get(STATEFULSETS, s.postgres_statefulset, app.namespace)
    except KubeNotFound:
        return fail(f"StatefulSet {app.namespace}/{s.postgres_statefulset} not found",
                    "check the PostgreSQL HelmRelease: Flux names the release <namespace>-<name>, so the chart's "
                    "objects are coder-coder-postgresql")
    desired = int((sts.get("spec") or {}).get("replicas", 1))
    ready = int((sts.get("status") or {}).get("readyReplicas") or 0)
    data: dict[str, Any] = {"desired": desired, "ready": ready}
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
        return fail(f"StatefulSet {s.postgres_statefulset} is scaled to 0: the database is down",
                    f"kubectl -n {app.namespace} scale statefulset/{s.postgres_statefulset} --replicas=1", **data)
    if ready < desired or pod_state:
        detail = f"{ready}/{desired} ready" + (f"; {pod_state}" if pod_state else "")
        return fail(detail, "postgres.pvc tells whether the volume is the cause; else kubectl -n "
                    f"{app.namespace} describe pod {s.postgres_pod} and its logs", **data)
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
        sts = app.kube().get(STATEFULSETS, s.postgres_statefulset, app.namespace)
    except KubeNotFound:
        sts = None
    name = _claim_name(sts, app)
    try:
        claim = app.kube().get(PVCS, name, app.namespace)
    except KubeNotFound:
        return fail(f"PersistentVolumeClaim {app.namespace}/{name} not found",
                    "the StatefulSet creates it from its volumeClaimTemplates; check the StatefulSet's events")
    status, spec = claim.get("status") or {}, claim.get("spec") or {}
    phase = status.get("phase", "Unknown")
    capacity = (status.get("capacity") or {}).get("storage") or ((spec.get("resources") or {}).get("requests")
                                                                  or {}).get("storage")
    klass = spec.get("storageClassName")
    data = {"name": name, "phase": phase, "capacity": capacity, "storage_class": klass}
    if phase != "Bound":
        warnings = [e for e in _events_for(app, "PersistentVolumeClaim", name) if e.get("type") == "Warning"]
        why = f"{warnings[-1].get('reason')}: {warnings[-1].get('message')}" if warnings else "no warning events"
        return fail(f"PVC {name} is {phase}: {why}",
                    f"the storage class {klass!r} must exist and be able to provision "
                    f"(kubectl get storageclass; for Longhorn, its manager pods and nodes)", **data)
    problems = []
    if s.storage_class and klass != s.storage_class:
        problems.append(f"storage class {klass}, expected {s.storage_class}")
    want, have = quantity(s.pvc_size), quantity(capacity)
    if want is not None and have is not None and have < want:
        problems.append(f"capacity {capacity}, expected {s.pvc_size}")
    if problems:
        return warn(f"PVC {name} bound, but " + "; ".join(problems),
                    "set storage_class / pvc_size in the profile if this is intended", **data)
    return ok(f"PVC {name} bound, {capacity} on {klass}", **data)
