"""Checks of the Kubernetes objects that run Coder."""

from __future__ import annotations

from typing import Any

from coderctl import discovery
from coderctl.checks.base import Outcome, check, fail, ok, warn
from coderctl.checks.errors import outcome_for
from coderctl.checks.kubefacts import conditions, image_tag
from coderctl.clients.kube import PODS, KubeForbidden, KubeNotFound, KubeUnauthorized, KubeUnreachable
from coderctl.context import App

LOG_LINES = 5


def forbidden(exc: KubeForbidden) -> Outcome:
    return outcome_for(exc)


@check("cluster.reachable", "cluster", "Kubernetes API reachable", uses_cluster=True)
def cluster_reachable(app: App) -> Outcome:
    """GET /version with the kubeconfig's credentials."""
    kube = app.kube()
    try:
        version = kube.version()
    except KubeUnreachable as exc:
        return fail(str(exc), "check the kubeconfig's server address, the VPN, and that the API server is up")
    except KubeUnauthorized as exc:
        return fail(str(exc), "renew the kubeconfig's credentials")
    except KubeForbidden as exc:
        return forbidden(exc)
    git = version.get("gitVersion", "unknown version")
    return ok(f"Kubernetes {git} at {kube.host}", server=kube.host, version=git)


def _same_version(tag: str, expected: str) -> bool:
    norm = lambda v: v.lstrip("v").split("+", 1)[0]  # noqa: E731
    return norm(tag) == norm(expected)


@check("coder.deployment", "cluster", "Coder Deployment available", needs=("cluster.reachable",))
def coder_deployment(app: App) -> Outcome:
    """The Coder Deployment: replicas available, rollout progressing, image version."""
    name = app.settings.coder_deployment
    try:
        dep = discovery.coder_deployment(app)
    except KubeNotFound:
        return fail(f"Deployment {app.namespace}/{name} not found",
                    "check the namespace (-n) and the Coder HelmRelease; `flux get helmreleases -A`")
    except KubeForbidden as exc:
        return forbidden(exc)
    spec, status = dep.get("spec") or {}, dep.get("status") or {}
    desired = int(spec.get("replicas", 1))
    available = int(status.get("availableReplicas") or 0)
    data: dict[str, Any] = {"desired": desired, "available": available,
                            "updated": int(status.get("updatedReplicas") or 0)}
    containers = ((spec.get("template") or {}).get("spec") or {})
    c = discovery.container(containers, app.settings.coder_container)
    image = (c or {}).get("image", "")
    data["image"] = image
    if desired == 0:
        return fail(f"Deployment {name} is scaled to 0 replicas: Coder is down",
                    f"kubectl -n {app.namespace} scale deployment/{name} --replicas=1 (or resume the HelmRelease "
                    "if Flux manages the replica count)", **data)
    progressing = conditions(dep).get("Progressing", {})
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return fail(f"rollout of {name} is stuck (ProgressDeadlineExceeded): {progressing.get('message', '')}",
                    f"look at the new pods: kubectl -n {app.namespace} describe pods -l "
                    "app.kubernetes.io/name=coder; `kubectl rollout undo` returns to the last working version",
                    **data)
    if available < desired:
        return fail(f"{available} of {desired} replicas available",
                    "coder.pods says why the pods are not ready", **data)
    expected = str(app.settings.expected_coder_version or "")
    tag = image_tag(image) if image else ""
    if expected and tag and not _same_version(tag, expected):
        return warn(f"{available}/{desired} available, but the image is {image}, expected {expected}",
                    "set expected_coder_version in the profile if the upgrade was intended", **data)
    return ok(f"{available}/{desired} replicas available, image {image}", **data)


def _pod_problem(pod: dict[str, Any], container: str) -> tuple[str | None, dict[str, Any]]:
    """Why a pod is not running and ready, or None; plus facts about its container."""
    status = pod.get("status") or {}
    phase = status.get("phase", "Unknown")
    statuses = status.get("containerStatuses") or []
    cs = next((s for s in statuses if s.get("name") == container), statuses[0] if statuses else None)
    facts: dict[str, Any] = {"phase": phase, "restarts": int((cs or {}).get("restartCount") or 0)}
    if cs is None:
        reason = next((c.get("reason") or c.get("message") for c in status.get("conditions") or []
                       if c.get("status") == "False" and (c.get("reason") or c.get("message"))), None)
        return f"{phase}" + (f" ({reason})" if reason else ""), facts
    state, last = cs.get("state") or {}, (cs.get("lastState") or {}).get("terminated")
    parts: list[str] = []
    if "waiting" in state:
        waiting = state["waiting"]
        facts["waiting"] = waiting.get("reason")
        parts.append(waiting.get("reason") or "Waiting")
        if waiting.get("reason") in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName") and waiting.get("message"):
            parts.append(waiting["message"])
    elif "terminated" in state:
        term = state["terminated"]
        parts.append(f"terminated: {term.get('reason', 'Error')} (exit code {term.get('exitCode')})")
    if last:
        facts["last_reason"] = last.get("reason")
        facts["last_exit_code"] = last.get("exitCode")
        parts.append(f"last terminated: {last.get('reason', 'Error')} (exit code {last.get('exitCode')})")
    if not parts and (phase != "Running" or not cs.get("ready")):
        parts.append(f"{phase}, not ready")
    return ("; ".join(parts) if parts and (not cs.get("ready") or "waiting" in state) else None), facts


def _last_log_lines(app: App, pod: str, container: str, previous: bool) -> list[str]:
    try:
        text = app.kube().logs(app.namespace, pod, container, previous=previous, tail_lines=LOG_LINES)
    except Exception:
        return []
    return [app.redact(line) for line in text.strip().splitlines()[-LOG_LINES:]]


@check("coder.pods", "cluster", "Coder pods running and ready", needs=("cluster.reachable",))
def coder_pods(app: App) -> Outcome:
    """Pods of the Coder Deployment (by its selector): phase, readiness, waiting and last-termination reasons,
    restart counts, and the last lines of the previous container's log."""
    s = app.settings
    try:
        dep = discovery.coder_deployment(app)
    except KubeNotFound:
        return fail(f"Deployment {app.namespace}/{s.coder_deployment} not found, so no Coder pods")
    except KubeForbidden as exc:
        return forbidden(exc)
    labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    try:
        pods = app.kube().list(PODS, app.namespace, label_selector=selector or None)
    except KubeForbidden as exc:
        return forbidden(exc)
    pods = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    if not pods:
        desired = int((dep.get("spec") or {}).get("replicas", 1))
        return fail(f"no pods match {selector or 'the Deployment'}" + (" (scaled to 0)" if desired == 0 else ""),
                    f"kubectl -n {app.namespace} describe deployment/{s.coder_deployment} and its ReplicaSet events")
    problems: list[str] = []
    restarts: list[str] = []
    per_pod: dict[str, Any] = {}
    logs: dict[str, list[str]] = {}
    for pod in pods:
        name = pod["metadata"]["name"]
        problem, facts = _pod_problem(pod, s.coder_container)
        per_pod[name] = facts
        if problem:
            lines = _last_log_lines(app, name, s.coder_container, previous="last_reason" in facts)
            if lines:
                logs[name] = lines
            problems.append(f"{name}: {problem}")
        elif facts["restarts"] > int(s.restart_warn_threshold):
            restarts.append(f"{name} restarted {facts['restarts']} times")
    data = {"pods": per_pod, "logs": logs}
    if problems:
        detail = "; ".join(problems)
        for name, lines in logs.items():
            detail += f"\n  last log lines of {name}:\n" + "\n".join(f"    {line}" for line in lines)
        return fail(detail, _pod_remedy(per_pod, app), **data)
    if restarts:
        return warn("; ".join(restarts), f"kubectl -n {app.namespace} logs <pod> --previous shows the last crash",
                    **data)
    return ok(f"{len(pods)} pod(s) running and ready: {', '.join(sorted(per_pod))}", **data)


def _pod_remedy(per_pod: dict[str, Any], app: App) -> str:
    reasons = {f.get("last_reason") for f in per_pod.values()} | {f.get("waiting") for f in per_pod.values()}
    if "OOMKilled" in reasons:
        return (f"the container ran out of memory: raise resources.limits.memory of {app.settings.coder_deployment} "
                "(the HelmRelease values) or find what grew; the log lines above show what it was doing")
    if reasons & {"ImagePullBackOff", "ErrImagePull"}:
        return "check the image name and tag in the HelmRelease and that the registry is reachable from the nodes"
    return (f"kubectl -n {app.namespace} logs deployment/{app.settings.coder_deployment} --previous; a database "
            "error there points at the secrets and database checks")
