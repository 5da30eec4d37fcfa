"""LoadBalancer Services: an address assigned, the expected one, inside the MetalLB pool."""

from __future__ import annotations

from typing import Any

from coderctl.checks.base import Outcome, check, found, ok
from coderctl.checks.errors import not_found
from coderctl.clients.kube import SERVICES
from coderctl.context import App
from coderctl.snapshot import snapshot
from coderctl.facts.kube import lb_addresses, pool_contains
from coderctl.problems import code

_CHECKS = "service.coder, service.postgres, service.ingress-nginx"
SVC_MISSING = code(
    "SVC-MISSING", "fail", "The Service does not exist",
    meaning="no Service of that name in its namespace: traffic for it has nowhere to go.",
    evidence="the namespace and Service name asked for",
    fix="check the name in the profile and the chart that creates it", check=_CHECKS)
SVC_NOT_LOADBALANCER = code(
    "SVC-NOT-LOADBALANCER", "fail", "The Service is not of type LoadBalancer",
    meaning="an address is expected for the Service (expected_*_ip) but it is ClusterIP or NodePort, so MetalLB "
            "gives it none.",
    evidence="the Service's spec.type and the expected address",
    fix="set service.type LoadBalancer in the chart values", check=_CHECKS)
SVC_LB_PENDING = code(
    "SVC-LB-PENDING", "fail", "The LoadBalancer Service has no address",
    meaning="status.loadBalancer.ingress is empty: MetalLB did not assign an address (the requested IP is "
            "outside every pool or taken, or the controller is down).",
    evidence="the Service's status.loadBalancer.ingress and requested address",
    fix="request an address inside a MetalLB pool that is free; kubectl -n metallb-system logs deploy/controller",
    check=_CHECKS)
SVC_LB_OUTSIDE_POOL = code(
    "SVC-LB-OUTSIDE-POOL", "fail", "The Service's address is outside every MetalLB pool",
    meaning="the assigned address is in no IPAddressPool: it was set by hand or the pool changed; it will not be "
            "announced.",
    evidence="the Service's address and the pools' ranges",
    fix="request an address inside the pool, or widen the pool", check=_CHECKS)
SVC_LB_UNEXPECTED_IP = code(
    "SVC-LB-UNEXPECTED-IP", "fail", "The Service has another address than expected",
    meaning="DNS, the tunnel and the docs point at the expected address, but the Service has another one.",
    evidence="the Service's address and expected_*_ip from the profile",
    fix="request the expected address with the metallb.universe.tf/loadBalancerIPs annotation, or update "
        "expected_*_ip in the profile", check=_CHECKS)


def _service(app: App, name: str, namespace: str, expected_ip: str | None) -> Outcome:
    svc = snapshot(app).service(name, namespace)
    if svc is None:
        return found([not_found(SVC_MISSING, "Service", SERVICES, name, namespace,
                                fix=[f"kubectl -n {namespace} get services"])], "")
    spec = svc.get("spec") or {}
    kind = spec.get("type", "ClusterIP")
    addresses = lb_addresses(svc)
    data: dict[str, Any] = {"type": kind, "addresses": addresses, "expected": expected_ip,
                            "ports": [p.get("port") for p in spec.get("ports") or []]}
    where = f"Service {namespace}/{name}"
    requested = (((svc.get("metadata") or {}).get("annotations") or {}).get("metallb.universe.tf/loadBalancerIPs")
                 or spec.get("loadBalancerIP"))
    if kind != "LoadBalancer":
        if expected_ip:
            return found([SVC_NOT_LOADBALANCER(
                f"Service {name} is {kind}, expected LoadBalancer with {expected_ip}",
                evidence=[f"{where} spec.type: {kind}", f"expected address: {expected_ip}"],
                fix=["set service.type LoadBalancer in the chart values"])], "", **data)
        return ok(f"Service {name} is {kind}", **data)
    if not addresses:
        return found([SVC_LB_PENDING(
            f"LoadBalancer {namespace}/{name} has no address (pending)",
            evidence=[f"{where} status.loadBalancer.ingress: []",
                      f"{where} requested address: {requested or 'none'}"],
            fix=["MetalLB did not assign one: check the requested IP (metallb.universe.tf/loadBalancerIPs or "
                 "spec.loadBalancerIP) is inside a pool and not taken",
                 f"kubectl -n {app.settings.metallb_namespace} logs deploy/controller"])], "", **data)
    pools = snapshot(app).metallb_pools
    address = addresses[0]
    if pools:
        inside = [n for n, ranges in pools.items() if pool_contains(ranges, address)]
        data["pool"] = inside[0] if inside else None
        if not inside:
            ranges = "; ".join(f"{n}: {', '.join(r)}" for n, r in pools.items())
            return found([SVC_LB_OUTSIDE_POOL(
                f"{name} has {address}, outside every MetalLB pool ({ranges})",
                evidence=[f"{where} status.loadBalancer.ingress[0].ip: {address}"]
                + [f"IPAddressPool {app.settings.metallb_namespace}/{n} spec.addresses: {', '.join(r)}"
                   for n, r in pools.items()],
                fix=[f"request an address inside the pool: kubectl -n {namespace} annotate service {name} "
                     f"metallb.universe.tf/loadBalancerIPs={expected_ip or 'ADDRESS'} --overwrite "
                     "(or set it in the chart values), or widen the pool"])], "", **data)
    if expected_ip and address != expected_ip:
        return found([SVC_LB_UNEXPECTED_IP(
            f"{name} has {address}, expected {expected_ip}",
            evidence=[f"{where} status.loadBalancer.ingress[0].ip: {address}", f"expected address: {expected_ip}"],
            fix=["DNS, the tunnel and the docs point at the expected address: request it with "
                 f"kubectl -n {namespace} annotate service {name} metallb.universe.tf/loadBalancerIPs={expected_ip} "
                 "--overwrite (or in the chart values), or update expected_*_ip in the profile"])], "", **data)
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
