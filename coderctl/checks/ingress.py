"""Ingress rules for the access and wildcard hosts, their proxy timeouts, and the controller itself."""

from __future__ import annotations

from typing import Any

from coderctl import discovery
from coderctl.checks.base import Outcome, SkipCheck, check, found
from coderctl.checks.coder import COD_ACCESS_URL_UNSET, COD_WILDCARD_URL_UNSET, coder_container_where
from coderctl.checks.errors import not_found
from coderctl.clients.kube import CONFIGMAPS, DEPLOYMENTS, INGRESSES, KubeNotFound
from coderctl.context import App
from coderctl.snapshot import snapshot
from coderctl.facts.hosts import host_matches, host_under, url_host
from coderctl.facts.versions import image_tag, version_tuple
from coderctl.problems import Problem, code

ANNOTATION = "nginx.ingress.kubernetes.io/"
MIN_TIMEOUT = 3600

_ROUTES = "ingress.access, ingress.wildcard"
ING_MISSING = code(
    "ING-MISSING", "fail", "A Coder Ingress does not exist",
    meaning="the Ingress that should route the access host or the wildcard domain to Coder is absent.",
    evidence="the namespace and Ingress name asked for",
    fix="create the Ingress (it comes with the Coder HelmRelease) or fix access_ingress / wildcard_ingress",
    check=f"{_ROUTES}, ingress.timeouts")
ING_NO_RULE = code(
    "ING-NO-RULE", "fail", "The Ingress has no rule for the host",
    meaning="no rule of the Ingress matches the access host (or a name under the wildcard), so ingress-nginx "
            "answers 404 for it.",
    evidence="the host looked for and the Ingress's rule hosts",
    fix="add a rule for the host to the Coder Service", check=_ROUTES)
ING_WRONG_SERVICE = code(
    "ING-WRONG-SERVICE", "fail", "The Ingress routes the host to another Service",
    meaning="the rule's backend is not the Coder Service.",
    evidence="the rule's backend service name", fix="route the host to the Coder Service", check=_ROUTES)
ING_WRONG_PORT = code(
    "ING-WRONG-PORT", "fail", "The Ingress routes to a port the Coder Service does not have",
    meaning="the backend port (number or name) is not one of the Coder Service's ports: ingress-nginx answers 503.",
    evidence="the rule's backend port and the Service's ports",
    fix="route to the Coder Service's http port", check=_ROUTES)
ING_WRONG_CLASS = code(
    "ING-WRONG-CLASS", "fail", "The Ingress is not of class nginx",
    meaning="spec.ingressClassName (or the kubernetes.io/ingress.class annotation) is not nginx, so the NGINX "
            "controller ignores it.",
    evidence="the Ingress's class", fix="set spec.ingressClassName: nginx", check=_ROUTES)
ING_TIMEOUT_UNSET = code(
    "ING-TIMEOUT-UNSET", "fail", "An Ingress proxy timeout is not set",
    meaning="proxy-read-timeout or proxy-send-timeout is not annotated, so ingress-nginx's 60 s default cuts idle "
            "DERP and WebSocket connections (relay keepalives come every 60-65 s).",
    evidence="the Ingress's nginx.ingress.kubernetes.io/proxy-*-timeout annotations",
    fix='annotate the Ingress with nginx.ingress.kubernetes.io/proxy-read-timeout: "3600" and '
        'proxy-send-timeout: "3600"', check="ingress.timeouts")
ING_TIMEOUT_SHORT = code(
    "ING-TIMEOUT-SHORT", "fail", "An Ingress proxy timeout is below 3600 s",
    meaning="a proxy read or send timeout under an hour cuts idle relay and WebSocket connections.",
    evidence="the Ingress's nginx.ingress.kubernetes.io/proxy-*-timeout annotations",
    fix='annotate the Ingress with nginx.ingress.kubernetes.io/proxy-read-timeout: "3600" and '
        'proxy-send-timeout: "3600"', check="ingress.timeouts")
ING_BODY_SIZE_LIMIT = code(
    "ING-BODY-SIZE-LIMIT", "warn", "The Ingress limits request bodies",
    meaning="proxy-body-size is not 0 (unset means 1m): large template and file uploads fail with 413.",
    evidence="the Ingress's nginx.ingress.kubernetes.io/proxy-body-size annotation",
    fix='annotate the Ingress with nginx.ingress.kubernetes.io/proxy-body-size: "0"', check="ingress.timeouts")
ING_CONTROLLER_CONFIGMAP_MISSING = code(
    "ING-CONTROLLER-CONFIGMAP-MISSING", "fail", "The ingress controller's ConfigMap does not exist",
    meaning="the controller reads its settings (--configmap) from it; without it the upgrade map and defaults "
            "are not what the deployment expects.",
    evidence="the namespace and ConfigMap name asked for",
    fix="restore the controller's ConfigMap (it comes with the ingress-nginx HelmRelease)",
    check="ingress.controller")
ING_PROXY_HEADERS_MISSING = code(
    "ING-PROXY-HEADERS-MISSING", "fail", "The proxy-set-headers ConfigMap does not exist",
    meaning="the access Ingress names a proxy-set-headers ConfigMap that is absent: ingress-nginx ignores the "
            "headers.",
    evidence="the Ingress's proxy-set-headers annotation",
    fix="create the ConfigMap or drop the annotation", check="ingress.controller")
ING_UPGRADE_MAP_NO_DERP = code(
    "ING-UPGRADE-MAP-NO-DERP", "warn", "The controller's $connection_upgrade map has no derp entry",
    meaning="a custom http-snippet redefines the $connection_upgrade map without 'derp', so `Upgrade: DERP` "
            "requests may lose their Connection header and clients fall back to DERP over WebSocket.",
    evidence="the controller ConfigMap's http-snippet",
    fix="add a derp entry to the map, or drop the snippet (ingress-nginx's own map passes every upgrade)",
    check="ingress.controller", coder_code="EDERP01")
ING_CONTROLLER_MISSING = code(
    "ING-CONTROLLER-MISSING", "warn", "The ingress controller Deployment is not found",
    meaning="its version (and so its CVE exposure) cannot be read.",
    evidence="the namespace and Deployment name asked for",
    fix="set ingress_namespace / ingress_controller in the profile to the controller's Deployment",
    check="ingress.controller")
ING_CVE_2025_1974 = code(
    "ING-CVE-2025-1974", "warn", "The ingress controller is affected by CVE-2025-1974 (IngressNightmare)",
    meaning="ingress-nginx before v1.11.5, and v1.12.0, let anything that reaches the admission webhook run code "
            "in the controller.",
    evidence="the controller Deployment's image",
    fix="upgrade ingress-nginx to v1.11.5, v1.12.1 or later", check="ingress.controller")


def _ingress(app: App, name: str) -> dict[str, Any] | None:
    return snapshot(app).ingress(name)


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
    svc = snapshot(app).service(app.settings.coder_service)
    ports = (svc or {}).get("spec", {}).get("ports") or []
    return {int(p["port"]) for p in ports if "port" in p}, {str(p["name"]) for p in ports if p.get("name")}


def _ingress_missing(app: App, name: str, fix: str) -> Problem:
    return not_found(ING_MISSING, "Ingress", INGRESSES, name, app.namespace, fix=[fix])


def _check_route(app: App, ingress_name: str, host: str, what: str) -> Outcome:
    ing = _ingress(app, ingress_name)
    s = app.settings
    if ing is None:
        return found([_ingress_missing(app, ingress_name, f"it must route {host} to Service {s.coder_service}")],
                     "")
    backends = _routes(ing, host)
    klass = _class(ing)
    data = {"ingress": ingress_name, "host": host, "class": klass, "backends": backends}
    where = f"Ingress {app.namespace}/{ingress_name}"
    if not backends:
        hosts = [r.get("host") for r in (ing.get("spec") or {}).get("rules") or []]
        return found([ING_NO_RULE(
            f"Ingress {ingress_name} has no rule for {what} {host} (its hosts: {', '.join(map(str, hosts))})",
            evidence=[f"{where} spec.rules[*].host: {', '.join(map(str, hosts)) or 'none'}", f"{what}: {host}"],
            fix=[f"add a rule for {host} to Service {s.coder_service} in Ingress {ingress_name}"])], "", **data)
    numbers, names = _service_ports(app)
    route_fix = f"route {host} to Service {s.coder_service} on its http port, class nginx"
    problems: list[Problem] = []
    for backend in backends:
        port = backend.get("port") or {}
        head = f"Ingress {ingress_name} for {host}:"
        if backend.get("name") != s.coder_service:
            problems.append(ING_WRONG_SERVICE(
                f"{head} routes to Service {backend.get('name')}, not {s.coder_service}",
                evidence=[f"{where} rule {host} backend.service.name: {backend.get('name')}"], fix=[route_fix]))
        elif "number" in port and numbers and int(port["number"]) not in numbers:
            problems.append(ING_WRONG_PORT(
                f"{head} routes to port {port['number']}, the Service has {sorted(numbers)}",
                evidence=[f"{where} rule {host} backend.service.port.number: {port['number']}",
                          f"Service {app.namespace}/{s.coder_service} ports: {sorted(numbers)}"],
                fix=[route_fix]))
        elif "name" in port and names and port["name"] not in names:
            problems.append(ING_WRONG_PORT(
                f"{head} routes to port {port['name']!r}, the Service has {sorted(names)}",
                evidence=[f"{where} rule {host} backend.service.port.name: {port['name']}",
                          f"Service {app.namespace}/{s.coder_service} port names: {sorted(names)}"],
                fix=[route_fix]))
    if klass != "nginx":
        problems.append(ING_WRONG_CLASS(
            f"Ingress {ingress_name} for {host}: ingress class is {klass!r}, not nginx",
            evidence=[f"{where} spec.ingressClassName: {klass}"],
            fix=[f"kubectl -n {app.namespace} patch ingress {ingress_name} --type merge "
                 "-p '{\"spec\":{\"ingressClassName\":\"nginx\"}}' (or in the HelmRelease values)"]))
    return found(problems, f"{host} -> Service {s.coder_service} via Ingress {ingress_name} (class nginx)", **data)


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
        return found([COD_ACCESS_URL_UNSET(
            "no access URL to check the Ingress against (CODER_ACCESS_URL unset)",
            evidence=[f"{coder_container_where(app)} env CODER_ACCESS_URL: unset; no --access-url"],
            fix=[f"set CODER_ACCESS_URL in the HelmRelease {app.namespace}/{app.settings.coder_deployment} values, "
                 "or pass --access-url"])], "")
    return _check_route(app, app.settings.access_ingress, host, "the access host")


@check("ingress.wildcard", "cluster", "Ingress routes the wildcard domain to Coder", needs=("cluster.reachable",))
def ingress_wildcard(app: App) -> Outcome:
    """The wildcard Ingress: a rule for a name under CODER_WILDCARD_ACCESS_URL to the Coder Service."""
    wildcard = _discovered(discovery.wildcard_url, app)
    if not wildcard:
        return found([COD_WILDCARD_URL_UNSET(
            "CODER_WILDCARD_ACCESS_URL is not set, so workspace apps on subdomains cannot work",
            evidence=[f"{coder_container_where(app)} env CODER_WILDCARD_ACCESS_URL: unset"],
            fix=["set it (e.g. *.xuperson.org) and add a wildcard Ingress"])], "")
    host = host_under(url_host(wildcard), "coderctl-probe")
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
    problems: list[Problem] = []
    data: dict[str, Any] = {}
    for name in dict.fromkeys((s.access_ingress, s.wildcard_ingress)):
        ing = _ingress(app, name)
        if ing is None:
            problems.append(_ingress_missing(app, name, "create it: it routes Coder's hosts"))
            continue
        notes = (ing.get("metadata") or {}).get("annotations") or {}
        values = {k: notes.get(ANNOTATION + k) for k in ("proxy-read-timeout", "proxy-send-timeout", "proxy-body-size")}
        data[name] = values
        where = f"Ingress {app.namespace}/{name} annotation {ANNOTATION}"
        for key in ("proxy-read-timeout", "proxy-send-timeout"):
            seconds = _seconds(values[key])
            fix = [f"kubectl -n {app.namespace} annotate ingress {name} {ANNOTATION}{key}=3600 --overwrite (or in "
                   "the HelmRelease values): relay keepalives come every 60-65 s, so a 60 s timeout cuts idle "
                   "connections"]
            if seconds is None:
                problems.append(ING_TIMEOUT_UNSET(f"{name}: {key} not set (ingress-nginx default 60 s)",
                                                  evidence=[f"{where}{key}: {values[key] or 'unset'}"], fix=fix))
            elif seconds < MIN_TIMEOUT:
                problems.append(ING_TIMEOUT_SHORT(f"{name}: {key} is {seconds} s",
                                                  evidence=[f"{where}{key}: {values[key]}"], fix=fix))
        if str(values["proxy-body-size"]) != "0":
            problems.append(ING_BODY_SIZE_LIMIT(
                f"{name}: proxy-body-size is {values['proxy-body-size'] or 'unset (1m)'}, not 0",
                evidence=[f"{where}proxy-body-size: {values['proxy-body-size'] or 'unset'}"],
                fix=[f"kubectl -n {app.namespace} annotate ingress {name} {ANNOTATION}proxy-body-size=0 --overwrite "
                     "(or in the HelmRelease values)"]))
    return found(problems, "read/send timeouts >= 3600 s and no body size limit on both Ingresses", **data)


def _affected_by_cve_2025_1974(version: tuple[int, ...]) -> bool:
    return version < (1, 11, 5) or version[:2] == (1, 12) and version < (1, 12, 1)


@check("ingress.controller", "cluster", "Ingress controller configured and patched", needs=("cluster.reachable",))
def ingress_controller(app: App) -> Outcome:
    """The controller's ConfigMap (with the $connection_upgrade map), the proxy-headers ConfigMap the
    Ingresses reference, and the controller image version (CVE-2025-1974, fixed in v1.11.5 / v1.12.1)."""
    s = app.settings
    kube = app.kube()
    problems: list[Problem] = []
    data: dict[str, Any] = {}
    cm_name = f"ConfigMap {s.ingress_namespace}/{s.ingress_controller}"
    try:
        cm = kube.get(CONFIGMAPS, s.ingress_controller, s.ingress_namespace)
        snippet = (cm.get("data") or {}).get("http-snippet", "")
        if "$connection_upgrade" in snippet and "derp" not in snippet.lower():
            problems.append(ING_UPGRADE_MAP_NO_DERP(
                "the http-snippet's $connection_upgrade map has no 'derp' entry",
                evidence=[f"{cm_name} data.http-snippet: defines $connection_upgrade without 'derp'"],
                fix=[f"kubectl -n {s.ingress_namespace} edit configmap {s.ingress_controller}: add a derp entry to "
                     "the map, or drop the snippet"]))
    except KubeNotFound:
        problems.append(not_found(
            ING_CONTROLLER_CONFIGMAP_MISSING, "ConfigMap", CONFIGMAPS, s.ingress_controller, s.ingress_namespace,
            fix=["the controller reads its settings from it (--configmap): restore it from the ingress-nginx "
                 "HelmRelease"]))
    ing = _ingress(app, s.access_ingress) or {}
    ref = ((ing.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION + "proxy-set-headers")
    if ref:
        ns, _, name = ref.rpartition("/")
        data["proxy_set_headers"] = ref
        if kube.get_or_none(CONFIGMAPS, name, ns or app.namespace) is None:
            problems.append(ING_PROXY_HEADERS_MISSING(
                f"ConfigMap {ref} (proxy-set-headers of Ingress {s.access_ingress}) not found",
                evidence=[f"Ingress {app.namespace}/{s.access_ingress} annotation {ANNOTATION}proxy-set-headers: {ref}",
                          f"ConfigMap {ns or app.namespace}/{name}: not found"],
                fix=[f"create ConfigMap {ref} or drop the annotation; ingress-nginx ignores the headers otherwise"]))
    dep = kube.get_or_none(DEPLOYMENTS, s.ingress_controller, s.ingress_namespace)
    if dep is None:
        problems.append(not_found(
            ING_CONTROLLER_MISSING, "Deployment", DEPLOYMENTS, s.ingress_controller, s.ingress_namespace,
            message=f"Deployment {s.ingress_namespace}/{s.ingress_controller} not found: version unknown",
            fix=["kubectl get deployments -A -l app.kubernetes.io/name=ingress-nginx; set ingress_namespace / "
                 "ingress_controller in the profile"]))
    else:
        containers = ((dep.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
        image = str(containers[0].get("image", "")) if containers else ""
        tag = image_tag(image)
        version = version_tuple(tag)
        data["image"] = image
        if version is not None and _affected_by_cve_2025_1974(version):
            problems.append(ING_CVE_2025_1974(
                f"controller {tag} is affected by CVE-2025-1974 (IngressNightmare)",
                evidence=[f"Deployment {s.ingress_namespace}/{s.ingress_controller} image: {image}"],
                fix=["upgrade ingress-nginx to v1.11.5, v1.12.1 or later (the controller.image.tag of its "
                     "HelmRelease)"]))
    return found(problems, f"ConfigMaps present, controller {data.get('image', '?')}", **data)
