"""Checks that go through the network path users take: Internet → tunnel → NGINX → Coder.

Also the helpers every network and dns check shares: where the access URL and the wildcard domain come
from, and how to say who answered a request.
"""

from __future__ import annotations

import json
import secrets
from urllib.parse import urlsplit

from coderctl import discovery
from coderctl.checks.base import Conclusion, Outcome, check, fail, ok, skip, warn
from coderctl.clients.http import Response, Target, describe_error
from coderctl.clients.kube import KubeError
from coderctl.context import App
from coderctl.errors import ConfigError

PROBE_LABEL = "coderctl-probe"


def resolve_access_url(app: App) -> str:
    """The access URL; without one, the check concludes with the reason."""
    try:
        url = discovery.access_url(app)
    except KubeError as exc:
        raise Conclusion(skip(f"no --access-url given and it could not be discovered: {exc}")) from None
    if not url:
        raise Conclusion(fail("CODER_ACCESS_URL is not set on the Coder Deployment (Coder's EACS01)",
                    "set CODER_ACCESS_URL (coder.env in the HelmRelease values) to the public https URL"))
    return url


def wildcard_pattern(app: App) -> str:
    """The wildcard host pattern (`*.xuperson.org`) from the configuration or the Coder Deployment."""
    try:
        raw = discovery.wildcard_url(app)
    except (KubeError, ConfigError) as exc:
        raise Conclusion(skip("no wildcard URL configured (--wildcard-url, CODERCTL_WILDCARD_URL or wildcard_url "
                              f"in the profile) and none discovered: {exc}")) from None
    if not raw:
        raise Conclusion(fail("CODER_WILDCARD_ACCESS_URL is not set: workspace apps on subdomains cannot work "
                              "(\"Your admin has not configured subdomain application access\")",
                              "set CODER_WILDCARD_ACCESS_URL (e.g. *.xuperson.org) in the HelmRelease values, "
                              "with a wildcard Ingress, DNS record and certificate for it"))
    host = urlsplit(raw if "://" in raw else f"//{raw}").hostname or ""
    first, _, parent = host.partition(".")
    if "*" not in first or not parent:
        raise Conclusion(fail(f"wildcard URL {raw!r} is not of the form *.domain", "set it like *.xuperson.org"))
    return host


def wildcard_parent(pattern: str) -> str:
    """The domain the wildcard's hosts sit directly under (`xuperson.org` for `*.xuperson.org`)."""
    return pattern.partition(".")[2]


def sample_host(app: App, pattern: str, n: int = 0) -> str:
    """A random host the wildcard must cover: the same for every check of one run (per `n`)."""
    return app.cached(f"sample-host:{pattern}:{n}",  # type: ignore[no-any-return]
                      lambda: pattern.replace("*", f"{PROBE_LABEL}-{secrets.token_hex(4)}", 1))


def url_for_host(access_url: str, host: str, path: str = "/") -> str:
    """`path` on `host` with the access URL's scheme and port (Coder serves subdomain apps that way)."""
    target = Target.parse(access_url)
    default = 443 if target.scheme == "https" else 80
    port = "" if target.port == default else f":{target.port}"
    return f"{target.scheme}://{host}{port}{path}"


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
        return fail(f"GET {target}: {describe_error(exc)} (Coder's EACS03)",
                    "check DNS, the tunnel and the ingress in that order; from inside the cluster: "
                    f"curl -v {target}",
                    url=target)
    data = {"url": target, "status": resp.status, "hop": resp.hop(), "elapsed_s": round(resp.elapsed_s, 3)}
    body = resp.body.decode("utf-8", "replace").strip()
    if resp.status != 200:
        return fail(f"GET {target}: {resp.status} {resp.reason} from {resp.hop()} (Coder's EACS04)",
                    "a 404 from nginx means no Ingress rule matches the host; a 502/503 means the Coder "
                    "Service has no ready endpoints; a Cloudflare page means the tunnel cannot reach the "
                    "ingress", **data)
    if not resp.header("x-coder-build-version"):
        return warn(f"200 from {resp.hop()}, but without Coder's X-Coder-Build-Version header: "
                    "something else may be answering",
                    "check which Service the Ingress routes the access host to", **data)
    if body != "OK":
        return warn(f"200 from {resp.hop()} with body {body[:40]!r}, expected 'OK'", None, **data)
    return ok(f"200 OK from {resp.hop()} in {resp.elapsed_s * 1000:.0f} ms", **data)


def _bare_version(version: str) -> str:
    return version.strip().lstrip("v").split("+", 1)[0]


@check("http.buildinfo", "network", "Coder's build info matches the expected version", uses_cluster=False)
def http_buildinfo(app: App) -> Outcome:
    """GET <access URL>/api/v2/buildinfo: the version Coder runs against `expected_coder_version`, and the
    dashboard URL Coder believes in against the access URL."""
    url = resolve_access_url(app)
    target = url.rstrip("/") + "/api/v2/buildinfo"
    try:
        resp = app.http().request("GET", target)
    except Exception as exc:
        return fail(f"GET {target}: {describe_error(exc)}", "see http.healthz", url=target)
    data: dict[str, object] = {"url": target, **answer_data(resp)}
    try:
        info = json.loads(resp.body) if resp.status == 200 else None
    except ValueError:
        info = None
    if not isinstance(info, dict) or "version" not in info:
        return fail(f"GET {target}: no build info JSON: {answered_by(resp)}",
                    "the access URL does not reach Coder's API; see http.healthz", **data)
    version = str(info["version"])
    data.update(version=version, dashboard_url=info.get("dashboard_url"),
                deployment_id=info.get("deployment_id"))
    expected = str(app.settings.expected_coder_version or "")
    problems = []
    if expected and _bare_version(version) != _bare_version(expected):
        problems.append(f"Coder runs {version}, expected {expected}")
    dashboard = str(info.get("dashboard_url") or "")
    if dashboard and urlsplit(dashboard).hostname != Target.parse(url).host:
        problems.append(f"Coder's own access URL is {dashboard}, not {url}")
    if problems:
        return warn("; ".join(problems),
                    "finish or roll back the upgrade, or set expected_coder_version; a different "
                    "dashboard URL means CODER_ACCESS_URL differs from the URL you probed", **data)
    return ok(f"Coder {version}" + (f" (expected {expected})" if expected else ""), **data)


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
        return fail(f"GET {target}: {describe_error(exc)}",
                    f"check the DNS record and certificate for {pattern} (dns.wildcard, tls.wildcard)",
                    url=target)
    data = {"url": target, "pattern": pattern, **answer_data(resp)}
    if resp.header("x-coder-build-version"):
        version = resp.header("x-coder-build-version")
        return ok(f"{pattern} reaches Coder: {resp.status} from Coder {version} for {target}", **data)
    return fail(f"GET {target}: {answered_by(resp)}: not Coder",
                f"add an Ingress rule for {pattern} to the Coder Service (the coder-workspaces-wildcard "
                "Ingress), and route the wildcard through the tunnel; a Cloudflare page means the tunnel "
                "has no rule for it", **data)
