"""Flux: the Kustomization and HelmReleases that deploy Coder and PostgreSQL."""

from __future__ import annotations

from coderctl.checks.base import Outcome, check, fail, ok, skip
from coderctl.checks.kubefacts import condition_true
from coderctl.clients.kube import HELMRELEASES, KUSTOMIZATIONS, KubeApiError
from coderctl.context import App


@check("flux.ready", "cluster", "Flux Kustomization and HelmReleases ready", needs=("cluster.reachable",))
def flux_ready(app: App) -> Outcome:
    """Ready condition of the HelmReleases in the Coder namespace and the Kustomizations in the Flux
    namespace; skipped when Flux's APIs are not installed."""
    kube = app.kube()
    try:
        releases = kube.list(HELMRELEASES, app.namespace)
        kustomizations = kube.list(KUSTOMIZATIONS, app.settings.flux_namespace)
    except KubeApiError as exc:
        if exc.status == 404:
            return skip("Flux is not installed (no HelmRelease/Kustomization API)")
        raise
    if not releases and not kustomizations:
        return skip(f"no HelmReleases in {app.namespace} and no Kustomizations in {app.settings.flux_namespace}")
    bad: list[str] = []
    good: list[str] = []
    for kind, objs in (("HelmRelease", releases), ("Kustomization", kustomizations)):
        for obj in objs:
            name = f"{kind} {obj['metadata'].get('namespace')}/{obj['metadata']['name']}"
            if (obj.get("spec") or {}).get("suspend"):
                bad.append(f"{name} is suspended")
                continue
            ready, message = condition_true(obj, "Ready")
            (good if ready else bad).append(name if ready else f"{name} not ready: {message or 'no Ready condition'}")
    if bad:
        return fail("; ".join(bad), "flux get helmreleases -n coder; flux reconcile helmrelease <name> --with-source "
                    "after fixing the cause named above", ready=good, not_ready=bad)
    return ok(f"{len(good)} ready: {', '.join(good)}", ready=good)
