"""Ingress rules for the access and wildcard hosts, their proxy timeouts, and the controller itself."""

from __future__ import annotations

from typing import Any

from coderctl import discovery
from coderctl.checks.base import Outcome, SkipCheck, check, fail, ok, warn
from coderctl.checks.kubefacts import host_matches, image_tag, version_tuple
from coderctl.clients.kube import CONFIGMAPS, DEPLOYMENTS, INGRESSES, SERVICES, KubeNotFound
from coderctl.context import App

ANNOTATION = "nginx.ingress.kubernetes.io/"
MIN_TIMEOUT = 3600


def _ingress(app: App, name: str) -> dict[str, Any] | None:
    return app.cached(f"ingress:{name}", lambda: app.kube().get_or_none(INGRESSES, name, app.namespace))  # type: ignore[no-any-return]


def _class(ing: dict[str, Any]) -> str | None:
    return (ing.get("spec") or {}).get("ingressClassName") or \
        ((ing.get("metadata") or {}).get("annotations") or {}).get("kubernetes.io/ingress.class")


def _routes(ing: dict[str, Any], host: str) -> list[dict[str, Any]]:
    """Backends of the rules whose host matches `host`."""
    found = []
    for rule in (ing.get("spec") or {}).get("rules") or []:
        if rule.get("host") and host_matches(str(rule["host"]), host):
            for path in ((rule.get("http") or {}).get("paths") or []):
                found.append((path.get("backend") or {}).get("service") or {})
    return found


def _service_ports(app: App) -> tuple[set[int], set[str]]:
    svc = app.cached("coder-service", lambda: app.kube().get_or_none(SERVICES, app.settings.coder_service,
                                                                       app.namespace))
    ports = (svc or {}).get("spec", {}).get("ports") or []
    return {int(p["port"]) for p in ports if "port" in p}, {str(p["name"]) for p in ports if p.get("name")}


def _check_route(app: App, ingress_name: str, host: str, what: str) -> Outcome:
    ing = _ingress(app, ingress_name)
    s = app.settings
    if ing is None:
        return fail(f"Ingress {app.namespace}/{ingress_name} not found", f"it must route {host} to Service "
                    f"{s.coder_service}")
    backends = _routes(ing, host)
    klass = _class(ing)
    data = {"ingress": ingress_name, "host": host, "class": klass, "backends": backends}
    if not backends:
        hosts = [r.get("host") for r in (ing.get("spec") or {}).get("rules") or []]
        return fail(f"Ingress {ingress_name} has no rule for {what} {host} (its hosts: {', '.join(map(str, hosts))})",
                    f"add a rule for {host} to Service {s.coder_service}", **data)
    numbers, names = _service_ports(app)
    problems = []
    for backend in backends:
        port = backend.get("port") or {}
        if backend.get("name") != s.coder_service:
            problems.append(f"routes to Service {backend.get('name')}, not {s.coder_service}")
        elif "number" in port and numbers and int(port["number"]) not in numbers:
            problems.append(f"routes to port {port['number']}, the Service has {sorted(numbers)}")
        elif "name" in port and names and port["name"] not in names:
            problems.append(f"routes to port {port['name']!r}, the Service has {sorted(names)}")
    if klass != "nginx":
        problems.append(f"ingress class is {klass!r}, not nginx")
    if problems:
        return fail(f"Ingress {ingress_name} for {host}: " + "; ".join(problems),
                    f"route {host} to Service {s.coder_service} on its http port, class nginx", **data)
    return ok(f"{host} -> Service {s.coder_service} via Ingress {ingress_name} (class nginx)", **data)


def _discovered(fn: Any, app: App) -> str | None:
    try:
        return fn(app)  # type: ignore[no-any-return]
    except KubeNotFound:
        raise SkipCheck(f"no Deployment {app.settings.coder_deployment} to read the URL from (coder.deployment)") \
            from None


def _access_host(app: App) -> str | None:
    from urllib.parse import urlsplit

    url = _discovered(discovery.access_url, app)
    return urlsplit(url).hostname if url else None


@check("ingress.access", "cluster", "Ingress routes the access host to Coder", needs=("cluster.reachable",))
def ingress_access(app: App) -> Outcome:
    """The access Ingress: a rule for the access URL's host to the Coder Service's port, class nginx."""
    host = _access_host(app)
    if not host:
        return fail("no access URL to check the Ingress against (CODER_ACCESS_URL unset)")
    return _check_route(app, app.settings.access_ingress, host, "the access host")


@check("ingress.wildcard", "cluster", "Ingress routes the wildcard domain to Coder", needs=("cluster.reachable",))
def ingress_wildcard(app: App) -> Outcome:
    """The wildcard Ingress: a rule for a name under CODER_WILDCARD_ACCESS_URL to the Coder Service."""
    wildcard = _discovered(discovery.wildcard_url, app)
    if not wildcard:
        return fail("CODER_WILDCARD_ACCESS_URL is not set, so workspace apps on subdomains cannot work",
                    "set it (e.g. *.xuperson.org) and add a wildcard Ingress")
    pattern = wildcard.split("://", 1)[-1].split(":", 1)[0].split("/", 1)[0]
    host = "coderctl-probe." + pattern[2:] if pattern.startswith("*.") else pattern
    return _check_route(app, app.settings.wildcard_ingress, host, "the wildcard")


def _seconds(value: str | None) -> int | None:
    if value is None:
        return None
    text = str(value).strip().rstrip("s")
    return int(text) if text.isdigit() else None


@check("ingress.timeouts", "cluster", "Ingress timeouts keep idle relay connections open",
       needs=("cluster.reachable",))
def ingress_timeouts(app: App) -> Outcome:
    """proxy-read-timeout and proxy-send-timeout >= 3600 and proxy-body-size 0 on both Coder Ingresses
    (ingress-nginx's 60 s default cuts idle DERP and WebSocket connections)."""
    s = app.settings
    failures, warnings, data = [], [], {}
    for name in dict.fromkeys((s.access_ingress, s.wildcard_ingress)):
        ing = _ingress(app, name)
        if ing is None:
            failures.append(f"Ingress {name} not found")
            continue
        notes = (ing.get("metadata") or {}).get("annotations") or {}
        values = {k: notes.get(ANNOTATION + k) for k in ("proxy-read-timeout", "proxy-send-timeout", "proxy-body-size")}
        data[name] = values
        for key in ("proxy-read-timeout", "proxy-send-timeout"):
            seconds = _seconds(values[key])
            if seconds is None:
                failures.append(f"{name}: {key} not set (ingress-nginx default 60 s)")
            elif seconds < MIN_TIMEOUT:
                failures.append(f"{name}: {key} is {seconds} s")
        if str(values["proxy-body-size"]) != "0":
            warnings.append(f"{name}: proxy-body-size is {values['proxy-body-size'] or 'unset (1m)'}, not 0")
    fix = (f"annotate the Ingresses with {ANNOTATION}proxy-read-timeout: \"3600\", proxy-send-timeout: \"3600\" and "
           "proxy-body-size: \"0\": relay keepalives come every 60-65 s, so a 60 s timeout cuts idle connections")
    if failures:
        return fail("; ".join(failures + warnings), fix, **data)
    if warnings:
        return warn("; ".join(warnings), fix, **data)
    return ok("read/send timeouts >= 3600 s and no body size limit on both Ingresses", **data)


def _affected_by_cve_2025_1974(version: tuple[int, ...]) -> bool:
    return version < (1, 11, 5) or version[:2] == (1, 12) and version < (1, 12, 1)


@check("ingress.controller", "cluster", "Ingress controller configured and patched", needs=("cluster.reachable",))
def ingress_controller(app: App) -> Outcome:
    """The controller's ConfigMap (with the $connection_upgrade map), the proxy-headers ConfigMap the
    Ingresses reference, and the controller image version (CVE-2025-1974, fixed in v1.11.5 / v1.12.1)."""
    s = app.settings
    kube = app.kube()
    failures: list[str] = []
    warnings: list[str] = []
    fixes: list[str] = []
    data: dict[str, Any] = {}
    try:
        cm = kube.get(CONFIGMAPS, s.ingress_controller, s.ingress_namespace)
        snippet = (cm.get("data") or {}).get("http-snippet", "")
        if "$connection_upgrade" in snippet and "derp" not in snippet.lower():
            warnings.append("the http-snippet's $connection_upgrade map has no 'derp' entry")
    except KubeNotFound:
        failures.append(f"ConfigMap {s.ingress_namespace}/{s.ingress_controller} not found")
        fixes.append("the controller reads its settings from it (--configmap)")
    ing = _ingress(app, s.access_ingress) or {}
    ref = ((ing.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION + "proxy-set-headers")
    if ref:
        ns, _, name = ref.rpartition("/")
        data["proxy_set_headers"] = ref
        if kube.get_or_none(CONFIGMAPS, name, ns or app.namespace) is None:
            failures.append(f"ConfigMap {ref} (proxy-set-headers of Ingress {s.access_ingress}) not found")
            fixes.append(f"create ConfigMap {ref} or drop the annotation; ingress-nginx ignores the headers otherwise")
    dep = kube.get_or_none(DEPLOYMENTS, s.ingress_controller, s.ingress_namespace)
    if dep is None:
        warnings.append(f"Deployment {s.ingress_namespace}/{s.ingress_controller} not found: version unknown")
    else:
        containers = ((dep.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
        image = str(containers[0].get("image", "")) if containers else ""
        tag = image_tag(image).split("@")[0]
        version = version_tuple(tag)
        data["image"] = image
        if version is not None and _affected_by_cve_2025_1974(version):
            warnings.append(f"controller {tag} is affected by CVE-2025-1974 (IngressNightmare)")
            fixes.append("upgrade ingress-nginx to v1.11.5, v1.12.1 or later")
    if failures:
        return fail("; ".join(failures + warnings), "; ".join(fixes), **data)
    if warnings:
        return warn("; ".join(warnings), "; ".join(fixes) or None, **data)
    return ok(f"ConfigMaps present, controller {data.get('image', '?')}", **data)
