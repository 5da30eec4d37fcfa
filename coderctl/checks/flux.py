"""Flux: the Kustomization and HelmReleases that deploy Coder and PostgreSQL."""

from __future__ import annotations

from coderctl.checks.base import Outcome, check, found, ok, skip
from coderctl.clients.kube import KubeApiError
from coderctl.context import App
from coderctl.snapshot import snapshot
from coderctl.facts.kube import condition_true
from coderctl.problems import Problem, code

FLUX_SUSPENDED = code(
    "FLUX-SUSPENDED", "fail", "A Flux HelmRelease or Kustomization is suspended",
    meaning="spec.suspend is true: Flux no longer applies changes to it (a forgotten `flux suspend`, or an "
            "interrupted operation).",
    evidence="the object's spec.suspend", fix="flux resume helmrelease|kustomization NAME -n NAMESPACE",
    check="flux.ready")
FLUX_NOT_READY = code(
    "FLUX-NOT-READY", "fail", "A Flux HelmRelease or Kustomization is not ready",
    meaning="its Ready condition is False or missing: the last reconciliation failed (install or upgrade "
            "failed, a source is unavailable, a health check timed out); its message names the cause.",
    evidence="the object's Ready condition status, reason and message",
    fix="fix the cause the message names, then flux reconcile helmrelease|kustomization NAME -n NAMESPACE "
        "--with-source", check="flux.ready")


@check("flux.ready", "cluster", "Flux Kustomization and HelmReleases ready", needs=("cluster.reachable",))
def flux_ready(app: App) -> Outcome:
    """Ready condition of the HelmReleases in the Coder namespace and the Kustomizations in the Flux
    namespace; skipped when Flux's APIs are not installed."""
    try:
        releases = snapshot(app).helm_releases
        kustomizations = snapshot(app).kustomizations
    except KubeApiError as exc:
        if exc.status == 404:
            return skip("Flux is not installed (no HelmRelease/Kustomization API)")
        raise
    if not releases and not kustomizations:
        return skip(f"no HelmReleases in {app.namespace} and no Kustomizations in {app.settings.flux_namespace}")
    bad: list[Problem] = []
    good: list[str] = []
    for kind, objs in (("HelmRelease", releases), ("Kustomization", kustomizations)):
        for obj in objs:
            ns, short = obj["metadata"].get("namespace"), obj["metadata"]["name"]
            name = f"{kind} {ns}/{short}"
            flux_kind = kind.lower()
            if (obj.get("spec") or {}).get("suspend"):
                bad.append(FLUX_SUSPENDED(f"{name} is suspended", evidence=[f"{name} spec.suspend: true"],
                                          fix=[f"flux resume {flux_kind} {short} -n {ns}"]))
                continue
            ready, message = condition_true(obj, "Ready")
            if ready:
                good.append(name)
                continue
            cond = next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"),
                        None)
            evidence = ([f"{name} condition Ready: status {cond.get('status')}, reason {cond.get('reason')}, "
                         f"message {cond.get('message', '')!r}"] if cond else [f"{name}: no Ready condition"])
            bad.append(FLUX_NOT_READY(
                f"{name} not ready: {message or 'no Ready condition'}", evidence=evidence,
                fix=[f"flux get {flux_kind}s -n {ns}",
                     f"flux reconcile {flux_kind} {short} -n {ns} --with-source after fixing the cause named above"]))
    if bad:
        return found(bad, "", ready=good, not_ready=[p.message for p in bad])
    return ok(f"{len(good)} ready: {', '.join(good)}", ready=good)
