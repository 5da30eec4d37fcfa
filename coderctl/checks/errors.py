"""Turning exceptions a check did not handle into results: a forbidden call names what it needed."""

from __future__ import annotations

import re
from collections.abc import Iterable

from coderctl.checks.base import Conclusion, Outcome, SkipCheck, Status
from coderctl.clients.kube import KubeForbidden, KubeUnreachable, Resource
from coderctl.errors import CoderctlError
from coderctl.problems import Code, Problem, code

KUBE_FORBIDDEN = code(
    "KUBE-FORBIDDEN", "error", "The Kubernetes API refused a read the check needs",
    meaning="RBAC does not let the kubeconfig's user read an object the check looks at, so the check could not "
            "look; nothing is known about what it checks.",
    evidence="the verb and resource refused, the namespace, and the API server's message",
    fix="grant the verb on the resource (docs/rbac.md has the Roles verify needs); "
        "`kubectl auth can-i VERB RESOURCE -n NAMESPACE` confirms",
    check="any check that reads the cluster")
KUBE_UNREACHABLE = code(
    "KUBE-UNREACHABLE", "error", "The Kubernetes API could not be reached during the check",
    meaning="a request to the API server failed at the network level (refused, timed out, name not found) while "
            "the check ran; cluster.reachable says whether the API is down altogether.",
    evidence="the API server address and the network error",
    fix="check the kubeconfig's server address, the VPN and the API server; then run verify again",
    check="any check that reads the cluster")

_NAMESPACE = re.compile(r'in the namespace "([^"]+)"')


def forbidden_problem(exc: KubeForbidden) -> Problem:
    match = _NAMESPACE.search(str(exc))
    where = f" -n {match.group(1)}" if match else ""
    scope = f" in namespace {match.group(1)}" if match else ""
    return KUBE_FORBIDDEN(
        f"the API refused to {exc.verb} {exc.resource}{scope}",
        evidence=[f"{exc.verb} {exc.resource}{scope}: HTTP {exc.status} {exc.reason or 'Forbidden'}: {exc}"],
        fix=[f"grant {exc.verb} on {exc.resource} to this user (docs/rbac.md has the Role verify needs)",
             f"kubectl auth can-i {exc.verb} {exc.resource}{where}"])


def not_found(problem: Code, kind: str, resource: Resource, name: str, namespace: str, *, fix: Iterable[str],
              message: str | None = None, evidence: Iterable[str] = ()) -> Problem:
    """`problem` for an object the API answered 404 for: "Kind namespace/name not found" unless `message` says
    more, the GET as the last evidence."""
    return problem(message or f"{kind} {namespace}/{name} not found",
                   evidence=[*evidence, f"GET {resource.plural}/{name} in namespace {namespace}: 404 Not Found"],
                   fix=fix)


def outcome_for(exc: Exception) -> Outcome:
    if isinstance(exc, Conclusion):
        return exc.outcome
    if isinstance(exc, SkipCheck):
        return Outcome(Status.SKIP, str(exc))
    if isinstance(exc, KubeForbidden):
        problem = forbidden_problem(exc)
        return Outcome(
            Status.ERROR,
            f"the API refused to {exc.verb} {exc.resource}: {exc}",
            "\n".join(problem.fix),
            {"forbidden": {"verb": exc.verb, "resource": exc.resource}},
            [problem],
        )
    if isinstance(exc, KubeUnreachable):
        return Outcome(Status.ERROR, str(exc), None, {}, [KUBE_UNREACHABLE(
            str(exc), evidence=[f"request to the Kubernetes API: {exc}"],
            fix=["check the kubeconfig's server address, the VPN and the API server (cluster.reachable)"])])
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, CoderctlError):
        return Outcome(Status.ERROR, first)
    return Outcome(Status.ERROR, f"{type(exc).__name__}: {first}")
