"""Checks of how the Coder Deployment is configured: security context, resources, environment."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from coderctl import discovery
from coderctl.checks.base import Outcome, SkipCheck, check, fail, ok, warn
from coderctl.checks.kubefacts import host_matches, quantity
from coderctl.clients.kube import INGRESSES, KubeNotFound
from coderctl.context import App


def _deployment(app: App) -> dict[str, Any]:
    try:
        return discovery.coder_deployment(app)
    except KubeNotFound:
        raise SkipCheck(f"no Deployment {app.settings.coder_deployment} (coder.deployment)") from None


def _pod_spec(app: App) -> dict[str, Any]:
    dep = _deployment(app)
    return dict(((dep.get("spec") or {}).get("template") or {}).get("spec") or {})


@check("coder.security-context", "cluster", "Coder runs as non-root without privilege escalation",
       needs=("cluster.reachable",))
def security_context(app: App) -> Outcome:
    """The Coder container's (and pod's) securityContext: runAsNonRoot, allowPrivilegeEscalation,
    readOnlyRootFilesystem, as the deployment's README claims."""
    spec = _pod_spec(app)
    container = discovery.container(spec, app.settings.coder_container) or {}
    pod_sc, c_sc = spec.get("securityContext") or {}, container.get("securityContext") or {}

    def setting(key: str) -> Any:
        return c_sc.get(key, pod_sc.get(key))

    failures, warnings = [], []
    if setting("runAsNonRoot") is not True:
        failures.append("runAsNonRoot is not true")
    if setting("runAsUser") == 0:
        failures.append("runAsUser is 0 (root)")
    if c_sc.get("allowPrivilegeEscalation") is not False:
        failures.append("allowPrivilegeEscalation is not false")
    if c_sc.get("privileged"):
        failures.append("the container is privileged")
    if c_sc.get("readOnlyRootFilesystem") is not True:
        warnings.append("readOnlyRootFilesystem is not true")
    data = {"pod": pod_sc, "container": c_sc}
    fix = ("set coder.securityContext in the HelmRelease values: runAsNonRoot: true, runAsUser: 1000, "
           "allowPrivilegeEscalation: false, readOnlyRootFilesystem: true")
    if failures:
        return fail("; ".join(failures + warnings), fix, **data)
    if warnings:
        return warn("; ".join(warnings), fix, **data)
    return ok("non-root, no privilege escalation, read-only root filesystem", **data)


@check("coder.resources", "cluster", "Coder requests and limits as expected", needs=("cluster.reachable",))
def resources(app: App) -> Outcome:
    """Requests and limits of the Coder container against expected_coder_{requests,limits}_{cpu,memory}."""
    s = app.settings
    container = discovery.container(_pod_spec(app), s.coder_container) or {}
    res = container.get("resources") or {}
    expected = {
        ("requests", "cpu"): s.coder_requests_cpu, ("requests", "memory"): s.coder_requests_memory,
        ("limits", "cpu"): s.coder_limits_cpu, ("limits", "memory"): s.coder_limits_memory,
    }
    problems = []
    for (kind, name), want in expected.items():
        have = (res.get(kind) or {}).get(name)
        if have is None:
            problems.append(f"no {name} {kind[:-1]}" + (f" (expected {want})" if want else ""))
        elif want and quantity(have) != quantity(want):
            problems.append(f"{name} {kind[:-1]} {have}, expected {want}")
    data = {"resources": res}
    if problems:
        return warn("; ".join(problems),
                    "set coder.resources in the HelmRelease values, or the expected_coder_* keys in the profile "
                    "if the change was intended", **data)
    r, lim = res.get("requests", {}), res.get("limits", {})
    return ok(f"requests {r.get('cpu')}/{r.get('memory')}, limits {lim.get('cpu')}/{lim.get('memory')}", **data)


def _ingress_hosts(app: App) -> list[tuple[str, str]]:
    """(rule host, ingress name) for every Ingress rule in the namespace."""
    hosts = []
    for ing in app.kube().list(INGRESSES, app.namespace):
        for rule in (ing.get("spec") or {}).get("rules") or []:
            if rule.get("host"):
                hosts.append((str(rule["host"]), str(ing["metadata"]["name"])))
    return hosts


@check("coder.env", "cluster", "Coder's URLs and database URL are configured", needs=("cluster.reachable",))
def coder_env(app: App) -> Outcome:
    """CODER_ACCESS_URL (https, served by an Ingress), CODER_WILDCARD_ACCESS_URL (set, covered by the
    wildcard Ingress), CODER_PG_CONNECTION_URL (from the managed Secret's database-url key)."""
    s = app.settings
    _deployment(app)
    env = discovery.coder_env(app)
    hosts = _ingress_hosts(app)
    failures: list[str] = []
    warnings: list[str] = []
    fixes: list[str] = []
    access = (env.get("CODER_ACCESS_URL") or {}).get("value")
    if not access:
        failures.append("CODER_ACCESS_URL is not set (Coder's EACS01)")
        fixes.append("set CODER_ACCESS_URL to the public https URL")
    else:
        parts = urlsplit(access)
        if parts.scheme != "https":
            failures.append(f"CODER_ACCESS_URL {access} is not https")
            fixes.append("the tunnel terminates TLS for https://; use the https URL")
        host = parts.hostname or ""
        served = [name for pattern, name in hosts if pattern == host]
        if not served:
            failures.append(f"no Ingress in {app.namespace} serves the access host {host!r} "
                            f"(hosts served: {', '.join(sorted({h for h, _ in hosts})) or 'none'})")
            fixes.append(f"make CODER_ACCESS_URL and the host of Ingress {s.access_ingress} agree")
    wildcard = (env.get("CODER_WILDCARD_ACCESS_URL") or {}).get("value")
    if not wildcard:
        failures.append("CODER_WILDCARD_ACCESS_URL is not set: workspace apps on subdomains fail with 'Your admin "
                        "has not configured subdomain application access'")
        fixes.append("set CODER_WILDCARD_ACCESS_URL, e.g. *.xuperson.org")
    else:
        pattern = wildcard.split("://", 1)[-1].split(":", 1)[0].split("/", 1)[0]
        probe = "coderctl-probe." + pattern[2:] if pattern.startswith("*.") else pattern
        if not any(host_matches(h, probe) for h, _ in hosts if h.startswith("*.")):
            failures.append(f"no wildcard Ingress covers {pattern}")
            fixes.append(f"Ingress {s.wildcard_ingress} needs a rule for host {pattern}")
    pg = env.get("CODER_PG_CONNECTION_URL")
    if pg is None:
        failures.append("CODER_PG_CONNECTION_URL is not set")
        fixes.append(f"take it from Secret {s.database_secret}, key database-url")
    elif "value" in pg:
        warnings.append("CODER_PG_CONNECTION_URL is a plain value in the Deployment, not from the managed Secret")
        fixes.append(f"use valueFrom.secretKeyRef {s.database_secret}/database-url")
    else:
        ref = (pg.get("valueFrom") or {}).get("secretKeyRef") or {}
        if (ref.get("name"), ref.get("key")) != (s.database_secret, "database-url"):
            warnings.append(f"CODER_PG_CONNECTION_URL comes from {ref.get('name')}/{ref.get('key')}, "
                            f"not {s.database_secret}/database-url")
            fixes.append(f"point it at {s.database_secret}/database-url, which Infisical keeps current")
    data = {"access_url": access, "wildcard_access_url": wildcard}
    if failures:
        return fail("; ".join(failures + warnings), "; ".join(fixes), **data)
    if warnings:
        return warn("; ".join(warnings), "; ".join(fixes), **data)
    return ok(f"access URL {access}, wildcard {wildcard}, database URL from {s.database_secret}", **data)
