"""Checks that go through the network path users take: Internet → tunnel → NGINX → Coder."""

from __future__ import annotations

from coderctl import discovery
from coderctl.checks.base import Outcome, check, fail, ok, skip, warn
from coderctl.clients.http import describe_error
from coderctl.clients.kube import KubeError
from coderctl.context import App


def resolve_access_url(app: App) -> str | Outcome:
    """The access URL, or the Outcome explaining why there is none."""
    try:
        url = discovery.access_url(app)
    except KubeError as exc:
        return skip(f"no --access-url given and it could not be discovered: {exc}")
    if not url:
        return fail("CODER_ACCESS_URL is not set on the Coder Deployment (Coder's EACS01)",
                    "set CODER_ACCESS_URL (coder.env in the HelmRelease values) to the public https URL")
    return url


@check("http.healthz", "network", "Coder answers /healthz through the access URL", uses_cluster=False)
def http_healthz(app: App) -> Outcome:
    """GET <access URL>/healthz: 200 with body OK from Coder (EACS03/EACS04), and which hop answered."""
    url = resolve_access_url(app)
    if isinstance(url, Outcome):
        return url
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
                    "a 404 from nginx means no Ingress rule matches the host; a 502/503 means the Coder Service "
                    "has no ready endpoints; a Cloudflare page means the tunnel cannot reach the ingress", **data)
    if not resp.header("x-coder-build-version"):
        return warn(f"200 from {resp.hop()}, but without Coder's X-Coder-Build-Version header: something else "
                    "may be answering", "check which Service the Ingress routes the access host to", **data)
    if body != "OK":
        return warn(f"200 from {resp.hop()} with body {body[:40]!r}, expected 'OK'", None, **data)
    return ok(f"200 OK from {resp.hop()} in {resp.elapsed_s * 1000:.0f} ms", **data)
