"""Checks of the Kubernetes objects that run Coder."""

from __future__ import annotations

from typing import Any

from coderctl import discovery
from coderctl.checks.base import Outcome, check, found, ok
from coderctl.checks.errors import not_found, outcome_for
from coderctl.clients.kube import DEPLOYMENTS, KubeForbidden, KubeNotFound, KubeUnauthorized, KubeUnreachable
from coderctl.context import App
from coderctl.snapshot import snapshot
from coderctl.facts.kube import conditions, match_labels_selector
from coderctl.facts.pods import PodTrouble, pod_problem, pod_trouble
from coderctl.facts.versions import image_tag, same_version
from coderctl.problems import Code, Problem, code

LOG_LINES = 5

KUBE_API_UNREACHABLE = code(
    "KUBE-API-UNREACHABLE", "fail", "The Kubernetes API server cannot be reached",
    meaning="GET /version to the kubeconfig's server failed at the network level; no cluster check can run.",
    evidence="the kubeconfig's server address and the network error",
    fix="check the kubeconfig's server address (kubectl config view --minify), the VPN, and that the API server "
        "is up", check="cluster.reachable")
KUBE_UNAUTHORIZED = code(
    "KUBE-UNAUTHORIZED", "fail", "The Kubernetes API rejects the kubeconfig's credentials",
    meaning="the API server answered 401: the token or client certificate is expired, revoked or wrong.",
    evidence="the API server address and its answer",
    fix="renew the kubeconfig's credentials", check="cluster.reachable")
COD_DEPLOYMENT_MISSING = code(
    "COD-DEPLOYMENT-MISSING", "fail", "The Coder Deployment does not exist",
    meaning="no Deployment of that name in the namespace: the namespace or name is wrong, or the HelmRelease "
            "did not install Coder. coder.pods reports the same cause.",
    evidence="the namespace and Deployment name asked for",
    fix="check the namespace (-n) and coder_deployment; `flux get helmreleases -A` shows whether Coder's release "
        "is installed", check="coder.deployment, coder.pods")
COD_SCALED_ZERO = code(
    "COD-SCALED-ZERO", "fail", "The Coder Deployment is scaled to 0",
    meaning="spec.replicas is 0, so no coderd runs and Coder is down (an interrupted restore or a manual scale "
            "leaves it so).",
    evidence="Deployment spec.replicas",
    fix="kubectl -n NAMESPACE scale deployment/DEPLOYMENT --replicas=1, or resume the HelmRelease if Flux manages "
        "the replica count", check="coder.deployment")
COD_ROLLOUT_STUCK = code(
    "COD-ROLLOUT-STUCK", "fail", "The Coder rollout exceeded its progress deadline",
    meaning="the Deployment's Progressing condition has reason ProgressDeadlineExceeded: the new pods never "
            "became ready.",
    evidence="the Progressing condition's reason and message",
    fix="look at the new pods (kubectl describe pods); `kubectl rollout undo` returns to the last working version",
    check="coder.deployment")
COD_REPLICAS_UNAVAILABLE = code(
    "COD-REPLICAS-UNAVAILABLE", "fail", "Fewer Coder replicas available than desired",
    meaning="status.availableReplicas is below spec.replicas; coder.pods says why the pods are not ready.",
    evidence="Deployment spec.replicas and status.availableReplicas",
    fix="follow the problems of coder.pods", check="coder.deployment")
COD_VERSION_UNEXPECTED = code(
    "COD-VERSION-UNEXPECTED", "warn", "Coder runs another version than expected",
    meaning="the image tag of the Coder container differs from expected_coder_version (build metadata ignored).",
    evidence="the container's image and the expected version",
    fix="set expected_coder_version in the profile if the upgrade was intended, else pin the image tag in the "
        "HelmRelease values", check="coder.deployment")
POD_NONE = code(
    "POD-NONE", "fail", "No pod matches the Coder Deployment's selector",
    meaning="the Deployment has no pods: scaled to 0, or its ReplicaSet cannot create them (quota, admission).",
    evidence="the selector and the Deployment's replicas",
    fix="kubectl describe the Deployment and its ReplicaSet; their events say why no pod is created",
    check="coder.pods")
POD_OOMKILLED = code(
    "POD-OOMKILLED", "fail", "The Coder container is killed for using too much memory",
    meaning="the container's last termination was OOMKilled (exit code 137): it exceeded its memory limit.",
    evidence="the pod's container state, last termination reason and exit code, and its last log lines",
    fix="raise resources.limits.memory of Coder in the HelmRelease values, or find what grew",
    check="coder.pods")
POD_IMAGE_PULL = code(
    "POD-IMAGE-PULL", "fail", "The Coder image cannot be pulled",
    meaning="the container waits in ImagePullBackOff, ErrImagePull or InvalidImageName: the image name or tag is "
            "wrong, or the registry is unreachable from the nodes.",
    evidence="the pod's waiting reason and message",
    fix="check the image name and tag in the HelmRelease and that the registry is reachable from the nodes",
    check="coder.pods")
POD_CRASHLOOP = code(
    "POD-CRASHLOOP", "fail", "The Coder container keeps crashing",
    meaning="the container exits and is restarted with back-off (CrashLoopBackOff); its previous log says why, "
            "often the database (see the secrets and database checks).",
    evidence="the pod's waiting reason, last termination and exit code, and its last log lines",
    fix="kubectl logs deployment/DEPLOYMENT --previous", check="coder.pods")
POD_NOT_READY = code(
    "POD-NOT-READY", "fail", "A Coder pod is not running and ready",
    meaning="the pod is pending, waiting or failing its readiness probe (GET /healthz).",
    evidence="the pod's phase, container state and conditions",
    fix="kubectl describe pod POD; kubectl logs POD", check="coder.pods")
POD_RESTARTS = code(
    "POD-RESTARTS", "warn", "A Coder pod restarted more often than the threshold",
    meaning="the pod is ready now, but its container restarted more than restart_warn_threshold times.",
    evidence="the pod's restart count and last termination",
    fix="kubectl logs POD --previous shows the last crash", check="coder.pods")


def forbidden(exc: KubeForbidden) -> Outcome:
    return outcome_for(exc)


@check("cluster.reachable", "cluster", "Kubernetes API reachable", uses_cluster=True)
def cluster_reachable(app: App) -> Outcome:
    """GET /version with the kubeconfig's credentials."""
    kube = app.kube()
    try:
        version = kube.version()
    except KubeUnreachable as exc:
        return found([KUBE_API_UNREACHABLE(
            str(exc), evidence=[f"kubeconfig server {kube.host}: {exc}"],
            fix=["check the kubeconfig's server address, the VPN, and that the API server is up",
                 "kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}'"])], "")
    except KubeUnauthorized as exc:
        return found([KUBE_UNAUTHORIZED(str(exc), evidence=[f"GET {kube.host}/version: HTTP 401: {exc}"],
                                        fix=["renew the kubeconfig's credentials"])], "")
    except KubeForbidden as exc:
        return forbidden(exc)
    git = version.get("gitVersion", "unknown version")
    return ok(f"Kubernetes {git} at {kube.host}", server=kube.host, version=git)


def _deployment_missing(app: App) -> Problem:
    return not_found(COD_DEPLOYMENT_MISSING, "Deployment", DEPLOYMENTS, app.settings.coder_deployment, app.namespace,
                     fix=[f"kubectl get deployments -n {app.namespace} (check -n and coder_deployment)",
                          "flux get helmreleases -A"])


@check("coder.deployment", "cluster", "Coder Deployment available", needs=("cluster.reachable",))
def coder_deployment(app: App) -> Outcome:
    """The Coder Deployment: replicas available, rollout progressing, image version."""
    name = app.settings.coder_deployment
    ns = app.namespace
    try:
        dep = discovery.coder_deployment(app)
    except KubeNotFound:
        return found([_deployment_missing(app)], "")
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
    replicas = f"Deployment {ns}/{name} spec.replicas: {desired}, status.availableReplicas: {available}"
    if desired == 0:
        return found([COD_SCALED_ZERO(
            f"Deployment {name} is scaled to 0 replicas: Coder is down", evidence=[replicas],
            fix=[f"kubectl -n {ns} scale deployment/{name} --replicas=1",
                 f"or, if Flux manages the replica count: flux resume helmrelease {name} -n {ns}"])], "", **data)
    progressing = conditions(dep).get("Progressing", {})
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return found([COD_ROLLOUT_STUCK(
            f"rollout of {name} is stuck (ProgressDeadlineExceeded): {progressing.get('message', '')}",
            evidence=[f"Deployment {ns}/{name} condition Progressing: status {progressing.get('status')}, "
                      f"reason ProgressDeadlineExceeded, message {progressing.get('message', '')!r}", replicas],
            fix=[f"look at the new pods: kubectl -n {ns} describe pods -l app.kubernetes.io/name=coder",
                 f"kubectl -n {ns} rollout undo deployment/{name} returns to the last working version"])],
            "", **data)
    if available < desired:
        return found([COD_REPLICAS_UNAVAILABLE(
            f"{available} of {desired} replicas available", evidence=[replicas],
            fix=["coder.pods says why the pods are not ready",
                 f"kubectl -n {ns} describe deployment/{name}"])], "", **data)
    expected = str(app.settings.expected_coder_version or "")
    tag = image_tag(image) if image else ""
    if expected and tag and not same_version(tag, expected):
        return found([COD_VERSION_UNEXPECTED(
            f"{available}/{desired} available, but the image is {image}, expected {expected}",
            evidence=[f"Deployment {ns}/{name} container {app.settings.coder_container} image: {image}",
                      f"expected_coder_version: {expected}"],
            fix=[f"set expected_coder_version = \"{tag}\" in the profile if the upgrade was intended",
                 f"else pin the image tag {expected} in the Coder HelmRelease values"])], "", **data)
    return ok(f"{available}/{desired} replicas available, image {image}", **data)


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
        missing = _deployment_missing(app)
        return found([COD_DEPLOYMENT_MISSING(f"{missing.message}, so no Coder pods", evidence=missing.evidence,
                                             fix=missing.fix)], "")
    except KubeForbidden as exc:
        return forbidden(exc)
    selector = match_labels_selector(dep)
    try:
        pods = snapshot(app).coder_pods
    except KubeForbidden as exc:
        return forbidden(exc)
    if not pods:
        desired = int((dep.get("spec") or {}).get("replicas", 1))
        return found([POD_NONE(
            f"no pods match {selector or 'the Deployment'}" + (" (scaled to 0)" if desired == 0 else ""),
            evidence=[f"pods in {app.namespace} with labels {selector or '(none)'}: none",
                      f"Deployment {app.namespace}/{s.coder_deployment} spec.replicas: {desired}"],
            fix=[f"kubectl -n {app.namespace} describe deployment/{s.coder_deployment} and its ReplicaSet events"])],
            "")
    problems: list[Problem] = []
    restarts: list[Problem] = []
    per_pod: dict[str, Any] = {}
    logs: dict[str, list[str]] = {}
    for pod in pods:
        name = pod["metadata"]["name"]
        problem, facts = pod_problem(pod, s.coder_container)
        per_pod[name] = facts
        if problem:
            lines = _last_log_lines(app, name, s.coder_container, previous="last_reason" in facts)
            if lines:
                logs[name] = lines
            problems.append(_pod_not_running(app, name, problem, facts, lines))
        elif facts["restarts"] > int(s.restart_warn_threshold):
            restarts.append(POD_RESTARTS(
                f"{name} restarted {facts['restarts']} times",
                evidence=[f"Pod {app.namespace}/{name} container {s.coder_container} restartCount: "
                          f"{facts['restarts']} (threshold {s.restart_warn_threshold})"]
                + ([f"last terminated: {facts['last_reason']} (exit code {facts['last_exit_code']})"]
                   if "last_reason" in facts else []),
                fix=[f"kubectl -n {app.namespace} logs {name} -c {s.coder_container} --previous shows the last "
                     "crash"]))
    data = {"pods": per_pod, "logs": logs}
    if problems:
        outcome = found(problems, "", **data)
        for name, lines in logs.items():
            outcome.detail += f"\n  last log lines of {name}:\n" + "\n".join(f"    {line}" for line in lines)
        return outcome
    if restarts:
        return found(restarts, "", **data)
    return ok(f"{len(pods)} pod(s) running and ready: {', '.join(sorted(per_pod))}", **data)


_TROUBLE_CODES: dict[PodTrouble, Code] = {
    "oomkilled": POD_OOMKILLED, "image-pull": POD_IMAGE_PULL, "crashloop": POD_CRASHLOOP, "not-ready": POD_NOT_READY}


def _pod_not_running(app: App, name: str, problem: str, facts: dict[str, Any], lines: list[str]) -> Problem:
    s = app.settings
    ns = app.namespace
    kind = _TROUBLE_CODES[pod_trouble(facts)]
    evidence = [f"Pod {ns}/{name} phase {facts['phase']}, container {s.coder_container}: {problem}",
                f"Pod {ns}/{name} container {s.coder_container} restartCount: {facts['restarts']}"]
    evidence += [f"log of {name}: {line}" for line in lines]
    if kind is POD_OOMKILLED:
        fix = [f"the container ran out of memory: raise resources.limits.memory of {s.coder_deployment} (the "
               "HelmRelease values) or find what grew; the container's last log lines show what it was doing"]
    elif kind is POD_IMAGE_PULL:
        fix = ["check the image name and tag in the HelmRelease and that the registry is reachable from the nodes",
               f"kubectl -n {ns} describe pod {name}"]
    elif kind is POD_CRASHLOOP:
        fix = [f"kubectl -n {ns} logs {name} -c {s.coder_container} --previous; a database error there points at "
               "the secrets and database checks"]
    else:
        fix = [f"kubectl -n {ns} describe pod {name}", f"kubectl -n {ns} logs {name} -c {s.coder_container}"]
    return kind(f"{name}: {problem}", evidence=evidence, fix=fix)
