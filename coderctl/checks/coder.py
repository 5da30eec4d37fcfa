"""Checks of how the Coder Deployment is configured: security context, resources, environment."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from coderctl import discovery
from coderctl.checks.base import Outcome, SkipCheck, check, found, ok
from coderctl.clients.kube import KubeNotFound
from coderctl.context import App
from coderctl.snapshot import snapshot
from coderctl.facts.hosts import host_matches, host_under, url_host
from coderctl.facts.kube import quantity
from coderctl.problems import Problem, code

_SC_FIX = ("set coder.securityContext in the HelmRelease values: runAsNonRoot: true, runAsUser: 1000, "
           "allowPrivilegeEscalation: false, readOnlyRootFilesystem: true")
COD_SC_NOT_NON_ROOT = code(
    "COD-SC-NOT-NON-ROOT", "fail", "Coder may run as root",
    meaning="neither the container's nor the pod's securityContext sets runAsNonRoot: true, so nothing stops the "
            "image from running as root (the reference deployment claims it does not).",
    evidence="securityContext.runAsNonRoot of the container and the pod", fix=_SC_FIX,
    check="coder.security-context")
COD_SC_ROOT_USER = code(
    "COD-SC-ROOT-USER", "fail", "Coder runs as user 0",
    meaning="securityContext.runAsUser is 0: coderd runs as root.",
    evidence="securityContext.runAsUser of the container or the pod", fix=_SC_FIX, check="coder.security-context")
COD_SC_PRIVILEGE_ESCALATION = code(
    "COD-SC-PRIVILEGE-ESCALATION", "fail", "Coder may escalate privileges",
    meaning="the container's securityContext.allowPrivilegeEscalation is not false (setuid binaries work).",
    evidence="the container's securityContext.allowPrivilegeEscalation", fix=_SC_FIX,
    check="coder.security-context")
COD_SC_PRIVILEGED = code(
    "COD-SC-PRIVILEGED", "fail", "The Coder container is privileged",
    meaning="securityContext.privileged is true: the container has every capability of the node.",
    evidence="the container's securityContext.privileged", fix=_SC_FIX, check="coder.security-context")
COD_SC_WRITABLE_ROOT = code(
    "COD-SC-WRITABLE-ROOT", "warn", "The Coder container's root filesystem is writable",
    meaning="securityContext.readOnlyRootFilesystem is not true.",
    evidence="the container's securityContext.readOnlyRootFilesystem", fix=_SC_FIX, check="coder.security-context")
COD_RESOURCE_UNSET = code(
    "COD-RESOURCE-UNSET", "warn", "A Coder request or limit is not set",
    meaning="the Coder container has no CPU or memory request or limit: the scheduler cannot place it well, or "
            "it can take a node's memory.",
    evidence="the container's resources and the expected value from the profile",
    fix="set coder.resources in the HelmRelease values", check="coder.resources")
COD_RESOURCE_DIFFERS = code(
    "COD-RESOURCE-DIFFERS", "warn", "A Coder request or limit differs from the expected one",
    meaning="a request or limit of the Coder container is not the expected_coder_* value of the profile.",
    evidence="the container's resources and the expected value from the profile",
    fix="set coder.resources in the HelmRelease values, or the expected_coder_* keys in the profile if the change "
        "was intended", check="coder.resources")
COD_ACCESS_URL_UNSET = code(
    "COD-ACCESS-URL-UNSET", "fail", "CODER_ACCESS_URL is not set",
    meaning="Coder does not know its public URL: agents, links and OAuth callbacks break. ingress.access cannot "
            "check the Ingress either.",
    evidence="the Coder container's env", fix="set CODER_ACCESS_URL to the public https URL in the HelmRelease",
    check="coder.env, ingress.access", coder_code="EACS01")
COD_ACCESS_URL_NOT_HTTPS = code(
    "COD-ACCESS-URL-NOT-HTTPS", "fail", "CODER_ACCESS_URL is not https",
    meaning="the tunnel terminates TLS for https://; an http access URL gives mixed content and broken agents.",
    evidence="CODER_ACCESS_URL in the Coder container's env", fix="use the https URL in CODER_ACCESS_URL",
    check="coder.env")
COD_ACCESS_HOST_NO_INGRESS = code(
    "COD-ACCESS-HOST-NO-INGRESS", "fail", "No Ingress serves the access URL's host",
    meaning="no Ingress rule in the namespace has the access URL's host, so requests for it never reach Coder.",
    evidence="CODER_ACCESS_URL's host and the hosts the namespace's Ingresses serve",
    fix="make CODER_ACCESS_URL and the host of the access Ingress agree", check="coder.env")
COD_WILDCARD_URL_UNSET = code(
    "COD-WILDCARD-URL-UNSET", "fail", "CODER_WILDCARD_ACCESS_URL is not set",
    meaning="workspace apps on subdomains fail with 'Your admin has not configured subdomain application access'.",
    evidence="the Coder container's env",
    fix="set CODER_WILDCARD_ACCESS_URL (e.g. *.xuperson.org) and add a wildcard Ingress",
    check="coder.env, ingress.wildcard")
COD_WILDCARD_NO_INGRESS = code(
    "COD-WILDCARD-NO-INGRESS", "fail", "No wildcard Ingress covers CODER_WILDCARD_ACCESS_URL",
    meaning="no Ingress rule with a `*.` host matches a name under the wildcard URL.",
    evidence="CODER_WILDCARD_ACCESS_URL and the wildcard hosts of the namespace's Ingresses",
    fix="add a rule for the wildcard host to the wildcard Ingress", check="coder.env")
COD_PG_URL_UNSET = code(
    "COD-PG-URL-UNSET", "fail", "CODER_PG_CONNECTION_URL is not set",
    meaning="Coder has no database URL and falls back to its built-in PostgreSQL, losing the real data.",
    evidence="the Coder container's env",
    fix="take CODER_PG_CONNECTION_URL from the managed Secret's database-url key (valueFrom.secretKeyRef)",
    check="coder.env")
COD_PG_URL_PLAIN = code(
    "COD-PG-URL-PLAIN", "warn", "CODER_PG_CONNECTION_URL is a plain value",
    meaning="the database URL, password included, is written in the Deployment instead of coming from the "
            "managed Secret; rotations in Infisical never reach it.",
    evidence="CODER_PG_CONNECTION_URL has `value`, not `valueFrom`",
    fix="use valueFrom.secretKeyRef to the managed Secret's database-url key", check="coder.env")
COD_PG_URL_OTHER_SECRET = code(
    "COD-PG-URL-OTHER-SECRET", "warn", "CODER_PG_CONNECTION_URL comes from another Secret or key",
    meaning="the secretKeyRef does not name the managed Secret's database-url, which Infisical keeps current.",
    evidence="CODER_PG_CONNECTION_URL's valueFrom.secretKeyRef",
    fix="point the secretKeyRef at the managed Secret's database-url key", check="coder.env")


def coder_container_where(app: App) -> str:
    """Coder's container as evidence names it."""
    s = app.settings
    return f"Deployment {app.namespace}/{s.coder_deployment} container {s.coder_container}"


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

    where = coder_container_where(app)
    problems: list[Problem] = []
    if setting("runAsNonRoot") is not True:
        problems.append(COD_SC_NOT_NON_ROOT(
            "runAsNonRoot is not true", evidence=[f"{where} securityContext.runAsNonRoot: {setting('runAsNonRoot')}"],
            fix=[_SC_FIX]))
    if setting("runAsUser") == 0:
        problems.append(COD_SC_ROOT_USER("runAsUser is 0 (root)", evidence=[f"{where} securityContext.runAsUser: 0"],
                                         fix=[_SC_FIX]))
    if c_sc.get("allowPrivilegeEscalation") is not False:
        problems.append(COD_SC_PRIVILEGE_ESCALATION(
            "allowPrivilegeEscalation is not false",
            evidence=[f"{where} securityContext.allowPrivilegeEscalation: {c_sc.get('allowPrivilegeEscalation')}"],
            fix=[_SC_FIX]))
    if c_sc.get("privileged"):
        problems.append(COD_SC_PRIVILEGED("the container is privileged",
                                          evidence=[f"{where} securityContext.privileged: true"], fix=[_SC_FIX]))
    if c_sc.get("readOnlyRootFilesystem") is not True:
        problems.append(COD_SC_WRITABLE_ROOT(
            "readOnlyRootFilesystem is not true",
            evidence=[f"{where} securityContext.readOnlyRootFilesystem: {c_sc.get('readOnlyRootFilesystem')}"],
            fix=[_SC_FIX]))
    data = {"pod": pod_sc, "container": c_sc}
    return found(problems, "non-root, no privilege escalation, read-only root filesystem", **data)


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
    where = coder_container_where(app)
    fix = ("set coder.resources in the HelmRelease values, or the expected_coder_* keys in the profile if the change "
           "was intended")
    problems: list[Problem] = []
    for (kind, name), want in expected.items():
        have = (res.get(kind) or {}).get(name)
        key = f"expected_coder_{kind}_{name}"
        if have is None:
            problems.append(COD_RESOURCE_UNSET(
                f"no {name} {kind[:-1]}" + (f" (expected {want})" if want else ""),
                evidence=[f"{where} resources.{kind}.{name}: unset"] + ([f"{key}: {want}"] if want else []),
                fix=[f"set coder.resources.{kind}.{name}" + (f": {want}" if want else "")
                     + " in the HelmRelease values"]))
        elif want and quantity(have) != quantity(want):
            problems.append(COD_RESOURCE_DIFFERS(
                f"{name} {kind[:-1]} {have}, expected {want}",
                evidence=[f"{where} resources.{kind}.{name}: {have}", f"{key}: {want}"], fix=[fix]))
    data = {"resources": res}
    if problems:
        return found(problems, "", **data)
    r, lim = res.get("requests", {}), res.get("limits", {})
    return ok(f"requests {r.get('cpu')}/{r.get('memory')}, limits {lim.get('cpu')}/{lim.get('memory')}", **data)


def _ingress_hosts(app: App) -> list[tuple[str, str]]:
    """(rule host, ingress name) for every Ingress rule in the namespace."""
    hosts = []
    for ing in snapshot(app).ingresses:
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
    where = coder_container_where(app)
    release = f"the HelmRelease {app.namespace}/{s.coder_deployment} values (coder.env)"
    problems: list[Problem] = []
    access = (env.get("CODER_ACCESS_URL") or {}).get("value")
    if not access:
        problems.append(COD_ACCESS_URL_UNSET("CODER_ACCESS_URL is not set (Coder's EACS01)",
                                             evidence=[f"{where} env CODER_ACCESS_URL: unset"],
                                             fix=[f"set CODER_ACCESS_URL to the public https URL in {release}"]))
    else:
        parts = urlsplit(access)
        if parts.scheme != "https":
            problems.append(COD_ACCESS_URL_NOT_HTTPS(
                f"CODER_ACCESS_URL {access} is not https", evidence=[f"{where} env CODER_ACCESS_URL: {access}"],
                fix=[f"set CODER_ACCESS_URL to {parts._replace(scheme='https').geturl()} in {release}: the tunnel "
                     "terminates TLS for https://"]))
        host = parts.hostname or ""
        served = [name for pattern, name in hosts if pattern == host]
        if not served:
            listed = ", ".join(sorted({h for h, _ in hosts})) or "none"
            problems.append(COD_ACCESS_HOST_NO_INGRESS(
                f"no Ingress in {app.namespace} serves the access host {host!r} (hosts served: {listed})",
                evidence=[f"{where} env CODER_ACCESS_URL: {access}",
                          f"Ingress hosts in {app.namespace}: "
                          + (", ".join(f"{h} ({n})" for h, n in hosts) or "none")],
                fix=[f"make CODER_ACCESS_URL and the host of Ingress {s.access_ingress} agree: kubectl -n "
                     f"{app.namespace} get ingress {s.access_ingress} -o jsonpath='{{.spec.rules[*].host}}'"]))
    wildcard = (env.get("CODER_WILDCARD_ACCESS_URL") or {}).get("value")
    if not wildcard:
        problems.append(COD_WILDCARD_URL_UNSET(
            "CODER_WILDCARD_ACCESS_URL is not set: workspace apps on subdomains fail with 'Your admin has not "
            "configured subdomain application access'",
            evidence=[f"{where} env CODER_WILDCARD_ACCESS_URL: unset"],
            fix=[f"set CODER_WILDCARD_ACCESS_URL, e.g. *.xuperson.org, in {release}"]))
    else:
        pattern = url_host(wildcard)
        probe = host_under(pattern, "coderctl-probe")
        if not any(host_matches(h, probe) for h, _ in hosts if h.startswith("*.")):
            problems.append(COD_WILDCARD_NO_INGRESS(
                f"no wildcard Ingress covers {pattern}",
                evidence=[f"{where} env CODER_WILDCARD_ACCESS_URL: {wildcard}",
                          f"wildcard Ingress hosts in {app.namespace}: "
                          + (", ".join(f"{h} ({n})" for h, n in hosts if h.startswith("*.")) or "none")],
                fix=[f"Ingress {s.wildcard_ingress} needs a rule for host {pattern}"]))
    pg = env.get("CODER_PG_CONNECTION_URL")
    secret_ref = f"valueFrom.secretKeyRef {{name: {s.database_secret}, key: database-url}}"
    if pg is None:
        problems.append(COD_PG_URL_UNSET("CODER_PG_CONNECTION_URL is not set",
                                         evidence=[f"{where} env CODER_PG_CONNECTION_URL: unset"],
                                         fix=[f"take it from Secret {s.database_secret}, key database-url: "
                                              f"{secret_ref} in {release}"]))
    elif "value" in pg:
        problems.append(COD_PG_URL_PLAIN(
            "CODER_PG_CONNECTION_URL is a plain value in the Deployment, not from the managed Secret",
            evidence=[f"{where} env CODER_PG_CONNECTION_URL: a plain value (not shown)"],
            fix=[f"use {secret_ref} in {release}"]))
    else:
        ref = (pg.get("valueFrom") or {}).get("secretKeyRef") or {}
        if (ref.get("name"), ref.get("key")) != (s.database_secret, "database-url"):
            problems.append(COD_PG_URL_OTHER_SECRET(
                f"CODER_PG_CONNECTION_URL comes from {ref.get('name')}/{ref.get('key')}, "
                f"not {s.database_secret}/database-url",
                evidence=[f"{where} env CODER_PG_CONNECTION_URL valueFrom.secretKeyRef: name {ref.get('name')}, "
                          f"key {ref.get('key')}"],
                fix=[f"point it at {s.database_secret}/database-url, which Infisical keeps current: {secret_ref}"]))
    data = {"access_url": access, "wildcard_access_url": wildcard}
    return found(problems, f"access URL {access}, wildcard {wildcard}, database URL from {s.database_secret}", **data)
