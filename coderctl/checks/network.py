"""Checks that go through the network path users take: Internet → tunnel → NGINX → Coder.

Also the helpers every network and dns check shares: where the access URL and the wildcard domain come
from, and how to say who answered a request.
"""

from __future__ import annotations

import json
import secrets
from urllib.parse import urlsplit

from coderctl import discovery
from coderctl.checks.base import Conclusion, Outcome, check, found, ok, skip
from coderctl.clients.http import Response, Target, describe_error
from coderctl.clients.kube import KubeError
from coderctl.context import App
from coderctl.errors import ConfigError
from coderctl.facts.hosts import host_under, is_wildcard, url_for_host, url_host
from coderctl.facts.versions import same_version
from coderctl.problems import Problem, code

PROBE_LABEL = "coderctl-probe"

ACCESS_URL_UNSET = code(
    "HTTP-ACCESS-URL-UNSET", "fail", "The access URL is not set",
    meaning="The Coder Deployment has no CODER_ACCESS_URL and none was given: clients, workspace agents and "
            "every network check have no URL to reach Coder by.",
    evidence="The Deployment and container that lack the variable.",
    fix="Set CODER_ACCESS_URL to the public https URL in the Coder HelmRelease values (coder.env).",
    check="every network and dns check", coder_code="EACS01")
WILDCARD_URL_UNSET = code(
    "HTTP-WILDCARD-URL-UNSET", "fail", "The wildcard access URL is not set",
    meaning="CODER_WILDCARD_ACCESS_URL is empty: workspace apps on subdomains cannot work (\"Your admin has not "
            "configured subdomain application access\").",
    evidence="The Deployment and container that lack the variable.",
    fix="Set CODER_WILDCARD_ACCESS_URL (e.g. *.xuperson.org) in the HelmRelease values, with a wildcard "
        "Ingress, DNS record and certificate for it.",
    check="http.wildcard, tls.wildcard, dns.wildcard")
WILDCARD_URL_INVALID = code(
    "HTTP-WILDCARD-URL-INVALID", "fail", "The wildcard access URL is not of the form *.domain",
    meaning="The wildcard URL must have `*` as (part of) its first label, followed by a domain.",
    evidence="The configured value.",
    fix="Set it like *.xuperson.org.",
    check="http.wildcard, tls.wildcard, dns.wildcard")
HEALTHZ_UNREACHABLE = code(
    "HTTP-HEALTHZ-UNREACHABLE", "fail", "/healthz cannot be reached through the access URL",
    meaning="The request to <access URL>/healthz got no HTTP answer: DNS, TCP, TLS or a timeout failed.",
    evidence="The URL and the error (name resolution, refused connection, TLS verification, timeout).",
    fix="Follow the path in order: DNS (dns.access-host), the tunnel, the ingress; curl -v the URL from "
        "inside the cluster.",
    check="http.healthz", coder_code="EACS03")
HEALTHZ_STATUS = code(
    "HTTP-HEALTHZ-STATUS", "fail", "/healthz does not answer 200",
    meaning="Something answered <access URL>/healthz, but not with 200.",
    evidence="Status, Server header, X-Coder-Build-Version, cf-ray and the first bytes of the body.",
    fix="A 404 from nginx: no Ingress rule matches the host; 502/503: the Coder Service has no ready "
        "endpoints; a Cloudflare page: the tunnel cannot reach the ingress.",
    check="http.healthz", coder_code="EACS04")
HEALTHZ_NOT_CODER = code(
    "HTTP-HEALTHZ-NOT-CODER", "warn", "/healthz answered without Coder's version header",
    meaning="A 200 came back without X-Coder-Build-Version: something other than Coder may be answering.",
    evidence="Status, Server header, cf-ray and the first bytes of the body.",
    fix="Check which Service the access Ingress routes the access host to.",
    check="http.healthz")
HEALTHZ_BODY = code(
    "HTTP-HEALTHZ-BODY", "warn", "/healthz answered 200 with an unexpected body",
    meaning="Coder's /healthz answers `OK`; another body means another server or an altered answer.",
    evidence="Who answered and the body.",
    fix="Check which Service the access Ingress routes the access host to.",
    check="http.healthz")
BUILDINFO_UNREACHABLE = code(
    "HTTP-BUILDINFO-UNREACHABLE", "fail", "/api/v2/buildinfo cannot be reached",
    meaning="The request to <access URL>/api/v2/buildinfo got no HTTP answer.",
    evidence="The URL and the error.",
    fix="See HTTP-HEALTHZ-UNREACHABLE (http.healthz) for the path to Coder.",
    check="http.buildinfo")
BUILDINFO_MISSING = code(
    "HTTP-BUILDINFO-MISSING", "fail", "No build info JSON from Coder's API",
    meaning="GET /api/v2/buildinfo did not return Coder's JSON with a version: the access URL does not "
            "reach Coder's API.",
    evidence="Status, Server header, X-Coder-Build-Version, cf-ray and the first bytes of the body.",
    fix="Route the access host to the Coder Service; see http.healthz.",
    check="http.buildinfo")
VERSION_MISMATCH = code(
    "HTTP-VERSION-MISMATCH", "warn", "Coder runs another version than expected",
    meaning="The version in Coder's build info differs from expected_coder_version: an upgrade in progress, "
            "a rollback, or a stale expectation.",
    evidence="The running and the expected version.",
    fix="Finish or roll back the upgrade (the image tag in the Coder HelmRelease), or set "
        "expected_coder_version.",
    check="http.buildinfo")
ACCESS_URL_MISMATCH = code(
    "HTTP-ACCESS-URL-MISMATCH", "warn", "Coder's own access URL differs from the probed one",
    meaning="Coder's build info names a dashboard URL on another host than the URL probed: CODER_ACCESS_URL "
            "differs from the URL users take, so links and agents use the other one.",
    evidence="Coder's dashboard URL and the probed URL.",
    fix="Make CODER_ACCESS_URL in the Coder HelmRelease values equal the public URL.",
    check="http.buildinfo")
WILDCARD_UNREACHABLE = code(
    "HTTP-WILDCARD-UNREACHABLE", "fail", "A host under the wildcard cannot be reached",
    meaning="A request to a random host under the wildcard domain got no HTTP answer.",
    evidence="The URL and the error.",
    fix="Check the DNS record and the certificate for the wildcard (dns.wildcard, tls.wildcard).",
    check="http.wildcard")
WILDCARD_NOT_CODER = code(
    "HTTP-WILDCARD-NOT-CODER", "fail", "A host under the wildcard is not answered by Coder",
    meaning="A random host under the wildcard domain is answered by the ingress's default backend, "
            "Cloudflare or another server: workspace apps on subdomains do not reach Coder.",
    evidence="Status, Server header, cf-ray and the first bytes of the body.",
    fix="Route the wildcard to the Coder Service: a rule in the wildcard Ingress (coder-workspaces-wildcard) "
        "and in the tunnel's ingress rules.",
    check="http.wildcard")


def answer_evidence(method: str, url: str, resp: Response) -> list[str]:
    """Evidence lines for an HTTP answer: status and the headers that tell who answered, and the body."""
    lines = [f"{method} {url}: {resp.status} {resp.reason}".rstrip()]
    for name in ("server", "x-coder-build-version", "cf-ray", "location"):
        if resp.header(name):
            lines.append(f"{name}: {resp.header(name)}")
    body = resp.body[:60].decode("utf-8", "replace").strip()
    lines.append(f"body: {body!r}" if body else "empty body")
    return lines


def env_shown(app: App, name: str) -> str:
    """The command that shows `name` in the Coder Deployment's environment."""
    return f"kubectl -n {app.namespace} set env deployment/{app.settings.coder_deployment} --list | grep {name}"


def resolve_access_url(app: App) -> str:
    """The access URL; without one, the check concludes with the reason."""
    try:
        url = discovery.access_url(app)
    except KubeError as exc:
        raise Conclusion(skip(f"no --access-url given and it could not be discovered: {exc}")) from None
    if not url:
        problem = ACCESS_URL_UNSET(
            "CODER_ACCESS_URL is not set on the Coder Deployment (Coder's EACS01)",
            evidence=[f"Deployment {app.namespace}/{app.settings.coder_deployment} container "
                      f"{app.settings.coder_container}: no CODER_ACCESS_URL", "no --access-url given"],
            fix=["set CODER_ACCESS_URL (coder.env in the HelmRelease values) to the public https URL",
                 env_shown(app, "CODER_ACCESS_URL")])
        raise Conclusion(found([problem], ""))
    return url


def wildcard_pattern(app: App) -> str:
    """The wildcard host pattern (`*.xuperson.org`) from the configuration or the Coder Deployment."""
    try:
        raw = discovery.wildcard_url(app)
    except (KubeError, ConfigError) as exc:
        raise Conclusion(skip("no wildcard URL configured (CODERCTL_WILDCARD_URL, wildcard_url in the profile, or "
                              f"coderctl probe http --wildcard-url) and none discovered: {exc}")) from None
    if not raw:
        problem = WILDCARD_URL_UNSET(
            "CODER_WILDCARD_ACCESS_URL is not set: workspace apps on subdomains cannot work "
            "(\"Your admin has not configured subdomain application access\")",
            evidence=[f"Deployment {app.namespace}/{app.settings.coder_deployment} container "
                      f"{app.settings.coder_container}: no CODER_WILDCARD_ACCESS_URL"],
            fix=["set CODER_WILDCARD_ACCESS_URL (e.g. *.xuperson.org) in the HelmRelease values, with a wildcard "
                 f"Ingress ({app.settings.wildcard_ingress}), DNS record and certificate for it",
                 env_shown(app, "CODER_WILDCARD_ACCESS_URL")])
        raise Conclusion(found([problem], ""))
    host = url_host(raw)
    if not is_wildcard(host):
        problem = WILDCARD_URL_INVALID(f"wildcard URL {raw!r} is not of the form *.domain",
                                       evidence=[f"wildcard URL: {raw!r} (host {host!r})"],
                                       fix=["set it like *.xuperson.org"])
        raise Conclusion(found([problem], ""))
    return host


def sample_host(app: App, pattern: str, n: int = 0) -> str:
    """A random host the wildcard must cover: the same for every check of one run (per `n`)."""
    return app.cached(f"sample-host:{pattern}:{n}",  # type: ignore[no-any-return]
                      lambda: host_under(pattern, f"{PROBE_LABEL}-{secrets.token_hex(4)}"))


def answered_by(resp: Response) -> str:
    """Who answered and with what: status, Server, Coder's version header, cf-ray, the body's first bytes."""
    parts = [f"Server {resp.header('server') or '-'}"]
    if resp.header("x-coder-build-version"):
        parts.insert(0, f"Coder {resp.header('x-coder-build-version')}")
    if resp.header("cf-ray"):
        parts.append(f"cf-ray {resp.header('cf-ray')}")
    body = resp.body[:60].decode("utf-8", "replace").strip()
    parts.append(f"body {body!r}" if body else "empty body")
    return f"{resp.status} {resp.reason}".strip() + f" ({', '.join(parts)})"


def answer_data(resp: Response) -> dict[str, object]:
    """The answer as plain data for a check's `data`."""
    return {"status": resp.status, "server": resp.header("server"),
            "coder_version": resp.header("x-coder-build-version"), "cf_ray": resp.header("cf-ray"),
            "body": resp.body[:200].decode("utf-8", "replace"), "elapsed_s": round(resp.elapsed_s, 3)}


@check("http.healthz", "network", "Coder answers /healthz through the access URL", uses_cluster=False)
def http_healthz(app: App) -> Outcome:
    """GET <access URL>/healthz: 200 with body OK from Coder (EACS03/EACS04), and which hop answered."""
    url = resolve_access_url(app)
    target = url.rstrip("/") + "/healthz"
    try:
        resp = app.http().request("GET", target)
    except Exception as exc:
        return found([HEALTHZ_UNREACHABLE(
            f"GET {target}: {describe_error(exc)} (Coder's EACS03)",
            evidence=[f"GET {target}: {describe_error(exc)}"],
            fix=["check DNS, the tunnel and the ingress in that order; from inside the cluster: "
                 f"curl -v {target}"])], "", url=target)
    data = {"url": target, "status": resp.status, "hop": resp.hop(), "elapsed_s": round(resp.elapsed_s, 3)}
    body = resp.body.decode("utf-8", "replace").strip()
    evidence = answer_evidence("GET", target, resp)
    route = (f"kubectl -n {app.namespace} get ingress {app.settings.access_ingress} -o wide; "
             f"kubectl -n {app.namespace} get endpoints {app.settings.coder_service}")
    problems: list[Problem] = []
    if resp.status != 200:
        problems.append(HEALTHZ_STATUS(
            f"GET {target}: {resp.status} {resp.reason} from {resp.hop()} (Coder's EACS04)", evidence=evidence,
            fix=["a 404 from nginx means no Ingress rule matches the host; a 502/503 means the Coder "
                 "Service has no ready endpoints; a Cloudflare page means the tunnel cannot reach the "
                 "ingress", route]))
    elif not resp.header("x-coder-build-version"):
        problems.append(HEALTHZ_NOT_CODER(
            f"200 from {resp.hop()}, but without Coder's X-Coder-Build-Version header: "
            "something else may be answering", evidence=evidence,
            fix=["check which Service the Ingress routes the access host to", route]))
    elif body != "OK":
        problems.append(HEALTHZ_BODY(f"200 from {resp.hop()} with body {body[:40]!r}, expected 'OK'",
                                     evidence=evidence))
    return found(problems, f"200 OK from {resp.hop()} in {resp.elapsed_s * 1000:.0f} ms", **data)


@check("http.buildinfo", "network", "Coder's build info matches the expected version", uses_cluster=False)
def http_buildinfo(app: App) -> Outcome:
    """GET <access URL>/api/v2/buildinfo: the version Coder runs against `expected_coder_version`, and the
    dashboard URL Coder believes in against the access URL."""
    url = resolve_access_url(app)
    target = url.rstrip("/") + "/api/v2/buildinfo"
    try:
        resp = app.http().request("GET", target)
    except Exception as exc:
        return found([BUILDINFO_UNREACHABLE(f"GET {target}: {describe_error(exc)}",
                                            evidence=[f"GET {target}: {describe_error(exc)}"],
                                            fix=["see http.healthz"])], "", url=target)
    data: dict[str, object] = {"url": target, **answer_data(resp)}
    try:
        info = json.loads(resp.body) if resp.status == 200 else None
    except ValueError:
        info = None
    if not isinstance(info, dict) or "version" not in info:
        return found([BUILDINFO_MISSING(f"GET {target}: no build info JSON: {answered_by(resp)}",
                                        evidence=answer_evidence("GET", target, resp),
                                        fix=["the access URL does not reach Coder's API; see http.healthz"])],
                     "", **data)
    version = str(info["version"])
    data.update(version=version, dashboard_url=info.get("dashboard_url"),
                deployment_id=info.get("deployment_id"))
    expected = str(app.settings.expected_coder_version or "")
    problems: list[Problem] = []
    if expected and not same_version(version, expected):
        problems.append(VERSION_MISMATCH(
            f"Coder runs {version}, expected {expected}",
            evidence=[f"{target}: version {version}", f"expected_coder_version: {expected} "
                                                       f"(from {app.settings.source('expected_coder_version')})"],
            fix=["finish or roll back the upgrade, or set expected_coder_version",
                 f"kubectl -n {app.namespace} get deployment/{app.settings.coder_deployment} "
                 "-o jsonpath='{.spec.template.spec.containers[*].image}'"]))
    dashboard = str(info.get("dashboard_url") or "")
    if dashboard and urlsplit(dashboard).hostname != Target.parse(url).host:
        problems.append(ACCESS_URL_MISMATCH(
            f"Coder's own access URL is {dashboard}, not {url}",
            evidence=[f"{target}: dashboard_url {dashboard}", f"probed access URL: {url}"],
            fix=["a different dashboard URL means CODER_ACCESS_URL differs from the URL you probed: set "
                 "CODER_ACCESS_URL in the Coder HelmRelease values (coder.env) to the public URL",
                 env_shown(app, "CODER_ACCESS_URL")]))
    return found(problems, f"Coder {version}" + (f" (expected {expected})" if expected else ""), **data)


@check("http.wildcard", "network", "A random host under the wildcard domain reaches Coder",
       uses_cluster=False)
def http_wildcard(app: App) -> Outcome:
    """GET https://<random label>.<wildcard domain>/: answered by Coder (its X-Coder-Build-Version header),
    not by the ingress's default backend or an error page."""
    url = resolve_access_url(app)
    pattern = wildcard_pattern(app)
    target = url_for_host(url, sample_host(app, pattern))
    try:
        resp = app.http().request("GET", target)
    except Exception as exc:
        return found([WILDCARD_UNREACHABLE(
            f"GET {target}: {describe_error(exc)}", evidence=[f"GET {target}: {describe_error(exc)}"],
            fix=[f"check the DNS record and certificate for {pattern} (dns.wildcard, tls.wildcard)"])],
            "", url=target)
    data = {"url": target, "pattern": pattern, **answer_data(resp)}
    if resp.header("x-coder-build-version"):
        version = resp.header("x-coder-build-version")
        return ok(f"{pattern} reaches Coder: {resp.status} from Coder {version} for {target}", **data)
    ingress = app.settings.wildcard_ingress
    return found([WILDCARD_NOT_CODER(
        f"GET {target}: {answered_by(resp)}: not Coder", evidence=answer_evidence("GET", target, resp),
        fix=[f"add an Ingress rule for {pattern} to the Coder Service (the {ingress} "
             "Ingress), and route the wildcard through the tunnel; a Cloudflare page means the tunnel "
             "has no rule for it", f"kubectl -n {app.namespace} get ingress {ingress} -o yaml"])], "", **data)
