"""LoadBalancer Services: an address assigned, the expected one, inside the MetalLB pool."""

from __future__ import annotations

from typing import Any

from coderctl.checks.base import Outcome, check, fail, ok
from coderctl.checks.kubefacts import lb_addresses, pool_contains
from coderctl.clients.kube import IPADDRESSPOOLS, SERVICES, KubeApiError, KubeNotFound
from coderctl.context import App


def metallb_pools(app: App) -> dict[str, list[str]] | None:
    """Pool name -> address entries; None when MetalLB's API is not installed or not readable."""

    def read() -> dict[str, list[str]] | None:
        try:
            pools = app.kube().list(IPADDRESSPOOLS, app.settings.metallb_namespace)
        except KubeApiError as exc:
            if exc.status in (403, 404):
                return None
            raise
        return {p["metadata"]["name"]: list((p.get("spec") or {}).get("addresses") or []) for p in pools}

    return app.cached("metallb-pools", read)  # type: ignore[no-any-return]


def _service(app: App, name: str, namespace: str, expected_ip: str | None) -> Outcome:
    try:
        svc = app.kube().get(SERVICES, name, namespace)
    except KubeNotFound:
        return fail(f"Service {namespace}/{name} not found")
    spec = svc.get("spec") or {}
    kind = spec.get("type", "ClusterIP")
    addresses = lb_addresses(svc)
    data: dict[str, Any] = {"type": kind, "addresses": addresses, "expected": expected_ip,
                            "ports": [p.get("port") for p in spec.get("ports") or []]}
    if kind != "LoadBalancer":
        if expected_ip:
            return fail(f"Service {name} is {kind}, expected LoadBalancer with {expected_ip}",
                        "set service.type LoadBalancer in the chart values", **data)
        return ok(f"Service {name} is {kind}", **data)
    if not addresses:
        return fail(f"LoadBalancer {namespace}/{name} has no address (pending)",
                    "MetalLB did not assign one: check the requested IP (metallb.universe.tf/loadBalancerIPs or "
                    "spec.loadBalancerIP) is inside a pool and not taken; kubectl -n metallb-system logs "
                    "deploy/controller", **data)
    pools = metallb_pools(app)
    address = addresses[0]
    if pools:
        inside = [n for n, ranges in pools.items() if pool_contains(ranges, address)]
        data["pool"] = inside[0] if inside else None
        if not inside:
            ranges = "; ".join(f"{n}: {', '.join(r)}" for n, r in pools.items())
            return fail(f"{name} has {address}, outside every MetalLB pool ({ranges})",
                        "request an address inside the pool, or widen the pool", **data)
    if expected_ip and address != expected_ip:
        return fail(f"{name} has {address}, expected {expected_ip}",
                    "DNS, the tunnel and the docs point at the expected address: request it with the "
                    "metallb.universe.tf/loadBalancerIPs annotation, or update expected_*_ip in the profile", **data)
    return ok(f"{name} LoadBalancer at {address}" + (f" (pool {data.get('pool')})" if data.get("pool") else ""),
              **data)


@check("service.coder", "cluster", "Coder Service has its LoadBalancer address", needs=("cluster.reachable",))
def service_coder(app: App) -> Outcome:
    """The Coder Service: LoadBalancer, address assigned, equal to expected_coder_ip, inside the pool."""
    return _service(app, app.settings.coder_service, app.namespace, app.settings.expected_coder_ip)


@check("service.postgres", "cluster", "PostgreSQL Service has its LoadBalancer address",
       needs=("cluster.reachable",))
def service_postgres(app: App) -> Outcome:
    """The PostgreSQL Service, as service.coder, against expected_postgres_ip."""
    return _service(app, app.settings.postgres_service, app.namespace, app.settings.expected_postgres_ip)


@check("service.ingress-nginx", "cluster", "Ingress controller Service has its LoadBalancer address",
       needs=("cluster.reachable",))
def service_ingress(app: App) -> Outcome:
    """The ingress controller's Service, as service.coder, against expected_ingress_ip."""
    s = app.settings
    return _service(app, s.ingress_controller, s.ingress_namespace, s.expected_ingress_ip)
