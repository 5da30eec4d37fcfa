"""Waiting for a Deployment rollout the way `kubectl rollout status` judges it, plus failing early.

Counting ready pods is wrong during a rollout: with maxSurge the old pods stay Ready until the new ones are,
so `readyReplicas` is satisfied before anything new runs. Here a rollout is done only when the controller has
seen the current spec (status.observedGeneration >= metadata.generation), the ReplicaSet of the current pod
template (its revision, then its pod-template-hash) has all the replicas, every one of its pods is Ready, and
no pod of an older ReplicaSet is left. It fails as soon as a pod of the new ReplicaSet cannot start
(CrashLoopBackOff, an image that cannot be pulled, a missing Secret key) or the Deployment reports
ProgressDeadlineExceeded, naming the pod, the reason and the restart count, while the old pods still serve.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

from coderctl.clients.kube import DEPLOYMENTS, PODS, KubeClient, KubeError, Resource
from coderctl.facts.kube import condition_true, conditions, match_labels_selector
from coderctl.facts.pods import CANNOT_START_REASONS

REPLICASETS = Resource("apps/v1", "replicasets")
REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
POLL_INTERVAL = 0.25


@dataclass(frozen=True)
class RolloutState:
    """What the last look showed; `new_replicaset` is None until the controller created it."""

    deployment: str
    generation: int
    observed_generation: int
    replicas: int
    new_replicaset: str | None
    updated: int
    new_ready: int
    old_pods: int

    def describe(self) -> str:
        if self.observed_generation < self.generation:
            return (f"the controller has not seen generation {self.generation} of deployment {self.deployment} "
                    f"(observed {self.observed_generation})")
        if self.new_replicaset is None:
            return f"no ReplicaSet for the current pod template of deployment {self.deployment} yet"
        return (f"deployment {self.deployment}: {self.new_ready} of {self.replicas} new pods ready "
                f"(ReplicaSet {self.new_replicaset}, {self.updated} created), {self.old_pods} old pods left")


class RolloutError(KubeError):
    def __init__(self, message: str, state: RolloutState | None) -> None:
        super().__init__(message)
        self.state = state


class RolloutFailed(RolloutError):
    """A new pod cannot start, or the controller gave up (ProgressDeadlineExceeded)."""

    def __init__(self, message: str, state: RolloutState | None, *, pod: str = "", reason: str = "",
                 restarts: int = 0) -> None:
        super().__init__(message, state)
        self.pod = pod
        self.reason = reason
        self.restarts = restarts


class RolloutTimeout(RolloutError):
    pass


def wait_for_rollout(kube: KubeClient, namespace: str, name: str, deadline: float, *,
                     interval: float = POLL_INTERVAL, crash_restarts: int = 1) -> RolloutState:
    """Until the rollout of Deployment `name` is complete; `deadline` is a time.monotonic() value.

    Raises RolloutFailed as soon as a pod of the new ReplicaSet is in CrashLoopBackOff with at least
    `crash_restarts` restarts (or cannot start at all), and RolloutTimeout at the deadline, with the last
    state seen. API errors (KubeNotFound, KubeForbidden, ...) pass through."""
    while True:
        state, failure = _look(kube, namespace, name, crash_restarts)
        if failure is not None:
            raise failure
        if _complete(state):
            return state
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RolloutTimeout(f"rollout not finished before the deadline: {state.describe()}", state)
        time.sleep(min(interval, remaining))


def _complete(state: RolloutState) -> bool:
    if state.observed_generation < state.generation or state.old_pods:
        return False
    if state.replicas == 0:
        return state.updated == 0
    return state.new_replicaset is not None and state.updated == state.replicas and state.new_ready >= state.replicas


def _look(kube: KubeClient, namespace: str, name: str,
          crash_restarts: int) -> tuple[RolloutState, RolloutFailed | None]:
    dep = kube.get(DEPLOYMENTS, name, namespace)
    meta, spec, status = dep.get("metadata") or {}, dep.get("spec") or {}, dep.get("status") or {}
    replicas = int(spec.get("replicas", 1))
    selector = match_labels_selector(dep)
    owned = [rs for rs in kube.list(REPLICASETS, namespace, label_selector=selector or None)
             if _owned_by(rs, meta.get("uid", ""))]
    new_rs = _new_replicaset(dep, owned)
    pods = kube.list(PODS, namespace, label_selector=selector or None)
    new_uid = ((new_rs or {}).get("metadata") or {}).get("uid")
    old_uids = {(rs.get("metadata") or {}).get("uid") for rs in owned} - {new_uid}
    new_pods = [p for p in pods if new_uid and _owned_by(p, new_uid) and not _deleting(p)]
    old_pods = [p for p in pods if any(_owned_by(p, uid) for uid in old_uids if uid)]
    state = RolloutState(
        deployment=name, generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0), replicas=replicas,
        new_replicaset=((new_rs or {}).get("metadata") or {}).get("name"), updated=len(new_pods),
        new_ready=sum(1 for p in new_pods if _ready(p)), old_pods=len(old_pods))
    if state.observed_generation >= state.generation:
        progressing = conditions(dep).get("Progressing", {})
        if progressing.get("reason") == "ProgressDeadlineExceeded":
            return state, RolloutFailed(f"deployment {name} exceeded its progress deadline: {state.describe()}",
                                        state, reason="ProgressDeadlineExceeded")
    for pod in sorted(new_pods, key=lambda p: (p.get("metadata") or {}).get("name", "")):
        stuck = _cannot_start(pod, crash_restarts)
        if stuck is not None:
            reason, restarts, detail = stuck
            pod_name = (pod.get("metadata") or {}).get("name", "")
            serving = sum(1 for p in old_pods if _ready(p))
            message = (f"new pod {pod_name} of deployment {name} cannot start: {reason}"
                       f"{f' ({detail})' if detail else ''}, {restarts} restart(s)")
            if serving:
                message += f"; {serving} old pod(s) still Ready and serving"
            return state, RolloutFailed(message, state, pod=pod_name, reason=reason, restarts=restarts)
    return state, None


def _new_replicaset(dep: dict[str, Any], owned: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ReplicaSet of the current template (hash label aside), else the one of the Deployment's revision."""
    revision = ((dep.get("metadata") or {}).get("annotations") or {}).get(REVISION)
    template = _without_hash((dep.get("spec") or {}).get("template") or {})

    def rev(rs: dict[str, Any]) -> str | None:
        return ((rs.get("metadata") or {}).get("annotations") or {}).get(REVISION)

    same = [rs for rs in owned if _without_hash((rs.get("spec") or {}).get("template") or {}) == template]
    if same:
        return next((rs for rs in same if rev(rs) == revision), same[-1])
    return next((rs for rs in owned if revision and rev(rs) == revision), None)


def _without_hash(template: dict[str, Any]) -> dict[str, Any]:
    clean = copy.deepcopy(template)
    labels = (clean.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return clean


def _owned_by(obj: dict[str, Any], uid: str) -> bool:
    return bool(uid) and any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


def _deleting(pod: dict[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def _ready(pod: dict[str, Any]) -> bool:
    return condition_true(pod, "Ready")[0] is True


def _cannot_start(pod: dict[str, Any], crash_restarts: int) -> tuple[str, int, str] | None:
    """(reason, restarts, detail) when a container of the pod is failing rather than still starting."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        restarts = int(cs.get("restartCount") or 0)
        last = (cs.get("lastState") or {}).get("terminated") or {}
        detail = f"last exit {last.get('exitCode')} {last.get('reason', '')}".strip() if last else ""
        if reason == "CrashLoopBackOff" and restarts >= crash_restarts:
            return reason, restarts, detail
        if reason in CANNOT_START_REASONS:
            return reason, restarts, str(waiting.get("message") or "")[:200]
    return None
